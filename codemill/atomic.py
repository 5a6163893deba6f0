"""Atomic outputs: build a directory or a file under a temporary sibling name, then
rename it into place.

A killed run leaves only a `.tmp-*` sibling, never a half-written output; for
directories the next run removes such leftovers before it starts again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

SUCCESS = "_SUCCESS"


def is_complete(path: Path) -> bool:
    return (path / SUCCESS).exists()


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes `final` (with a _SUCCESS marker) on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f"{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f"{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        (tmp / SUCCESS).write_text("")
        if final.exists():  # an incomplete output from an older layout or a crash
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class AtomicFile:
    """A file written under a temporary sibling name (`.<name>.tmp-<pid>-<random>`) that
    replaces `path` only when complete: `commit()` renames it into place, `discard()`
    removes it. As a context manager it yields the open file and commits when the block
    ends normally, discards on an exception. `mode=None` opens nothing: write `tmp`."""

    def __init__(self, path: str | os.PathLike, mode: str | None = "wb", **open_kwargs: Any) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.file: IO | None = open(self.tmp, mode, **open_kwargs) if mode else None

    def commit(self) -> Path:
        if self.file is not None:
            self.file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        try:
            if self.file is not None:
                self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> IO:
        assert self.file is not None, "AtomicFile(mode=None) has no file: use atomic_path"
        return self.file

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path to write (by any means, e.g. torch.save or a copy);
    it replaces `path` when the block ends normally and is removed on an exception."""
    target = AtomicFile(path, mode=None)
    try:
        yield target.tmp
        target.commit()
    except BaseException:
        target.discard()
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str | None = None) -> None:
    """Like Path.write_text (locale encoding unless given), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
