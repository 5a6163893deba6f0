"""The one Luigi task: it runs any registered stage.

    luigi --module codemill.pipelines.task RunStage --stage report --config-path run.toml --local-scheduler

Its output is `<out>/<stage folders>/<fingerprint>/`, committed atomically with a
`_SUCCESS` marker. The fingerprint hashes the stage's name and item, its inputs'
fingerprints and its `settings()`; it is computed once per task object (Luigi keeps
one object per parameter set), so a run walks sources and hashes model files once.
"""

from __future__ import annotations

import sys
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import luigi

from codemill.atomic import SUCCESS, atomic_dir
from codemill.config import load_run_config
from codemill.errors import explain
from codemill.fingerprint import fingerprint
from codemill.stages import make_stage
from codemill.stages.base import Stage, StageRef


class RunStage(luigi.Task):
    stage = luigi.Parameter(description="a registered stage, e.g. near_dedup or report")
    item = luigi.Parameter(default="", description="for a stage run per item: which (a mix name)")
    config_path = luigi.Parameter(default="", description="run config TOML; empty: the embedded demo")
    overrides = luigi.ListParameter(default=[], description='config overrides, e.g. ["seed=1"]')

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
    def output_dir(self) -> Path:
        return self.cfg.out_path().joinpath(*self.impl.output_parts(), self.fingerprint)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.output_dir / SUCCESS))

    def run(self) -> None:
        from codemill.pipelines.tables import write_stage_output
        from codemill.spark import get_spark

        spark = get_spark(self.cfg.spark) if self.impl.uses_spark() else None
        inputs = {name: task.output_dir for name, task in self.requires().items()}
        started = time.monotonic()
        with atomic_dir(self.output_dir) as work_dir:
            out = self.impl.run(spark, inputs, work_dir)
            if out is not None:
                write_stage_output(spark, self.stage, out, inputs.get("docs"), work_dir, started)
        if spark is not None:
            spark.catalog.clearCache()  # stages persist their one pass over the input

    def on_failure(self, exception: BaseException) -> str:
        message = f"{self.stage} failed: {explain(exception)}"
        print(f"codemill: {message}", file=sys.stderr)
        return message


def stage_task(stage: str, config_path: str | None = None, overrides: list[str] | tuple = (),
               item: str = "") -> RunStage:
    """A fresh task for `stage`: Luigi caches one object per parameter set, and with it
    the fingerprint, so a task made before the inputs changed would name stale output."""
    luigi.task_register.Register.clear_instance_cache()
    return RunStage(stage=stage, item=item, config_path=str(config_path or ""),
                    overrides=list(overrides))
