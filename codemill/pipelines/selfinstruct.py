"""The self-instruct DAG: questions -> dedup -> tests -> solutions -> execute -> select.

    codemill selfinstruct run.toml
    luigi --module codemill.pipelines.task RunStage --stage selfinstruct/select --config-path run.toml --local-scheduler
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from codemill.config import load_run_config
from codemill.errors import ConfigError
from codemill.pipelines.runner import run_dag
from codemill.pipelines.task import RunStage, stage_task
from codemill.storage.folder import Folder, local_file

TARGET = "selfinstruct/select"
LATEST = "selfinstruct/latest.json"


def selfinstruct_target(config_path: str, overrides: Sequence[str] = ()) -> RunStage:
    return stage_task(TARGET, config_path, overrides)


def run_selfinstruct(config_path: str, overrides: Sequence[str] = ()) -> RunStage | None:
    """Run the DAG to the selected dataset; the select task when it finished, else None.
    Config errors (and missing model directories) raise before any task starts."""
    from codemill.selfinstruct.backends import model_identity
    from codemill.selfinstruct.seeds import read_seed_tasks

    if not config_path:
        raise ConfigError("self-instruct needs a run config with a [selfinstruct] table naming "
                          "its models")
    cfg = load_run_config(config_path, list(overrides))
    si = cfg.selfinstruct
    si.require_models()
    for model in (si.question_model, si.code_model):
        model_identity(model)  # a missing model directory fails here, not inside Luigi
    if si.seed_tasks:
        read_seed_tasks(local_file(si.seed_tasks))  # so does a bad seed task, by file and line
    task = run_dag(cfg, lambda: selfinstruct_target(config_path, overrides))
    if task is not None:
        record_latest(Folder(cfg.out_uri()), task.committed())
    return task


def record_latest(out: Folder, output: Folder) -> None:
    """`<out>/selfinstruct/latest.json`: where the newest finished run's dataset and
    instruction shards are (they sit in a folder named by the settings' fingerprint)."""
    shards = output.join("shards") if output.exists("shards/manifest.json") else None
    latest = {"output": output.uri, "shards": shards,
              "funnel": json.loads(output.read_text("funnel.json"))}
    out.write_text(LATEST, json.dumps(latest, indent=2) + "\n")


def latest_shards(out: str) -> str:
    """The instruction shards of the newest finished self-instruct run under `out`."""
    folder = Folder(out)
    try:
        latest = json.loads(folder.read_text(LATEST))
    except OSError:
        raise ConfigError(f"{folder.join(LATEST)} does not exist: run `codemill selfinstruct` "
                          "first") from None
    if latest["shards"] is None:
        raise ConfigError(f"the self-instruct run in {latest['output']} wrote no shards: set "
                          "[selfinstruct.output] tokenizer")
    return latest["shards"]
