"""What a run prints, and where the rest goes.

The console gets one line per event: Luigi's messages without their stacks, Spark's
JVM messages cut to their first line, and `codemill: <stage> failed: <cause>` from the
task. The full story goes to files under `<out>/_logs/`: each failed stage writes
`<run id>-<stage>.log` with the whole Python and Java stack, and a run on a local
`out` has its JVM log (every Spark message with its stack) in `jvm-<run id>.log`.

With `json=True` every console line of Luigi and codemill is a JSON object (time,
level, logger, message, run id), for log collectors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

LOGS = "_logs"
LOGGERS = ("luigi", "luigi-interface", "codemill")

log = logging.getLogger("codemill")


class _WithoutStack(logging.Formatter):
    """The message alone: a stack on the console buries the one line that matters.
    codemill's own lines start `codemill:`, Luigi's with their level."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "codemill" if record.name.startswith("codemill") else record.levelname
        return f"{prefix}: {record.getMessage()}"


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from codemill.storage.lease import RUN_ID

        return json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname, "logger": record.name, "run_id": RUN_ID,
            "message": record.getMessage(), **getattr(record, "fields", {}),
        }, ensure_ascii=False)


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (a caller may redirect it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


_console: logging.Handler | None = None


def configure_console(level: str = "INFO", json_lines: bool = False) -> None:
    """Luigi's and codemill's console logging, set once per process (Luigi's own setup
    is switched off so that it does not add a second handler that prints stacks)."""
    global _console
    import luigi.configuration

    luigi.configuration.get_config().set("core", "no_configure_logging", "true")
    if _console is None:
        _console = _Stderr()
        for name in LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(_console)
            logger.propagate = False
    _console.setFormatter(_JsonLines() if json_lines else _WithoutStack())
    for name in LOGGERS:
        logging.getLogger(name).setLevel(level)
    logging.getLogger("luigi").setLevel(max(logging.WARNING, logging.getLevelName(level)))  # setup chatter
    _console.setLevel(level)


def failure_log(cfg: Any, what: str, exc: BaseException) -> str:
    """Write `exc`'s full stack to `<out>/_logs/<run id>-<what>.log`; its location."""
    from codemill.pipelines.task import out_filesystem
    from codemill.storage import display, join
    from codemill.storage.lease import RUN_ID

    text = "".join(traceback.format_exception(exc))
    uri = join(cfg.out_uri(), LOGS, f"{RUN_ID}-{what.replace('/', '-')}.log")
    try:
        out_filesystem(cfg).write_text(uri, text)
    except Exception:  # e.g. the disk that is full: the stack still reaches a file
        local = Path(tempfile.gettempdir(), "codemill-logs", Path(uri).name)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(text)
        return str(local)
    return display(uri)


def jvm_log_properties(log_file: Path | None) -> Path:
    """A log4j2 configuration for Spark's JVM: console lines cut to their first line
    and no stacks; with `log_file`, everything, stacks included, also goes there."""
    # a message ends at its first line break, or where Spark inlined a Python traceback
    console = ("%d{yy/MM/dd HH:mm:ss} %p %c{1}: "
               "%maxLen{%replace{%m}{(?s)(Traceback \\\\(most recent call last\\\\)|[\\r\\n]).*}"
               "{(more in the log)}}{400}%n")
    lines = [
        "status = off",  # log4j's own troubles (a full disk under the log file) print stacks
        "rootLogger.level = warn",
        "rootLogger.appenderRef.console.ref = console",
        "appender.console.type = Console",
        "appender.console.name = console",
        "appender.console.target = SYSTEM_ERR",
        "appender.console.layout.type = PatternLayout",
        f"appender.console.layout.pattern = {console}",
        "appender.console.layout.alwaysWriteExceptions = false",
        # Spark's own defaults: these libraries are chatty at WARN
        "logger.jetty.name = org.sparkproject.jetty",
        "logger.jetty.level = warn",
        "logger.parquet.name = org.apache.parquet",
        "logger.parquet.level = error",
        "logger.hive.name = org.apache.hadoop.hive",
        "logger.hive.level = error",
    ]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        lines += [
            "rootLogger.appenderRef.file.ref = file",
            "appender.file.type = File",
            "appender.file.name = file",
            f"appender.file.fileName = {log_file.as_posix()}",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = %d{ISO8601} %p %c: %m%n%ex",
        ]
    text = "\n".join(lines) + "\n"
    # named by content: one small file per distinct configuration, however many runs
    path = Path(tempfile.gettempdir(), "codemill-log4j",
                f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.properties")
    if not path.exists():
        from codemill.storage.local import write_text_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    return path


def jvm_log_file(cfg: Any) -> Path | None:
    """Where Spark's JVM logs everything for a run on a local `out`."""
    from codemill.storage import is_local, local_path
    from codemill.storage.lease import RUN_ID

    out = cfg.out_uri()
    return local_path(out) / LOGS / f"jvm-{RUN_ID}.log" if is_local(out) else None
