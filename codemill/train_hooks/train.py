"""The training loop: pretraining, long-context fine-tuning and instruction tuning.

    train(cfg, shard_dirs, out_dir, resume) -> summary

Code Llama's recipe by default (docs/architecture.md, Code Llama's recipe): AdamW (β 0.9, 0.95, weight decay
0.1), cosine schedule with 1,000 warm-up steps down to peak/30, gradient clipping at
1.0, 4M-token batches of 4,096-token sequences; bf16 autocast on CUDA. `tiny_config`
trains on a CPU in minutes; `lcft_config` is long-context fine-tuning: start from a
checkpoint's weights, raise RoPE θ to 1e6 and train on 16,384-token shards with
positions running across the whole sequence.

The loss of a step is the mean over every label token of the global batch, whatever
way the batch is split into micro-batches and ranks: each micro-batch's summed loss
is divided by the global count of label tokens. So a run resumed on another number of
GPUs continues the same computation.

Multi-GPU: `torchrun --nproc_per_node N -m codemill.train_hooks.train --config C DIR… --out OUT`
(NCCL on GPUs, gloo on CPUs; one rank per machine verifies the shards, the others wait).
FSDP2 by default: every block's weights, gradients and AdamW states are sharded over the
ranks and gathered per block when used (bf16 gathers and fp32 gradient reductions on
CUDA); `parallel = "ddp"` keeps a whole copy per rank. Checkpoints
(codemill.train_hooks.checkpoints) hold the full model and optimizer state, gathered to
rank 0 (the same file whatever the world size or sharding, so a run resumes on any
number of ranks and export reads it), scheduler, loader state and RNG states; a resumed
run's losses equal an uninterrupted run's.

Held-out loss: with `eval_every`, `eval_rows` rows of every shard directory are set
aside (codemill.train_hooks.dataset, RowSplit) and their mean loss, over every rank's
share, is logged beside the training loss every `eval_every` steps.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from codemill.config.loader import Section, invalid, load, parse_override, read_toml, setting
from codemill.errors import ConfigError
from codemill.storage.local import atomic_path
from codemill.storage.uri import is_local
from codemill.train_hooks.checkpoints import Checkpoints
from codemill.train_hooks.dataset import HELD_OUT_RUN, IGNORE, HeldOutError, ShardDataset, ShardLoader
from codemill.train_hooks.model import AttentionKind, ModelConfig, Transformer, loss_sum
from codemill.train_hooks.shards import ShardMismatch, ShardReader, source_name

METRICS = "metrics.jsonl"
VERIFIED = "verified-shards.json"  # digests of the shard files checked (see _verify)
LOSS_CURVE = "loss.png"
# Dense bf16 peak FLOP/s by device name, for MFU (spec sheets, without sparsity).
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12}
# Config fields a resumed run may change without changing the computation.
RESUMABLE_CHANGES = {
    "steps_per_run",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "num_workers",
    "micro_batch_size",
    "cache_dir",
    "verify_shards",
    "eval_every",  # which rows are held out is checked on its own (_check_resumable)
    "eval_rows",
    "parallel",
    "attention",
    "activation_checkpointing",
    "compile",
}


@dataclass
class TrainConfig(Section):
    """One training run. Defaults: Code Llama 7B's code training (paper §2.2, §3)."""

    model: ModelConfig = setting(ModelConfig)
    seq_len: int = setting(4096, ge=0)  # must equal the shards'; 0: whatever the shards have
    # Mixing weight per shard directory (by directory name); empty: each one's size.
    weights: dict[str, float] = setting(dict)
    seed: int = setting(0, ge=0)
    long_context: bool = False  # positions run across documents (LCFT)
    answers_only: bool = False  # instruction tuning: loss on answer tokens only
    lr: float = setting(3e-4, gt=0.0)
    final_lr_ratio: float = setting(1 / 30, ge=0.0, le=1.0)
    warmup_steps: int = setting(1000, ge=0)
    steps: int = setting(119_209, ge=1)  # 500B tokens in 4M-token batches
    beta1: float = setting(0.9, ge=0.0, lt=1.0)
    beta2: float = setting(0.95, ge=0.0, lt=1.0)
    weight_decay: float = setting(0.1, ge=0.0)
    grad_clip: float = setting(1.0, ge=0.0)  # 0: no clipping
    global_batch_size: int = setting(1024, ge=1)  # sequences per step: 4M tokens at 4,096
    micro_batch_size: int = setting(4, ge=1)  # sequences per forward pass on one device
    num_workers: int = setting(1, ge=0)
    init_from: str = setting("", path=True)  # a checkpoint whose weights start this run (LCFT)
    log_every: int = setting(10, ge=1)
    checkpoint_every: int = setting(1000, ge=1)
    # the newest checkpoints kept in OUT (checkpoint-<step>.pt): the previous one is there to
    # resume from should the newest be unreadable
    keep_checkpoints: int = setting(2, ge=1, le=1000)
    steps_per_run: int = setting(0, ge=0)  # stop (with a checkpoint) after this many; 0: all
    device: str = setting("auto", nonempty=True)  # auto: this rank's GPU if any, else cpu
    # local copies of s3://, gs://, hdfs:// shard directories; "": $CODEMILL_CACHE or ~/.cache/codemill/shards
    cache_dir: str = setting("", path=True)
    # check every shard file against its manifest's sha256 before training (a file unchanged
    # since the last check, by size and modification time, is not hashed again)
    verify_shards: bool = True
    # the loss on a held-out slice every this many steps and at the last; 0: none, nothing held out
    eval_every: int = setting(0, ge=0)
    # rows of each shard directory held out while eval_every > 0, in runs of 32 (never trained on)
    eval_rows: int = setting(1024, ge=HELD_OUT_RUN)
    # several ranks: "fsdp" shards weights, gradients and optimizer states (FSDP2); "ddp" copies them
    parallel: Literal["fsdp", "ddp"] = "fsdp"
    # packed documents kept apart by one SDPA call per document, or by a dense mask (model.py)
    attention: AttentionKind = "documents"
    activation_checkpointing: bool = False  # recompute each block in the backward pass: less memory
    compile: bool = False  # torch.compile each block

    def check(self) -> None:
        if self.eval_rows % HELD_OUT_RUN:
            raise invalid("eval_rows", f"{self.eval_rows} is not a multiple of {HELD_OUT_RUN} "
                                       f"(rows are held out in runs of {HELD_OUT_RUN} consecutive rows)")
        for name, weight in self.weights.items():
            if not weight > 0:
                raise invalid(("weights", name), f"weight {weight} must be positive")
        if not is_local(self.cache_dir):
            raise invalid("cache_dir", f"{self.cache_dir} is not local: the cache is what memory maps read")


