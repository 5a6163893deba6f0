"""The ingest stage: every configured source -> document table + dropped table."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from codemill.errors import InputError
from codemill.ingest import remote
from codemill.ingest.config import DEFAULT_COLUMNS, IngestConfig, SourceConfig
from codemill.ingest.files import file_row, read_entries, read_files
from codemill.ingest.parts import Tally, merge_tallies, remove_temporaries, run_part
from codemill.ingest.records import (
    first_record_fields,
    list_hf_arrow_files,
    list_jsonl_files,
    parquet_to_rows,
    read_arrow_stream,
    read_jsonl,
    read_jsonl_pieces,
    read_parquet_task,
)
from codemill.ingest.rows import ROW_SCHEMA, to_batch
from codemill.ingest.splits import (
    Piece,
    count_newlines,
    pack,
    parquet_row_groups,
    plan_jsonl,
    split_size,
    with_line_offsets,
)
from codemill.ingest.walk import FileEntry, walk_source
from codemill.observe import step
from codemill.schema import DOC_COLUMNS, DOC_SCHEMA, DROPPED_SCHEMA, StageOutput, dropped_rows
from codemill.storage import is_local, local_path
from codemill.storage.folder import Folder

STAGE = "ingest"
DRIVER_COUNT_BYTES = 1 << 30

LISTING_SCHEMA = ("source string, repo string, license string, root string, path string, size long, "
                  "mtime_ns long, reason string")


def list_directory_source(spark: SparkSession | None, src: SourceConfig,
                          cfg: IngestConfig) -> list[FileEntry]:
    """A directory source's files: walked on the local disk, listed through Hadoop elsewhere."""
    root, repo, exclude = src.uri(), src.repo or src.name, cfg.exclude + src.exclude
    if not is_local(root):
        return remote.list_directory(spark, src.name, root, repo, src.license, exclude, cfg.max_file_bytes)
    path = local_path(root)
    if not path.is_dir():
        raise InputError(f"source {src.name!r}: {path} is not a directory")
    return walk_source(src.name, path, repo, src.license, exclude, cfg.max_file_bytes)


Reader = Callable[[], Iterator[pa.RecordBatch]]


def _directory_readers(spark: SparkSession, entries: list[FileEntry], cfg: IngestConfig) -> list[Reader]:
    """Listed local files in tasks of at most `files_per_partition` files and about a
    split's bytes (files judged by their listing alone count as nothing to read)."""
    sized = [(e, 0 if e.reason else e.size) for e in entries]
    split = _split_size(spark, sum(size for _, size in sized), cfg)
    tasks = [task[i:i + cfg.files_per_partition] for task in pack(sized, split)
             for i in range(0, len(task), cfg.files_per_partition)]
    return [partial(read_entries, task, cfg.max_file_bytes, cfg.invalid_utf8) for task in tasks]


def _remote_directory_rows(spark: SparkSession, entries: list[FileEntry], cfg: IngestConfig) -> DataFrame:
    """Files judged by their listing alone become rows here, and so do empty files (which
    Spark's scans skip); the rest are read in the JVM."""
    judged = [tuple(vars(e).values()) for e in entries if e.reason]
    max_bytes, policy = cfg.max_file_bytes, cfg.invalid_utf8
    meta, empty = {}, []
    for e in entries:
        if not e.reason:
            info = dict(source=e.source, path=e.path, repo=e.repo, license=e.license)
            if e.size:
                meta[f"{e.root}/{e.path}"] = info
            else:
                empty.append(file_row(info, b"", max_bytes, policy))

    def read(uri: str, data: bytes) -> Any:
        yield to_batch([file_row(meta[uri], data[:max_bytes + 1], max_bytes, policy)])

    read_rows = remote.read_contents(spark, sorted(meta), read, ROW_SCHEMA) if meta else None
    judged_rows = spark.createDataFrame(judged, LISTING_SCHEMA).mapInArrow(
        partial(read_files, max_file_bytes=max_bytes, invalid_utf8=policy), ROW_SCHEMA)
    judged_rows = judged_rows.unionByName(spark.createDataFrame(empty, ROW_SCHEMA))
    return judged_rows.unionByName(read_rows) if read_rows is not None else judged_rows


