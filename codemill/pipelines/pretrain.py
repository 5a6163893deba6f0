"""The pretraining DAG: ingest -> exact dedup -> near dedup -> filters -> kinds ->
tokenizer -> token counts -> shards of each mix -> report.

Its target is the report stage; everything else follows from the stages' inputs.
Run it with `codemill run CONFIG`, or with Luigi's own launcher:

    luigi --module codemill.pipelines.task RunStage --stage report --config-path run.toml --local-scheduler
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from codemill.config import load_run_config
from codemill.errors import ConfigError
from codemill.pipelines.runner import run_dag
from codemill.pipelines.task import RunStage, stage_task
from codemill.storage import is_local, local_path

TARGET = "report"


def pretrain_target(config_path: str | None, overrides: Sequence[str] = ()) -> RunStage:
    return stage_task(TARGET, config_path, overrides)


def check_sources(cfg: Any) -> None:
    """Missing local sources are config errors, found before Spark starts (remote ones
    are checked when listed, through Hadoop)."""
    for i, src in enumerate(cfg.sources):
        if is_local(src.uri()) and not local_path(src.uri()).exists():
            raise ConfigError(f"sources[{i}].path: source {src.name!r}: {local_path(src.uri())} "
                              "does not exist")


def run_pretrain(config_path: str | None, overrides: Sequence[str] = ()) -> RunStage | None:
    """Run the DAG to its report; the report task when it finished, else None."""
    cfg = load_run_config(config_path, list(overrides))
    check_sources(cfg)
    return run_dag(cfg, lambda: pretrain_target(config_path, overrides))
