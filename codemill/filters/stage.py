"""The filtering stage of the DAG: code heuristics, language id, quality, benchmark
decontamination, then PII scrubbing — each optional, one pass written once."""

from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame, SparkSession

from codemill.config import RunConfig
from codemill.filters.decontam import decontaminate
from codemill.filters.langid import language_filter, quality_filter
from codemill.filters.pii import scrub_pii
from codemill.filters.rules import code_filters
from codemill.schema import DROPPED_SCHEMA, StageOutput


def filter_stage(spark: SparkSession, docs: DataFrame, cfg: RunConfig) -> StageOutput:
    """Every enabled filter in turn; each dropped row names its own stage and reason.
    Extra outputs: the leak report (`leaks`) and PII replacement counts (`pii`)."""
    kept, dropped, extra, tables = docs, [], {}, {}
    steps = [
        (cfg.filters.enabled, lambda d: code_filters(spark, d, cfg.filters)),
        (cfg.langid.enabled, lambda d: language_filter(spark, d, cfg.langid)),
        (cfg.quality.enabled, lambda d: quality_filter(spark, d, cfg.quality)),
    ]
    for enabled, step in steps:
        if enabled:
            out = step(kept)
            kept = out.kept
            dropped.append(out.dropped)
    if cfg.decontam.enabled:
        out, leaks = decontaminate(spark, kept, cfg.decontam)
        kept, tables["leaks"] = out.kept, leaks
        dropped.append(out.dropped)
    if cfg.pii.enabled:
        out, extra["pii"] = scrub_pii(spark, kept, cfg.pii)
        kept = out.kept
    none = spark.createDataFrame([], DROPPED_SCHEMA)
    return StageOutput(kept, reduce(DataFrame.unionByName, dropped, none), extra, tables)
