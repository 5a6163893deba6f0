"""The pretraining DAG: ingest -> exact dedup -> near dedup -> filters -> kinds ->
tokenizer -> token counts -> shards of each mix -> report.

Its target is the report stage; everything else follows from the stages' inputs.
Run it with `codemill run CONFIG`, or with Luigi's own launcher:

    luigi --module codemill.pipelines.task RunStage --stage report --config-path run.toml --local-scheduler
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from codemill.errors import ConfigError
from codemill.pipelines.runner import build
from codemill.pipelines.task import RunStage, stage_task

TARGET = "report"


def pretrain_target(config_path: str | None, overrides: Sequence[str] = ()) -> RunStage:
    return stage_task(TARGET, config_path, overrides)


def check_sources(cfg: Any) -> None:
    """Missing sources are config errors, found before Spark starts."""
    for i, src in enumerate(cfg.sources):
        if not src.resolved_path().exists():
            raise ConfigError(f"sources[{i}].path: source {src.name!r}: {src.resolved_path()} "
                              "does not exist")


def run_pretrain(config_path: str | None, overrides: Sequence[str] = ()) -> RunStage | None:
    """Run the DAG to its report; the report task when it finished, else None."""
    task = pretrain_target(config_path, overrides)
    check_sources(task.cfg)
    return task if build([task], task.cfg.luigi) else None
