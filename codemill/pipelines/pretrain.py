"""The pretraining DAG: ingest -> exact dedup -> report.

Run it with `codemill run CONFIG`, or with Luigi's own launcher:

    luigi --module codemill.pipelines.pretrain PretrainReport --config-path run.toml --local-scheduler
"""

from __future__ import annotations

from functools import cached_property

import luigi

from codemill.config import fingerprint
from codemill.dedup.exact import exact_dedup
from codemill.ingest.stage import ingest, list_directory_source
from codemill.ingest.walk import FileEntry, listing_signature
from codemill.pipelines.base import RunConfigTask, StageTask
from codemill.pipelines.tables import count_and_bytes
from codemill.report.summary import write_report


def _record_files_signature(path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return fingerprint([(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files])


class Ingest(StageTask):
    stage = "ingest"

    @cached_property
    def listings(self) -> dict[str, list[FileEntry]]:
        return {
            src.name: list_directory_source(src, self.cfg.ingest)
            for src in self.cfg.sources
            if src.type == "dir"
        }

    def fingerprint(self) -> str:
        inputs = [
            (src, str(src.resolved_path()),
             listing_signature(self.listings[src.name]) if src.type == "dir"
             else _record_files_signature(src.resolved_path()))
            for src in self.cfg.sources
        ]
        return fingerprint(inputs, self.cfg.ingest)

    def run(self) -> None:
        self.write_stage(lambda spark: ingest(spark, self.cfg.sources, self.cfg.ingest, self.listings))


class ExactDedup(StageTask):
    stage = "exact_dedup"

    def requires(self) -> Ingest:
        return Ingest(config_path=self.config_path, overrides=self.overrides)

    def fingerprint(self) -> str:
        return fingerprint(self.requires().fingerprint(), self.cfg.exact_dedup)

    def run(self) -> None:
        docs = self.input_docs()
        n_in, bytes_in = count_and_bytes(docs)
        self.write_stage(lambda spark: exact_dedup(spark, docs, self.cfg.exact_dedup), n_in, bytes_in)


FINAL_STAGE = ExactDedup


class PretrainReport(RunConfigTask):
    """Gathers every stage's statistics into `<out>/report.json` and prints the summary."""

    def requires(self) -> StageTask:
        return FINAL_STAGE(config_path=self.config_path, overrides=self.overrides)

    @property
    def report_dir(self):
        return self.cfg.out_path() / "reports" / self.requires().fingerprint()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.report_dir / "report.json"))

    def stage_tasks(self) -> list[StageTask]:
        chain = [self.requires()]
        while chain[-1].requires():
            chain.append(chain[-1].requires())
        return chain[::-1]

    def run(self) -> None:
        write_report(self.requires().spark, self.cfg, self.stage_tasks(), self.report_dir)
