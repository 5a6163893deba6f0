"""Shard loader throughput against its peers, and CPU training-step throughput
(docs/architecture.md, performance targets).

    .venv/bin/python -m benchmarks.loader_throughput [--seconds 1.5] [--repeat 3]
        [--no-peers | --peers-python PATH]

The same rows (stdlib code tokenized, FIM'd and packed into two shard directories of
4,096-token rows), batches of 8 × 4,096 tokens, shuffled, read by:
  (a) a raw numpy memmap: 8 random rows of one flat token array (the ceiling);
  (b) codemill's ShardLoader: two sources mixed 70/30, document positions, labels,
      cu_seqlens — every feature on;
  (c) Hugging Face `datasets`: Dataset.from_file on the same shard files, a torch
      DataLoader with shuffling and default collation of input_ids (it builds no
      labels or positions: HF models shift labels inside the model);
  (d) MosaicML `streaming`: the rows written as MDS, StreamingDataset with shuffling
      and a torch DataLoader. It runs in its own side virtualenv (bench-out/venv-streaming,
      created here when missing; never a project dependency; not .venv-peers, since
      streaming needs transformers 4, which refuses the huggingface_hub >= 1.6 that
      datatrove needs there) with a stand-in `torchvision`, whose PyPI build does not
      load beside the CPU torch and which streaming only imports.
Each with 0 and 1 DataLoader workers, best of --repeat timed windows of --seconds
after a warm-up, interleaved, since other processes share the machine. Targets:
(b) >= 200M tokens/s with 0 workers and >= 2x (c) with 1 worker.
Last, the training loop's tokens/s on this CPU for a small model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import cpu_model
from codemill.tokenize.config import FimConfig, PackConfig
from codemill.tokenize.pack import PackStats, pack_documents
from codemill.tokenize.shards import ShardWriter, write_manifest
from codemill.tokenize.tokenizer import train_tokenizer
from codemill.train_hooks.dataset import ShardDataset, ShardLoader
from codemill.train_hooks.model import ModelConfig
from codemill.train_hooks.shards import open_shard_dirs, to_hf_dataset
from codemill.train_hooks.train import tiny_config, train

SEQ_LEN, BATCH = 4096, 8
WEIGHTS = [0.7, 0.3]
PEERS = Path(__file__).resolve().parent.parent / "bench-out" / "venv-streaming"
STREAMING = "mosaicml-streaming==0.13.0"
# What `import streaming` needs (its full requirement list pulls cloud SDKs, and
# torchvision, which pulls a CUDA torch).
STREAMING_DEPS = [
    "numpy<2.2",
    "xxhash<4",
    "zstd<2",
    "python-snappy<1",
    "brotli",
    "tqdm",
    "catalogue<3",
    "transformers<5",
    "pillow",
]
# Stand-in `torchvision`: the names streaming imports; its loader never uses them.
STANDIN_TORCHVISION = {
    "torchvision/__init__.py": "",
    "torchvision/datasets/__init__.py": "class VisionDataset: ...\n\n\nclass CIFAR10: ...\n",
    "torchvision/transforms/__init__.py": "",
    "torchvision/transforms/functional.py": "def to_tensor(x): ...\n",
}


def build_shards(root: Path) -> list[Path]:
    """Two shard directories from this interpreter's stdlib (about 9M tokens)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    ids = [str(p.relative_to(stdlib)) for p in files]
    tok = train_tokenizer(texts[:300], root / "tokenizer", vocab_size=8000, num_threads=2)
    half = len(texts) // 2
    dirs = []
    for name, part in (("code", slice(0, half)), ("more", slice(half, None))):
        stats, pack = PackStats(), PackConfig(seq_len=SEQ_LEN)
        batches = [
            (texts[part][i : i + 256], ids[part][i : i + 256])
            for i in range(0, len(texts[part]), 256)
        ]
        with ShardWriter(root / name, SEQ_LEN) as writer:
            for rows in pack_documents(batches, tok, FimConfig(), pack, 0, stats, num_threads=2):
                writer.write(rows)
        write_manifest(
            root / name,
            tokenizer=tok,
            pack=pack,
            fim=FimConfig(),
            seed=0,
            shards=writer.shards,
            stats=stats,
        )
        dirs.append(root / name)
    return dirs


def flat_tokens(dirs: list[Path], path: Path) -> Path:
    """All rows as one (rows, 4096) int32 .npy: the memmap ceiling's input, and MDS's."""
    chunks = [c.tokens for r in open_shard_dirs(dirs) for c in r.chunks()[0]]
    np.save(path, np.concatenate(chunks))
    return path


def memmap_batches(npy: Path) -> Iterator[np.ndarray]:
    rows = np.load(npy, mmap_mode="r")
    rng = np.random.default_rng(0)
    while True:
        yield rows[rng.integers(0, len(rows), BATCH)]