def _task_per_reader(spark: SparkSession, readers: list[Reader]) -> DataFrame:
    """One Spark task per reader, its rows sent to the JVM. The readers travel with the
    task's function: no Python job first turns them into rows (a second Python worker
    per task)."""

    def read(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            for index in batch.column("id").to_pylist():
                yield from readers[index]()

    return spark.range(0, len(readers), 1, max(1, len(readers))).mapInArrow(read, ROW_SCHEMA)


def _split_size(spark: SparkSession, total_bytes: int, cfg: IngestConfig) -> int:
    return split_size(total_bytes, cfg.split_bytes, spark.sparkContext.defaultParallelism)


def _line_offsets(spark: SparkSession, tasks: list[list[Piece]]) -> list[list[Piece]]:
    """Tasks whose ranges know the newlines before them: the newlines of every range but
    a file's last are counted first, here when they are few (a Spark job costs more than
    counting a few hundred MB), else in parallel, one task per read task."""
    ranges = [p for task in tasks for p in task if p.end is not None]
    if not ranges:
        return tasks

    def count(pieces: list[Piece]) -> list[tuple[tuple[str, int], int]]:
        return [((p.path, p.start), count_newlines(p.path, p.start, p.end)) for p in pieces if p.end is not None]

    if sum(p.end - p.start for p in ranges) <= DRIVER_COUNT_BYTES:
        counts = dict(count(ranges))
    else:
        counted = [t for t in tasks if any(p.end is not None for p in t)]
        with step("count lines of split files"):
            counts = dict(spark.sparkContext.parallelize(counted, len(counted)).flatMap(count).collect())
    offsets = iter(with_line_offsets([p for task in tasks for p in task], counts))
    return [[next(offsets) for _ in task] for task in tasks]


def _jsonl_readers(spark: SparkSession, src: SourceConfig, columns: dict[str, str],
                   cfg: IngestConfig) -> list[Reader]:
    files = list_jsonl_files(Folder(src.uri()))
    sized = [(str(local_path(uri)), os.stat(local_path(uri)).st_size) for uri in files]
    tasks = plan_jsonl(sized, _split_size(spark, sum(size for _, size in sized), cfg))
    return [partial(read_jsonl_pieces, task, columns, src.name, cfg.invalid_utf8, cfg.malformed_jsonl)
            for task in _line_offsets(spark, tasks)]


def _remote_jsonl_rows(spark: SparkSession, src: SourceConfig, columns: dict[str, str],
                       cfg: IngestConfig) -> DataFrame:
    policy, malformed = cfg.invalid_utf8, cfg.malformed_jsonl

    def read(uri: str, data: bytes) -> Any:
        return read_jsonl(uri, columns, src.name, policy, malformed, data=data)

    return remote.read_contents(spark, list_jsonl_files(Folder(src.uri())), read, ROW_SCHEMA)


def _hf_readers(src: SourceConfig, columns: dict[str, str]) -> list[Reader]:
    return [partial(read_arrow_stream, str(local_path(uri)), label, columns, src.name)
            for uri, label in list_hf_arrow_files(Folder(src.uri()))]


def _remote_hf_rows(spark: SparkSession, src: SourceConfig, columns: dict[str, str]) -> DataFrame:
    labels = {remote.qualified(spark, uri): label for uri, label in list_hf_arrow_files(Folder(src.uri()))}

    def read(uri: str, data: bytes) -> Any:
        return read_arrow_stream(uri, labels[uri], columns, src.name, data=data)

    return remote.read_contents(spark, sorted(labels), read, ROW_SCHEMA)


def _no_content_column(path: str, content: str, names: list[str]) -> InputError:
    return InputError(
        f"{path}: no column {content!r} to read content from "
        f"(columns: {', '.join(names)}); map it with [sources.columns] content = \"...\""
    )


def _parquet_readers(spark: SparkSession, src: SourceConfig, columns: dict[str, str],
                     cfg: IngestConfig) -> list[Reader]:
    """Local Parquet, read with pyarrow on executors: a task per row group (or per run
    of row groups up to the split size)."""
    root = Folder(src.uri())
    files = [str(local_path(f.uri)) for f in root.fs.list_files(root.uri) if not _hidden(f.uri, root.uri)]
    groups = []
    for path in files:
        file = pq.ParquetFile(path)
        if columns["content"] not in file.schema_arrow.names:
            raise _no_content_column(path, columns["content"], file.schema_arrow.names)
        groups += [((path, index, first_row), size) for index, first_row, size in parquet_row_groups(file.metadata)]
    tasks = pack(groups, _split_size(spark, sum(size for _, size in groups), cfg))
    return [partial(read_parquet_task, task, columns, src.name) for task in tasks]


def _hidden(uri: str, root: str) -> bool:
    """Names Spark's file sources skip: `_SUCCESS`, `.crc` files, `_temporary/`."""
    rel = uri[len(root.rstrip("/")) + 1:] if uri != root else uri.rsplit("/", 1)[-1]
    return any(part.startswith(("_", ".")) for part in rel.split("/"))


def _remote_parquet_rows(spark: SparkSession, src: SourceConfig, columns: dict[str, str]) -> DataFrame:
    path = src.uri()
    table = spark.read.parquet(path)
    if columns["content"] not in table.columns:
        raise _no_content_column(path, columns["content"], table.columns)
    present = [c for c in set(columns.values()) if c in table.columns]
    selected = table.select(*present, F.col("_metadata.file_path").alias("_file"),
                            F.col("_metadata.row_index").alias("_row"))
    return selected.mapInArrow(partial(parquet_to_rows, columns=columns, source=src.name), ROW_SCHEMA)


def source_counts(rows: DataFrame) -> dict[str, tuple[int, int]]:
    """Per source: (records, records missing content)."""
    return {r["source"]: (r["n"], r["missing"]) for r in rows.groupBy("source").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum((F.col("reason") == "missing_content").cast("long")).alias("missing")).collect()}


