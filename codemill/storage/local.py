"""The local disk: atomic files (written under a temporary sibling name, renamed into
place when complete, so a killed writer never leaves a file that looks finished) and
the local `FileSystem`."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

from codemill.storage.base import FileInfo, FileSystem
from codemill.storage.uri import local_path, to_uri


class AtomicFile:
    """A file written under a temporary sibling name (`.<name>.tmp-<pid>-<random>`) that
    replaces `path` only when complete: `commit()` (or `close()`) renames it into place,
    `discard()` removes it. As a context manager it yields the open file and commits
    when the block ends normally, discards on an exception. `mode=None` opens nothing:
    write `tmp`."""

    def __init__(self, path: str | os.PathLike, mode: str | None = "wb", **open_kwargs: Any) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.file: IO | None = open(self.tmp, mode, **open_kwargs) if mode else None
        self.closed = False

    def write(self, data: Any) -> int:
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def commit(self) -> Path:
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        os.replace(self.tmp, self.path)
        self.closed = True
        return self.path

    def close(self) -> None:
        if not self.closed:
            self.commit()

    def discard(self) -> None:
        try:
            if self.file is not None:
                self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)
            self.closed = True

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


class LocalFileSystem(FileSystem):
    def exists(self, uri: str) -> bool:
        return local_path(uri).exists()

    def is_dir(self, uri: str) -> bool:
        return local_path(uri).is_dir()

    def list_files(self, uri: str) -> list[FileInfo]:
        root = local_path(uri)
        if root.is_file():
            return [self._info(root)]
        found = []
        for directory, _, files in os.walk(root):
            found += [self._info(Path(directory, f)) for f in files]
        return sorted(found, key=lambda f: f.uri)

    def children(self, uri: str) -> list[str]:
        path = local_path(uri)
        return sorted(os.listdir(path)) if path.is_dir() else []

    @staticmethod
    def _info(path: Path) -> FileInfo:
        st = path.stat()
        return FileInfo(to_uri(path), st.st_size, st.st_mtime_ns)

    def read_bytes(self, uri: str) -> bytes:
        return local_path(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        with self.open_output(uri) as f:
            f.write(data)

    def create_new(self, uri: str, data: bytes) -> bool:
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def open_output(self, uri: str) -> BinaryIO:
        return AtomicFile(local_path(uri))  # type: ignore[return-value]

    def delete(self, uri: str) -> None:
        path = local_path(uri)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def upload(self, local: Path, uri: str) -> None:
        with self.open_output(uri) as out, open(local, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)

    def download(self, uri: str, local: Path) -> None:
        shutil.copyfile(local_path(uri), local)
