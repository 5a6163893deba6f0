"""The data contracts between stages (docs/architecture.md, data contracts), as Spark schemas.

Every stage reads and writes the *document table*; whatever a stage removes
goes to the *dropped table*: the same columns plus where and why, so any drop
can be inspected or undone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    LongType,
    StringType,
    StructField,
    StructType,
)

# Intermediate tables holding document content are persisted on disk only: in local mode
# a cache in memory shares the driver's heap with every running task, and a 1 GB driver
# ran out of it caching a million documents (MEMORY_AND_DISK builds each cached batch,
# and many of them between two checks of the budget, in the heap).
DOCUMENT_STORAGE = StorageLevel.DISK_ONLY

DOC_SCHEMA = StructType(
    [
        StructField("id", StringType(), False),
        StructField("source", StringType(), False),
        StructField("repo", StringType(), True),
        StructField("path", StringType(), False),
        StructField("lang", StringType(), True),
        StructField("kind", StringType(), True),  # code | nl_code | nl
        # what decided `kind`: extension | source | filename | classifier
        StructField("kind_source", StringType(), True),
        StructField("license", StringType(), True),
        StructField("content", StringType(), True),
        StructField("size_bytes", LongType(), False),
        StructField("sha256", StringType(), True),
        StructField("stars", LongType(), True),
        StructField("invalid_utf8", BooleanType(), False),
    ]
)

DOC_COLUMNS = [f.name for f in DOC_SCHEMA.fields]

# `duplicate_of` names the surviving document of a dedup drop; `detail` carries
# reason-specific context (a JSONL file:line, a cluster id, an error message).
DROPPED_SCHEMA = StructType(
    DOC_SCHEMA.fields
    + [
        StructField("stage", StringType(), False),
        StructField("reason", StringType(), False),
        StructField("duplicate_of", StringType(), True),
        StructField("detail", StringType(), True),
    ]
)

DROPPED_COLUMNS = [f.name for f in DROPPED_SCHEMA.fields]


def dropped_rows(df: DataFrame, stage: str, reason: str | Column,
                 duplicate_of: str | Column | None = None,
                 detail: str | Column | None = None) -> DataFrame:
    """Rows of `df` (the document columns, and any others) as dropped-table rows.

    `reason`, `duplicate_of` and `detail` are each a string (the same value on every
    row), a Column (per row), or None (null)."""

    def value(v: str | Column | None) -> Column:
        if v is None:
            return F.lit(None).cast("string")
        return F.lit(v) if isinstance(v, str) else v

    return df.select(
        *DOC_COLUMNS,
        F.lit(stage).alias("stage"),
        value(reason).alias("reason"),
        value(duplicate_of).alias("duplicate_of"),
        value(detail).alias("detail"),
    )


def document_id(source: str, path: str, content_sha256: str) -> str:
    """Stable id from where a document came from and what it holds.

    Never derived from row position, so the same input gives the same id in
    every run and on every partitioning (dedup survivors depend on it).
    """
    key = f"{source}\0{path}\0{content_sha256}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


@dataclass
class StageOutput:
    """What a stage returns: the documents it keeps and the rows it drops, plus any
    stage-specific figures for its stats and extra tables to write beside them."""

    kept: DataFrame
    dropped: DataFrame
    extra: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, DataFrame] = field(default_factory=dict)
    # Set when the stage wrote `docs` and `dropped` itself: what they hold, as
    # reason (None: kept) -> (documents, bytes).
    counts: dict[str | None, tuple[int, int]] | None = None
