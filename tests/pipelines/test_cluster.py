"""The DAG on a real Spark standalone cluster: a master and a worker on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pyspark
import pytest
from test_pipeline import shard_checksums

from codemill.pipelines.tables import table_digest
from codemill.pipelines.task import stage_task

from support import free_port, listening, wait_for, write_config

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"


def alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return int(json.loads(r.read()).get("aliveworkers", 0))
    except OSError:
        return 0


@pytest.fixture(scope="module")
def standalone_master(tmp_path_factory):
    env = {**os.environ, "SPARK_HOME": str(SPARK_CLASS.parent.parent), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_WORKER_DIR": str(tmp_path_factory.mktemp("spark-work"))}
    port, ui = free_port(), free_port()
    master = subprocess.Popen(
        [str(SPARK_CLASS), "org.apache.spark.deploy.master.Master",
         "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        wait_for(lambda: listening(port), 120, "the Spark master")
        worker = subprocess.Popen(
            [str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
             "--cores", "2", "--memory", "2g", "--webui-port", str(free_port()),
             f"spark://127.0.0.1:{port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: alive_workers(ui) == 1, 120, "the Spark worker to register")
        yield f"spark://127.0.0.1:{port}"
    finally:
        for proc in (worker, master):
            if proc:
                proc.terminate()
                proc.wait()


@pytest.mark.cluster
def test_standalone_cluster_gives_the_local_result(standalone_master, finished_run, real_tree, tmp_path):
    config = write_config(tmp_path / "run.toml", real_tree, tmp_path / "out")
    result = subprocess.run(
        [sys.executable, "-m", "codemill.cli", "run", str(config), "--master", standalone_master,
         "--set", 'spark.conf."spark.executor.memory"="1g"'],
        capture_output=True, text=True, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("ingest", "exact_dedup"):
        on_cluster = stage_task(stage, config).committed()
        local = stage_task(stage, finished_run).committed()
        for table in ("docs", "dropped"):
            assert table_digest(on_cluster.sub(table)) == table_digest(local.sub(table))
    assert shard_checksums(config) == shard_checksums(finished_run)
