"""Hadoop's FileSystem, reached through the running SparkSession's JVM, so that the
cluster's connectors (S3A, GCS, ABFS, HDFS, viewfs) and credentials apply to the
driver's own file work exactly as they do to Spark's reads and writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from codemill.storage.base import FileInfo, FileSystem, StorageError

# py4j copies byte arrays through its socket; blocks keep each copy bounded
BLOCK = 8 << 20


class _HadoopOutput:
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.closed = False

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        for start in range(0, len(view), BLOCK):
            self.stream.write(bytearray(view[start:start + BLOCK]))
        return len(view)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        if not self.closed:
            self.stream.close()
            self.closed = True

    def __enter__(self) -> _HadoopOutput:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


class HadoopFileSystem(FileSystem):
    def __init__(self, spark: Any) -> None:
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs(self, uri: str) -> tuple[Any, Any]:
        path = self._jvm.org.apache.hadoop.fs.Path(uri)
        try:
            return path.getFileSystem(self._conf), path
        except Exception as exc:  # py4j: no FileSystem for the scheme, bad authority
            raise StorageError(f"{uri}: {_java_message(exc)}") from None

    def exists(self, uri: str) -> bool:
        fs, path = self._fs(uri)
        return bool(fs.exists(path))

    def is_dir(self, uri: str) -> bool:
        fs, path = self._fs(uri)
        return bool(fs.exists(path) and fs.getFileStatus(path).isDirectory())

    def list_files(self, uri: str) -> list[FileInfo]:
        fs, path = self._fs(uri)
        if not fs.exists(path):
            return []
        found, files = [], fs.listFiles(path, True)
        while files.hasNext():
            st = files.next()
            found.append(FileInfo(st.getPath().toString(), st.getLen(),
                                  st.getModificationTime() * 1_000_000))
        return sorted(found, key=lambda f: f.uri)

    def children(self, uri: str) -> list[str]:
        fs, path = self._fs(uri)
        if not fs.exists(path):
            return []
        return sorted(st.getPath().getName() for st in fs.listStatus(path))

    def read_bytes(self, uri: str) -> bytes:
        fs, path = self._fs(uri)
        try:
            stream = fs.open(path)
        except Exception as exc:
            raise StorageError(f"{uri}: {_java_message(exc)}") from None
        try:
            return bytes(stream.readAllBytes())
        finally:
            stream.close()

    def write_bytes(self, uri: str, data: bytes) -> None:
        with self.open_output(uri) as out:
            out.write(data)

    def create_new(self, uri: str, data: bytes) -> bool:
        fs, path = self._fs(uri)
        try:
            stream = fs.create(path, False)
        except Exception as exc:
            if "FileAlreadyExists" in str(exc) or fs.exists(path):
                return False
            raise StorageError(f"{uri}: {_java_message(exc)}") from None
        with _HadoopOutput(stream) as out:
            out.write(data)
        return True

    def open_output(self, uri: str) -> BinaryIO:
        fs, path = self._fs(uri)
        return _HadoopOutput(fs.create(path, True))  # type: ignore[return-value]

    def delete(self, uri: str) -> None:
        fs, path = self._fs(uri)
        fs.delete(path, True)

    def upload(self, local: Path, uri: str) -> None:
        with self.open_output(uri) as out, open(local, "rb") as f:
            while block := f.read(BLOCK):
                out.write(block)


def _java_message(exc: BaseException) -> str:
    """The Java exception's own first line, without py4j's wrapping."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        return f"{java.getClass().getSimpleName()}: {java.getMessage()}"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
