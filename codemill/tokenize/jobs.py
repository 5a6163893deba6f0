"""Tokenization as Spark jobs: the tokenizer model is shipped to executors with
`SparkContext.addFile`, documents are encoded over Arrow batches, and each
partition packs its own shards. On a local (or shared, mounted) output folder the
partitions write their shard files themselves and the driver only renames them into
global order; elsewhere the driver streams their bytes into the output folder through
storage (executors' Python cannot reach Hadoop's file systems)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
from pyspark import StorageLevel, TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from tqdm import tqdm

from codemill.observe import step
from codemill.spark import ship_file
from codemill.storage import is_local, local_path
from codemill.storage.folder import Folder
from codemill.tokenize.config import FimConfig, PackConfig
from codemill.tokenize.pack import PackStats, pack_documents
from codemill.tokenize.shards import ShardError, ShardInfo, local_opener, shard_name
from codemill.tokenize.tokenizer import Tokenizer, load_tokenizer

# The token_counts table: every document's plain encoding's length.
TOKEN_COUNTS_DDL = "id string, n_tokens long"

# A packing partition's output rows, numbered (part, seq) in the order they are written;
# its last row holds its shards and counts (`stats`: PackedCounts as JSON).
CHUNK_DDL = "part int, seq long, file string, data binary, shards string, stats string"
CHUNK_SCHEMA = pa.schema([("part", pa.int32()), ("seq", pa.int64()), ("file", pa.string()),
                          ("data", pa.binary()), ("shards", pa.string()), ("stats", pa.string())])
# toLocalIterator holds a whole Spark partition in the driver's heap, several times over
# (pickled, as a task result, fetched; two partitions when prefetching): packed partitions
# larger than this reach it in slices of about this size, and each row carries at most
# CHUNK_BYTES of a shard (the JVM pickles a row through a few copies of it).
STREAM_SLICE_BYTES = 16 << 20
CHUNK_BYTES = 1 << 20

# Where partitions write their shard files when the output folder is local; the driver
# renames them out of it in global order, then removes it with any killed attempt's files.
PACKED_DIR = ".packed"

# Buckets of the shuffle key: many more than partitions, so hash partitioning spreads
# them evenly and each partition's set of documents depends only on the data.
ORDER_BUCKETS = 4096


def sample_texts(docs: DataFrame, max_bytes: int, seed: int) -> list[str]:
    """A stable sample of about `max_bytes` of content, chosen by a seeded hash of ids."""
    unit = F.xxhash64(F.lit(seed), F.col("id")).bitwiseAND(F.lit(0x7FFFFFFFFFFFFFFF)) / F.lit(2.0**63)
    with step("sample documents for the tokenizer"):
        total = docs.agg(F.sum("size_bytes")).first()[0] or 0
        fraction = min(1.0, max_bytes / total) if total else 1.0
        rows = docs.where(unit < fraction).select("id", "content").collect()
    return [r["content"] for r in sorted(rows, key=lambda r: r["id"])]


def ship(spark: SparkSession, tok: Tokenizer) -> Tokenizer:
    """The tokenizer loaded from its shipped copy: executors unpickle it by that
    content-addressed file name (through SparkFiles where the path is not local)."""
    return load_tokenizer(ship_file(spark, tok.path))


def count_tokens(spark: SparkSession, docs: DataFrame, tok: Tokenizer) -> DataFrame:
    """(id, n_tokens) for every document: its plain encoding's length."""
    tok = ship(spark, tok)

    def count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            encoded = tok.encode_batch(batch.column("content").to_pylist())
            lengths = pa.array([len(ids) for ids in encoded], pa.int64())
            yield pa.RecordBatch.from_arrays([batch.column("id"), lengths], names=["id", "n_tokens"])

    return docs.select("id", "content").mapInArrow(count, TOKEN_COUNTS_DDL)


def read_token_counts(spark: SparkSession, uri: str) -> DataFrame:
    """A table `token_counts` wrote, read with its known schema."""
    return spark.read.schema(TOKEN_COUNTS_DDL).parquet(uri)


