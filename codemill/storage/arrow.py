"""pyarrow.fs behind the FileSystem interface: how processes without a SparkSession (the
trainer, `codemill shards inspect`) reach object stores and HDFS.

* `s3://`, `s3a://` (one store): credentials from the AWS SDK's chain
  (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, profiles, instance
  roles); the region from AWS_REGION / AWS_DEFAULT_REGION, else the bucket's own; an
  S3-compatible server (MinIO, Ceph, moto) from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
* `gs://`, `gcs://` (one store): Google's default credentials.
* `hdfs://namenode:port/`: libhdfs (HADOOP_HOME, CLASSPATH, as pyarrow documents).
* `file://`: the local disk.

Every failure is a StorageError whose one line names the URI.
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs

from codemill.storage.base import FileInfo, FileSystem, StorageError
from codemill.storage.uri import local_path, scheme

BLOCK = 8 << 20  # bytes per read and write when streaming a file
_BUCKET_STORES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs"}
# Stores with an atomic rename: a file is written under a temporary name and moved into place.
_RENAMING = {"file", "hdfs"}


@dataclass(frozen=True)
class _Where:
    """A URI as pyarrow.fs takes it: the store, the path in it, and what turns paths back into URIs."""

    fs: pafs.FileSystem
    path: str
    prefix: str  # + a path pyarrow lists = its URI
    renames: bool


class ArrowFileSystem(FileSystem):
    def exists(self, uri: str) -> bool:
        return self._info(uri).type != pafs.FileType.NotFound

    def is_dir(self, uri: str) -> bool:
        return self._info(uri).type == pafs.FileType.Directory

    def list_files(self, uri: str) -> list[FileInfo]:
        where = _locate(uri)
        with _failing_as(uri):
            top = where.fs.get_file_info(where.path)
            if top.type == pafs.FileType.Directory:
                found = where.fs.get_file_info(pafs.FileSelector(where.path, recursive=True))
            else:
                found = [top]
        files = [f for f in found if f.type == pafs.FileType.File]
        return sorted((FileInfo(where.prefix + f.path, f.size, f.mtime_ns or 0) for f in files), key=lambda f: f.uri)

    def children(self, uri: str) -> list[str]:
        """One listing of `uri` itself, not of everything under it."""
        where = _locate(uri)
        with _failing_as(uri):
            if where.fs.get_file_info(where.path).type != pafs.FileType.Directory:
                return []
            found = where.fs.get_file_info(pafs.FileSelector(where.path))
        return sorted(f.base_name for f in found)

    def read_bytes(self, uri: str) -> bytes:
        where = _locate(uri)
        with _failing_as(uri), where.fs.open_input_stream(where.path) as f:
            return f.read()

    def write_bytes(self, uri: str, data: bytes) -> None:
        with self.open_output(uri) as out:
            out.write(data)

    def create_new(self, uri: str, data: bytes) -> bool:
        """Write `data` only if nothing is at `uri`; False if something is.

        pyarrow.fs has no exclusive create, so on every store (S3 included) this is a
        check, then a write: two writers racing may both write. Where that matters, use
        the SparkSession's Hadoop FileSystem (atomic on HDFS) or the local disk's.
        """
        if self.exists(uri):
            return False
        self.write_bytes(uri, data)
        return True

    def open_output(self, uri: str) -> BinaryIO:
        return _Output(_locate(uri), uri)  # type: ignore[return-value]

    def delete(self, uri: str) -> None:
        where = _locate(uri)
        with _failing_as(uri):
            kind = where.fs.get_file_info(where.path).type
            if kind == pafs.FileType.Directory:
                where.fs.delete_dir(where.path)
            elif kind == pafs.FileType.File:
                where.fs.delete_file(where.path)

    def upload(self, local: Path, uri: str) -> None:
        with open(local, "rb") as f, self.open_output(uri) as out:
            shutil.copyfileobj(f, out, BLOCK)

    def download(self, uri: str, local: Path) -> None:
        """Stream `uri` into the local file `local` (shards do not fit in memory)."""
        where = _locate(uri)
        with _failing_as(uri), where.fs.open_input_stream(where.path) as f, open(local, "wb") as out:
            shutil.copyfileobj(f, out, BLOCK)

    def _info(self, uri: str) -> pafs.FileInfo:
        where = _locate(uri)
        with _failing_as(uri):
            return where.fs.get_file_info(where.path)


class _Output:
    """One file being written. On stores that rename it is written under a temporary
    sibling name and moved into place on close; on object stores the upload completes on
    close. An exception inside `with` leaves nothing behind."""

    def __init__(self, where: _Where, uri: str) -> None:
        self.where, self.uri, self.closed = where, uri, False
        head, _, tail = where.path.rpartition("/")
        self.written = f"{head}/.{tail}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}" if where.renames else where.path
        with _failing_as(uri):
            if where.renames:
                where.fs.create_dir(head or "/", recursive=True)
            self.stream = where.fs.open_output_stream(self.written)

    def write(self, data: Any) -> int:
        with _failing_as(self.uri):
            return self.stream.write(data)

    def flush(self) -> None:
        with _failing_as(self.uri):
            self.stream.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with _failing_as(self.uri):
            self.stream.close()
            if self.where.renames:
                self.where.fs.move(self.written, self.where.path)

    def discard(self) -> None:
        """Best effort: the error that led here is the one to report, not a failed clean-up."""
        self.closed = True
        with suppress(OSError, pa.ArrowException):
            self.stream.close()
            self.where.fs.delete_file(self.written)

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def _locate(uri: str) -> _Where:
    kind = scheme(uri)
    if kind == "file":
        return _Where(_store("file", ""), str(local_path(uri)), "file://", True)
    # split by hand: object keys and Hadoop paths keep '?' and '#' unescaped
    authority, _, path = uri.split("://", 1)[1].partition("/")
    path = path.rstrip("/")
    if kind in _BUCKET_STORES:
        if not authority:
            raise StorageError(f"{uri}: no bucket")
        store = _BUCKET_STORES[kind]
        bucket_key = authority if store == "s3" else ""  # S3 regions are per bucket
        fs = _connected(uri, store, bucket_key, _s3_settings() if store == "s3" else ())
        return _Where(fs, f"{authority}/{path}".rstrip("/"), f"{kind}://", False)
    if kind == "hdfs":
        return _Where(_connected(uri, "hdfs", authority, ()), "/" + path, f"hdfs://{authority}", True)
    raise StorageError(
        f"{uri}: pyarrow.fs reaches s3://, s3a://, gs://, gcs://, hdfs:// and file://, not {kind}:// "
        "(run under Spark to use Hadoop's connectors)"
    )


def _s3_settings() -> tuple[str | None, str | None]:
    """(endpoint, region) from the standard AWS variables; pyarrow versions differ in
    which of them they read, so they are passed on explicitly."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return endpoint or None, region or None


