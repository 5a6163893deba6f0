"""The one Luigi task: it runs any registered stage.

    luigi --module codemill.pipelines.task RunStage --stage report --config-path run.toml --local-scheduler

Its output is the folder `<out>/<stage folders>/<fingerprint>/`, where `out` is any
URI (a local path, `hdfs://`, `s3a://`, …). The fingerprint hashes the stage's name
and item, its inputs' fingerprints and its `settings()`; it is computed once per task
object (Luigi keeps one object per parameter set), so a run walks sources and hashes
model files once.

The task's identity — what a shared `luigid` deduplicates by — is what it computes:
the stage, the output URI and the fingerprint; never the config's path as typed nor
scheduler or worker flags. So two users running the same work share it, and two
different runs never collide.

Each run writes its own attempt folder inside the output folder and commits it with
a commit record, written last (`codemill.storage.commit`); the task is complete when
the record exists. While it works, the run holds the lease on `out`
(`codemill.storage.lease`), which also makes removing other runs' stale attempts safe.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from functools import cached_property
from typing import Any

import luigi
from luigi.task import task_id_str

from codemill.config import load_run_config
from codemill.errors import diagnose
from codemill.fingerprint import fingerprint
from codemill.runlog import failure_log, jvm_log_file
from codemill.stages import make_stage
from codemill.stages.base import Stage, StageRef
from codemill.storage import FileSystem, display, filesystem, is_local, join, scheme
from codemill.storage.commit import attempt_name, clean_stale_attempts, commit, read_commit, resolve, verify
from codemill.storage.folder import Folder
from codemill.storage.lease import RUN_ID, hold

# schemes pyarrow.fs reaches without Spark; any other non-local out is reached through
# Hadoop, for which a SparkSession is started even for stages that need none
ARROW_SCHEMES = {"s3", "s3a", "gs", "gcs"}

log = logging.getLogger("codemill")


def out_filesystem(cfg: Any) -> FileSystem:
    """The file system of the run's `out`, starting Spark when only Hadoop reaches it."""
    out = cfg.out_uri()
    if not is_local(out) and scheme(out) not in ARROW_SCHEMES:
        from codemill.spark import get_spark

        return filesystem(out, get_spark(cfg.spark, jvm_log_file(cfg)))
    return filesystem(out)


class CommittedOutput(luigi.Target):
    """A stage's output folder; it exists once a commit record names its attempt."""

    def __init__(self, uri: str, cfg: Any) -> None:
        self.uri, self.cfg = uri, cfg

    def exists(self) -> bool:
        return read_commit(out_filesystem(self.cfg), self.uri) is not None


