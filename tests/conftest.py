"""Shared fixtures: one real local SparkSession, small corpora of real files, one
finished pretraining run, and a real S3-compatible server on localhost. A test that
uses the JVM is marked `spark` (make test-fast leaves those out)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from pyspark.sql import SparkSession

import codemill.storage
from codemill.spark import get_spark

from support import TEST_SPARK, copy_real_tree, run_dag, write_config

# Fixtures that start or need the JVM: a test using one is in the `spark` tier.
SPARK_FIXTURES = {"spark", "finished_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SPARK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = get_spark(TEST_SPARK)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def real_tree(tmp_path_factory) -> Path:
    """A few hundred real files, including exact duplicates and natural-language docs."""
    root = copy_real_tree(tmp_path_factory.mktemp("real"), ("json", "email", "http", "wsgiref"))
    # exact copies of a few modules, as vendored code would carry them
    vendored = root / "vendored"
    vendored.mkdir()
    for name in ("decoder.py", "encoder.py", "scanner.py"):
        shutil.copy(root / "py" / "json" / name, vendored / name)
    return root


@pytest.fixture(scope="session")
def finished_run(spark, real_tree, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dag")
    config = write_config(tmp / "run.toml", real_tree, tmp / "out")
    assert run_dag(config)
    return config




@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free local port, for the session: its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch) -> str:
    """A new bucket, `s3://<name>`, with the standard AWS variables pointing at the server,
    in a process that, like the trainer, reaches it through pyarrow.fs rather than the
    session's Spark (a SparkSession another test started stays active)."""
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "codemill-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "codemill-test")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr(codemill.storage, "_active_spark", lambda: None)
    bucket = f"codemill-{uuid.uuid4().hex[:12]}"
    host = s3_server.split("://", 1)[1]
    pafs.S3FileSystem(endpoint_override=host, scheme="http", allow_bucket_creation=True).create_dir(bucket)
    return f"s3://{bucket}"
