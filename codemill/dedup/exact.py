"""Exact dedup: one survivor per group of identical contents (optionally up to whitespace)."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from codemill.dedup.config import ExactDedupConfig
from codemill.dedup.keep_rule import keep_order
from codemill.schema import DOC_COLUMNS, DOCUMENT_STORAGE, StageOutput, dropped_rows

STAGE = "exact_dedup"


def dedup_key(cfg: ExactDedupConfig) -> F.Column:
    if not cfg.normalize_whitespace:
        return F.col("sha256")
    collapsed = F.trim(F.regexp_replace(F.col("content"), r"\s+", " "))
    return F.sha2(collapsed, 256)


def exact_dedup(spark: SparkSession, docs: DataFrame, cfg: ExactDedupConfig) -> StageOutput:
    """Keep the first document of each key group by the keep rule; drop the rest,
    each naming the id it duplicates."""
    group = Window.partitionBy("_key").orderBy(*keep_order())
    ranked = (
        docs.withColumn("_key", dedup_key(cfg))
        .withColumn("_rank", F.row_number().over(group))
        .withColumn("_kept_id", F.first("id").over(group))
        .persist(DOCUMENT_STORAGE)
    )
    reason = "exact_duplicate_whitespace" if cfg.normalize_whitespace else "exact_duplicate"
    kept = ranked.where(F.col("_rank") == 1).select(*DOC_COLUMNS)
    dropped = dropped_rows(ranked.where(F.col("_rank") > 1), STAGE, reason,
                           duplicate_of=F.col("_kept_id"))
    return StageOutput(kept, dropped)
