"""`make bench-scale`: the whole DAG (`codemill run`) on synthetic corpora of 100k and
1M documents with a 1 GB driver, stage by stage: seconds, documents per second,
peak memory, and how each stage's time grows from 100k to 1M (linear = 10x).

The corpora come from benchmarks.scale_corpus (cached under bench-out/scale/). Each
run is a subprocess; this process follows its log to know which stage runs (Luigi's
"running RunStage(stage=X" lines) and samples its process tree every half second from
/proc: the JVM (driver and, in local mode, executors), the Python workers Spark forks
and the driver's Python. The JVM's heap use and GC time come from `jstat -gc`.
Memory is the proportional set size (PSS), so forked workers' shared pages are
counted once.

    python -m benchmarks.scale                      # 100k then 1M, fresh runs
    python -m benchmarks.scale --sizes 100000 --resume   # keep completed stages
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from benchmarks.machine import cpu_model
from benchmarks.scale_corpus import DATA, MANIFEST, CorpusSpec, write_corpus

ROOT = Path("bench-out/scale")
RESULTS = Path("benchmarks/RESULTS.md")
SECTION = "## Scale: the whole DAG on synthetic code corpora"
SAMPLE_SECONDS = 0.5
MB = 1 << 20

RUN_CONFIG = """\
# written by benchmarks/scale.py
out = "{out}"
seed = 0

[[sources]]
name = "stack"
type = "jsonl"
path = "{corpus}"

[spark]
master = "local[2]"

[spark.conf]
"spark.driver.memory" = "{driver_memory}"
"spark.ui.port" = "{ui_port}"

