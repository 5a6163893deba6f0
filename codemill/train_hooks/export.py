"""A training checkpoint as a Hugging Face transformers model directory.

    export_hf(checkpoint, out_dir, tokenizer=None, dtype="float32") -> summary

codemill's decoder (codemill.train_hooks.model) is Llama's architecture, so
`LlamaForCausalLM` holds it with every tensor's values unchanged, only renamed:

* RoPE: codemill rotates each (x[i], x[i + head_dim/2]) pair, which is transformers'
  `rotate_half` layout, with the same inverse frequencies θ^(-2i/head_dim); so the
  query and key projections need no permutation (Meta's original checkpoints rotate
  adjacent pairs, and their conversion permutes).
* RMSNorm in float32 with the checkpoint's eps, the weight applied after casting back;
  SwiGLU as gate (w1), up (w3), down (w2); no biases; untied input and output embeddings.

The directory holds config.json, generation_config.json, model.safetensors and, given
the tokenizer (a `tokenizer.model`, or a shard directory holding one), its
`tokenizer.model` and whichever Hugging Face tokenizer files lie beside it.
It is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import os
import pickle
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from codemill.errors import ConfigError, InputError
from codemill.tokenize.hf_tokenizer import HF_TOKENIZER_FILES
from codemill.tokenize.shard_format import TOKENIZER_FILE
from codemill.train_hooks.checkpoints import LATEST as CHECKPOINT
from codemill.train_hooks.model import ModelConfig

WEIGHTS = "model.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_POSITIONS = 4096  # Llama 2's context, when the checkpoint does not say what it trained on
# codemill's per-layer tensor names -> Llama's
LAYER_NAMES = {
    "attention_norm.weight": "input_layernorm.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
}
MODEL_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by `train` (a checkpoint.pt, or the run directory holding one);
    an InputError naming the file when it is missing, unreadable or not a checkpoint."""
    file = Path(path)
    if file.is_dir():
        file = file / CHECKPOINT
    if not file.is_file():
        raise InputError(f"{file}: no such checkpoint")
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(f"{file}: not a readable checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or not {"model", "model_config"} <= ckpt.keys():
        raise InputError(f"{file}: not a codemill training checkpoint (no model weights and model_config)")
    return ckpt


def llama_state_dict(weights: dict[str, torch.Tensor], n_layers: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """codemill's tensors under `LlamaForCausalLM`'s names; every tensor must be mapped."""
    names = dict(MODEL_NAMES)
    for i in range(n_layers):
        names.update({f"layers.{i}.{ours}": f"model.layers.{i}.{theirs}" for ours, theirs in LAYER_NAMES.items()})
    if unknown := sorted(weights.keys() - names.keys()):
        raise InputError(f"checkpoint tensors with no Llama counterpart: {', '.join(unknown[:5])}")
    if missing := sorted(names.keys() - weights.keys()):
        raise InputError(f"checkpoint lacks tensors of a {n_layers}-layer model: {', '.join(missing[:5])}")
    return {names[k]: v.detach().to(dtype).contiguous() for k, v in weights.items()}


def trained_positions(ckpt: dict[str, Any]) -> int:
    """The longest sequence the checkpoint was trained on (its shards' seq_len)."""
    sources = ckpt.get("loader", {}).get("config", {}).get("sources", {})
    lengths = [s["seq_len"] for s in sources.values() if s.get("seq_len")]
    return max(lengths, default=ckpt.get("config", {}).get("seq_len") or DEFAULT_POSITIONS)


def trained_tokenizer_sha256(ckpt: dict[str, Any]) -> str | None:
    """The sha256 of the tokenizer.model the checkpoint's shards were tokenized with."""
    sources = ckpt.get("loader", {}).get("config", {}).get("sources", {})
    return next((s["tokenizer"] for s in sources.values() if s.get("tokenizer")), None)


def llama_config(cfg: ModelConfig, max_positions: int, bos_id: int, eos_id: int, dtype: str) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=max_positions,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        architectures=["LlamaForCausalLM"],
        dtype=dtype,
    )


def tokenizer_model_path(source: str | os.PathLike) -> Path:
    """`source` if it is a tokenizer model, else the tokenizer.model inside the directory."""
    path = Path(source)
    model = path / TOKENIZER_FILE if path.is_dir() else path
    if not model.is_file():
        raise InputError(f"{model}: no such tokenizer model (give a tokenizer.model or a shard directory)")
    return model


def copy_tokenizer(model: Path, dest: Path) -> list[str]:
    """tokenizer.model and the Hugging Face tokenizer files beside it, into `dest`."""
    shutil.copyfile(model, dest / TOKENIZER_FILE)
    copied = [TOKENIZER_FILE]
    for name in HF_TOKENIZER_FILES:
        if (model.parent / name).is_file():
            shutil.copyfile(model.parent / name, dest / name)
            copied.append(name)
    return copied


def _special_ids(model: Path, expected_sha256: str | None) -> tuple[int, int]:
    """(BOS, EOS) of the tokenizer, which must be the one the checkpoint trained with."""
    from codemill.tokenize.tokenizer import TokenizerError, load_tokenizer

    try:
        tok = load_tokenizer(model)
    except TokenizerError as exc:
        raise InputError(str(exc)) from None
    if expected_sha256 and tok.sha256 != expected_sha256:
        raise InputError(f"{model}: not the tokenizer the checkpoint was trained with "
                         f"(sha256 {tok.sha256[:12]}, the shards had {expected_sha256[:12]})")
    return tok.bos_id, tok.eos_id


def _empty_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not empty: remove it or export to another directory")


def export_hf(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    tokenizer: str | os.PathLike | None = None,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Write the checkpoint as a transformers model directory; returns what was written."""
    from safetensors.torch import save_file

    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r}: use one of {sorted(DTYPES)}")
    out = Path(out_dir)
    _empty_target(out)
    ckpt = read_checkpoint(checkpoint)
    cfg = ModelConfig(**ckpt["model_config"])
    tok_model = tokenizer_model_path(tokenizer) if tokenizer is not None else None
    bos, eos = _special_ids(tok_model, trained_tokenizer_sha256(ckpt)) if tok_model else (1, 2)
    config = llama_config(cfg, trained_positions(ckpt), bos, eos, dtype)
    weights = llama_state_dict(ckpt["model"], cfg.n_layers, DTYPES[dtype])
    del ckpt  # its optimizer state is twice the weights' size

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        config.save_pretrained(tmp)
        _generation_config(config).save_pretrained(tmp)
        save_file(weights, tmp / WEIGHTS, metadata={"format": "pt"})
        shutil.copymode(tmp / "config.json", tmp / WEIGHTS)  # safetensors writes it owner-only
        files = copy_tokenizer(tok_model, tmp) if tok_model else []
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "out": str(out),
        "architecture": "LlamaForCausalLM",
        "parameters": sum(w.numel() for w in weights.values()),
        "dtype": dtype,
        "max_position_embeddings": config.max_position_embeddings,
        "tokenizer_files": files,
    }


def _generation_config(config: Any) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id)