def tiny_config() -> TrainConfig:
    """A model of ~0.1M weights besides its embeddings: learns something on a CPU in minutes."""
    return TrainConfig(
        model=ModelConfig(vocab_size=0, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=176),
        seq_len=0,
        lr=3e-3,
        warmup_steps=20,
        steps=300,
        global_batch_size=16,
        micro_batch_size=8,
        num_workers=0,
        log_every=20,
        checkpoint_every=100,
        eval_rows=64,
    )


def lcft_config(init_from: str, base: TrainConfig | None = None) -> TrainConfig:
    """Code Llama's long-context fine-tuning (paper §2.4) from `init_from`'s weights:
    θ 1e6, 16,384-token sequences, lr 2e-5, 2M-token batches, 10,000 steps."""
    base = base or TrainConfig()
    model = dataclasses.replace(base.model, rope_theta=1e6)
    return dataclasses.replace(
        base,
        model=model,
        init_from=init_from,
        seq_len=16384,
        long_context=True,
        lr=2e-5,
        global_batch_size=128,
        steps=10_000,
    )


PRESETS = {"paper": TrainConfig, "tiny": tiny_config, "lcft": lambda: lcft_config("")}


def load_train_config(
    path: str | os.PathLike | None = None, overrides: Sequence[str] = ()
) -> TrainConfig:
    """A TOML file over a preset (`preset = "paper" | "tiny" | "lcft"`, default paper),
    then `key=value` overrides; unknown keys, wrong types and bad values are errors."""
    origin = str(path) if path is not None else "the defaults"
    data = read_toml(path) if path is not None else {}
    preset, source = data.pop("preset", "paper"), f"in {origin}"
    settings = []
    for text in overrides:
        update = parse_override(text)
        if "preset" in update:
            preset, source = update.pop("preset"), f"from --set {text}"
        if update:
            settings.append(text)
    if preset not in PRESETS:
        raise ConfigError(f"preset: {preset!r} is not one of {sorted(PRESETS)} ({source})")
    return load(TrainConfig, data, origin, settings, defaults=dataclasses.asdict(PRESETS[preset]()))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to final_lr_ratio at `steps`."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    floor = cfg.final_lr_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # this call initialised the process group

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_kind: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return _Dist(
        dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), owned
    )


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, cuda: bool) -> torch.optim.AdamW:
    # Weight decay on matrices (and embeddings), not on norm gains.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=cuda)


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    now = dataclasses.asdict(cfg)
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if _held_out_rows(saved) != _held_out_rows(now):
        changed.append("held-out rows (eval_every, eval_rows)")
    if changed:
        raise ConfigError(
            f"cannot resume: the checkpoint was trained with other {', '.join(changed)} "
            "(start a new output directory, or use init_from to start from its weights)"
        )


