"""GPU memory per rank of the 7B ("paper") preset under FSDP2, for the README's table.

    .venv/bin/python -m benchmarks.train_memory [--tokens 256]

Arithmetic from the parameter count, with one input measured: the bytes of activations
autograd keeps per token, counted from the tensors saved by a forward pass of one real
7B block (and of the final norm, output layer and loss) on this CPU, with bf16 weights
as FSDP2 gathers them on CUDA. Per rank, N ranks, P parameters:

    weights + gradients + AdamW states  = (4 + 4 + 8) · P / N      (fp32, sharded)
    gathered weights, unreduced grads   ≈ two blocks' bf16 weights + one block's fp32 gradients
                                          (+ its reduce-scatter buffer) + the root's weights
                                          (embeddings, output: not resharded) and their fp32 grads
    activations of a micro-batch of T tokens:
        without checkpointing           = T · (layers · A + H)
        with checkpointing              = T · (layers · 2 · dim + A + H)   (each block's bf16
                                          input, one block recomputed at a time)

A: bytes saved per token by one block; H: by the head (norm, logits, loss), plus the
logits' gradient when the backward pass starts. Nothing here runs on a GPU: no
allocator slack, CUDA context or NCCL buffers are counted (a 10% margin is left).
"""

from __future__ import annotations

import argparse

import torch

from codemill.train_hooks.model import Block, ModelConfig, RMSNorm, Transformer, loss_sum, rope_angles

GIB = 2**30
GPU = 80e9  # an "80 GB" GPU, in bytes
MARGIN = 0.9  # the share of it to plan for: CUDA context, NCCL buffers, fragmentation
RANKS = (8, 16, 32)
SEQ_LEN = 4096


def saved_bytes(run, exclude: set[int]) -> int:
    """Bytes of the distinct storages autograd saves while `run()` executes, leaving out
    the weights (storages in `exclude`)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in exclude:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(storages.values())


def block_bytes_per_token(cfg: ModelConfig, tokens: int) -> float:
    """A: one block's saved activations per token (bf16, one document per row)."""
    block = Block(cfg, "documents").to(torch.bfloat16)
    weights = {p.untyped_storage().data_ptr() for p in block.parameters()}
    x = torch.randn(1, tokens, cfg.dim, dtype=torch.bfloat16, requires_grad=True)
    cos, sin = rope_angles(torch.arange(tokens)[None], cfg.head_dim, cfg.rope_theta)
    return saved_bytes(lambda: block(x, cos, sin, None), weights) / tokens


def head_bytes_per_token(cfg: ModelConfig, tokens: int) -> float:
    """H: the final norm, the output layer and the loss, saved tensors plus the fp32
    gradient of the logits (and its bf16 copy) that the backward pass starts with."""
    norm = RMSNorm(cfg.dim, cfg.norm_eps).to(torch.bfloat16)
    output = torch.nn.Linear(cfg.dim, cfg.vocab_size, bias=False).to(torch.bfloat16)
    weights = {p.untyped_storage().data_ptr() for p in [*norm.parameters(), *output.parameters()]}
    x = torch.randn(1, tokens, cfg.dim, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, cfg.vocab_size, (1, tokens))
    saved = saved_bytes(lambda: loss_sum(output(norm(x)), labels), weights)
    return saved / tokens + cfg.vocab_size * (4 + 2)


def parameter_counts(cfg: ModelConfig) -> tuple[int, int, int]:
    """(all, one block's, the root's: embeddings, final norm, output)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    total = model.num_params(embeddings=True)
    block = sum(p.numel() for p in model.layers[0].parameters())
    return total, block, total - cfg.n_layers * block


def table(tokens: int) -> str:
    cfg = ModelConfig()
    total, block, root = parameter_counts(cfg)
    a = block_bytes_per_token(cfg, tokens)
    h = head_bytes_per_token(cfg, tokens)
    gathered = 2 * 2 * block + 2 * 4 * block + 2 * root + 4 * root
    batches = (1, 2, 4)
    lines = [
        f"P = {total:,} parameters ({block:,} per block, {root:,} in embeddings, norm and output)",
        f"A = {a:,.0f} bytes per token per block, H = {h:,.0f} bytes per token (measured, bf16)",
        f"gathered weights and unreduced gradients ≈ {gathered / GIB:.1f} GiB",
        f"DDP, for comparison: 16 · P = {16 * total / GIB:.1f} GiB of states per rank",
        "activations per micro-batch, without / with checkpointing: " + ", ".join(
            f"{b} × {SEQ_LEN}: {activations(cfg, b * SEQ_LEN, a, h, False) / GIB:.1f} / "
            f"{activations(cfg, b * SEQ_LEN, a, h, True) / GIB:.1f} GiB" for b in batches),
        "",
        "| ranks | states 16·P/N | " + " | ".join(f"micro-batch {b} × {SEQ_LEN}" for b in batches) + " |",
        "|---|---|" + "---|" * len(batches),
    ]
    for n in RANKS:
        states = 16 * total / n
        cells = []
        for b in batches:
            whole = [states + gathered + activations(cfg, b * SEQ_LEN, a, h, ac) for ac in (False, True)]
            cells.append(" / ".join(f"{w / GIB:.1f}{'' if w <= MARGIN * GPU else ' ✗'}" for w in whole))
        lines.append(f"| {n} | {states / GIB:.1f} | " + " | ".join(cells) + " |")
    lines.append(f"\nGiB per rank, without / with activation checkpointing; ✗: more than {MARGIN:.0%} of an "
                 f"80 GB GPU ({MARGIN * GPU / GIB:.1f} GiB)")
    return "\n".join(lines)


def activations(cfg: ModelConfig, tokens: int, a: float, h: float, checkpointed: bool) -> float:
    """Bytes of activations of a micro-batch of `tokens` tokens (module docstring)."""
    if checkpointed:
        return tokens * (cfg.n_layers * 2 * cfg.dim + a + h)
    return tokens * (cfg.n_layers * a + h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=256, help="tokens in the measured forward pass")
    torch.set_num_threads(1)
    print(table(ap.parse_args().tokens))


if __name__ == "__main__":
    main()
