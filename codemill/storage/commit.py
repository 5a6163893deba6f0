"""Commits that object stores can make safely.

A stage's output folder `<out>/<stage>/<fingerprint>/` holds attempt folders
(`attempt-<run id>/`), one per run that worked on it, and, once one of them finished,
the commit record `_COMMIT.json`, written last, in one piece. It names the attempt
that holds the output and lists every file in it with its size, plus counts and
checksums the stage reports. Readers trust only what a commit record names; an
attempt without one is a crash's leftover, removed once no live run owns it.
"""

from __future__ import annotations

import json
from typing import Any

from codemill.storage.base import FileSystem, StorageError
from codemill.storage.uri import join, name

COMMIT = "_COMMIT.json"
ATTEMPT_PREFIX = "attempt-"


def read_commit(fs: FileSystem, output: str) -> dict[str, Any] | None:
    """The commit record of `output`, or None when it has none (not finished)."""
    record = join(output, COMMIT)
    if not fs.exists(record):
        return None
    try:
        return json.loads(fs.read_bytes(record))
    except ValueError as exc:
        raise StorageError(f"{record}: not a commit record ({exc}); delete {output} to recompute it") from None


def resolve(fs: FileSystem, location: str) -> str:
    """Where the files of `location` are: the committed attempt when `location` is an
    output folder with a commit record, else `location` itself."""
    record = read_commit(fs, location)
    return join(location, record["attempt"]) if record else location


def attempt_name(run_id: str) -> str:
    return ATTEMPT_PREFIX + run_id


def is_attempt(uri: str) -> bool:
    return name(uri).startswith(ATTEMPT_PREFIX)