def _held_out_rows(cfg: dict[str, Any]) -> int:
    """Rows of each shard directory the training stream leaves out (see TrainConfig)."""
    return cfg.get("eval_rows", 0) if cfg.get("eval_every") else 0


def train(
    cfg: TrainConfig,
    shard_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    resume: bool | Literal["auto"] = False,
) -> dict[str, Any]:
    """Train; returns a summary (losses of this run, throughput, paths written).
    `resume`: True continues from OUT's newest checkpoint and fails without one; "auto"
    continues from it when there is one, else starts at step 0. A run that does not
    resume replaces OUT's checkpoints with its own."""
    out = Path(out_dir)
    name = cfg.device if cfg.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    env = _init_distributed(name.split(":")[0])
    device = torch.device(f"cuda:{env.local_rank}" if name == "cuda" else name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        return _train(cfg, shard_dirs, out, resume, env, device)
    finally:
        if env.owned:
            dist.destroy_process_group()


def _verify(shard_dirs: Sequence[str | os.PathLike], cache_dir: Path | None, out: Path, env: _Dist) -> None:
    """Every shard file against its manifest, before any training, by the first rank of
    each machine (each may read its own copy) while the others wait for the verdicts; the
    digests of files already checked are kept in OUT/verified-shards.json."""
    problem = _verify_here(shard_dirs, cache_dir, out) if env.local_rank == 0 else None
    if env.world > 1:
        verdicts: list[str | None] = [None] * env.world
        dist.all_gather_object(verdicts, problem)
        problem = next((v for v in verdicts if v), None)
    if problem:
        raise ConfigError(f"{problem} (to train on them anyway: --no-verify)")


def _verify_here(shard_dirs: Sequence[str | os.PathLike], cache_dir: Path | None, out: Path) -> str | None:
    """What is wrong with the shards (None: nothing)."""
    record = out / VERIFIED
    digests = json.loads(record.read_text()) if record.exists() else {}
    try:
        for shard_dir in shard_dirs:
            ShardReader(shard_dir, verify=True, cache_dir=cache_dir, digests=digests)
    except ShardMismatch as exc:
        return str(exc)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps(digests, indent=1, sort_keys=True))
    return None


def _dataset(cfg: TrainConfig, shard_dirs: Sequence[str | os.PathLike], env: _Dist) -> ShardDataset:
    names = [source_name(d) for d in shard_dirs]
    if unknown := set(cfg.weights) - set(names):
        raise ConfigError(f"weights for unknown shard directories {sorted(unknown)}; have {names}")
    if cfg.weights and (missing := set(names) - set(cfg.weights)):
        raise ConfigError(f"no mixing weight for shard directories {sorted(missing)}")
    weights = [cfg.weights[n] for n in names] if cfg.weights else None
    try:
        data = ShardDataset(
            shard_dirs,
            weights,
            micro_batch_size=cfg.micro_batch_size,
            seed=cfg.seed,
            long_context=cfg.long_context,
            answers_only=cfg.answers_only,
            held_out_rows=_held_out_rows(dataclasses.asdict(cfg)),
            rank=env.rank,
            world_size=env.world,
            cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else None,
        )
    except HeldOutError as exc:
        raise ConfigError(f"eval_rows: {exc}") from None
    if cfg.seq_len and cfg.seq_len != data.seq_len:
        raise ConfigError(f"seq_len is {cfg.seq_len} but the shards hold {data.seq_len}-token rows")
    return data


