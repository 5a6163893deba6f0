"""Sources outside the local disk (HDFS, S3A, GCS, viewfs…), listed and read through
Hadoop in the JVM, so the cluster's connectors and credentials apply.

Spark's `binaryFile` source does both: with only its metadata columns selected it
lists without reading; with `content` it reads. Hidden-looking names (`_x`, `.x`)
are ordinary files here (`__init__.py`), so its default filter of them is switched off.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from codemill.errors import InputError
from codemill.ingest.languages import has_extension, lang_from_name
from codemill.ingest.walk import FileEntry
from codemill.storage import filesystem

# a regex that matches no path segment: no file is ignored for its name
_IGNORE_NOTHING = "(?!)"
_GLOB_CHARS = re.compile(r"([\\\[\]{}*?])")
_SUMMARY_NAMES = ("_metadata", "_common_metadata")


def binary_files(spark: SparkSession, paths: list[str], recursive: bool = False) -> DataFrame:
    reader = spark.read.format("binaryFile").option("ignoredPathSegmentRegex", _IGNORE_NOTHING)
    if recursive:
        reader = reader.option("recursiveFileLookup", "true")
    # load() expands glob characters; a file named `a[1].py` means itself
    return reader.load([_GLOB_CHARS.sub(r"\\\1", p) for p in paths])


def qualified(spark: SparkSession, uri: str) -> str:
    """`uri` as Hadoop writes it in listings (e.g. hdfs:///x -> hdfs://namenode:8020/x)."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):
        raise InputError(f"{uri} does not exist")
    return fs.makeQualified(path).toString()


def scans_skip(uri: str) -> bool:
    """Files Spark's file scans pass over though its file index lists them: Parquet
    summary names. (Empty files are skipped too; they need no reading.)"""
    return uri.rsplit("/", 1)[-1].startswith(_SUMMARY_NAMES)


def list_files(spark: SparkSession, root: str) -> list[tuple[str, int, int]]:
    """(uri, size, mtime in ns) of every file under `root`, sorted. The scan gives the
    sizes; the files it skips (empty ones, `scans_skip` names) are looked up one by one."""
    files = binary_files(spark, [root], recursive=True)
    scanned = {r["path"]: (r["length"], int(r["modificationTime"].timestamp() * 1e9))
               for r in files.select("path", "length", "modificationTime").collect()}
    indexed = [_as_path_string(uri) for uri in files.inputFiles()]
    missing = set(scanned) - set(indexed)
    if missing:
        raise InputError(f"{root}: listing disagrees with the scan on {sorted(missing)[:3]}")
    skipped = {uri: _status(spark, uri) for uri in indexed if uri not in scanned}
    for uri, (size, _) in skipped.items():
        if size and not scans_skip(uri):
            raise InputError(f"{uri}: Spark's reader passes over this file for a reason codemill does not know")
    return sorted((uri, *(scanned.get(uri) or skipped[uri])) for uri in indexed)


def _status(spark: SparkSession, uri: str) -> tuple[int, int]:
    path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(uri)
    status = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).getFileStatus(path)
    return status.getLen(), status.getModificationTime() * 1_000_000


def _as_path_string(uri: str) -> str:
    """The file index gives escaped URIs (file:///a%20b); the scan, and Hadoop's
    Path.toString, give file:/a b. The latter is the form used everywhere here."""
    uri = unquote(uri)
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*):///", r"\1:/", uri)


def list_directory(spark: SparkSession, name: str, root: str, repo: str | None, license: str | None,
                   exclude: list[str], max_file_bytes: int) -> list[FileEntry]:
    """A directory source listed as `walk_source` lists a local one: the same paths
    (relative, '/'-separated), the same names excluded, the same drop reasons."""
    base = qualified(spark, root).rstrip("/") + "/"
    entries = []
    for uri, size, mtime_ns in list_files(spark, root):
        if not uri.startswith(base):
            raise InputError(f"{root}: listed {uri}, which is not under {base}")
        rel = uri[len(base):]
        if any(fnmatch.fnmatchcase(part, p) for part in rel.split("/") for p in exclude):
            continue
        file_name = rel.rsplit("/", 1)[-1]
        reason = ("unsupported_extension" if lang_from_name(file_name) is None and has_extension(file_name)
                  else "too_large" if size > max_file_bytes else None)
        entries.append(FileEntry(name, repo, license, base.rstrip("/"), rel, size, mtime_ns, reason))
    return entries


def read_contents(spark: SparkSession, uris: list[str], read: Any, schema: Any) -> DataFrame:
    """`read(uri, data)` (yielding Arrow batches) over the bytes of every file, on
    executors; files Spark's scans skip (`scans_skip`) are read on the driver."""

    def rows(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for uri, data in zip(batch.column("path").to_pylist(), batch.column("content").to_pylist()):
                yield from read(uri, data)

    scanned = [uri for uri in uris if not scans_skip(uri)]
    out = binary_files(spark, scanned).select("path", "content").mapInArrow(rows, schema) if scanned else None
    fs = filesystem(uris[0], spark) if uris else None
    batches = [batch for uri in uris if scans_skip(uri) for batch in read(uri, fs.read_bytes(uri))]
    if batches or out is None:
        rows_read = pa.Table.from_batches(batches).to_pylist() if batches else []
        on_driver = spark.createDataFrame(rows_read, schema)
        out = on_driver if out is None else out.unionByName(on_driver)
    return out