def codemill_batches(dirs: list[Path], workers: int) -> Iterator[dict]:
    ds = ShardDataset(dirs, WEIGHTS, micro_batch_size=BATCH)
    return iter(ShardLoader(ds, num_workers=workers))


def hf_batches(dirs: list[Path], workers: int) -> Iterator[dict]:
    from torch.utils.data import DataLoader, RandomSampler

    ds = to_hf_dataset(dirs).with_format("torch", columns=["input_ids"])
    # Many epochs of shuffled order, without an epoch restart inside a timed window.
    sampler = RandomSampler(ds, num_samples=10**8)
    return iter(DataLoader(ds, batch_size=BATCH, sampler=sampler, num_workers=workers))


def tokens_per_s(batches: Iterator, seconds: float, warmup: int = 20) -> tuple[float, float]:
    """Tokens per second of wall time, and per CPU second of this (the trainer's) process."""
    for _ in range(warmup):
        next(batches)
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds or n < 20:
        next(batches)
        n += 1
    tokens = n * BATCH * SEQ_LEN
    return tokens / elapsed, tokens / max(time.process_time() - cpu, 1e-9)


def best_of(
    contenders: dict[str, Callable[[], Iterator]], seconds: float, repeat: int
) -> dict[str, tuple[float, float]]:
    best = dict.fromkeys(contenders, (0.0, 0.0))
    for _ in range(repeat):
        for name, make in contenders.items():
            wall, cpu = tokens_per_s(make(), seconds)
            best[name] = (max(best[name][0], wall), max(best[name][1], cpu))
    return best


# --- MosaicML streaming, in the side virtualenv ----------------------------------------------

