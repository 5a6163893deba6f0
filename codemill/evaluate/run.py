"""`evaluate(cfg, out_dir)`: HumanEval pass@k of one model.

Every problem's prompt goes to the backend (through self-instruct's call cache in
OUT/cache, so a re-run or a resumed crash makes no model call twice) for
`sampling.n` samples; each sample is cut at the first stop sequence and run in the
sandbox as prompt + completion + the problem's test + `check(entry_point)`. Written to
OUT, each file atomically:

* results.jsonl — one line per problem: samples passed, its pass@k, and every sample
  with its verdict and the last line of its error output;
* summary.json — pass@k over the problems, the settings, verdict counts;
* passk.png — the estimated pass@k for every k from 1 to n.

Given the seed, the same settings and model give the same files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codemill.evaluate.config import EvalConfig
from codemill.evaluate.humaneval import Problem, candidate, read_humaneval
from codemill.evaluate.passk import mean_pass_at_k, pass_at_k, reported_ks
from codemill.selfinstruct.backends import CachedBackend, cut_at_stop, make_backend, model_identity
from codemill.selfinstruct.config import SandboxConfig
from codemill.selfinstruct.sandbox import Result, Sandbox
from codemill.storage.local import atomic_path, write_text_atomic

RESULTS = "results.jsonl"
SUMMARY = "summary.json"
PLOT = "passk.png"
CACHE = "cache"


def evaluate(cfg: EvalConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Generate, execute, score and write; returns the summary (also in OUT/summary.json)."""
    out = Path(out_dir)
    problems = read_humaneval(cfg.limit)
    started = time.perf_counter()
    completions = generate(cfg, problems, out / CACHE)
    generated = time.perf_counter()
    verdicts = execute(cfg.sandbox, problems, completions)
    seconds = {"generate": generated - started, "execute": time.perf_counter() - generated}
    ks = reported_ks(cfg.sampling.n, cfg.ks)
    records = [problem_record(p, c, v, ks) for p, c, v in zip(problems, completions, verdicts)]
    summary = summarize(cfg, records, ks, verdicts)
    write_text_atomic(out / RESULTS, "".join(json.dumps(r) + "\n" for r in records))
    write_text_atomic(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    plot_pass_at_k([r["passed"] for r in records], cfg.sampling.n, ks, out / PLOT, summary["title"])
    return {**summary, "seconds": seconds, "files": [str(out / name) for name in (RESULTS, SUMMARY, PLOT)]}


def generate(cfg: EvalConfig, problems: Sequence[Problem], cache_dir: Path) -> list[list[str]]:
    """`sampling.n` completions per problem, each cut before its first stop sequence
    (servers cut there themselves; a custom backend may not)."""
    prompts = [cfg.prompt_prefix + p.prompt for p in problems]
    inner = make_backend(cfg.model)
    with CachedBackend(inner, model_identity(cfg.model), cache_dir, cfg.cache_chunk) as backend:
        samples = backend.generate(prompts, cfg.sampling)
    return [[cut_at_stop(text, cfg.sampling.stop) for text in row] for row in samples]


def execute(sandbox_cfg: SandboxConfig, problems: Sequence[Problem],
            completions: Sequence[Sequence[str]]) -> list[list[Result]]:
    """Every sample's verdict, per problem, from one sandbox run over all of them."""
    programs = [candidate(p, text) for p, row in zip(problems, completions) for text in row]
    with Sandbox(sandbox_cfg) as sandbox:
        flat = sandbox.run(programs)
    out, start = [], 0
    for row in completions:
        out.append(flat[start:start + len(row)])
        start += len(row)
    return out


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def problem_record(problem: Problem, completions: Sequence[str], verdicts: Sequence[Result],
                   ks: Sequence[int]) -> dict[str, Any]:
    """One line of results.jsonl."""
    n, passed = len(verdicts), sum(v.passed for v in verdicts)
    return {
        "task_id": problem.task_id,
        "n": n,
        "passed": passed,
        "pass@k": {f"pass@{k}": pass_at_k(n, passed, k) for k in ks},
        "samples": [{"completion": text, "status": v.status, "error": "" if v.passed else _last_line(v.stderr)}
                    for text, v in zip(completions, verdicts)],
    }


def summarize(cfg: EvalConfig, records: Sequence[dict[str, Any]], ks: Sequence[int],
              verdicts: Sequence[Sequence[Result]]) -> dict[str, Any]:
    n, passed = cfg.sampling.n, [r["passed"] for r in records]
    s = cfg.sampling
    missing = sorted({layer for row in verdicts for v in row for layer in v.missing_layers})
    return {
        "benchmark": "HumanEval",
        "title": f"HumanEval, {len(records)} problems × {n} samples (temperature {s.temperature:g}, "
                 f"top-p {s.top_p:g}, seed {s.seed})",
        "problems": len(records),
        "samples_per_problem": n,
        "pass@k": {f"pass@{k}": mean_pass_at_k(n, passed, k) for k in ks},
        "statuses": dict(sorted(Counter(v.status for row in verdicts for v in row).items())),
        "model": model_identity(cfg.model),
        "sampling": dataclasses.asdict(s),
        "prompt_prefix": cfg.prompt_prefix,
        "sandbox_missing_layers": missing,
    }


def format_table(summary: dict[str, Any]) -> str:
    """The summary as the lines `codemill eval` prints (with timings when it has them)."""
    lines = [summary["title"], f"{'k':>6}  pass@k"]
    lines += [f"{name.split('@')[1]:>6}  {value:7.2%}" for name, value in summary["pass@k"].items()]
    counts = ", ".join(f"{status} {count}" for status, count in summary["statuses"].items())
    lines.append(f"samples: {counts}")
    if summary["sandbox_missing_layers"]:
        lines.append(f"sandbox ran without: {', '.join(summary['sandbox_missing_layers'])}")
    if seconds := summary.get("seconds"):
        lines.append(f"generation {seconds['generate']:.1f} s, sandbox {seconds['execute']:.1f} s")
    return "\n".join(lines) + "\n"


def plot_pass_at_k(passed: Sequence[int], n: int, ks: Sequence[int], png: Path, title: str) -> Path:
    """pass@k for k = 1 … n (the estimator gives every k up to n), the reported ones marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    every = range(1, n + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(list(every), [mean_pass_at_k(n, passed, k) for k in every], lw=1)
    for k in ks:
        value = mean_pass_at_k(n, passed, k)
        ax.plot([k], [value], "o", color="C1")
        last = k == max(ks) and k > 1  # its label goes left, inside the axes
        ax.annotate(f"pass@{k} {value:.1%}", (k, value), textcoords="offset points",
                    xytext=(-4 if last else 4, -14), ha="right" if last else "left")
    if n > 1:
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("k (samples allowed per problem)")
    ax.set_ylabel("pass@k")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return png
