"""Ingest: every source into the document table; what cannot be read goes to the
dropped table with a reason."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from codemill.fingerprint import fingerprint
from codemill.ingest.config import IngestConfig
from codemill.stages.base import Stage
from codemill.storage import filesystem, is_local

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from codemill.ingest.walk import FileEntry
    from codemill.schema import StageOutput
    from codemill.storage.folder import Folder


class Ingest(Stage):
    name = "ingest"
    sections = {"ingest": IngestConfig}

    @cached_property
    def spark(self) -> SparkSession | None:
        """Sources outside the local disk are listed through Hadoop: Spark starts early."""
        if all(is_local(src.uri()) for src in self.cfg.sources):
            return None
        from codemill.spark import get_spark

        return get_spark(self.cfg.spark)

    @cached_property
    def listings(self) -> dict[str, list[FileEntry]]:
        """Directory sources are listed once per run: for the fingerprint and the read."""
        from codemill.ingest.stage import list_directory_source

        return {src.name: list_directory_source(self.spark, src, self.cfg.ingest)
                for src in self.cfg.sources if src.type == "dir"}

    def _record_files_signature(self, uri: str) -> str:
        files = filesystem(uri, self.spark).list_files(uri)
        return fingerprint([(f.uri, f.size, f.mtime_ns) for f in files])

    def settings(self) -> list[Any]:
        from codemill.ingest.walk import listing_signature

        inputs = [(src, listing_signature(self.listings[src.name]) if src.type == "dir"
                   else self._record_files_signature(src.uri()))
                  for src in self.cfg.sources]
        return [inputs, self.cfg.ingest]

    def run(self, spark: SparkSession, inputs: dict[str, Folder], work: Folder) -> StageOutput:
        from codemill.ingest.stage import ingest

        return ingest(spark, self.cfg.sources, self.cfg.ingest, self.listings, work)
