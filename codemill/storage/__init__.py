"""Storage: every file the pipeline reads or writes outside Spark's own readers and
writers goes through here, so an `out`, a source or a model may live on the local disk,
HDFS or an object store alike.

`filesystem(uri)` picks the implementation: the local disk for bare paths and
`file://`; otherwise Hadoop's FileSystem of the running SparkSession (so the cluster's
connectors and credentials apply) and, where no Spark runs (the trainer, `codemill
shards inspect`), pyarrow.fs.
"""

from __future__ import annotations

import sys
from typing import Any

from codemill.storage.base import FileInfo, FileSystem, StorageError
from codemill.storage.uri import display, has_scheme, is_local, join, local_path, name, parent, scheme, to_uri

_LOCAL = None


def filesystem(uri: str, spark: Any = None) -> FileSystem:
    global _LOCAL
    if is_local(uri):
        if _LOCAL is None:
            from codemill.storage.local import LocalFileSystem

            _LOCAL = LocalFileSystem()
        return _LOCAL
    spark = spark or _active_spark()
    if spark is not None:
        from codemill.storage.hadoop import HadoopFileSystem

        return HadoopFileSystem(spark)
    from codemill.storage.arrow import ArrowFileSystem

    return ArrowFileSystem()


def _active_spark() -> Any:
    """The running SparkSession, if this process has one (without importing pyspark)."""
    if "pyspark.sql" not in sys.modules:
        return None
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


__all__ = ["FileInfo", "FileSystem", "StorageError", "display", "filesystem", "has_scheme",
           "is_local", "join", "local_path", "name", "parent", "scheme", "to_uri"]
