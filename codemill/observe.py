"""What a user sees of Spark's work: jobs named after the DAG, and progress.

Each stage runs its Spark jobs in a job group named after its task, described as
`<stage>` and, inside a `step`, `<stage>: <step>`; so the Spark UI's job list reads
like the DAG. While a stage runs, `Progress` polls Spark's status tracker and reports
the running job and its task counts (with an estimate of the time left) to Luigi as
the task's status message and progress, and, when asked, as a plain console line
every few seconds (no carriage returns: it reads the same in a log file).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

LABEL = "codemill.stage"  # a Spark local property: the running stage's label

# The description of the jobs this process starts now, for the progress thread (Spark's
# local properties are per thread). A process runs one stage at a time.
_describing = {"jobs": ""}

log = logging.getLogger("codemill")


def _active_context() -> Any:
    """The process's SparkContext, if one runs (the session is per thread; the context is not)."""
    from pyspark import SparkContext

    return SparkContext._active_spark_context


@contextmanager
def stage_jobs(spark: Any, group: str, label: str) -> Iterator[None]:
    """Spark jobs started inside belong to job group `group`, described as `label`."""
    sc = spark.sparkContext
    sc.setJobGroup(group, label, interruptOnCancel=True)
    sc.setLocalProperty(LABEL, label)
    _describing["jobs"] = label
    try:
        yield
    finally:
        _describing["jobs"] = ""
        sc.setLocalProperty(LABEL, None)
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Spark jobs started inside are described as `<stage>: <name>` (no-op without Spark)."""
    sc = _active_context()
    if sc is None:
        yield
        return
    label = sc.getLocalProperty(LABEL)
    previous = sc.getLocalProperty("spark.job.description")
    sc.setJobDescription(f"{label}: {name}" if label else name)
    _describing["jobs"] = f"{label}: {name}" if label else name
    try:
        yield
    finally:
        sc.setLocalProperty("spark.job.description", previous)
        _describing["jobs"] = previous or ""


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def describe_activity(sc: Any) -> tuple[str, float | None]:
    """The running Spark job and its tasks in words, and the share of its tasks done."""
    tracker = sc.statusTracker()
    stages = [info for info in (tracker.getStageInfo(s) for s in tracker.getActiveStageIds()) if info]
    if not stages:
        return "driver work", None
    total = sum(s.numTasks for s in stages)
    done = sum(s.numCompletedTasks for s in stages)
    running = sum(s.numActiveTasks for s in stages)
    job = _describing["jobs"] or stages[0].name
    return f"{job}: {done}/{total} tasks done, {running} running", done / total if total else None


class Progress:
    """Reports a running stage every `every` seconds until closed: to `report(message,
    percent)` (Luigi's status), and to the console when `console` is true."""

    def __init__(self, label: str, sc: Any, report: Callable[[str, int | None], None],
                 console: bool = False, every: float = 10.0) -> None:
        self.label, self.sc, self.report, self.console, self.every = label, sc, report, console, every
        self.started = time.monotonic()
        self._seen: tuple[float, float] | None = None  # (time, share done) of the running job
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"progress-{label}", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.tick()

    def tick(self) -> str:
        """Report what runs now; the time left is estimated from the job's progress
        since it was first seen."""
        activity, share = describe_activity(self.sc) if self.sc is not None else ("working", None)
        now = time.monotonic()
        eta = ""
        if share is not None and self._seen is not None and share > self._seen[1]:
            rate = (share - self._seen[1]) / (now - self._seen[0])
            eta = f", about {_clock((1 - share) / rate)} left in this job"
        if share is not None and (self._seen is None or share < self._seen[1]):
            self._seen = (now, share)  # a new job (its share restarts)
        message = f"[{self.label}] {_clock(now - self.started)}: {activity}{eta}"
        self.report(message, int(100 * share) if share is not None else None)
        if self.console:
            log.info(message)
        return message
