"""Errors a user can act on, and how to surface any failure as one line.

A failure inside a Spark job reaches the driver as a Py4JJavaError or PythonException
whose text is hundreds of lines of Python and Java stack. `diagnose` digs out the cause
(an InputError an executor raised, a full disk, the JVM out of memory, the last Python
exception, the Java root cause) and what it concerns, and adds a hint. The full stack
belongs in the run's log file, not on the console.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A run config that cannot work; raised before any Spark job starts."""


class InputError(ValueError):
    """Bad input data; the message names the file and line or record."""


class SchedulerUnreachableError(RuntimeError):
    """No Luigi scheduler answers at the configured address."""


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    where: str = ""  # the file, record or setting concerned, when the cause does not name it
    hint: str = ""

    def line(self, what: str) -> str:
        """`<what> failed: <cause> (<where>)`."""
        return f"{what} failed: {self.cause}" + (f" ({self.where})" if self.where else "")


_CODEMILL_ERROR = re.compile(r"codemill\.errors\.(?:InputError|ConfigError): (.+)")
# the last exception line of a Python traceback inside Spark's text
_PYTHON_ERROR = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (.+)$", re.M)
_JAVA_CAUSE = re.compile(r"^(?:Caused by: )?((?:java|org|scala|py4j)\.[\w.$]+(?:Error|Exception)): ?(.*)$", re.M)
_NO_SPACE = re.compile(r"No space left on device")

MEMORY_HINT = ("give Spark more memory: --set 'spark.conf.\"spark.driver.memory\"=\"8g\"' (local mode runs "
               "every task in the driver) or spark.executor.memory on a cluster")
DISK_HINT = ("free space on the disk that holds `out`, or point Spark's scratch space elsewhere with "
             "--set 'spark.conf.\"spark.local.dir\"=\"/big/disk\"'")


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0].strip() if text else ""


def _java_root(exc: BaseException) -> tuple[str, str] | None:
    """The innermost cause of a Py4JJavaError's Java exception: (class, message)."""
    java = getattr(exc, "java_exception", None)
    if java is None:
        return None
    try:
        while java.getCause() is not None and java.getCause() != java:
            java = java.getCause()
        return java.getClass().getName(), str(java.getMessage() or "")
    except Exception:  # the JVM may be gone (it is what failed)
        return None


def _jvm_out_of_memory(jvm_log: Path | None) -> str | None:
    """The JVM's OutOfMemoryError in its log, if it had one."""
    if jvm_log is None or not jvm_log.is_file():
        return None
    with open(jvm_log, "rb") as f:
        f.seek(max(0, f.seek(0, 2) - (4 << 20)))
        match = re.search(rb"OutOfMemoryError: ([^\n]+)", f.read())
    return match.group(1).decode("utf-8", "replace").strip() if match else None


def diagnose(exc: BaseException, writing: str = "", jvm_log: Path | None = None) -> Diagnosis:
    """The cause of `exc` in one line, what it concerns, and what to do; `writing` is the
    output the failed work was writing, if any; `jvm_log`, the JVM's log, names what
    stopped Spark when all the error says is that it stopped."""
    if isinstance(exc, (InputError, ConfigError)):
        return Diagnosis(str(exc).strip())  # ours: written to be read whole
    text = str(exc)
    if "SparkContext was shut down" in text and (kind := _jvm_out_of_memory(jvm_log)):
        # an executor thread ran out of memory and the JVM stopped Spark
        return Diagnosis(f"out of memory ({kind})", hint=MEMORY_HINT)
    if (match := _CODEMILL_ERROR.search(text)):
        return Diagnosis(match.group(1).strip())
    if "OutOfMemoryError" in text or isinstance(exc, MemoryError):
        kind = re.search(r"OutOfMemoryError: ([^\n]+)", text)
        cause = f"out of memory ({kind.group(1).strip()})" if kind else "out of memory"
        return Diagnosis(cause, hint=MEMORY_HINT)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or _NO_SPACE.search(text):
        # Java's message names no file; the output being written is the best guess
        where = getattr(exc, "filename", None) or (f"writing {writing}" if writing else "")
        return Diagnosis("no space left on device", str(where), DISK_HINT)
    if "Traceback (most recent call last)" in text:
        tail = text[text.rindex("Traceback (most recent call last)"):]
        errors = _PYTHON_ERROR.findall(tail)
        if errors:
            name, message = errors[-1]
            return Diagnosis(f"{name.rsplit('.', 1)[-1]}: {message.strip()}")
    root = _java_root(exc)
    if root is not None:
        name, message = root
        return Diagnosis(f"{name.rsplit('.', 1)[-1]}: {_first_line(message)}".rstrip(": "))
    causes = _JAVA_CAUSE.findall(text)
    if causes:
        name, message = causes[-1]
        return Diagnosis(f"{name.rsplit('.', 1)[-1]}: {message.strip()}".rstrip(": "))
    return Diagnosis(f"{type(exc).__name__}: {_first_line(text)}".rstrip(": "))


def explain(exc: BaseException) -> str:
    """The cause of `exc` in one line, with what it concerns."""
    diagnosis = diagnose(exc)
    return diagnosis.cause + (f" ({diagnosis.where})" if diagnosis.where else "")
