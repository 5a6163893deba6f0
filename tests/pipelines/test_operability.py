"""What a user sees around the stages: one line per failure naming its cause, Spark jobs
named after the DAG, progress in Luigi and on the console, and failing early on inputs
that cannot work."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from luigi.scheduler import Scheduler
from luigi.worker import Worker

from codemill.observe import Progress, describe_activity, stage_jobs, step
from codemill.pipelines.task import stage_task

from support import STDLIB, free_port, write_config

CODEMILL = [sys.executable, "-m", "codemill.cli"]


def codemill(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *CODEMILL, *args], capture_output=True, text=True)


def assert_one_line_per_failure(stderr: str) -> None:
    """No Python traceback and no Java stack frame reaches the console."""
    assert "Traceback (most recent call last)" not in stderr, stderr[-3000:]
    assert not [line for line in stderr.splitlines() if line.startswith("\tat ")], stderr[-3000:]


@pytest.fixture
def python_only(tmp_path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(STDLIB / "json", tree, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


@pytest.mark.parametrize("flags, error", [
    (("--master", "local[two]"),
     "spark.master: 'local[two]' is not a Spark master URL: use local, local[N], local[*], "
     "local[N,retries], spark://HOST:PORT, yarn or k8s://HOST:PORT (from --set spark.master=\"local[two]\")"),
    (("--set", "pack.seq_len=0"),
     "pack.seq_len: 0 is out of range: must be in [16, 1048576] (from --set pack.seq_len=0)"),
])
def test_a_bad_setting_fails_before_spark_starts_in_one_line(python_only, tmp_path, flags, error):
    config = write_config(tmp_path / "run.toml", python_only, tmp_path / "out")
    result = codemill("run", str(config), *flags)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"codemill: config error: {error}"]


def test_an_unreachable_scheduler_is_named(python_only, tmp_path):
    config = write_config(tmp_path / "run.toml", python_only, tmp_path / "out")
    port = free_port()
    result = codemill("run", str(config), "--scheduler", f"localhost:{port}")
    assert result.returncode == 2
    assert f"codemill: no Luigi scheduler answers at localhost:{port} (Connection refused)" in result.stderr
    assert_one_line_per_failure(result.stderr)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("_COMMIT.json"))


def test_a_dir_source_that_is_a_file_is_one_line(python_only, tmp_path):
    config = write_config(tmp_path / "run.toml", python_only / "decoder.py", tmp_path / "out")
    result = codemill("run", str(config))
    assert result.returncode == 2
    assert f"codemill: source 'real': {python_only / 'decoder.py'} is not a directory" in result.stderr
    assert_one_line_per_failure(result.stderr)


@pytest.mark.spark
def test_a_python_only_corpus_fails_before_the_tokenizer_with_a_mix_that_works(python_only, tmp_path):
    config = write_config(tmp_path / "run.toml", python_only, tmp_path / "out")
    result = codemill("run", str(config))
    assert result.returncode == 1
    assert "codemill: tokenizer failed: mix 'base' wants nl, nl_code; mix 'python' wants nl, nl_code, " \
           "but the corpus has no documents of that kind" in result.stderr
    assert '[[mix.mixes]]\nname = "base"\nshares = { code = 1 }' in result.stderr
    assert "full stack: " in result.stderr
    logs = list((tmp_path / "out" / "_logs").glob("*-tokenizer.log"))
    assert len(logs) == 1 and "Traceback" in logs[0].read_text()
    assert not (tmp_path / "out" / "tokenizer").exists() or \
        not list((tmp_path / "out" / "tokenizer").rglob("_COMMIT.json"))
    assert_one_line_per_failure(result.stderr)


def _can_mount_tmpfs() -> bool:
    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.spark
@pytest.mark.skipif(not shutil.which("unshare") or not _can_mount_tmpfs(),
                    reason="needs a mount namespace (unshare) to make a small full disk")
def test_a_full_disk_is_named_with_a_hint(real_tree, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    config = write_config(tmp_path / "run.toml", real_tree, small / "out")
    # `out` on a 400 kB disk: ingest's tables do not fit
    mount = f"mount -t tmpfs -o size=400k tmpfs {small} && exec \"$@\""
    result = codemill("run", str(config),
                      prefix=("unshare", "--mount", "--map-root-user", "sh", "-c", mount, "sh"))
    assert result.returncode == 1
    assert "failed: no space left on device (writing " in result.stderr
    assert "hint: free space on the disk that holds `out`" in result.stderr
    assert_one_line_per_failure(result.stderr)


def _spark_jobs(spark) -> list[dict]:
    app = spark.sparkContext.applicationId
    with urllib.request.urlopen(f"{spark.sparkContext.uiWebUrl}/api/v1/applications/{app}/jobs") as r:
        return sorted(json.load(r), key=lambda job: job["jobId"])


def _task_ids(task) -> set[str]:
    return {task.task_id}.union(*(_task_ids(t) for t in task.requires().values()))


def test_every_spark_job_of_a_run_names_its_stage(spark, finished_run):
    tasks = _task_ids(stage_task("report", finished_run))
    jobs = _spark_jobs(spark)
    grouped = [job for job in jobs if job.get("jobGroup") in tasks]
    first, last = grouped[0]["jobId"], grouped[-1]["jobId"]
    # the run ran in this process, one stage after another: every job from its first to
    # its last is one of its stages'
    assert [job for job in jobs if first <= job["jobId"] <= last] == grouped
    stages = {job["description"].split(":")[0] for job in grouped}
    assert {"ingest", "exact_dedup", "near_dedup", "filters", "kinds", "tokenizer",
            "token_counts", "shards[base]", "shards[python]", "report"} <= stages
    descriptions = {job["description"] for job in grouped}
    assert {"near_dedup: LSH candidate pairs", "ingest: read every source and write both tables",
            "shards[base]: tokenize, FIM and pack"} <= descriptions


def test_luigi_shows_status_progress_and_the_spark_ui(spark, python_only, tmp_path):
    config = write_config(tmp_path / "run.toml", python_only, tmp_path / "out")
    scheduler = Scheduler()
    task = stage_task("ingest", config)
    with Worker(scheduler=scheduler, worker_processes=1) as worker:
        worker.add(task)
        assert worker.run()
    [done] = scheduler.task_list("DONE", "").values()
    assert re.fullmatch(r"ingest done in [\d.]+ s: 5 documents in, 5 kept, 0 dropped",
                        done["status_message"])  # the five modules of the json package
    assert done["tracking_url"] == spark.sparkContext.uiWebUrl


def test_progress_names_the_running_job_and_counts_its_tasks(spark):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def wait_for_the_test(batches):  # each task holds until the test lets it go
        import socket

        with socket.create_connection(("127.0.0.1", port)) as connection:
            connection.recv(1)
        yield from batches

    def job() -> None:
        with stage_jobs(spark, "test-group", "near_dedup"), step("LSH candidate pairs"):
            spark.range(2, numPartitions=2).mapInArrow(wait_for_the_test, "id long").collect()

    runner = threading.Thread(target=job)
    runner.start()
    held = [server.accept()[0] for _ in range(2)]  # both tasks are running now
    try:
        # the status tracker learns of task starts through Spark's event loops: drain them
        for _ in range(10_000):
            spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty()
            activity, share = describe_activity(spark.sparkContext)
            if activity.endswith("2 running"):
                break
        reports = []
        line = Progress("near_dedup", spark.sparkContext, lambda m, p: reports.append((m, p))).tick()
    finally:
        for connection in held:
            connection.sendall(b"go")
            connection.close()
        runner.join()
        server.close()
    assert activity == "near_dedup: LSH candidate pairs: 0/2 tasks done, 2 running" and share == 0
    assert line.startswith("[near_dedup] 0:00: near_dedup: LSH candidate pairs: 0/2 tasks done")
    assert "\r" not in line and reports == [(line, 0)]


@pytest.mark.spark
def test_json_logs_are_one_object_per_line(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad.jsonl").write_text('{"content": "x = 1\\n", "path": "a.py"}\n{oops\n')
    config = write_config(tmp_path / "run.toml", tmp_path / "data", tmp_path / "out")
    config.write_text(config.read_text().replace('type = "dir"', 'type = "jsonl"'))
    result = codemill("run", str(config), "--log-json")
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {r["logger"] for r in records} >= {"luigi-interface", "codemill"}
    assert all(r["run_id"] == records[0]["run_id"] and r["time"].endswith("Z") for r in records)
    [failure] = [r for r in records if r["level"] == "ERROR" and r["logger"] == "codemill"]
    assert failure["message"].startswith(
        f"ingest failed: {tmp_path / 'data' / 'bad.jsonl'}:2: malformed JSONL record")
    assert_one_line_per_failure(result.stderr)