@dataclass
class PackedCounts:
    """What the packing partitions counted: the packer's counts, and the tokens of the
    packed documents per category (each document's plain encoding: the mix's realised
    tokens)."""

    pack: PackStats = field(default_factory=PackStats)
    category_tokens: dict[str, int] = field(default_factory=dict)

    def merge(self, text: str) -> None:
        counts = json.loads(text)
        self.pack.merge(PackStats(**counts["pack"]))
        for category, n in counts["category_tokens"].items():
            self.category_tokens[category] = self.category_tokens.get(category, 0) + n

    def to_json(self) -> str:
        return json.dumps({"pack": self.pack.to_dict(), "category_tokens": self.category_tokens})


def write_shards(
    spark: SparkSession,
    selected: DataFrame,
    tok: Tokenizer,
    fim: FimConfig,
    pack: PackConfig,
    seed: int,
    partitions: int,
    out: Folder,
) -> tuple[list[ShardInfo], PackedCounts]:
    """Shuffle the selected (document, copy, category, n_tokens) rows by a seeded hash,
    then tokenize, FIM-transform and pack each partition into its own shards, written to
    `out` as shard-00000.arrow, shard-00001.arrow, … in partition order.

    A copy of a document draws its own FIM split (`id#copy`); the shard order and
    contents depend only on the data and the seed, not on timing or retries.
    """
    tok = ship(spark, tok)
    fim_id = F.when(F.col("copy") == 0, F.col("id")).otherwise(
        F.concat_ws("#", F.col("id"), F.col("copy").cast("string")))
    order = F.xxhash64(F.lit(seed), F.col("id"), F.col("copy"))
    rows = (
        selected.select("content", fim_id.alias("fim_id"), "category", "n_tokens", order.alias("_order"))
        .repartition(partitions, F.pmod(F.col("_order"), F.lit(ORDER_BUCKETS)))
        .sortWithinPartitions("_order", "fim_id")
    )

    # Local: each partition writes its shard files and returns only their names and
    # counts. Else its shards' bytes come back as chunk rows for the driver to write.
    direct = str(local_path(out.join(PACKED_DIR))) if is_local(out.uri) else None

    def pack_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from codemill.tokenize.shards import ShardWriter

        pid = TaskContext.get().partitionId()
        seq = itertools.count()
        counts = PackedCounts()

        def documents() -> Iterator[tuple[list[str], list[str]]]:
            tokens = counts.category_tokens
            for b in batches:
                for category, n in zip(b.column("category").to_pylist(), b.column("n_tokens").to_pylist()):
                    tokens[category] = tokens.get(category, 0) + n
                yield b.column("content").to_pylist(), b.column("fim_id").to_pylist()
        sinks: list[_Chunks] = []

        def drain() -> Iterator[pa.RecordBatch]:
            for sink in sinks:
                data = sink.take()
                for at in range(0, len(data), CHUNK_BYTES):
                    yield _chunk_row(pid, next(seq), file=sink.name, data=data[at:at + CHUNK_BYTES])
            sinks[:] = [s for s in sinks if not s.closed]

        def open_sink(name: str) -> _Chunks:
            sinks.append(_Chunks(name))
            return sinks[-1]

        open_file: Callable[[str], BinaryIO] = local_opener(direct) if direct else open_sink
        with ShardWriter(None, pack.seq_len, prefix=f"part-{pid:05d}", open_file=open_file) as writer:
            for packed in pack_documents(documents(), tok, fim, pack, seed, counts.pack):
                writer.write(packed)
                yield from drain()
        yield from drain()
        yield _chunk_row(pid, next(seq), shards=json.dumps([vars(i) for i in writer.shards]),
                         stats=counts.to_json())

    packed = rows.mapInArrow(pack_partition, CHUNK_DDL)
    if direct:
        with step("tokenize, FIM and pack"):
            ends = packed.drop("data").collect()
        return _rename_packed(sorted(ends, key=lambda r: r["part"]), Path(direct), out)
    # Packed in parallel and kept on the executors' disks, then streamed to the driver in
    # order. A local checkpoint, not a cached table: caching would build a thousand chunks
    # (spark.sql.inMemoryColumnarStorage.batchSize rows) into one batch in the heap.
    packed = packed.localCheckpoint(eager=False, storageLevel=StorageLevel.DISK_ONLY)
    with step("tokenize, FIM and pack"):
        largest, total = _partition_bytes(packed)
    with step("stream shards to the driver"):
        return _write_streamed(streamable(packed, largest, total).toLocalIterator(prefetchPartitions=True), out)