STREAMING_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from streaming import MDSWriter, StreamingDataset
    from torch.utils.data import DataLoader

    npy, mds, seconds, repeat = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    BATCH, SEQ = 8, 4096
    rows = np.load(npy, mmap_mode="r")
    with MDSWriter(out=mds, columns={"input_ids": "ndarray:int32"}, size_limit=1 << 26) as w:
        for row in rows:
            w.write({"input_ids": np.asarray(row)})

    def rate(workers):
        ds = StreamingDataset(local=mds, shuffle=True, batch_size=BATCH, epoch_size=200_000)
        it = iter(DataLoader(ds, batch_size=BATCH, num_workers=workers))
        for _ in range(20):
            next(it)
        n, start, cpu = 0, time.perf_counter(), time.process_time()
        while (elapsed := time.perf_counter() - start) < seconds or n < 20:
            next(it)
            n += 1
        return n * BATCH * SEQ / elapsed, n * BATCH * SEQ / (time.process_time() - cpu)

    best = {0: (0.0, 0.0), 1: (0.0, 0.0)}
    for _ in range(repeat):
        for workers in best:
            wall, cpu = rate(workers)
            best[workers] = (max(best[workers][0], wall), max(best[workers][1], cpu))
    print(json.dumps(best))
    """
)


def _pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def ensure_peers(standin: Path, python: Path | None = None) -> Path:
    """A python that imports streaming: the one given, else the side virtualenv's,
    created when missing (raises when it cannot)."""
    if python is not None:
        return python
    python = PEERS / "bin" / "python"
    check = [str(python), "-c", "import streaming"]
    env = {**os.environ, "PYTHONPATH": str(standin)}
    if python.exists() and subprocess.run(check, env=env, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
    # The CPU torch first, pinned to this build, so nothing can pull a CUDA one.
    _pip(python, f"torch=={torch.__version__}")
    _pip(python, "--no-deps", STREAMING)
    _pip(python, *STREAMING_DEPS)
    subprocess.run(check, env=env, check=True, capture_output=True, text=True)
    return python


def streaming_rates(
    npy: Path, tmp: Path, seconds: float, repeat: int, python: Path | None = None
) -> dict[int, tuple[float, float]] | str:
    """(wall, trainer CPU) tokens/s with 0 and 1 workers, or why streaming was not measured."""
    standin = tmp / "standin"
    for rel, text in STANDIN_TORCHVISION.items():
        (standin / rel).parent.mkdir(parents=True, exist_ok=True)
        (standin / rel).write_text(text)
    try:
        python = ensure_peers(standin, python)
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        return f"could not install {STREAMING} in {PEERS}: {detail.strip().splitlines()[-1]}"
    script = tmp / "streaming_bench.py"
    script.write_text(STREAMING_SCRIPT)
    run = subprocess.run(
        [str(python), str(script), str(npy), str(tmp / "mds"), str(seconds), str(repeat)],
        env={**os.environ, "PYTHONPATH": str(standin)},
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        return f"streaming failed: {run.stderr.strip().splitlines()[-1]}"
    return {int(k): tuple(v) for k, v in json.loads(run.stdout.strip().splitlines()[-1]).items()}


# --- the training loop on this CPU ------------------------------------------------------------


def training_rate(dirs: list[Path], out: Path) -> tuple[float, int, float]:
    """(tokens/s, parameters, model FLOP/s) of the loop after its first step."""
    model = ModelConfig(vocab_size=0, dim=256, n_layers=4, n_heads=8, n_kv_heads=4, ffn_dim=688)
    cfg = dataclasses.replace(
        tiny_config(),
        model=model,
        steps=4,
        warmup_steps=1,
        global_batch_size=1,
        micro_batch_size=1,
        log_every=1,
        checkpoint_every=100,
    )
    summary = train(cfg, dirs[:1], out)
    records = [json.loads(x) for x in Path(summary["metrics"]).read_text().splitlines()]
    rate = float(np.mean([r["tokens_per_s"] for r in records[1:]]))
    non_embedding = summary["parameters"] - summary["model"]["vocab_size"] * model.dim
    flops = 6 * non_embedding + 12 * model.n_layers * model.dim * SEQ_LEN
    return rate, summary["parameters"], rate * flops


def main(argv: list[str] | None = None) -> str:
    """Run the comparison; returns a markdown section (benchmarks/run_all.py convention)."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=1.5, help="length of one timed window")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-peers", action="store_true", help="skip MosaicML streaming (side venv)")
    ap.add_argument("--peers-python", type=Path, help="a python with mosaicml-streaming installed")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        dirs = build_shards(tmp)
        npy = flat_tokens(dirs, tmp / "rows.npy")
        rows = len(np.load(npy, mmap_mode="r"))
        contenders = {
            "(a) numpy memmap, 8 random rows (ceiling)": lambda: memmap_batches(npy),
            "(b) codemill ShardLoader, 0 workers": lambda: codemill_batches(dirs, 0),
            "(b) codemill ShardLoader, 1 worker": lambda: codemill_batches(dirs, 1),
            "(c) HF datasets + DataLoader, 0 workers": lambda: hf_batches(dirs, 0),
            "(c) HF datasets + DataLoader, 1 worker": lambda: hf_batches(dirs, 1),
        }
        rates = best_of(contenders, args.seconds, args.repeat)
        peers = (
            "skipped (--no-peers)"
            if args.no_peers
            else streaming_rates(npy, tmp, args.seconds, args.repeat, args.peers_python)
        )
        if isinstance(peers, dict):
            rates["(d) MosaicML streaming + DataLoader, 0 workers"] = peers[0]
            rates["(d) MosaicML streaming + DataLoader, 1 worker"] = peers[1]
        train_rate, params, flops = training_rate(dirs, tmp / "train")

    (ours0, ours0_cpu), (ours1, _) = (
        rates["(b) codemill ShardLoader, 0 workers"],
        rates["(b) codemill ShardLoader, 1 worker"],
    )
    hf0, hf1 = (rates[f"(c) HF datasets + DataLoader, {w}"][0] for w in ("0 workers", "1 worker"))
    ceiling = rates["(a) numpy memmap, 8 random rows (ceiling)"][0]
    lines = [
        "## Shard loader (batch 8 x 4,096, shuffled)",
        "",
        f"{rows:,} rows of 4,096 tokens in two shard directories (stdlib code, FIM, packed); "
        f"codemill mixes them {WEIGHTS[0]:.0%}/{WEIGHTS[1]:.0%} with document positions, labels "
        f"and cu_seqlens on; HF and streaming return input_ids only. Best of {args.repeat} "
        f"windows of {args.seconds} s; {cpu_model()}, torch {torch.get_num_threads()} threads. "
        "Wall-clock rates fall when other processes share the cores; the rate per CPU second "
        "of the trainer's process is what a loader costs the trainer.",
        "",
        "| loader | tokens/s | vs memmap | tokens per trainer CPU-second |",
        "|---|---:|---:|---:|",
    ]
    for name, (wall, cpu) in rates.items():
        lines.append(f"| {name} | {wall / 1e6:,.0f}M | {wall / ceiling:.2f} | {cpu / 1e6:,.0f}M |")
    if not isinstance(peers, dict):
        lines.append(f"| (d) MosaicML streaming | not measured: {peers} | | |")
    lines += [
        "",
        f"codemill, 0 workers: {ours0 / 1e6:,.0f}M tokens/s ({ours0_cpu / 1e6:,.0f}M per CPU "
        f"second; target >= 200M), {ours0 / hf0:.1f}x HF datasets; 1 worker: "
        f"{ours1 / hf1:.1f}x HF datasets (target >= 2x).",
        "",
        "## Training loop on this CPU",
        "",
        f"Llama-style model of {params / 1e6:.1f}M parameters (dim 256, 4 layers, 8 heads, "
        f"4 KV heads), 1 x 4,096 tokens per step, document-masked attention, float32: "
        f"{train_rate:,.0f} tokens/s ({flops / 1e9:.1f} model GFLOP/s, 6N + attention).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
