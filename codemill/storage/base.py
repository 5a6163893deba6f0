"""What the pipeline needs of a file system, whatever holds the files.

Implementations: the local disk (`local.py`), Hadoop's FileSystem through the running
SparkSession (`hadoop.py`: HDFS, S3A, GCS, ABFS, viewfs… with the cluster's
connectors and credentials), and pyarrow.fs where no Spark runs (`arrow.py`).

Nothing here renames: object stores cannot rename atomically, so outputs are made
visible by writing a commit record last (`commit.py`), not by moving them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class StorageError(OSError):
    pass


@dataclass(frozen=True)
class FileInfo:
    uri: str
    size: int
    mtime_ns: int


class FileSystem:
    """URIs in, URIs out. `write_bytes` makes a whole file visible at once (a single
    PUT on object stores, a temporary name and a rename on disks that have one)."""

    def exists(self, uri: str) -> bool:
        raise NotImplementedError

    def is_dir(self, uri: str) -> bool:
        raise NotImplementedError

    def list_files(self, uri: str) -> list[FileInfo]:
        """Every file under `uri` (recursively), sorted by URI; [] when nothing is there."""
        raise NotImplementedError

    def children(self, uri: str) -> list[str]:
        """The names directly under `uri` (files and folders); [] when nothing is there."""
        prefix = uri.rstrip("/") + "/"
        return sorted({f.uri[len(prefix):].split("/", 1)[0] for f in self.list_files(uri)
                       if f.uri.startswith(prefix)})

    def read_bytes(self, uri: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, uri: str, data: bytes) -> None:
        raise NotImplementedError

    def create_new(self, uri: str, data: bytes) -> bool:
        """Write `data` only if nothing is at `uri`; False if something is. Atomic where
        the store can do it (local disks, HDFS); elsewhere a check, then a write."""
        raise NotImplementedError

    def open_output(self, uri: str) -> BinaryIO:
        """A stream whose file appears complete when closed (or not at all on object
        stores); on local disks the caller writes a temporary name (see atomic.py)."""
        raise NotImplementedError

    def delete(self, uri: str) -> None:
        """Remove a file or a directory tree; nothing there is not an error."""
        raise NotImplementedError

    def upload(self, local: Path, uri: str) -> None:
        self.write_bytes(uri, Path(local).read_bytes())

    def download(self, uri: str, local: Path) -> None:
        Path(local).write_bytes(self.read_bytes(uri))

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))