def _rename_packed(ends: list[Any], packed_dir: Path, out: Folder) -> tuple[list[ShardInfo], PackedCounts]:
    """Partitions' shard files (named by partition) -> shard-00000.arrow, … in partition
    order; `ends` are the partitions' final rows, in order."""
    counts, infos = PackedCounts(), []
    target = local_path(out.uri)
    for r in ends:
        for info in _partition_end(r, counts):
            name = shard_name("shard", len(infos))
            os.replace(packed_dir / info["file"], target / name)
            infos.append(ShardInfo(name, info["rows"], info["bytes"], info["sha256"]))
    shutil.rmtree(packed_dir, ignore_errors=True)
    return infos, counts


def _partition_end(row: Any, counts: PackedCounts) -> list[dict[str, Any]]:
    """A partition's final row: its counts are added to `counts`; returns its shards."""
    counts.merge(row["stats"])
    return json.loads(row["shards"])


def _chunk_row(part: int, seq: int, **values: Any) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([{"part": part, "seq": seq, **values}], CHUNK_SCHEMA)


def _partition_bytes(packed: DataFrame) -> tuple[int, int]:
    """The chunk bytes of the largest packing partition and of all of them."""
    per_part = packed.groupBy("part").agg(F.sum(F.length("data")).alias("bytes"))
    largest, total = per_part.agg(F.max("bytes"), F.sum("bytes")).first()
    return int(largest or 0), int(total or 0)


def streamable(packed: DataFrame, largest: int, total: int,
               slice_bytes: int = STREAM_SLICE_BYTES) -> DataFrame:
    """The packed rows in the order they are written (part, then seq), in Spark partitions
    the driver can hold: as packed when each fits in `slice_bytes`, else range-partitioned
    into slices of about that size (chunks are of similar size, so equal row counts are
    about equal bytes)."""
    if largest <= slice_bytes:
        return packed
    slices = -(-total // slice_bytes)
    return packed.repartitionByRange(slices, "part", "seq").sortWithinPartitions("part", "seq")


def _write_streamed(chunks: Iterator[Any], out: Folder) -> tuple[list[ShardInfo], PackedCounts]:
    """Write the streamed chunks as shard-00000.arrow, … and check each file's sha256
    against what its partition computed."""
    counts, infos = PackedCounts(), []
    names: dict[str, str] = {}  # a partition's name for a shard -> its global name
    written: dict[str, str] = {}  # global name -> sha256 of the bytes written
    file, output, sha = None, None, hashlib.sha256()

    def close() -> None:
        if output is not None:
            output.close()
            written[names[file]] = sha.hexdigest()

    for r in tqdm(chunks, desc="writing shards", unit=" chunks", mininterval=2.0, leave=False,
                  disable=None):
        if r["shards"] is None:  # a chunk of a shard
            if r["file"] != file:
                close()
                file, sha = r["file"], hashlib.sha256()
                names[file] = shard_name("shard", len(names))
                output = out.fs.open_output(out.join(names[file]))
            output.write(r["data"])
            sha.update(r["data"])
            continue
        close()  # a partition's end: its shards and counts
        file, output = None, None
        for info in _partition_end(r, counts):
            infos.append(ShardInfo(names[info["file"]], info["rows"], info["bytes"], info["sha256"]))
    for info in infos:
        if written.get(info.file) != info.sha256:
            raise ShardError(f"{out.join(info.file)}: the bytes written differ from those packed")
    return infos, counts


class _Chunks:
    """A shard's file on an executor: its bytes are taken out as they are written."""

    def __init__(self, name: str) -> None:
        self.name, self.parts, self.closed = name, [], False

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    discard = close

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data
