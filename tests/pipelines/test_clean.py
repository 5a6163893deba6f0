"""`codemill clean` on a copy of a real finished run: after a changed setting and a
re-run it lists the old outputs and keeps the new, `--yes` removes them and the next run
recomputes nothing; it is refused while another process holds the run lease; and its
plan works on an object store (a real S3-compatible server)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codemill.cli import main
from codemill.config import load_run_config as load_config
from codemill.pipelines.clean import STALE_ATTEMPT, STALE_OUTPUT, Layout, apply_plan, plan_clean
from codemill.pipelines.task import stage_task
from codemill.storage import filesystem, local_path, to_uri

from support import run_dag

PRETRAIN = [("ingest", ""), ("exact_dedup", ""), ("near_dedup", ""), ("filters", ""), ("kinds", ""),
            ("tokenizer", ""), ("token_counts", ""), ("shards", "base"), ("shards", "python"),
            ("report", "")]
CHANGED = ["pack.seq_len=256"]  # re-runs the shards of both mixes and the report


@pytest.fixture
def run_copy(finished_run, tmp_path) -> tuple[Path, Path]:
    """The finished run's config and a copy of its out, without its lease."""
    out = tmp_path / "out"
    shutil.copytree(load_config(finished_run).out, out, ignore=shutil.ignore_patterns("_LEASE.json"))
    return finished_run, out


def output_dirs(config: Path, overrides: list[str]) -> dict[tuple[str, str], Path]:
    return {(stage, item): local_path(stage_task(stage, config, overrides, item=item).output_uri)
            for stage, item in PRETRAIN}


def fingerprint_dirs(out: Path) -> set[Path]:
    return {p for p in [*out.glob("*/*"), *out.glob("shards/*/*")] if len(p.name) == 12 and p.is_dir()}


def files_and_times(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def clean(capsys, config: Path, out: Path, *flags: str) -> tuple[int, str, str]:
    sets = [arg for change in CHANGED for arg in ("--set", change)]
    code = main(["clean", str(config), "--out", str(out), *sets, *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_clean_lists_then_removes_old_outputs_and_the_next_run_recomputes_nothing(run_copy, capsys):
    config, out = run_copy
    changed = [f"out={json.dumps(str(out))}", *CHANGED]
    old, new = output_dirs(config, [f"out={json.dumps(str(out))}"]), output_dirs(config, changed)
    assert run_dag(config, changed)
    kept = set(new.values())
    stale = fingerprint_dirs(out) - kept
    assert {old["shards", "base"], old["shards", "python"], old["report", ""]} <= stale
    leftover = new["ingest", ""] / "attempt-20261130T000000Z-crashed"  # a killed run's attempt
    (leftover / "docs").mkdir(parents=True)
    (leftover / "docs" / "part-0.parquet").write_bytes(b"x" * 1000)

    code, listed, _ = clean(capsys, config, out)
    assert code == 0
    lines = {next(word for word in line.split() if word.endswith("/")): line
             for line in listed.splitlines() if line.endswith(")")}
    expected = {f"{p.relative_to(out)}/" for p in stale} | {f"{leftover.relative_to(out)}/"}
    assert set(lines) == expected
    assert STALE_ATTEMPT in lines[f"{leftover.relative_to(out)}/"]
    assert "1.0 kB" in lines[f"{leftover.relative_to(out)}/"]
    assert f"total in {len(expected)} folders" in listed and "dry run" in listed
    assert all(p.exists() for p in stale) and leftover.exists()

    code, removed, _ = clean(capsys, config, out, "--yes")
    assert code == 0 and removed.startswith("removed under")
    assert fingerprint_dirs(out) == kept and not leftover.exists()
    for folder in kept:  # each keeps its committed attempt
        assert [p.name for p in folder.iterdir() if p.name.startswith("attempt-")]

    before = files_and_times(out)
    assert run_dag(config, changed)
    assert files_and_times(out) == before  # every stage was complete: nothing recomputed
    code, again, _ = clean(capsys, config, out)
    assert code == 0 and "nothing to remove" in again


HOLD_LEASE = """
import sys
from codemill.storage import filesystem
from codemill.storage.lease import hold
hold(filesystem(sys.argv[1]), sys.argv[1], 120)
print("held", flush=True)
sys.stdin.read()
"""


def test_clean_is_refused_while_a_run_holds_the_lease(run_copy, capsys):
    config, out = run_copy
    stale = out / "report" / "0123456789ab" / "attempt-old"
    stale.mkdir(parents=True)
    (stale / "report.json").write_text("{}")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, to_uri(out)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == "held\n"
        code, listed, err = clean(capsys, config, out, "--yes")
        assert code == 3 and listed == ""
        assert "is being written by run" in err and f"(pid {holder.pid})" in err
        assert stale.exists()
    finally:
        holder.stdin.close()
        holder.wait()
    code, _, _ = clean(capsys, config, out, "--yes")
    assert code == 0 and not stale.parent.exists()


def test_plan_on_an_object_store(s3_bucket):
    fs, out = filesystem(s3_bucket), f"{s3_bucket}/out"
    files = {
        "ingest/aaaaaaaaaaaa/_COMMIT.json": json.dumps({"attempt": "attempt-1"}),
        "ingest/aaaaaaaaaaaa/attempt-1/stats.json": "{}",
        "ingest/aaaaaaaaaaaa/attempt-2/stats.json": "{}{}",
        "ingest/cccccccccccc/attempt-3/stats.json": "{}{}{}",
        "ingest/notes.txt": "not an output",
        "shards/base/bbbbbbbbbbbb/_COMMIT.json": json.dumps({"attempt": "attempt-1"}),
        "shards/base/bbbbbbbbbbbb/attempt-1/manifest.json": "{}",
        "shards/base/dddddddddddd/attempt-1/manifest.json": "{}",
        "shards/gone/eeeeeeeeeeee/attempt-1/manifest.json": "{}",
        "report.json": "{}",
    }
    for path, text in files.items():
        fs.write_text(f"{out}/{path}", text)
    layout = Layout(out, frozenset({f"{out}/ingest/aaaaaaaaaaaa", f"{out}/shards/base/bbbbbbbbbbbb"}),
                    {f"{out}/ingest": False, f"{out}/shards": True})
    plan = plan_clean(fs, layout)
    assert [(r.uri.removeprefix(out + "/"), r.size, r.reason) for r in plan.removals] == [
        ("ingest/cccccccccccc", 6, STALE_OUTPUT),
        ("shards/base/dddddddddddd", 2, STALE_OUTPUT),
        ("shards/gone", 2, STALE_OUTPUT),
        ("ingest/aaaaaaaaaaaa/attempt-2", 4, STALE_ATTEMPT),
    ]
    apply_plan(fs, plan)
    assert {f.uri.removeprefix(out + "/") for f in fs.list_files(out)} == {
        "ingest/aaaaaaaaaaaa/_COMMIT.json", "ingest/aaaaaaaaaaaa/attempt-1/stats.json", "ingest/notes.txt",
        "shards/base/bbbbbbbbbbbb/_COMMIT.json", "shards/base/bbbbbbbbbbbb/attempt-1/manifest.json",
        "report.json"}
