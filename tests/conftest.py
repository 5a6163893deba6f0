"""Shared fixtures: one real local SparkSession, and small corpora of real files."""

from __future__ import annotations

import shutil
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from codemill.config import SparkConfig
from codemill.spark import get_spark

STDLIB = Path(sysconfig.get_paths()["stdlib"])
INCLUDE = Path(sysconfig.get_paths()["include"])
TEST_SPARK = SparkConfig(
    master="local[2]",
    conf={"spark.sql.shuffle.partitions": "4", "spark.driver.memory": "2g"},
)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = get_spark(TEST_SPARK)
    yield session
    session.stop()


def copy_real_tree(dest: Path, stdlib_dirs: tuple[str, ...], headers: int = 40) -> Path:
    """Copy real code from this interpreter: some stdlib packages, C headers, docs."""
    for name in stdlib_dirs:
        shutil.copytree(STDLIB / name, dest / "py" / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "include").mkdir(parents=True, exist_ok=True)
    for header in sorted(INCLUDE.glob("*.h"))[:headers]:
        shutil.copy(header, dest / "include" / header.name)
    shutil.copy(STDLIB / "LICENSE.txt", dest / "LICENSE.txt")
    return dest


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
