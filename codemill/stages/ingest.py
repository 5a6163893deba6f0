"""Ingest: every source into the document table; what cannot be read goes to the
dropped table with a reason."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codemill.fingerprint import fingerprint
from codemill.ingest.config import IngestConfig
from codemill.stages.base import Stage

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from codemill.ingest.walk import FileEntry
    from codemill.schema import StageOutput


def _record_files_signature(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return fingerprint([(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files])


class Ingest(Stage):
    name = "ingest"
    sections = {"ingest": IngestConfig}

    @cached_property
    def listings(self) -> dict[str, list[FileEntry]]:
        """Directory sources are listed once per run: for the fingerprint and the read."""
        from codemill.ingest.stage import list_directory_source

        return {src.name: list_directory_source(src, self.cfg.ingest)
                for src in self.cfg.sources if src.type == "dir"}

    def settings(self) -> list[Any]:
        from codemill.ingest.walk import listing_signature

        inputs = [(src, listing_signature(self.listings[src.name]) if src.type == "dir"
                   else _record_files_signature(src.resolved_path()))
                  for src in self.cfg.sources]
        return [inputs, self.cfg.ingest]

    def run(self, spark: SparkSession, inputs: dict[str, Path], work_dir: Path) -> StageOutput:
        from codemill.ingest.stage import ingest

        return ingest(spark, self.cfg.sources, self.cfg.ingest, self.listings)