def _connected(uri: str, store: str, authority: str, settings: tuple) -> pafs.FileSystem:
    with _failing_as(uri):
        return _store(store, authority, settings)


@functools.cache
def _store(store: str, authority: str, settings: tuple = ()) -> pafs.FileSystem:
    """One client per store, bucket (S3) and setting: cheap to reuse, not to make."""
    if store == "file":
        return pafs.LocalFileSystem()
    if store == "gs":
        return pafs.GcsFileSystem()
    if store == "hdfs":
        return pafs.HadoopFileSystem.from_uri(f"hdfs://{authority}/")
    return pafs.S3FileSystem(**_s3_options(authority, *settings))


def _s3_options(bucket: str, endpoint: str | None, region: str | None) -> dict[str, str]:
    options = {}
    if endpoint:
        protocol, _, host = endpoint.rpartition("://")
        options.update(endpoint_override=host.rstrip("/"), scheme=protocol or "https")
    if region:
        options["region"] = region
    elif not endpoint:  # AWS itself: ask where the bucket lives
        options["region"] = pafs.resolve_s3_region(bucket)
    return options


@contextmanager
def _failing_as(uri: str) -> Iterator[None]:
    """pyarrow's errors (often several lines long) as one StorageError line naming `uri`."""
    try:
        yield
    except StorageError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"{uri}: {' '.join(str(exc).split()) or type(exc).__name__}") from None
