"""Near dedup: MinHash LSH candidates verified by exact Jaccard, clustered in Spark;
the cluster table is written beside the documents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from codemill.dedup.config import NearDedupConfig
from codemill.stages.base import DocumentStage, docs_path

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from codemill.schema import StageOutput
    from codemill.storage.folder import Folder

class NearDedup(DocumentStage):
    name = "near_dedup"
    sections = {"near_dedup": NearDedupConfig}

    def enabled(self) -> bool:
        return self.cfg.near_dedup.enabled

    def settings(self) -> list[Any]:
        return [self.cfg.near_dedup]

    def run(self, spark: SparkSession, inputs: dict[str, Folder], work: Folder) -> StageOutput:
        from codemill.dedup.near import near_dedup_stage
        from codemill.pipelines.tables import read_documents, upstream_stats

        upstream = upstream_stats(inputs)
        return near_dedup_stage(spark, read_documents(spark, docs_path(inputs)), self.cfg.near_dedup,
                                (upstream.docs_out, upstream.bytes_out) if upstream else None)