def check_sources(counts: dict[str, tuple[int, int]], sources: list[SourceConfig]) -> None:
    """Fail at ingest, not stages later, on a source that yields nothing or whose records
    all lack content (a column mapping that does not match its records). `counts`:
    per source, (records, records missing content)."""
    for src in sources:
        n, missing = counts.get(src.name, (0, 0))
        if n == 0:
            raise InputError(f"source {src.name!r}: {src.path} holds no "
                             f"{'files' if src.type == 'dir' else 'records'}; check its path")
        if missing == n:
            content = {**DEFAULT_COLUMNS, **src.columns}["content"]
            fields = _record_fields(src)
            raise InputError(
                f"source {src.name!r}: none of its {n:,} records has a {content!r} field"
                + (f" (its first record has {', '.join(fields)})" if fields else "")
                + "; name the field that holds the text with [sources.columns] content = \"<field>\"")


def _record_fields(src: SourceConfig) -> list[str]:
    if src.type != "jsonl" or not is_local(src.uri()):
        return []
    files = list_jsonl_files(Folder(src.uri()))
    return first_record_fields(str(local_path(files[0]))) if files else []


def _listing(spark: SparkSession, src: SourceConfig, cfg: IngestConfig,
             listings: dict[str, list[FileEntry]] | None) -> list[FileEntry]:
    return (listings or {}).get(src.name) or list_directory_source(spark, src, cfg)