# Every category at most once: the default (4 epochs) would pack about seven times
# the corpus into the two mixes' shards.
[mix]
max_epochs = 1.0
"""

_RUNNING = re.compile(r"running\s+RunStage\(stage=(\w+), item=([^,)]*)")
_DONE = re.compile(r"(\w+(?:\[[^\]]*\])?) done in ([\d,.]+) s")
# What names a failure, best first: codemill's own line, the JVM running out of memory,
# any error line.
_FAILURES = (re.compile(r"^codemill: \S+ failed: "), re.compile(r"OutOfMemoryError"),
             re.compile(r"\bERROR\b|Error:"))


@dataclass
class StageRecord:
    """One stage of one run: its wall time and the peaks sampled while it ran."""

    started: float
    finished: float | None = None
    jvm: int = 0  # PSS of the JVM
    heap: int = 0  # JVM heap in use (jstat)
    gc_start: float | None = None  # JVM GC seconds when the stage started
    gc_end: float | None = None
    workers: int = 0  # PSS of the Python workers, summed
    driver: int = 0  # PSS of the driver's Python
    storage: int = 0  # cached and checkpointed blocks held in the JVM's memory

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.started

    @property
    def gc_seconds(self) -> float | None:
        if self.gc_start is None or self.gc_end is None:
            return None
        return self.gc_end - self.gc_start


@dataclass
class RunResult:
    docs: int
    corpus_mb: float
    wall: float
    returncode: int
    stages: dict[str, StageRecord]
    docs_in: dict[str, int]
    failure: str | None = None
    log: str = ""


# --- the process tree, from /proc ----------------------------------------------------------

def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def memory(pid: int) -> int:
    """Proportional set size in bytes (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def storage_memory(ui_port: int) -> int | None:
    """Bytes of blocks (cached tables, checkpoints, broadcasts) the JVM keeps in memory,
    from Spark's REST API; None while no application answers."""
    base = f"http://localhost:{ui_port}/api/v1/applications"
    try:
        with urllib.request.urlopen(base, timeout=0.3) as apps:
            app = json.load(apps)[0]["id"]
        with urllib.request.urlopen(f"{base}/{app}/executors", timeout=0.3) as executors:
            return sum(e["memoryUsed"] for e in json.load(executors))
    except (OSError, ValueError, IndexError, KeyError):
        return None


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# --- following one run ------------------------------------------------------------------------

class Monitor:
    """Which stage runs now (from the run's log) and the memory peaks of each stage."""

    def __init__(self, proc: subprocess.Popen, log_path: Path, ui_port: int) -> None:
        self.proc, self.log_path, self.ui_port = proc, log_path, ui_port
        self.stages: dict[str, StageRecord] = {}
        self.current: str | None = None
        self.gc_seconds: float | None = None
        self.failures: list[str | None] = [None] * len(_FAILURES)  # the first line of each kind
        self.jvms: set[int] = set()
        self.lock = threading.Lock()

    def follow_log(self) -> None:
        with open(self.log_path, "w", buffering=1) as log:  # line by line: readable while it runs
            for line in self.proc.stdout:
                log.write(line)
                self.on_line(line.rstrip("\n"))

    def on_line(self, line: str) -> None:
        with self.lock:
            if m := _RUNNING.search(line):
                label = f"{m[1]}[{m[2]}]" if m[2] else m[1]
                self.stages[label] = StageRecord(time.monotonic(), gc_start=self.gc_seconds)
                self.current = label
            elif (m := _DONE.search(line)) and m[1] in self.stages:
                record = self.stages[m[1]]
                record.finished, record.gc_end = time.monotonic(), self.gc_seconds
                self.current = None
            for kind, pattern in enumerate(_FAILURES):
                if self.failures[kind] is None and pattern.search(line):
                    self.failures[kind] = f"{self.current or 'between stages'}: {line.strip()[:300]}"
                    break

    @property
    def failure(self) -> str | None:
        return next((f for f in self.failures if f), None)

    def sample(self) -> None:
        while self.proc.poll() is None:
            self.sample_once()
            time.sleep(SAMPLE_SECONDS)

    def sample_once(self) -> None:
        jvm = workers = 0
        driver = memory(self.proc.pid)
        for pid in descendants(self.proc.pid)[1:]:
            name = command_name(pid)
            if name == "java":
                jvm += memory(pid)
                if pid not in self.jvms:  # Spark's launcher is a short-lived JVM of its own
                    self.jvms.add(pid)
                    threading.Thread(target=self.watch_heap, args=(pid,), daemon=True).start()
            elif name.startswith("python"):
                workers += memory(pid)
        storage = storage_memory(self.ui_port) if self.jvms else None
        with self.lock:
            record = self.stages.get(self.current) if self.current else None
            if record:
                record.jvm, record.workers = max(record.jvm, jvm), max(record.workers, workers)
                record.driver = max(record.driver, driver)
                record.storage = max(record.storage, storage or 0)

    def watch_heap(self, pid: int) -> None:
        """`jstat -gc` every half second while the JVM lives (it cannot attach to a JVM
        that is still starting: then again a second later)."""
        if not shutil.which("jstat"):
            return
        while self.proc.poll() is None and Path(f"/proc/{pid}").exists():
            self.read_jstat(pid)
            time.sleep(1.0)

    def read_jstat(self, pid: int) -> None:
        """Heap in use (survivor, eden and old spaces) and GC seconds from `jstat -gc`."""
        interval = f"{int(SAMPLE_SECONDS * 1000)}ms"
        jstat = subprocess.Popen(["jstat", "-gc", str(pid), interval], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
        header: list[str] = []
        for line in jstat.stdout:
            fields = line.split()
            if not fields or not fields[0][0].isdigit():
                header = fields
                continue
            row = dict(zip(header, map(float, fields)))
            used = int(sum(row.get(k, 0.0) for k in ("S0U", "S1U", "EU", "OU")) * 1024)
            with self.lock:
                self.gc_seconds = row.get("GCT")
                record = self.stages.get(self.current) if self.current else None
                if record:
                    record.heap = max(record.heap, used)
                    if record.gc_start is None:
                        record.gc_start = self.gc_seconds
        jstat.wait()


def write_run_config(path: Path, corpus: Path, out: Path, driver_memory: str, ui_port: int) -> Path:
    path.write_text(RUN_CONFIG.format(out=out.resolve(), corpus=(corpus / DATA).resolve(),
                                      driver_memory=driver_memory, ui_port=ui_port))
    return path


def documents_in(out: Path) -> dict[str, int]:
    """Documents each stage read: stats.json of document stages; the final table for the
    tokenizer and token counts; documents packed for shards."""
    docs: dict[str, int] = {}
    last = None
    for stats in sorted(out.glob("*/*/attempt-*/stats.json"), key=lambda p: p.stat().st_mtime):
        s = json.loads(stats.read_text())
        docs[s["stage"]] = s["docs_in"]
        last = s["docs_out"]
    if last is not None:
        docs["tokenizer"] = docs["token_counts"] = docs["report"] = last
    for manifest in out.glob("shards/*/*/attempt-*/manifest.json"):
        mix = manifest.parent.parent.parent.name
        docs[f"shards[{mix}]"] = json.loads(manifest.read_text())["counts"]["docs_packed"]
    return docs


def run_dag(docs: int, corpus: Path, driver_memory: str, resume: bool) -> RunResult:
    out = ROOT / f"run-{docs}"
    if not resume and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    ui_port = free_port()  # the run's Spark UI, whose REST API tells the memory store's use
    config = write_run_config(ROOT / f"run-{docs}.toml", corpus, out, driver_memory, ui_port)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "codemill.cli", "run", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    monitor = Monitor(proc, ROOT / f"run-{docs}.log", ui_port)
    reader = threading.Thread(target=monitor.follow_log, daemon=True)
    reader.start()
    monitor.sample()
    reader.join()
    wall = time.monotonic() - started
    manifest = json.loads((corpus / MANIFEST).read_text())
    return RunResult(docs, manifest["bytes"] / 1e6, wall, proc.returncode, monitor.stages, documents_in(out),
                     monitor.failure if proc.returncode else None, str(ROOT / f"run-{docs}.log"))


# --- the tables -------------------------------------------------------------------------------

def _mb(n: int) -> str:
    return f"{n / MB:,.0f}" if n else "–"


def _opt(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def run_table(r: RunResult) -> list[str]:
    lines = [f"**{r.docs:,} documents** ({r.corpus_mb:,.0f} MB of JSONL): "
             + (f"whole run {r.wall:,.0f} s." if r.returncode == 0 else
                f"**failed** after {r.wall:,.0f} s in {r.failure or 'an unknown stage'} (log: `{r.log}`)."),
             "",
             "| stage | seconds | docs in | docs/s | JVM peak MB | heap peak MB | GC s | blocks in memory MB "
             "| Python workers peak MB | driver Python peak MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, s in r.stages.items():
        docs = r.docs_in.get(label)
        rate = docs / s.seconds if docs and s.seconds else None
        seconds = _opt(s.seconds, ",.1f") if s.finished else "failed"
        lines.append(f"| {label} | {seconds} | {_opt(docs, ',')} | {_opt(rate, ',.0f')} | {_mb(s.jvm)} "
                     f"| {_mb(s.heap)} | {_opt(s.gc_seconds, ',.1f')} | {_mb(s.storage)} | {_mb(s.workers)} "
                     f"| {_mb(s.driver)} |")
    return lines


def growth_table(small: RunResult, large: RunResult) -> list[str]:
    factor = large.docs / small.docs
    lines = [f"Growth from {small.docs:,} to {large.docs:,} documents (linear = {factor:g}x):", "",
             "| stage | seconds small | seconds large | growth |", "|---|---:|---:|---:|"]
    for label, s in small.stages.items():
        big = large.stages.get(label)
        if s.seconds and big and big.seconds:
            lines.append(f"| {label} | {s.seconds:,.1f} | {big.seconds:,.1f} | {big.seconds / s.seconds:.1f}x |")
    if small.returncode == 0 and large.returncode == 0:
        lines.append(f"| whole run | {small.wall:,.0f} | {large.wall:,.0f} | {large.wall / small.wall:.1f}x |")
    return lines


def section(results: list[RunResult], corpus_seconds: dict[int, float], driver_memory: str) -> str:
    lines = [f"{SECTION} ({', '.join(f'{r.docs:,}' for r in results)} documents, local[2], "
             f"{driver_memory} driver)", "",
             f"Recorded by `make bench-scale` on {date.today()}: {os.cpu_count()} cores ({cpu_model()}), "
             "shared with other work.", "",
             "Corpora from `benchmarks/scale_corpus.py` (seeded): slices of this machine's Python, C "
             "headers, Markdown/reST and license texts with identifiers permuted, sizes log-normal "
             "(median 2 KB) with a tail to 1 MB, 5% exact and 5% near copies; 20 JSONL files. "
             "Run config: `[spark] master = \"local[2]\"`, `spark.driver.memory = \"" + driver_memory
             + "\"`, `[mix] max_epochs = 1`, everything else default. Generation: "
             + ", ".join(f"{d:,} docs {s:,.0f} s" for d, s in corpus_seconds.items()) + " (0 s: cached).",
             "",
             "Seconds are wall time from Luigi starting a stage to its commit (ingest includes the "
             "JVM start). Memory peaks are sampled every 0.5 s while the stage runs: the JVM's and the "
             "Python workers' proportional set size, the JVM heap in use (`jstat -gc`) and the blocks "
             "Spark's memory store holds (cached tables, checkpoints, broadcasts; its REST API).", ""]
    for r in results:
        lines += run_table(r) + [""]
    if len(results) >= 2:
        lines += growth_table(results[0], results[-1])
    return "\n".join(lines).rstrip() + "\n"


def record(text: str, path: Path = RESULTS) -> None:
    """Put the section into RESULTS.md, replacing an earlier scale section."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip() + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + (old[end:] if end >= 0 else "")
    path.write_text(new)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,1000000", help="corpus sizes in documents, comma-separated")
    ap.add_argument("--driver-memory", default="1g")
    ap.add_argument("--resume", action="store_true", help="keep the runs' completed stages")
    ap.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args(argv)
    results, corpus_seconds = [], {}
    for docs in (int(s) for s in args.sizes.split(",")):
        started = time.monotonic()
        corpus = write_corpus(CorpusSpec(docs=docs), ROOT)
        corpus_seconds[docs] = time.monotonic() - started
        print(f"== {docs:,} documents: corpus {corpus} ({corpus_seconds[docs]:.0f} s)", flush=True)
        results.append(run_dag(docs, corpus, args.driver_memory, args.resume))
        print("\n".join(run_table(results[-1])), flush=True)
    text = section(results, corpus_seconds, args.driver_memory)
    print(text)
    if not args.no_record:
        record(text)
        print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