def _step(trained, ddp, micro: list[dict[str, Any]], device, autocast, world: int):
    """Forward and backward over one global batch's micro-batches of this rank; returns
    (summed loss, label tokens), both over the whole global batch."""
    n_label = torch.tensor(
        float(sum(int((m["labels"] != IGNORE).sum()) for m in micro)), device=device
    )
    if world > 1:
        dist.all_reduce(n_label)
    # DDP and FSDP average gradients over ranks; scale back to a sum over the global batch.
    # (FSDP reduces every micro-batch's gradients into its shards: no unsharded copy kept.)
    scale = world / n_label.clamp(min=1)
    total = torch.zeros((), device=device)
    for i, mb in enumerate(micro):
        sync = ddp is None or i == len(micro) - 1
        with contextlib.nullcontext() if sync else ddp.no_sync(), autocast:
            logits = trained(
                mb["input_ids"].to(device, non_blocking=True),
                mb["position_ids"].to(device, non_blocking=True),
                mb["cu_seqlens"],
            )
            loss = loss_sum(logits, mb["labels"].to(device, non_blocking=True))
        (loss * scale).backward()
        total += loss.detach()
    if world > 1:
        dist.all_reduce(total)
    return total, n_label


def _train(
    cfg, shard_dirs, out: Path, resume: bool, env: _Dist, device: torch.device
) -> dict[str, Any]:
    cuda = device.type == "cuda"
    per_round = cfg.micro_batch_size * env.world
    if cfg.global_batch_size % per_round:
        raise ConfigError(
            f"global_batch_size {cfg.global_batch_size} is not a multiple of micro_batch_size "
            f"{cfg.micro_batch_size} × world size {env.world}"
        )
    accum = cfg.global_batch_size // per_round
    if cfg.compile:
        _check_compiles(device)
    if cfg.verify_shards:
        _verify(shard_dirs, Path(cfg.cache_dir) if cfg.cache_dir else None, out, env)
    data = _dataset(cfg, shard_dirs, env)
    checkpoints = Checkpoints(out, cfg.keep_checkpoints, resumed=bool(resume))
    if resume is True and checkpoints.newest() is None:
        raise ConfigError(f"--resume: there is no checkpoint in {out} (checkpoint-<step>.pt; to start at "
                          "step 0 when there is none, use --resume=auto)")
    ckpt = checkpoints.load_newest() if resume and checkpoints.newest() else None
    model_cfg = dataclasses.replace(cfg.model, vocab_size=cfg.model.vocab_size or data.vocab_size)
    init = None
    if ckpt is not None:
        _check_resumable(ckpt["config"], cfg)
        if not all(isinstance(name, str) for group in ckpt["optimizer"]["param_groups"] for name in group["params"]):
            raise ConfigError(f"{checkpoints.newest()}: its optimizer state is by parameter index, as written before "
                              "FSDP came in; it cannot resume (init_from starts a new run from its weights)")
        model_cfg = ModelConfig(**ckpt["model_config"])
    elif cfg.init_from:
        # Long-context fine-tuning: the architecture and weights of the checkpoint, the
        # new RoPE base. No weight depends on θ or on the sequence length.
        init = torch.load(cfg.init_from, map_location="cpu", weights_only=True)
        model_cfg = ModelConfig(**{**init["model_config"], "rope_theta": cfg.model.rope_theta})
    if model_cfg.vocab_size < data.vocab_size:
        raise ConfigError(
            f"model vocab_size {model_cfg.vocab_size} < the tokenizer's {data.vocab_size}"
        )

    torch.manual_seed(cfg.seed)
    model = Transformer(model_cfg, cfg.attention).to(device)
    if init is not None:
        model.load_state_dict(init["model"])
    ddp = _distribute(model, cfg, env, device)
    trained = ddp or model
    optimizer = _optimizer(model, cfg, cuda)  # over the sharded parameters, under FSDP
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    step, tokens_seen = 0, 0
    if ckpt is not None:
        set_state_dict(model, optimizer, model_state_dict=ckpt["model"], optim_state_dict=ckpt["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
        scheduler.load_state_dict(ckpt["scheduler"])
        data.load_state_dict(ckpt["loader"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if cuda and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        step, tokens_seen = ckpt["step"], ckpt["tokens"]
    del ckpt, init

    loader = iter(ShardLoader(data, num_workers=cfg.num_workers))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    tokens_per_step = cfg.global_batch_size * data.seq_len
    flops_per_token = model.flops_per_token(data.seq_len)
    peak = _peak_flops(device) if cuda else None
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / METRICS
    if env.main:
        _truncate_metrics(metrics_path, step)
        print(
            f"model: {model.num_params(embeddings=True) / 1e6:.2f}M parameters, {model_cfg}; "
            f"{env.world} rank(s){f' ({cfg.parallel})' if env.world > 1 else ''} × {accum} micro-batch(es) of "
            f"{cfg.micro_batch_size} × {data.seq_len}; "
            f"starting at step {step} of {cfg.steps} on {device}",
            flush=True,
        )

    last = cfg.steps if not cfg.steps_per_run else min(cfg.steps, step + cfg.steps_per_run)
    losses: list[float] = []
    evals: list[tuple[int, float]] = []
    timer, timed_tokens = time.perf_counter(), 0
    metrics = open(metrics_path, "a") if env.main else None
    try:
        while step < last:
            micro = [next(loader) for _ in range(accum)]
            total, n_label = _step(trained, ddp, micro, device, autocast, env.world)
            # max_norm inf measures the norm without clipping
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            if isinstance(grad_norm, DTensor):  # FSDP: the norm over every rank's shard
                grad_norm = grad_norm.full_tensor()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            tokens_seen += tokens_per_step
            timed_tokens += tokens_per_step
            loss_value = float(total / n_label.clamp(min=1))
            losses.append(loss_value)
            record = {
                "step": step,
                "loss": loss_value,
                "lr": lr,
                "grad_norm": float(grad_norm),
                "tokens": tokens_seen,
            }
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                began = time.perf_counter()
                record.update(_evaluate(model, data, device, autocast, env))
                evals.append((step, record["eval_loss"]))
                timer += time.perf_counter() - began  # throughput counts training time only
                if env.main:
                    print(f"step {step:>6}  held-out loss {record['eval_loss']:.4f}", flush=True)
            if step % cfg.log_every == 0 or step == last:
                seconds = time.perf_counter() - timer
                record["tokens_per_s"] = timed_tokens / seconds
                if peak:
                    record["mfu"] = flops_per_token * record["tokens_per_s"] / (peak * env.world)
                record["shares"] = data.shares()
                timer, timed_tokens = time.perf_counter(), 0
                if env.main:
                    print(_log_line(record), flush=True)
            if metrics:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            if step % cfg.checkpoint_every == 0 or step == last:
                _save_checkpoint(
                    checkpoints, env, model, optimizer, scheduler, data, cfg, model_cfg, step, tokens_seen
                )
    finally:
        if metrics:
            metrics.close()

    curve = _plot_loss(metrics_path, out / LOSS_CURVE) if env.main else None
    history = _read_metrics(metrics_path) if env.main else []
    rates = [
        r["tokens_per_s"] for r in history if "tokens_per_s" in r and r["step"] > step - len(losses)
    ]
    mfus = [r["mfu"] for r in history if "mfu" in r and r["step"] > step - len(losses)]
    return {
        "steps": step,
        "losses": losses,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "eval_losses": evals,
        "tokens": tokens_seen,
        "tokens_per_s": sum(rates) / len(rates) if rates else None,
        "mfu": sum(mfus) / len(mfus) if mfus else None,
        "parameters": model.num_params(embeddings=True),
        "model": dataclasses.asdict(model_cfg),
        "shares": data.shares(),
        "checkpoint": str(checkpoints.newest()) if checkpoints.newest() else None,
        "metrics": str(metrics_path),
        "loss_curve": str(curve) if curve else None,
    }


def _check_compiles(device: torch.device) -> None:
    """torch.compile fails only when a compiled function first runs (on a CPU without a C++
    compiler, say): try a small one now, so that the run stops before training with why."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(4, device=device))
    except Exception as exc:  # whatever the backend raised: the message says what and where
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"compile: torch.compile does not work on {device} here ({type(exc).__name__}: "
                          f"{first}); set compile = false") from None


def _distribute(model: Transformer, cfg: TrainConfig, env: _Dist, device: torch.device
                ) -> DistributedDataParallel | None:
    """Activation checkpointing and compilation per block, then the model spread over the
    ranks: FSDP2 in place, or DDP (returned: the loop calls the wrapper and uses its
    no_sync). Compiling before sharding, as FSDP2 expects."""
    model.checkpoint_layers = cfg.activation_checkpointing
    if cfg.compile:
        for layer in model.layers:
            layer.compile()
    if env.world == 1:
        return None
    if cfg.parallel == "ddp":
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    _shard(model, device)
    return None


def _shard(model: Transformer, device: torch.device) -> None:
    """FSDP2: each block a unit whose weights are gathered just before it runs and freed
    after; the embeddings, final norm and output belong to the root unit. On CUDA the
    gathered weights are bf16 and gradients are reduced in fp32; the sharded weights the
    optimizer updates stay fp32."""
    policy = MixedPrecisionPolicy()
    if device.type == "cuda":
        # cast_forward_inputs off: the RoPE angles stay fp32 (bf16 would round the angles of
        # late positions)
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                      cast_forward_inputs=False)
    for layer in model.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def _evaluate(model: Transformer, data: ShardDataset, device: torch.device, autocast, env: _Dist
              ) -> dict[str, Any]:
    """The mean loss over every label token of the held-out slice (every rank's share
    summed), and per shard directory when there are several."""
    sums = torch.zeros(2, len(data.names), dtype=torch.float64, device=device)  # loss, tokens
    with torch.no_grad():
        for batch in data.held_out_batches():
            labels = batch["labels"].to(device).long()
            with autocast:
                logits = model(batch["input_ids"].to(device), batch["position_ids"].to(device),
                               batch["cu_seqlens"])
            losses = F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")
            source = batch["source"].to(device)
            sums[0].index_add_(0, source, losses.sum(1).double())
            sums[1].index_add_(0, source, (labels != IGNORE).sum(1).double())
    if env.world > 1:
        dist.all_reduce(sums)
    loss, tokens = sums.cpu().tolist()
    record: dict[str, Any] = {"eval_loss": sum(loss) / max(1.0, sum(tokens))}
    if len(data.names) > 1:
        record["eval_losses"] = {n: x / max(1.0, t) for n, x, t in zip(data.names, loss, tokens)}
    return record


def _log_line(r: dict[str, Any]) -> str:
    line = (
        f"step {r['step']:>6}  loss {r['loss']:.4f}  lr {r['lr']:.2e}  |g| {r['grad_norm']:.2f}  "
        f"{r['tokens_per_s']:,.0f} tokens/s"
    )
    if "mfu" in r:
        line += f"  MFU {r['mfu']:.1%}"
    if len(r["shares"]) > 1:
        line += "  mix " + " ".join(f"{k} {v:.1%}" for k, v in r["shares"].items())
    return line


def _peak_flops(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16.items() if key in name), None)


def _save_checkpoint(
    checkpoints, env, model, optimizer, scheduler, data, cfg, model_cfg, step, tokens
) -> None:
    loader_state = data.state_dict()
    if loader_state["samples"] != step * cfg.global_batch_size:
        raise RuntimeError(
            f"loader at sample {loader_state['samples']}, step {step} expects "
            f"{step * cfg.global_batch_size}"
        )
    # every rank takes part (FSDP gathers the shards); rank 0 ends with the whole state, on
    # the CPU, keyed by parameter name, whatever the sharding
    weights, optimizer_state = get_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if env.main:
        state = {
            "model": weights,
            "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict(),
            "loader": loader_state,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            },
            "step": step,
            "tokens": tokens,
            "config": dataclasses.asdict(cfg),
            "model_config": dataclasses.asdict(model_cfg),
        }
        checkpoints.save(state, step)
    if env.world > 1:
        dist.barrier()


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records past the checkpoint we resume from (a run that died after it)."""
    kept = [r for r in _read_metrics(path) if r["step"] <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def _plot_loss(metrics: Path, png: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = _read_metrics(metrics)
    if not history:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in history], [r["loss"] for r in history], lw=1, label="training")
    held_out = [r for r in history if "eval_loss" in r]
    if held_out:
        ax.plot([r["step"] for r in held_out], [r["eval_loss"] for r in held_out], "o-", ms=3, lw=1,
                label="held-out")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"loss, {history[-1]['tokens']:,} tokens")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m codemill.train_hooks.train` (e.g. under torchrun)."""
    from codemill.cli import add_train_flags, train_overrides

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", help="TrainConfig TOML (default: the paper's recipe)")
    ap.add_argument("shards", nargs="+", help="shard directories: paths or s3://, gs://, hdfs:// URIs")
    ap.add_argument(
        "--out", required=True, help="output directory (checkpoint, metrics, loss curve)"
    )
    add_train_flags(ap)
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value"
    )
    args = ap.parse_args(argv)
    summary = train(load_train_config(args.config, train_overrides(args)), args.shards, args.out, args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
