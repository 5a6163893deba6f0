"""A Llama-style decoder (Llama 2 / Code Llama architecture), small enough to read at once.

Pre-norm blocks of RMSNorm -> attention -> residual, RMSNorm -> SwiGLU -> residual;
rotary position embeddings with a configurable base θ (Code Llama's long-context
fine-tuning raises it from 10,000 to 1,000,000); optional grouped-query attention;
untied input and output embeddings. Attention is torch's scaled_dot_product_attention,
restricted to each document where the position ids restart inside a row (packed
documents must not see each other), else plainly causal. Two ways to keep documents
apart, the same computation up to float rounding:

* "documents" (the default): one causal SDPA call per document, cut at the segment
  boundaries (`cu_seqlens`), so every call may use SDPA's fused kernels and no L×L
  mask is built. (torch 2.13's flex attention has no backward on the CPU, and its
  `varlen_attn` runs on CUDA only, so neither would train everywhere.)
* "dense": one SDPA call over the batch with a (B, 1, L, L) block-diagonal causal
  mask, which rules out the flash kernels: the reference the other is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from codemill.config.loader import Section, invalid, setting

AttentionKind = Literal["documents", "dense"]


@dataclass
class ModelConfig(Section):
    """Defaults: Llama 2 / Code Llama 7B (vocab 32,016 with the four infilling tokens)."""

    vocab_size: int = setting(32016, ge=0)  # 0: take it from the shards' tokenizer
    dim: int = setting(4096, ge=1)
    n_layers: int = setting(32, ge=1)
    n_heads: int = setting(32, ge=1)
    n_kv_heads: int = setting(0, ge=0)  # 0: as many as n_heads (no grouped-query attention)
    ffn_dim: int = setting(11008, ge=1)  # SwiGLU hidden size; Llama: 2/3 · 4 · dim, rounded to 256
    norm_eps: float = setting(1e-5, gt=0.0)
    rope_theta: float = setting(10_000.0, gt=0.0)

    def check(self) -> None:
        if self.dim % self.n_heads or self.head_dim % 2:
            raise invalid("n_heads", f"dim {self.dim} must split into {self.n_heads} heads of an "
                                     "even size (RoPE rotates pairs)")
        if self.n_heads % self.kv_heads:
            raise invalid("n_kv_heads", f"{self.n_heads} heads do not share {self.kv_heads} "
                                        "key/value heads evenly")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In float32: the mean of squares overflows or loses precision in bf16.
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rope_angles(
    position_ids: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of each position's rotation angles: (B, L, 1, head_dim / 2)."""
    inv_freq = theta ** -(
        torch.arange(0, head_dim, 2, device=position_ids.device).float() / head_dim
    )
    angles = position_ids.float()[..., None] * inv_freq
    return angles.cos()[:, :, None], angles.sin()[:, :, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (x[i], x[i + head_dim/2]) pair of x (B, L, H, head_dim) by its angle."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, kind: AttentionKind) -> None:
        super().__init__()
        self.n_heads, self.kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.kind = kind
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, documents: torch.Tensor | None
    ) -> torch.Tensor:
        """`documents`: for "documents" attention the segment boundaries in the flattened
        batch (a CPU tensor), for "dense" the mask; None: plainly causal rows."""
        B, L, _ = x.shape
        q = apply_rope(self.wq(x).view(B, L, self.n_heads, self.head_dim), cos, sin)
        k = apply_rope(self.wk(x).view(B, L, self.kv_heads, self.head_dim), cos, sin)
        v = self.wv(x).view(B, L, self.kv_heads, self.head_dim)
        gqa = self.kv_heads != self.n_heads
        if self.kind == "documents" and documents is not None:
            out = per_document_attention(q, k, v, documents, gqa)
        else:
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2),
                k.transpose(1, 2),
                v.transpose(1, 2),
                attn_mask=documents,
                is_causal=documents is None,
                enable_gqa=gqa,
            ).transpose(1, 2)
        return self.wo(out.reshape(B, L, -1))


