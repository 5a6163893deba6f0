"""Running a DAG with the local scheduler or a central `luigid`, holding the lease on
the run's `out` for the whole run."""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Callable
from typing import Any

import luigi
from luigi.execution_summary import LuigiStatusCode, _get_external_workers

from codemill.config import LuigiConfig
from codemill.errors import SchedulerUnreachableError
from codemill.runlog import configure_console
from codemill.storage.lease import hold, release

log = logging.getLogger("codemill")


def build(tasks: list[luigi.Task], cfg: LuigiConfig, **overrides: Any) -> bool:
    """Run `tasks` and their dependencies; True when all of them are complete.
    `overrides` replace settings of `cfg` for this call (e.g. workers=2)."""
    cfg = dataclasses.replace(cfg, **overrides)
    configure_console(cfg.log_level, cfg.log_format == "json")
    if cfg.local_scheduler:
        where = {"local_scheduler": True}
    else:
        check_scheduler(cfg.scheduler_host, cfg.scheduler_port)
        where = {"scheduler_host": cfg.scheduler_host, "scheduler_port": cfg.scheduler_port}
    result = luigi.build(tasks, workers=cfg.workers, detailed_summary=True, **where)
    for worker, blocked in _get_external_workers(result.worker).items():
        names = ", ".join(sorted(str(t.stage) for t in blocked if hasattr(t, "stage")))
        log.error(f"{names or 'a task'} is being run by another worker of the shared scheduler "
                  f"({worker}); this run stops here: run it again when that one has finished")
    # Luigi calls a run whose target another worker still runs a success: it is not one
    succeeded = result.status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY)
    return succeeded and all(task.complete() for task in tasks)


def check_scheduler(host: str, port: int) -> None:
    """Fail at once, naming the address, when no scheduler answers there (Luigi would
    retry for minutes and end in a stack)."""
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as exc:
        raise SchedulerUnreachableError(
            f"no Luigi scheduler answers at {host}:{port} ({exc.strerror or exc}); start one with "
            f"`luigid --port {port}`, or drop --scheduler to use the local scheduler") from None


def run_dag(cfg: Any, target: Callable[[], luigi.Task]) -> luigi.Task | None:
    """Run a DAG to the task `target()` makes while holding the lease on `cfg.out`: a
    second run on the same `out` is refused (LeaseHeldError) before any task is made,
    which would list sources and hash models. The task when it finished, else None."""
    from codemill.pipelines.task import out_filesystem

    if not cfg.luigi.local_scheduler:
        check_scheduler(cfg.luigi.scheduler_host, cfg.luigi.scheduler_port)
    hold(out_filesystem(cfg), cfg.out_uri(), cfg.lease_seconds)
    try:
        task = target()
        return task if build([task], cfg.luigi) else None
    finally:
        release(cfg.out_uri())
