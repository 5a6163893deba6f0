"""Ingest's tables written by the tasks that read the inputs.

On a local (or shared, mounted) file system each read task writes its own part of
the document table and of the dropped table with pyarrow, and hands the driver only
its counts. Nothing passes through the JVM: Spark's conversion of Arrow batches into
rows, its cache and its sort would cost several times the reading itself. A part is
written to a hidden temporary name and renamed, so a retried or speculative task
leaves one whole file; its rows keep the order of the input.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from codemill.ingest.rows import ARROW_ROW_SCHEMA
from codemill.schema import DOC_COLUMNS, DROPPED_COLUMNS

# The document table's Arrow schema, as Spark reads it back (every column nullable).
DOC_ARROW_SCHEMA = pa.schema([ARROW_ROW_SCHEMA.field(c) for c in DOC_COLUMNS])
DROPPED_ARROW_SCHEMA = pa.schema(
    list(DOC_ARROW_SCHEMA) + [pa.field(c, pa.string()) for c in DROPPED_COLUMNS[len(DOC_COLUMNS):]])

# Rows are buffered into row groups of about this much content (Spark's own writes
# use the same size: a reader holds one row group at a time).
ROW_GROUP_BYTES = 16 << 20

# (source, reason or None for kept) -> [documents, bytes]
Tally = dict[tuple[str, str | None], list[int]]


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


class _PartWriter:
    """One Parquet file built in row groups of about ROW_GROUP_BYTES, renamed into place
    when closed (always written, even empty: readers infer the table's schema from it)."""

    def __init__(self, folder: str, index: int, schema: pa.Schema, compression: str) -> None:
        self.final = Path(folder, part_name(index))
        self.temp = self.final.with_name(f".{self.final.name}.{uuid.uuid4().hex}.tmp")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(self.temp, schema, compression=compression,
                                       use_dictionary=[c for c in schema.names if c != "content"],
                                       write_statistics=[c for c in schema.names if c != "content"])
        self.pending: list[pa.RecordBatch] = []
        self.pending_bytes = 0

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self.pending.append(batch)
            self.pending_bytes += batch.nbytes
            if self.pending_bytes >= ROW_GROUP_BYTES:
                self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.Table.from_batches(self.pending), row_group_size=1 << 40)
            self.pending, self.pending_bytes = [], 0

    def close(self) -> None:
        self._flush()
        self.writer.close()
        os.replace(self.temp, self.final)

    def abort(self) -> None:
        self.writer.close()
        self.temp.unlink(missing_ok=True)


def _dropped(batch: pa.RecordBatch, stage: str) -> pa.RecordBatch:
    n = batch.num_rows
    columns = [batch.column(c) for c in DOC_COLUMNS] + [
        pa.array([stage] * n, pa.string()), batch.column("reason"),
        pa.nulls(n, pa.string()), batch.column("detail")]
    return pa.RecordBatch.from_arrays(columns, schema=DROPPED_ARROW_SCHEMA)


def _count(tally: Tally, key: tuple[str, str | None], n: int, size: int) -> None:
    counts = tally.setdefault(key, [0, 0])
    counts[0] += n
    counts[1] += size


def _tally(tally: Tally, batch: pa.RecordBatch) -> None:
    for source, reason, size in zip(batch.column("source").to_pylist(), batch.column("reason").to_pylist(),
                                    batch.column("size_bytes").to_pylist()):
        _count(tally, (source, reason), 1, size)


def _runs(batch: pa.RecordBatch) -> Iterator[tuple[pa.RecordBatch, bool]]:
    """Consecutive runs of kept (True) or dropped rows, as slices: dropped documents are
    few and scattered, and slicing around them copies no text, unlike a filter."""
    dropped = np.asarray(batch.column("reason").is_valid())
    edges = [0, *(np.flatnonzero(dropped[1:] != dropped[:-1]) + 1).tolist(), batch.num_rows]
    for start, stop in zip(edges, edges[1:]):
        if stop > start:
            yield batch.slice(start, stop - start), not dropped[start]


def write_part(batches: Iterable[pa.RecordBatch], docs: str, dropped: str, index: int,
               stage: str, compression: str) -> Tally:
    """Rows of the ingest row schema (`reason` null when kept) -> part `index` of the
    document table in folder `docs` and of the dropped table in `dropped`."""
    writers = [_PartWriter(docs, index, DOC_ARROW_SCHEMA, compression),
               _PartWriter(dropped, index, DROPPED_ARROW_SCHEMA, compression)]
    tally: Tally = {}
    try:
        for batch in batches:
            _tally(tally, batch)
            for run, kept in _runs(batch):
                if kept:
                    writers[0].add(run.select(DOC_COLUMNS))
                else:
                    writers[1].add(_dropped(run, stage))
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    for writer in writers:
        writer.close()
    return tally


def run_part(task: tuple[int, Callable[[], Iterator[pa.RecordBatch]]], docs: str, dropped: str,
             stage: str, compression: str) -> list[tuple[tuple[str, str | None], list[int]]]:
    """Spark task body: (index, reader) -> the part's tally as a list (picklable)."""
    index, read = task
    return list(write_part(read(), docs, dropped, index, stage, compression).items())


def merge_tallies(tallies: Iterable[tuple[tuple[str, str | None], list[int]]]) -> Tally:
    merged: Tally = {}
    for key, (n, size) in tallies:
        _count(merged, key, n, size)
    return merged


def remove_temporaries(folder: str) -> None:
    """Temporary files a killed task attempt left behind."""
    for path in Path(folder).glob(".part-*.tmp"):
        path.unlink(missing_ok=True)
