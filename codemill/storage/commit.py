"""Commits that object stores can make safely.

A stage's output folder `<out>/<stage>/<fingerprint>/` holds attempt folders
(`attempt-<run id>/`), one per run that worked on it, and, once one of them finished,
the commit record `_COMMIT.json`, written last, in one piece. It names the attempt
that holds the output and lists every file in it with its size, plus counts and
checksums the stage reports. Readers trust only what a commit record names; an
attempt without one is a crash's leftover, removed once no live run owns it.
"""

from __future__ import annotations

import hashlib
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


# files up to this size get a sha256 in the record (manifests, stats, models); larger
# ones (tables, shards) are checked by size here and by their own checksums elsewhere
CHECKSUM_MAX_BYTES = 1 << 20


def _relative(file_uri: str, attempt: str) -> str:
    # Hadoop may qualify URIs (hdfs:///x -> hdfs://namenode:8020/x): match on the attempt
    return file_uri.split(f"/{attempt}/", 1)[1]


def commit(fs: FileSystem, output: str, attempt: str, run_id: str, **facts: Any) -> dict[str, Any]:
    """Make `attempt` the output of `output` by writing its commit record, last."""
    files = []
    for f in fs.list_files(join(output, attempt)):
        entry: dict[str, Any] = {"path": _relative(f.uri, attempt), "bytes": f.size}
        if f.size <= CHECKSUM_MAX_BYTES:
            entry["sha256"] = hashlib.sha256(fs.read_bytes(f.uri)).hexdigest()
        files.append(entry)
    record = {"attempt": attempt, "run_id": run_id, "files": files, **facts}
    fs.write_bytes(join(output, COMMIT), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return record


def verify(fs: FileSystem, output: str) -> list[str]:
    """What is wrong with a committed output: files missing, or of another size than the
    record says (checksums are compared by `verify_checksums`)."""
    record = read_commit(fs, output)
    if record is None:
        return [f"{output}: not committed"]
    attempt = record["attempt"]
    present = {_relative(f.uri, attempt): f.size for f in fs.list_files(join(output, attempt))}
    problems = []
    for entry in record["files"]:
        size = present.get(entry["path"])
        if size is None:
            problems.append(f"{entry['path']}: missing")
        elif size != entry["bytes"]:
            problems.append(f"{entry['path']}: {size} bytes, the commit record says {entry['bytes']}")
    return problems


def stale_attempts(fs: FileSystem, output: str, keep: str = "") -> list[str]:
    """The attempts of `output` other than `keep` and the committed one."""
    record = read_commit(fs, output)
    committed = record["attempt"] if record else None
    return [child for child in fs.children(output)
            if child.startswith(ATTEMPT_PREFIX) and child not in (keep, committed)]


def clean_stale_attempts(fs: FileSystem, output: str, keep: str) -> list[str]:
    """Remove the attempts of `output` other than `keep` and the committed one. Call it
    only while holding the output root's lease: then no other live run owns them."""
    stale = stale_attempts(fs, output, keep)
    for child in stale:
        fs.delete(join(output, child))
    return stale
