"""Exact dedup: one document per content hash, kept by the keep rule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from codemill.dedup.config import ExactDedupConfig
from codemill.stages.base import DocumentStage, docs_path

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from codemill.schema import StageOutput
    from codemill.storage.folder import Folder

class ExactDedup(DocumentStage):
    name = "exact_dedup"
    sections = {"exact_dedup": ExactDedupConfig}

    def enabled(self) -> bool:
        return self.cfg.exact_dedup.enabled

    def settings(self) -> list[Any]:
        return [self.cfg.exact_dedup]

    def run(self, spark: SparkSession, inputs: dict[str, Folder], work: Folder) -> StageOutput:
        from codemill.dedup.exact import exact_dedup
        from codemill.pipelines.tables import read_documents

        return exact_dedup(spark, read_documents(spark, docs_path(inputs)), self.cfg.exact_dedup)
