"""Filters as Spark jobs: each flags documents in one Arrow pass, and the flagged rows
are split into the kept table and the dropped table."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from codemill.filters.config import FilterConfig
from codemill.filters.rules import flag_batches
from codemill.schema import DOC_COLUMNS, DOC_SCHEMA, DOCUMENT_STORAGE, StageOutput, dropped_rows

STAGE = "filters"

FLAGGED_SCHEMA = StructType(
    DOC_SCHEMA.fields + [StructField("_reason", StringType()), StructField("_detail", StringType())])


def split_flagged(flagged: DataFrame, stage: str) -> StageOutput:
    """Documents with a null `_reason` are kept; the rest are dropped with it and `_detail`.

    `flagged` should be persisted: kept and dropped are two reads of one Python pass."""
    kept = flagged.where(F.col("_reason").isNull()).select(*DOC_COLUMNS)
    dropped = dropped_rows(flagged.where(F.col("_reason").isNotNull()), stage, F.col("_reason"),
                           detail=F.col("_detail"))
    return StageOutput(kept, dropped)


def code_filters(spark: SparkSession, docs: DataFrame, cfg: FilterConfig) -> StageOutput:
    """Drop documents failing a heuristic; reason = rule name, detail = value vs threshold."""
    flagged = docs.select(*DOC_COLUMNS).mapInArrow(
        lambda batches: flag_batches(batches, cfg), FLAGGED_SCHEMA)
    return split_flagged(flagged.persist(DOCUMENT_STORAGE), STAGE)
