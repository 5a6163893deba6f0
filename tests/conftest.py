"""Shared fixtures: one real local SparkSession, small corpora of real files, and one
finished pretraining run. A test that uses the JVM is marked `spark` (make test-fast
leaves those out)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

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


