"""`make bench`: run every benchmark in one go and record the figures in RESULTS.md."""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
from datetime import date

from benchmarks.machine import cpu_model
from benchmarks.scale import RESULTS
from benchmarks.scale import SECTION as SCALE_SECTION

BENCHMARKS = [
    "benchmarks.cli_startup",
    "benchmarks.ingest_throughput",
    "benchmarks.ingest_readers",
    "benchmarks.near_dedup",
    "benchmarks.decontam_leaks",
    "benchmarks.tokenize_throughput",
    "benchmarks.sandbox_throughput",
    "benchmarks.loader_throughput",
    "benchmarks.filters_throughput",
    "benchmarks.kind_classifier_size",
]


def machine() -> str:
    cpu = cpu_model()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, {java}")


def scale_section(text: str) -> str:
    """`make bench-scale`'s section (recorded on its own, kept across `make bench`)."""
    start = text.find(SCALE_SECTION)
    if start < 0:
        return ""
    end = text.find("\n## ", start + len(SCALE_SECTION))
    return text[start:end if end >= 0 else len(text)].rstrip()


def main() -> None:
    sections = []
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        section = importlib.import_module(name).main()
        print(section + "\n", flush=True)
        sections.append(section)
    header = f"# Benchmark results\n\nRecorded by `make bench` on {date.today()}: {machine()}.\n"
    scale = scale_section(RESULTS.read_text()) if RESULTS.exists() else ""
    RESULTS.write_text(header + "\n" + "\n\n".join(sections) + "\n" + (f"\n{scale}\n" if scale else ""))
    print("written benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
