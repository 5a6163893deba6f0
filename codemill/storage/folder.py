"""A folder of files anywhere: what stages read from and write into.

Spark writes tables straight to `folder.join(name)`; files made by libraries that
only write local files (sentencepiece, fastText, Hugging Face `save_to_disk`) go into
`folder.local()`, which is the folder itself on a local disk and a temporary folder
uploaded by `publish()` elsewhere. Inputs that such libraries read come back as local
files through `fetch`, downloaded once per process.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import cached_property
from pathlib import Path

from codemill.storage import filesystem
from codemill.storage.base import FileSystem
from codemill.storage.uri import is_local, join, local_path, name, parent, to_uri


class Folder:
    def __init__(self, uri: str | os.PathLike, fs: FileSystem | None = None) -> None:
        self.uri = to_uri(uri)
        self.fs = fs or filesystem(self.uri)

    def __repr__(self) -> str:
        return f"Folder({self.uri!r})"

    def __str__(self) -> str:
        return self.uri

    def join(self, *parts: str) -> str:
        return join(self.uri, *parts)

    def sub(self, *parts: str) -> Folder:
        return Folder(self.join(*parts), self.fs)

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.join(name))

    def read_text(self, name: str) -> str:
        return self.fs.read_text(self.join(name))

    def write_text(self, name: str, text: str) -> None:
        self.fs.write_text(self.join(name), text)

    def fetch(self, name: str) -> Path:
        """A local copy of file `name` (the file itself on a local disk)."""
        uri = self.join(name)
        if is_local(uri):
            return local_path(uri)
        info = self.fs.list_files(uri)
        if not info:
            raise FileNotFoundError(f"{uri}: no such file")
        # keyed by what identifies the bytes, so a file replaced at the same URI is fetched anew
        key = f"{uri}\0{info[0].size}\0{info[0].mtime_ns}".encode()
        cache = Path(tempfile.gettempdir(), "codemill-fetched", hashlib.sha256(key).hexdigest()[:16])
        copy = cache / Path(name).name
        if not copy.exists():
            cache.mkdir(parents=True, exist_ok=True)
            part = cache / f".{copy.name}.{os.getpid()}.part"
            self.fs.download(uri, part)
            os.replace(part, copy)
        return copy

    @cached_property
    def _local(self) -> Path:
        if is_local(self.uri):
            path = local_path(self.uri)
            path.mkdir(parents=True, exist_ok=True)
            return path
        return Path(tempfile.mkdtemp(prefix="codemill-publish-"))

    def local(self) -> Path:
        """A local folder whose files `publish()` puts into this folder."""
        return self._local

    def publish(self) -> None:
        """Upload what was written into `local()` (nothing to do on a local disk)."""
        if is_local(self.uri) or "_local" not in self.__dict__:
            return
        for path in sorted(self._local.rglob("*")):
            if path.is_file():
                self.fs.upload(path, self.join(path.relative_to(self._local).as_posix()))


def local_file(location: str | os.PathLike) -> Path:
    """A local path for a file given by path or URI (a model, a benchmark): the file
    itself when local, else a copy fetched once per process."""
    uri = to_uri(location)
    if is_local(uri):
        return local_path(uri)
    return Folder(parent(uri)).fetch(name(uri))