class RunStage(luigi.Task):
    stage = luigi.Parameter(description="a registered stage, e.g. near_dedup or report")
    item = luigi.Parameter(default="", description="for a stage run per item: which (a mix name)")
    config_path = luigi.Parameter(default="", description="run config TOML; empty: the embedded demo")
    overrides = luigi.ListParameter(default=[], description='config overrides, e.g. ["seed=1"]')

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task_id = task_id_str(self.get_task_family(), {
            "stage": self.stage, "item": self.item, "out": self.cfg.out_uri(), "fingerprint": self.fingerprint})

    @cached_property
    def cfg(self) -> Any:
        return load_run_config(self.config_path or None, list(self.overrides))

    @cached_property
    def impl(self) -> Stage:
        return make_stage(self.cfg, self.stage, self.item)

    def _task(self, ref: StageRef) -> RunStage:
        return RunStage(stage=ref.stage, item=ref.item, config_path=self.config_path,
                        overrides=self.overrides)

    def requires(self) -> dict[str, RunStage]:
        return {name: self._task(ref) for name, ref in self.impl.inputs().items()}

    @cached_property
    def fingerprint(self) -> str:
        upstream = {name: task.fingerprint for name, task in self.requires().items()}
        return fingerprint(self.stage, self.item, upstream, self.impl.settings())

    @property
    def output_uri(self) -> str:
        return join(self.cfg.out_uri(), *self.impl.output_parts(), self.fingerprint)

    def output(self) -> CommittedOutput:
        return CommittedOutput(self.output_uri, self.cfg)

    def committed(self) -> Folder:
        """The committed attempt, checked against its commit record."""
        fs = out_filesystem(self.cfg)
        problems = verify(fs, self.output_uri)
        if problems:
            raise RuntimeError(f"{self.stage} output {self.output_uri} is damaged ({'; '.join(problems[:3])}); "
                               "delete that folder to have it recomputed")
        return Folder(resolve(fs, self.output_uri), fs)

    @property
    def label(self) -> str:
        """The stage as people name it: `near_dedup`, `shards[python]`."""
        return f"{self.stage}[{self.item}]" if self.item else str(self.stage)

    def _report(self, message: str, percent: int | None) -> None:
        self.set_status_message(message)
        if percent is not None:
            self.set_progress_percentage(percent)

    def run(self) -> None:
        from codemill.observe import Progress, stage_jobs
        from codemill.pipelines.tables import upstream_stats, write_stage_output

        fs = out_filesystem(self.cfg)
        hold(fs, self.cfg.out_uri(), self.cfg.lease_seconds)
        spark = None
        if self.impl.uses_spark():
            from codemill.spark import get_spark, set_codegen

            spark = get_spark(self.cfg.spark, jvm_log_file(self.cfg))
            if spark.sparkContext.uiWebUrl:
                self.set_tracking_url(spark.sparkContext.uiWebUrl)
        inputs = {name: task.committed() for name, task in self.requires().items()}
        if spark is not None:  # queries compiled or interpreted by the size of the input
            upstream = upstream_stats(inputs)
            set_codegen(spark, self.cfg.spark, upstream.docs_out if upstream else None)
        attempt = attempt_name(RUN_ID)
        clean_stale_attempts(fs, self.output_uri, keep=attempt)
        work = Folder(join(self.output_uri, attempt), fs)
        fs.delete(work.uri)  # this run's own earlier try at this stage
        started = time.monotonic()
        every = self.cfg.luigi.progress_seconds
        with (stage_jobs(spark, self.task_id, self.label) if spark is not None else nullcontext(),
              Progress(self.label, spark.sparkContext if spark is not None else None, self._report,
                       console=every > 0, every=every or 10.0)):
            out = self.impl.run(spark, inputs, work)
            stats = None
            if out is not None:
                stats = write_stage_output(spark, self.stage, out, inputs.get("docs"), work, started)
        work.publish()
        commit(fs, self.output_uri, attempt, RUN_ID, stage=self.stage, item=self.item,
               fingerprint=self.fingerprint, docs_out=stats.docs_out if stats else None)
        if spark is not None:
            spark.catalog.clearCache()  # stages persist their one pass over the input
        done = f"{self.label} done in {time.monotonic() - started:,.1f} s" + (
            f": {stats.docs_in:,} documents in, {stats.docs_out:,} kept, {sum(stats.dropped.values()):,} dropped"
            if stats else "")
        self.set_status_message(done)
        log.info(done)

    def on_failure(self, exception: BaseException) -> str:
        diagnosis = diagnose(exception, writing=display(self.output_uri), jvm_log=jvm_log_file(self.cfg))
        message = diagnosis.line(self.label)
        hint = f"\n  hint: {diagnosis.hint}" if diagnosis.hint else ""
        log.error(f"{message}{hint}\n  full stack: {failure_log(self.cfg, self.label, exception)}")
        return message


def stage_task(stage: str, config_path: str | None = None, overrides: list[str] | tuple = (),
               item: str = "") -> RunStage:
    """A fresh task for `stage`: Luigi caches one object per parameter set, and with it
    the fingerprint, so a task made before the inputs changed would name stale output."""
    luigi.task_register.Register.clear_instance_cache()
    return RunStage(stage=stage, item=item, config_path=str(config_path or ""),
                    overrides=list(overrides))
