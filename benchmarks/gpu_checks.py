"""The checks that need a GPU, as one short run on a lent GPU machine.

    python -m benchmarks.gpu_checks --out DIR [--steps 300]    # on the GPU machine
    python -m benchmarks.gpu_checks --out DIR --smoke          # the same path, tiny, on a CPU

1. Shards of real code: the interpreter's standard library, tokenized by a sentencepiece
   model trained on it here, packed into 4,096-token rows.
2. A ~1B Llama (TinyLlama's shape: 22 layers, dim 2048, 32 heads, 4 KV heads, SwiGLU 5632)
   trained for `--steps` steps in bf16 under torchrun, so with FSDP2; tokens/s and MFU
   are the loop's own figures, averaged over the logged steps after the first.
3. The checkpoint exported for transformers (`codemill export-hf`) and timed greedy
   generation with it; with vLLM installed, `codemill eval --backend vllm` on the export.

Writes DIR/gpu_checks.json and prints the rows for benchmarks/RESULTS.md. Every part
runs on its own: a failure is recorded as its one-line cause, and the rest still run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

ONE_B = {"dim": 2048, "n_layers": 22, "n_heads": 32, "n_kv_heads": 4, "ffn_dim": 5632}
SMOKE = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 176}


def stdlib_texts(limit_bytes: int) -> list[str]:
    texts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if size >= limit_bytes or "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        texts.append(text)
        size += len(text)
    return texts


def build_shards(out: Path, smoke: bool) -> Path:
    """Shards of the standard library's code (with their tokenizer and its Hugging Face
    files, which the export takes from there)."""
    from codemill.tokenize.config import FimConfig, PackConfig
    from codemill.tokenize.pack import PackStats, pack_documents
    from codemill.tokenize.shards import ShardWriter, write_manifest
    from codemill.tokenize.tokenizer import train_tokenizer

    texts = stdlib_texts(2 << 20 if smoke else 64 << 20)
    tok = train_tokenizer(texts[: len(texts) // 4], out / "tokenizer" / "sp", vocab_size=1000 if smoke else 8000,
                          num_threads=os.cpu_count() or 1)
    seq_len, stats, fim = 128 if smoke else 4096, PackStats(), FimConfig()
    pack, shards = PackConfig(seq_len=seq_len), out / "shards"
    ids = [f"stdlib-{i}" for i in range(len(texts))]
    with ShardWriter(shards, seq_len) as writer:
        for rows in pack_documents([(texts, ids)], tok, fim, pack, 0, stats, num_threads=os.cpu_count() or 1):
            writer.write(rows)
    write_manifest(shards, tokenizer=tok, pack=pack, fim=fim, seed=0, shards=writer.shards, stats=stats)
    return shards


def train_config(path: Path, steps: int, smoke: bool) -> Path:
    model = SMOKE if smoke else ONE_B
    lines = ['preset = "paper"', "seq_len = 0", f"steps = {steps}", "warmup_steps = 10",
             f"global_batch_size = {4 if smoke else 16}", f"micro_batch_size = {2 if smoke else 8}",
             "log_every = 1" if smoke else "log_every = 10", f"checkpoint_every = {steps}",
             "num_workers = 1", "lr = 3e-4", "[model]", "vocab_size = 0",
             *(f"{key} = {value}" for key, value in model.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def train(out: Path, shards: Path, steps: int, smoke: bool) -> dict[str, Any]:
    config = train_config(out / "train.toml", steps, smoke)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               "-m", "codemill.train_hooks.train", "--config", str(config), str(shards),
               "--out", str(out / "train")]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"training exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    printed = "\n" + done.stdout
    summary = json.loads(printed[printed.rindex("\n{\n"):])  # the summary ends the output
    return {"seconds": round(time.perf_counter() - started, 1), "steps": summary["steps"],
            "parameters": summary["parameters"], "first_loss": summary["first_loss"],
            "final_loss": summary["final_loss"], "tokens_per_s": summary["tokens_per_s"],
            "mfu": summary["mfu"], "checkpoint": summary["checkpoint"]}


def generate(hf: Path, smoke: bool) -> dict[str, Any]:
    """Greedy generation through transformers: new tokens per second, 16 prompts at once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf)
    prompt = tokenizer("def fibonacci(n):\n", return_tensors="pt").input_ids.to(device).repeat(16, 1)
    new = 16 if smoke else 256
    settings = {"attention_mask": torch.ones_like(prompt), "pad_token_id": tokenizer.eos_token_id,
                "do_sample": False}
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=8, **settings)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=new, min_new_tokens=new, **settings)
        if device == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"device": device, "new_tokens": int(out.shape[0] * (out.shape[1] - prompt.shape[1])),
            "tokens_per_s": round(out.shape[0] * (out.shape[1] - prompt.shape[1]) / seconds, 1)}


def vllm_eval(hf: Path, out: Path) -> dict[str, Any]:
    if importlib.util.find_spec("vllm") is None:
        return {"skipped": "vllm is not installed"}
    command = [sys.executable, "-m", "codemill.cli", "eval", "--backend", "vllm", "--model", str(hf),
               "--limit", "164", "--max-new-tokens", "256", "--out", str(out / "eval-vllm"),
               "--set", "sandbox.allow_weaker_isolation=true"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"codemill eval exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads((out / "eval-vllm" / "summary.json").read_text())["pass_at_k"]


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--smoke", action="store_true", help="a tiny model on a CPU: the same path, in a minute")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"device": device_name(), "steps": args.steps}

    def part(name: str, run) -> Any:
        """run()'s result, recorded under `name`; None when it failed (its cause recorded)."""
        started = time.perf_counter()
        try:
            value = results[name] = run()
        except Exception as exc:  # recorded, so that the parts that do not need it still run
            value, results[name] = None, {"error": f"{type(exc).__name__}: {exc}"}
        print(f"{name} ({time.perf_counter() - started:.0f} s): {json.dumps(results[name])}", flush=True)
        return value

    from codemill.train_hooks.export import export_hf

    hf = args.out / "hf"
    shards = part("shards", lambda: str(build_shards(args.out, args.smoke)))
    trained = shards and part("train", lambda: train(args.out, Path(shards), args.steps, args.smoke))
    exported = trained and part("export", lambda: export_hf(trained["checkpoint"], hf, shards,
                                                            "float32" if args.smoke else "bfloat16"))
    if exported:
        part("generate", lambda: generate(hf, args.smoke))
        part("eval_vllm", lambda: vllm_eval(hf, args.out))
    (args.out / "gpu_checks.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
