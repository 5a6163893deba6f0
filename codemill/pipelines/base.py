"""What every codemill Luigi task shares: the run config, a fingerprinted output
directory, atomic writes, and a readable failure message."""

from __future__ import annotations

import sys
import time
from functools import cached_property
from pathlib import Path
from collections.abc import Callable
from typing import ClassVar

import luigi
from pyspark.sql import DataFrame, SparkSession

from codemill.atomic import atomic_dir
from codemill.config import RunConfig, load_config
from codemill.errors import explain
from codemill.pipelines.tables import compute_stats, read_table, write_table
from codemill.schema import StageOutput
from codemill.spark import get_spark
from codemill.stats import StageStats


class RunConfigTask(luigi.Task):
    """A task configured by one run config (a TOML path, or the embedded demo) plus overrides."""

    config_path = luigi.Parameter(default="", description="run config TOML; empty: the embedded demo")
    overrides = luigi.ListParameter(default=[], description='config overrides, e.g. ["spark.master=local[2]"]')

    @cached_property
    def cfg(self) -> RunConfig:
        return load_config(self.config_path or None, list(self.overrides))

    def upstream(self) -> dict[str, str]:
        return {}

    def on_failure(self, exception: BaseException) -> str:
        message = f"{self.task_family} failed: {explain(exception)}"
        print(f"codemill: {message}", file=sys.stderr)
        return message


class StageTask(RunConfigTask):
    """A stage whose output is `<out>/<stage>/<fingerprint>/` holding `docs/`,
    `dropped/` and `stats.json`. The fingerprint covers every parameter and
    input that changes the result, so a changed setting never reuses stale output."""

    stage: ClassVar[str]

    def fingerprint(self) -> str:
        raise NotImplementedError

    @property
    def output_dir(self) -> Path:
        return self.cfg.out_path() / self.stage / self.fingerprint()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.output_dir / "_SUCCESS"))

    @property
    def spark(self) -> SparkSession:
        return get_spark(self.cfg.spark)

    def input_docs(self) -> DataFrame:
        return read_table(self.spark, self.requires().output_dir / "docs")

    def write_stage(
        self,
        make_output: Callable[[SparkSession, Path], StageOutput],
        docs_in: int | None = None,
        bytes_in: int | None = None,
    ) -> StageStats:
        """Run `make_output(spark, tmp_dir)` and write its tables atomically with their stats.
        `docs_in`/`bytes_in` of None: the stage's input is what it kept plus what it dropped."""
        started = time.monotonic()
        with atomic_dir(self.output_dir) as tmp:
            out: StageOutput = make_output(self.spark, tmp)
            write_table(out.kept, tmp / "docs")
            write_table(out.dropped, tmp / "dropped")
            for name, table in out.tables.items():
                table.write.parquet(str(tmp / name))
            stats = compute_stats(
                self.stage,
                docs_in,
                bytes_in,
                read_table(self.spark, tmp / "docs"),
                read_table(self.spark, tmp / "dropped"),
                time.monotonic() - started,
            )
            stats.extra.update(out.extra)
            stats.write(tmp / "stats.json")
        self.spark.catalog.clearCache()  # stages persist their one pass over the input
        return stats


def stage_stats(task: StageTask) -> StageStats:
    return StageStats.read(Path(task.output_dir) / "stats.json")
