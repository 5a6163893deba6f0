"""The local disk."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

from codemill.storage.base import FileInfo, FileSystem
from codemill.storage.uri import local_path, to_uri


class _CommitOnClose:
    """A file written under a temporary sibling name and renamed into place on close."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.file = open(self.tmp, "wb")
        self.closed = False

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        if not self.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
            self.closed = True

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)
        self.closed = True

    def __enter__(self) -> _CommitOnClose:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


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
        return _CommitOnClose(local_path(uri))  # type: ignore[return-value]

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