# Data-dependent control flow (one call per document): run eagerly under torch.compile,
# which compiles the projections and the feed-forward around it.
@torch.compiler.disable
def per_document_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bounds: torch.Tensor, gqa: bool
) -> torch.Tensor:
    """Causal attention within each segment [bounds[i], bounds[i+1]) of the flattened
    batch; q, k, v and the result are (B, L, heads, head_dim)."""
    B, L, H, D = q.shape
    flat = [t.reshape(B * L, t.shape[2], D) for t in (q, k, v)]
    cuts = bounds.tolist()
    parts = []
    for start, end in zip(cuts, cuts[1:]):
        seg_q, seg_k, seg_v = (t[start:end].transpose(0, 1) for t in flat)
        out = F.scaled_dot_product_attention(seg_q, seg_k, seg_v, is_causal=True, enable_gqa=gqa)
        parts.append(out.transpose(0, 1))
    return torch.cat(parts).view(B, L, H, D)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, attention: AttentionKind) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg, attention)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, cos, sin, documents):
        x = x + self.attention(self.attention_norm(x), cos, sin, documents)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    """`attention`: how packed documents are kept apart (module docstring).
    `checkpoint_layers`: keep only each block's input for the backward pass and compute
    the rest again there (activation checkpointing: less memory, a third more compute)."""

    def __init__(self, cfg: ModelConfig, attention: AttentionKind = "documents") -> None:
        super().__init__()
        if cfg.dim % cfg.n_heads or cfg.n_heads % cfg.kv_heads or cfg.head_dim % 2:
            raise ValueError(
                f"dim {cfg.dim} must split into n_heads {cfg.n_heads} heads of even size, "
                f"and n_heads into n_kv_heads {cfg.kv_heads} groups"
            )
        self.cfg = cfg
        self.attention = attention
        self.checkpoint_layers = False
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, attention) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.apply(self._init)
        # GPT-2's scaled init of the projections into the residual stream.
        for name, p in self.named_parameters():
            if name.endswith(("wo.weight", "w2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, L, vocab). `position_ids` (B, L) restart at 0 at each document start;
        `cu_seqlens` (the loader's) are the same boundaries, found from the position ids
        when not given."""
        B, L = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(L, device=input_ids.device).expand(B, L)
        cos, sin = rope_angles(position_ids, self.cfg.head_dim, self.cfg.rope_theta)
        documents = self._documents(position_ids, cu_seqlens)
        x = self.tok_embeddings(input_ids)
        for layer in self.layers:
            if self.checkpoint_layers and torch.is_grad_enabled():
                x = checkpoint(layer, x, cos, sin, documents, use_reentrant=False)
            else:
                x = layer(x, cos, sin, documents)
        return self.output(self.norm(x))

    def _documents(self, position_ids: torch.Tensor, cu_seqlens: torch.Tensor | None) -> torch.Tensor | None:
        """What attention needs to keep documents apart (Attention.forward); None when
        no row holds a second document."""
        if self.attention == "dense":
            return document_mask(position_ids)
        # on the CPU: each layer reads the boundaries, and a GPU tensor would make each wait
        bounds = (document_bounds(position_ids) if cu_seqlens is None else cu_seqlens).cpu()
        return bounds if len(bounds) - 1 > position_ids.shape[0] else None

    def num_params(self, embeddings: bool = False) -> int:
        """Parameters; without the input embedding (a lookup, not a matmul) by default."""
        n = sum(p.numel() for p in self.parameters())
        return n if embeddings else n - self.tok_embeddings.weight.numel()

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (PaLM's count): 6·N for the weights, plus attention's
        12 · layers · dim · seq_len (scores and weighted sum, forward and backward)."""
        return 6 * self.num_params() + 12 * self.cfg.n_layers * self.cfg.dim * seq_len


def document_bounds(position_ids: torch.Tensor) -> torch.Tensor:
    """Segment boundaries in the flattened batch, as the loader's `cu_seqlens`: each row's
    start, each position restart, and the end."""
    B, L = position_ids.shape
    starts = position_ids == 0
    starts[:, 0] = True
    flat = torch.flatten(starts).nonzero().flatten()
    return torch.cat([flat, flat.new_tensor([B * L])]).int()


def document_mask(position_ids: torch.Tensor) -> torch.Tensor | None:
    """Block-diagonal causal mask (B, 1, L, L), True = may attend, where positions restart
    inside a row; None (plain causal attention) where no row holds a second document."""
    restarts = position_ids[:, 1:] == 0
    if not bool(restarts.any()):
        return None
    doc = torch.cumsum(position_ids == 0, dim=1)
    same_doc = doc[:, :, None] == doc[:, None, :]
    L = position_ids.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=position_ids.device).tril()
    return (same_doc & causal)[:, None]


def loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over labels != -100 (labels are already shifted)."""
    return F.cross_entropy(
        logits.float().view(-1, logits.shape[-1]), labels.long().view(-1), reduction="sum"
    )