def _readers(spark: SparkSession, src: SourceConfig, cfg: IngestConfig,
             listings: dict[str, list[FileEntry]] | None) -> list[Reader]:
    """A local source as read tasks."""
    columns = {**DEFAULT_COLUMNS, **src.columns}
    if src.type == "dir":
        return _directory_readers(spark, _listing(spark, src, cfg, listings), cfg)
    if src.type == "jsonl":
        return _jsonl_readers(spark, src, columns, cfg)
    if src.type == "hf_disk":
        return _hf_readers(src, columns)
    return _parquet_readers(spark, src, columns, cfg)


def _rows(spark: SparkSession, src: SourceConfig, cfg: IngestConfig,
          listings: dict[str, list[FileEntry]] | None) -> DataFrame:
    """A source as rows in Spark: local ones read by codemill's readers, others through Hadoop."""
    if is_local(src.uri()):
        return _task_per_reader(spark, _readers(spark, src, cfg, listings))
    columns = {**DEFAULT_COLUMNS, **src.columns}
    if src.type == "dir":
        return _remote_directory_rows(spark, _listing(spark, src, cfg, listings), cfg)
    if src.type == "jsonl":
        return _remote_jsonl_rows(spark, src, columns, cfg)
    if src.type == "hf_disk":
        return _remote_hf_rows(spark, src, columns)
    return _remote_parquet_rows(spark, src, columns)


def _write_parts(spark: SparkSession, readers: list[Reader], work: Folder, compression: str) -> Tally:
    """Every read task writes its part of both tables into `work` (a local folder)."""
    docs, dropped = str(local_path(work.join("docs"))), str(local_path(work.join("dropped")))
    tasks = spark.sparkContext.parallelize(list(enumerate(readers)), max(1, len(readers)))
    with step("read every source and write both tables"):
        tallies = tasks.flatMap(partial(run_part, docs=docs, dropped=dropped, stage=STAGE,
                                        compression=compression)).collect()
    for folder in (docs, dropped):
        remove_temporaries(folder)
    return merge_tallies(tallies)


def ingest(
    spark: SparkSession,
    sources: list[SourceConfig],
    cfg: IngestConfig,
    listings: dict[str, list[FileEntry]] | None = None,
    work: Folder | None = None,
) -> StageOutput:
    """Read all sources into one table; every input ends up kept or dropped with a reason.

    `listings` holds directory listings already made by the caller (to fingerprint
    the input); missing ones are made here. Given a local `work` folder and local
    sources, the read tasks write the stage's `docs` and `dropped` tables there
    themselves; otherwise the tables are returned for the caller to write.
    """
    if not sources:
        raise InputError("no sources configured: add at least one [[sources]] table")
    if work is not None and is_local(work.uri) and all(is_local(src.uri()) for src in sources):
        readers = [reader for src in sources for reader in _readers(spark, src, cfg, listings)]
        tally = _write_parts(spark, readers, work, cfg.compression)
        per_source: dict[str, tuple[int, int]] = {}
        for (source, reason), (n, _) in tally.items():
            total, missing = per_source.get(source, (0, 0))
            per_source[source] = (total + n, missing + n * (reason == "missing_content"))
        check_sources(per_source, sources)
        counts: dict[str | None, tuple[int, int]] = {}
        for (_, reason), (n, size) in tally.items():
            before = counts.get(reason, (0, 0))
            counts[reason] = (before[0] + n, before[1] + size)
        return StageOutput(spark.read.schema(DOC_SCHEMA).parquet(work.join("docs")),
                           spark.read.schema(DROPPED_SCHEMA).parquet(work.join("dropped")), counts=counts)
    parts = [_rows(spark, src, cfg, listings) for src in sources]
    rows = parts[0]
    for part in parts[1:]:
        rows = rows.unionByName(part)
    # Both outputs derive from one pass over the inputs.
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    with step("read every source"):
        check_sources(source_counts(rows), sources)
    kept = rows.where(F.col("reason").isNull()).select(*DOC_COLUMNS)
    dropped = dropped_rows(rows.where(F.col("reason").isNotNull()), STAGE, F.col("reason"),
                           detail=F.col("detail"))
    return StageOutput(kept, dropped)
