"""Tokenization as Spark jobs: the tokenizer model is shipped to executors with
`SparkContext.addFile`, documents are encoded over Arrow batches, and each
partition packs its own shards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from codemill.spark import ship_file
from codemill.tokenize.config import FimConfig, PackConfig
from codemill.tokenize.pack import PackStats, pack_documents
from codemill.tokenize.shards import ShardInfo, rename_shards
from codemill.tokenize.tokenizer import Tokenizer, load_tokenizer

# Buckets of the shuffle key: many more than partitions, so hash partitioning spreads
# them evenly and each partition's set of documents depends only on the data.
ORDER_BUCKETS = 4096


def sample_texts(docs: DataFrame, max_bytes: int, seed: int) -> list[str]:
    """A stable sample of about `max_bytes` of content, chosen by a seeded hash of ids."""
    total = docs.agg(F.sum("size_bytes")).first()[0] or 0
    fraction = min(1.0, max_bytes / total) if total else 1.0
    unit = F.xxhash64(F.lit(seed), F.col("id")).bitwiseAND(F.lit(0x7FFFFFFFFFFFFFFF)) / F.lit(2.0**63)
    rows = docs.where(unit < fraction).orderBy("id").select("content").collect()
    return [r["content"] for r in rows]


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

    return docs.select("id", "content").mapInArrow(count, "id string, n_tokens long")


def write_shards(
    spark: SparkSession,
    selected: DataFrame,
    tok: Tokenizer,
    fim: FimConfig,
    pack: PackConfig,
    seed: int,
    partitions: int,
    out_dir: Path,
) -> tuple[list[ShardInfo], PackStats]:
    """Shuffle the selected (document, copy) rows by a seeded hash, then tokenize,
    FIM-transform and pack each partition into its own shards under `out_dir`.

    A copy of a document draws its own FIM split (`id#copy`); the shard order and
    contents depend only on the data and the seed, not on timing or retries.
    """
    tok = ship(spark, tok)
    out = str(out_dir)
    fim_id = F.when(F.col("copy") == 0, F.col("id")).otherwise(
        F.concat_ws("#", F.col("id"), F.col("copy").cast("string")))
    order = F.xxhash64(F.lit(seed), F.col("id"), F.col("copy"))
    rows = (
        selected.select("content", fim_id.alias("fim_id"), order.alias("_order"))
        .repartition(partitions, F.pmod(F.col("_order"), F.lit(ORDER_BUCKETS)))
        .sortWithinPartitions("_order", "fim_id")
    )

    def pack_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from codemill.tokenize.shards import ShardWriter

        pid = TaskContext.get().partitionId()
        stats = PackStats()
        docs = ((b.column("content").to_pylist(), b.column("fim_id").to_pylist()) for b in batches)
        with ShardWriter(out, pack.seq_len, prefix=f"part-{pid:05d}") as writer:
            for packed in pack_documents(docs, tok, fim, pack, seed, stats):
                writer.write(packed)
        infos = [vars(i) for i in writer.shards]
        yield pa.RecordBatch.from_pylist(
            [{"partition": pid, "shards": json.dumps(infos), "stats": json.dumps(stats.to_dict())}])

    results = sorted(
        rows.mapInArrow(pack_partition, "partition long, shards string, stats string").collect(),
        key=lambda r: r["partition"],
    )
    stats = PackStats()
    infos: list[ShardInfo] = []
    for r in results:
        stats.merge(PackStats(**json.loads(r["stats"])))
        infos += [ShardInfo(**i) for i in json.loads(r["shards"])]
    return rename_shards(out_dir, infos), stats
