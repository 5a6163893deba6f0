"""Running a DAG with the local scheduler or a central `luigid`."""

from __future__ import annotations

import dataclasses
from typing import Any

import luigi
from luigi.execution_summary import LuigiStatusCode

from codemill.config import LuigiConfig


def build(tasks: list[luigi.Task], cfg: LuigiConfig, **overrides: Any) -> bool:
    """Run `tasks` and their dependencies; True when all of them are complete.
    `overrides` replace settings of `cfg` for this call (e.g. workers=2)."""
    cfg = dataclasses.replace(cfg, **overrides)
    if cfg.local_scheduler:
        where = {"local_scheduler": True}
    else:
        where = {"scheduler_host": cfg.scheduler_host, "scheduler_port": cfg.scheduler_port}
    result = luigi.build(tasks, workers=cfg.workers, detailed_summary=True, log_level=cfg.log_level,
                         **where)
    return result.status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY)
