"""The DAG on a non-local Hadoop file system: sources and `out` under `viewfs://`, a
scheme pyspark's own Hadoop client ships, mounted onto local folders. Any code that
still treated a location as a local path would fail here (or write into the working
directory, which the test checks stays empty)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from codemill.pipelines.tables import table_digest
from codemill.pipelines.task import stage_task
from codemill.storage.folder import Folder

from support import attempts, wait_for, write_config

CODEMILL = [sys.executable, "-m", "codemill.cli"]


def viewfs_config(path: Path, tree: Path, mount: Path, cluster: str) -> Path:
    links = {f"spark.hadoop.fs.viewfs.mounttable.{cluster}.link./corpus": f"file://{tree}",
             f"spark.hadoop.fs.viewfs.mounttable.{cluster}.link./out": f"file://{mount}"}
    return write_config(path, f"viewfs://{cluster}/corpus", f"viewfs://{cluster}/out", spark_conf=links)


def sorted_rows(table: Path | str) -> list[dict]:
    return sorted(pq.read_table(table).to_pylist(), key=lambda row: row["id"])


def committed(fingerprint_dir: Path) -> Path:
    return fingerprint_dir / json.loads((fingerprint_dir / "_COMMIT.json").read_text())["attempt"]


def uncommitted(out: Path) -> list[Path]:
    """Attempts of stages not committed yet."""
    return [p for p in out.rglob("attempt-*") if not (p.parent / "_COMMIT.json").exists()]


def shard_checksums(out: Path) -> dict[str, list[str]]:
    checksums = {}
    for mix in ("base", "python"):
        (fingerprint_dir,) = (out / "shards" / mix).iterdir()
        manifest = json.loads((committed(fingerprint_dir) / "manifest.json").read_text())
        checksums[mix] = [s["sha256"] for s in manifest["shards"]]
    return checksums


def test_dag_on_viewfs_refuses_a_second_run_resumes_and_matches_the_local_run(finished_run, real_tree,
                                                                              tmp_path):
    mount, cwd = tmp_path / "mounted-out", tmp_path / "cwd"
    mount.mkdir()
    cwd.mkdir()
    config = viewfs_config(tmp_path / "run.toml", real_tree, mount, "codemilltest")
    run = [*CODEMILL, "run", str(config)]
    first = subprocess.Popen(run, cwd=cwd, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(mount.glob("ingest/*/attempt-*/docs")), 300, "the first run to write")
        (first_attempt,) = mount.glob("ingest/*/attempt-*")
        lease = (mount / "_LEASE.json").read_text()

        os.killpg(first.pid, signal.SIGSTOP)  # still holding the lease, whatever the load
        try:
            second = subprocess.run(run, cwd=cwd, capture_output=True, text=True)
        finally:
            os.killpg(first.pid, signal.SIGCONT)
        assert second.returncode == 3
        (line,) = [line for line in second.stderr.splitlines() if line.startswith("codemill:")]
        assert "viewfs://codemilltest/out is being written by run" in line and "use another out or wait" in line
        # nothing of the first run touched: its lease and its one attempt stay
        assert json.loads((mount / "_LEASE.json").read_text())["run_id"] == json.loads(lease)["run_id"]
        assert list(mount.glob("ingest/*/attempt-*")) == [first_attempt]
        wait_for(lambda: uncommitted(mount), 300, "the first run to write a stage")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert uncommitted(mount)  # killed mid-stage

    resumed = subprocess.run(run, cwd=cwd, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "viewfs://codemilltest/out" in resumed.stdout
    for fingerprint_dir in {p.parent for p in mount.rglob("attempt-*")}:
        assert attempts(fingerprint_dir) == [committed(fingerprint_dir).name]  # killed attempts are gone
    assert not (mount / "_LEASE.json").exists()
    assert list(cwd.iterdir()) == []
    local = {mix: [s["sha256"] for s in json.loads(
        stage_task("shards", finished_run, item=mix).committed().read_text("manifest.json"))["shards"]]
        for mix in ("base", "python")}
    assert shard_checksums(mount) == local
    for stage in ("ingest", "exact_dedup"):
        (remote_dir,) = (mount / stage).iterdir()
        local = stage_task(stage, finished_run).committed()
        for table in ("docs", "dropped"):
            if stage == "ingest":  # written by its read tasks here, in input order; sorted by Spark there
                assert sorted_rows(committed(remote_dir) / table) == sorted_rows(local.sub(table).uri)
            else:
                assert table_digest(Folder(committed(remote_dir) / table)) == table_digest(local.sub(table))


def test_file_uris_read_and_write_like_plain_paths(spark, real_tree, tmp_path):
    from codemill.storage import to_uri

    from support import run_dag

    plain = write_config(tmp_path / "plain.toml", real_tree, tmp_path / "plain-out")
    uris = write_config(tmp_path / "uris.toml", to_uri(real_tree), to_uri(tmp_path / "uri-out"))
    for config in (plain, uris):
        assert run_dag(config, target="exact_dedup")
    for stage in ("ingest", "exact_dedup"):
        via_uri, via_path = (stage_task(stage, c).committed() for c in (uris, plain))
        assert via_uri.uri.startswith(f"file://{tmp_path}/uri-out/{stage}/")
        for table in ("docs", "dropped"):
            assert table_digest(via_uri.sub(table)) == table_digest(via_path.sub(table))
