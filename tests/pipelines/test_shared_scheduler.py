"""Task identity on a shared `luigid`: what a task computes, never how it was asked for."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from codemill.pipelines.task import stage_task

from support import attempts, free_port, listening, output_dir, run_dag, wait_for, write_config


def small_tree(root: Path, tag: str) -> Path:
    root.mkdir(parents=True)
    for i in range(6):
        (root / f"m{i}.py").write_text(f"# {tag}\ndef f{i}(x):\n    return x * {i} + len({tag!r})\n")
    return root


def test_task_ids_follow_the_work_not_the_config_path_or_flags(tmp_path):
    tree = small_tree(tmp_path / "tree", "a")
    mine = write_config(tmp_path / "alice" / "run.toml", tree, tmp_path / "out")
    theirs = write_config(tmp_path / "bob" / "other-name.toml", tree, tmp_path / "out")
    ids = {stage_task("exact_dedup", cfg, flags).task_id
           for cfg in (mine, theirs)
           for flags in ([], ["luigi.workers=2"], ["luigi.local_scheduler=false", "luigi.scheduler_port=9"])}
    assert len(ids) == 1  # same work: one task on any scheduler
    other_work = stage_task("exact_dedup", mine, ["exact_dedup.normalize_whitespace=true"]).task_id
    other_out = stage_task("exact_dedup", mine, [f'out="{tmp_path / "out2"}"']).task_id
    assert len(ids | {other_work, other_out}) == 3


@pytest.fixture
def luigid(tmp_path) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("luigid")), "--port", str(port), "--address", "127.0.0.1",
         "--state-path", str(tmp_path / "state.pickle"), "--logdir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port), 60, "luigid to listen")
        yield port
    finally:
        proc.terminate()
        proc.wait()


def done_tasks(port: int) -> dict:
    query = urllib.parse.quote(json.dumps({"status": "DONE"}))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/task_list?data={query}") as r:
        return json.loads(r.read())["response"]


def test_one_luigid_serves_different_runs_and_shares_identical_work(spark, luigid, tmp_path):
    central = dict(local_scheduler=False, scheduler_host="127.0.0.1", scheduler_port=luigid)
    # two users' different configs, both called run.toml
    first = write_config(tmp_path / "alice" / "run.toml", small_tree(tmp_path / "a", "a"), tmp_path / "out-a")
    second = write_config(tmp_path / "bob" / "run.toml", small_tree(tmp_path / "b", "b"), tmp_path / "out-b")
    assert run_dag(first, target="exact_dedup", **central)
    assert run_dag(second, target="exact_dedup", **central)
    for config in (first, second):
        assert stage_task("exact_dedup", config).complete()
    assert len(done_tasks(luigid)) == 4  # ingest and exact dedup of each run

    # a third user with the same work under another name and other flags: nothing runs again
    same = tmp_path / "carol" / "mine.toml"
    same.parent.mkdir()
    same.write_text(first.read_text())
    task = stage_task("exact_dedup", same, ["luigi.workers=2"])
    before = attempts(output_dir(task).parent)
    assert run_dag(same, ["luigi.workers=2"], target="exact_dedup", **central)
    assert attempts(output_dir(task).parent) == before
    assert len(done_tasks(luigid)) == 4


def test_a_task_run_by_another_worker_is_reported_in_one_line(spark, luigid, tmp_path, capsys):
    from luigi.rpc import RemoteScheduler

    config = write_config(tmp_path / "run.toml", small_tree(tmp_path / "tree", "c"), tmp_path / "out")
    task = stage_task("ingest", config)
    scheduler = RemoteScheduler(f"http://127.0.0.1:{luigid}")
    scheduler.add_task(worker="someone-else", task_id=task.task_id, status="PENDING", runnable=True,
                       family="RunStage", params=task.to_str_params())
    assert scheduler.get_work(worker="someone-else")["task_id"] == task.task_id  # now running there
    capsys.readouterr()
    central = dict(local_scheduler=False, scheduler_host="127.0.0.1", scheduler_port=luigid)
    assert not run_dag(config, target="ingest", **central)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("codemill:")]
    assert len(lines) == 1 and "ingest is being run by another worker" in lines[0]
    assert not task.complete()
