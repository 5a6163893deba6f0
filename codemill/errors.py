"""Errors a user can act on, and how to surface them from Spark executors."""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """A run config that cannot work; raised before any Spark job starts."""


class InputError(ValueError):
    """Bad input data; the message names the file and line or record."""


_EXECUTOR_ERROR = re.compile(r"codemill\.errors\.InputError: (.+)")


def explain(exc: BaseException) -> str:
    """One line for the user: an executor's InputError is dug out of Spark's wrapping."""
    text = str(exc)
    match = _EXECUTOR_ERROR.search(text)
    if match:
        return match.group(1).strip()
    return f"{type(exc).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}"
