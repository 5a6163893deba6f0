"""Ingest + exact dedup throughput on the demo input, against the read-and-hash floor.

The floor is one Python process reading every kept file and hashing it (what
ingest must do at least), scaled by the cores Spark may use; codemill's ratio
to it says how much the Spark machinery costs on top.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from codemill.config import load_run_config as load_config
from codemill.ingest.stage import list_directory_source
from codemill.stats import StageStats

OUT = Path("bench-out/ingest")


def read_and_hash_floor(cfg) -> tuple[int, int, float]:
    files = [
        Path(e.root, e.path)
        for src in cfg.sources
        for e in list_directory_source(None, src, cfg.ingest)
        if e.reason is None
    ]
    started = time.perf_counter()
    total = 0
    for path in files:
        data = path.read_bytes()
        total += len(data)
        hashlib.sha256(data).digest()
        data.decode("utf-8", errors="replace")
    return len(files), total, time.perf_counter() - started


def demo_run(out: Path, config: Path | None = None,
             as_uri: bool = False) -> tuple[float, dict[str, StageStats]]:
    """The whole demo DAG into `out` (given as a file:// URI with `as_uri`): wall seconds
    and each document stage's stats."""
    subprocess.run(["rm", "-rf", str(out)], check=True)
    started = time.perf_counter()
    out_arg = f"file://{out.resolve()}" if as_uri else str(out)
    subprocess.run([sys.executable, "-m", "codemill.cli", "run", *([str(config)] if config else []),
                    "--out", out_arg], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    stats = {d.parent.parent.parent.name: StageStats.from_json(d.read_text())
             for d in out.glob("*/*/attempt-*/stats.json")}
    return wall, stats


def storage_section(local_wall: float, local: dict[str, StageStats]) -> list[str]:
    """The same demo with `out` and every source given as file:// URIs: the storage layer's
    URI handling, against plain paths. Both go through the same storage code (the local
    disk), so the ratio is the run-to-run spread plus whatever URI handling costs."""
    demo = (resources.files("codemill") / "configs" / "demo.toml").read_text()
    config = OUT.parent / "demo-uris.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(demo.replace('path = "{', 'path = "file://{'))
    uri_out = OUT.parent / "ingest-uris"
    wall, stats = demo_run(uri_out, config, as_uri=True)
    lines = [
        "## Storage layer on the demo: local paths vs file:// URIs",
        "",
        "| stage | local paths (s) | file:// URIs (s) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for stage in local:
        lines.append(f"| {stage} | {local[stage].seconds:.1f} | {stats[stage].seconds:.1f} | "
                     f"{stats[stage].seconds / local[stage].seconds:.2f} |")
    lines += [f"| whole `codemill run` | {local_wall:.0f} | {wall:.0f} | {wall / local_wall:.2f} |", "",
              "Both runs commit every stage with a commit record and write shards through the storage "
              "module; the URI run reads its sources and writes `out` as `file://` locations."]
    return lines


def main() -> str:
    cfg = load_config(None, [f'out="{OUT}"'])
    wall, stats = demo_run(OUT)
    ingest, exact = stats["ingest"], stats["exact_dedup"]
    n_floor, bytes_floor, floor_s = read_and_hash_floor(cfg)
    cores = os.cpu_count() or 1
    floor_mbs = bytes_floor / floor_s / 1e6 * cores
    # files dropped on their listing alone (.so, .jar, too large) are never read
    read_bytes = ingest.bytes_in - sum(
        ingest.dropped_bytes.get(r, 0) for r in ("unsupported_extension", "too_large"))
    read_docs = ingest.docs_in - sum(
        ingest.dropped.get(r, 0) for r in ("unsupported_extension", "too_large"))
    ingest_mbs = read_bytes / ingest.seconds / 1e6
    rows = [
        ("read+hash floor (1 process x cores)", n_floor, bytes_floor, floor_s / cores, floor_mbs),
        ("codemill ingest (files read)", read_docs, read_bytes, ingest.seconds, ingest_mbs),
        ("codemill exact dedup", exact.docs_in, exact.bytes_in, exact.seconds,
         exact.bytes_in / exact.seconds / 1e6),
    ]
    lines = [
        "## Ingest + exact dedup (demo input: stdlib + site-packages)",
        "",
        "| step | docs | MB | seconds | docs/s | MB/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, docs, size, sec, mbs in rows:
        lines.append(f"| {name} | {docs:,} | {size / 1e6:,.1f} | {sec:.1f} | {docs / sec:,.0f} | {mbs:,.1f} |")
    lines += [
        "",
        f"Ingest runs at {ingest_mbs / floor_mbs:.1%} of the read-and-hash floor on {cores} cores "
        f"(the floor reads from the page cache with no output; ingest also decodes, detects "
        f"languages, sorts by id and writes both tables as Parquet). "
        f"Whole `codemill run` including JVM start and the report: {wall:.0f} s.",
        "",
        *storage_section(wall, stats),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
