"""Filters: code heuristics, language id, quality, benchmark decontamination, then PII
scrubbing — each optional, all in one stage written once. Each dropped row names its
own step and reason."""

from __future__ import annotations

from functools import reduce
from typing import TYPE_CHECKING, Any

from codemill.filters.config import (
    DecontamConfig,
    FilterConfig,
    LangIdConfig,
    PiiConfig,
    QualityConfig,
    benchmark_path,
)
from codemill.stages.base import DocumentStage, docs_path
from codemill.storage.folder import local_file
from codemill.storage.local import file_sha256

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from codemill.schema import StageOutput
    from codemill.storage.folder import Folder

class Filters(DocumentStage):
    name = "filters"
    sections = {"filters": FilterConfig, "langid": LangIdConfig, "quality": QualityConfig,
                "decontam": DecontamConfig, "pii": PiiConfig}

    def settings(self) -> list[Any]:
        c = self.cfg
        models = [file_sha256(local_file(m.model_path)) if m.enabled else None for m in (c.langid, c.quality)]
        benchmarks = ([file_sha256(benchmark_path(b)) for b in c.decontam.benchmarks]
                      if c.decontam.enabled else [])
        return [c.filters, c.langid, c.quality, c.decontam, c.pii, models, benchmarks]

    def run(self, spark: SparkSession, inputs: dict[str, Folder], work: Folder) -> StageOutput:
        from pyspark.sql import DataFrame

        from codemill.filters.decontam import decontaminate
        from codemill.filters.langid import language_filter, quality_filter
        from codemill.filters.pii import scrub_pii
        from codemill.filters.steps import code_filters
        from codemill.pipelines.tables import read_documents
        from codemill.schema import DROPPED_SCHEMA, StageOutput

        c = self.cfg
        kept, dropped, extra, tables = read_documents(spark, docs_path(inputs)), [], {}, {}
        steps = [
            (c.filters.enabled, lambda d: code_filters(spark, d, c.filters)),
            (c.langid.enabled, lambda d: language_filter(spark, d, c.langid)),
            (c.quality.enabled, lambda d: quality_filter(spark, d, c.quality)),
        ]
        for enabled, step in steps:
            if enabled:
                out = step(kept)
                kept = out.kept
                dropped.append(out.dropped)
        if c.decontam.enabled:
            out, tables["leaks"] = decontaminate(spark, kept, c.decontam)
            kept = out.kept
            dropped.append(out.dropped)
        if c.pii.enabled:
            out, extra["pii"] = scrub_pii(spark, kept, c.pii)
            kept = out.kept
        none = spark.createDataFrame([], DROPPED_SCHEMA)
        return StageOutput(kept, reduce(DataFrame.unionByName, dropped, none), extra, tables)
