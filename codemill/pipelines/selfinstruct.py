"""The self-instruct DAG: questions -> dedup -> tests -> solutions -> execute -> select.

    codemill selfinstruct run.toml
    luigi --module codemill.pipelines.task RunStage --stage selfinstruct/select --config-path run.toml --local-scheduler
"""

from __future__ import annotations

from collections.abc import Sequence

from codemill.config import load_run_config
from codemill.errors import ConfigError
from codemill.pipelines.runner import run_dag
from codemill.pipelines.task import RunStage, stage_task

TARGET = "selfinstruct/select"


def selfinstruct_target(config_path: str, overrides: Sequence[str] = ()) -> RunStage:
    return stage_task(TARGET, config_path, overrides)


def run_selfinstruct(config_path: str, overrides: Sequence[str] = ()) -> RunStage | None:
    """Run the DAG to the selected dataset; the select task when it finished, else None.
    Config errors (and missing model directories) raise before any task starts."""
    from codemill.selfinstruct.backends import model_identity

    if not config_path:
        raise ConfigError("self-instruct needs a run config with a [selfinstruct] table naming "
                          "its models")
    cfg = load_run_config(config_path, list(overrides))
    si = cfg.selfinstruct
    si.require_models()
    for model in (si.question_model, si.code_model):
        model_identity(model)  # a missing model directory fails here, not inside Luigi
    return run_dag(cfg, lambda: selfinstruct_target(config_path, overrides))
