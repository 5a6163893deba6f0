"""Reading and writing the document and dropped tables, and what we know of them."""

from __future__ import annotations

import hashlib
import json
import re
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from codemill.observe import step
from codemill.schema import DOC_SCHEMA, DROPPED_SCHEMA, StageOutput
from codemill.stats import StageStats
from codemill.storage import is_local, local_path, name
from codemill.storage.folder import Folder

_PART = re.compile(r"part-(\d+)")
STATS = "stats.json"
# Tables of up to this many rows are counted by the driver (two narrow columns).
LOCAL_COUNT_ROWS = 20_000_000


def write_table(df: DataFrame, uri: str) -> None:
    """Parquet parts by a hash of id, each sorted by id: the same rows in the same order
    on every run. (Ids are hashes: a global sort would add a sampling pass over the
    input and order nothing that means anything.)"""
    df.repartition("id").sortWithinPartitions("id").write.mode("error").parquet(uri)


def read_table(spark: SparkSession, uri: str) -> DataFrame:
    return spark.read.parquet(uri)


def read_documents(spark: SparkSession, uri: str) -> DataFrame:
    """A document table, read with its known schema (inferring it would be a Spark job)."""
    return spark.read.schema(DOC_SCHEMA).parquet(uri)


def read_dropped(spark: SparkSession, uri: str) -> DataFrame:
    return spark.read.schema(DROPPED_SCHEMA).parquet(uri)


def part_files(table: Folder) -> list[str]:
    """Parquet part files in write order (part numbers; Spark's names differ per run)."""
    files = [f.uri for f in table.fs.list_files(table.uri) if _PART.match(name(f.uri))
             and f.uri.endswith(".parquet")]
    return sorted(files, key=lambda uri: int(_PART.match(name(uri)).group(1)))


def table_digest(table: Folder) -> str:
    """sha256 over the rows in order: equal iff the same rows in the same order."""
    h = hashlib.sha256()
    for part in part_files(table):
        data = pa.BufferReader(table.fs.read_bytes(part))
        for batch in pq.ParquetFile(data).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                h.update(json.dumps(row, sort_keys=True, default=str).encode())
                h.update(b"\n")
    return h.hexdigest()


def table_counts(kept: DataFrame, dropped: DataFrame) -> dict[str | None, tuple[int, int]]:
    """reason (None: kept) -> (documents, bytes), from written tables (cheap column scans,
    one job)."""
    rows = (kept.select(F.lit(None).cast("string").alias("reason"), "size_bytes")
            .unionByName(dropped.select("reason", "size_bytes"))
            .groupBy("reason").agg(F.count("*").alias("n"), F.sum("size_bytes").alias("b")))
    counts: dict[str | None, tuple[int, int]] = {None: (0, 0)}
    counts.update({r["reason"]: (r["n"], r["b"] or 0) for r in rows.collect()})
    return counts


def local_table_counts(docs: Folder, dropped: Folder) -> dict[str | None, tuple[int, int]] | None:
    """`table_counts` of tables written on the local disk, from their reason and size
    columns read here in batches: no Spark job. None when they hold more rows than the
    driver reads in a few seconds (Spark's parallel scan is then the cheaper way)."""
    files = [(pq.ParquetFile(str(local_path(part))), table is dropped)
             for table in (docs, dropped) for part in part_files(table)]
    if sum(file.metadata.num_rows for file, _ in files) > LOCAL_COUNT_ROWS:
        return None
    counts: dict[str | None, list[int]] = {None: [0, 0]}
    for file, has_reason in files:
        for batch in file.iter_batches(columns=["reason", "size_bytes"] if has_reason else ["size_bytes"]):
            if has_reason:
                groups = pa.table(batch).group_by("reason").aggregate([("size_bytes", "sum"), ([], "count_all")])
                rows = zip(groups["size_bytes_sum"].to_pylist(), groups["count_all"].to_pylist(),
                           groups["reason"].to_pylist())
            else:
                rows = [(pc.sum(batch.column("size_bytes")).as_py(), batch.num_rows, None)]
            for size, n, reason in rows:
                total = counts.setdefault(reason, [0, 0])
                total[0] += n
                total[1] += size or 0
    return {reason: (n, size) for reason, (n, size) in counts.items()}


def compute_stats(
    stage: str,
    docs_in: int | None,
    bytes_in: int | None,
    counts: dict[str | None, tuple[int, int]],
    seconds: float,
) -> StageStats:
    """A stage's stats from what its tables hold, checked to add up. An input of None
    is taken to be everything kept plus everything dropped."""
    docs_out, bytes_out = counts.get(None, (0, 0))
    by_reason = {reason: nb for reason, nb in counts.items() if reason is not None}
    return StageStats(
        stage=stage,
        docs_in=docs_out + sum(n for n, _ in by_reason.values()) if docs_in is None else docs_in,
        docs_out=docs_out,
        dropped={reason: n for reason, (n, _) in sorted(by_reason.items())},
        bytes_in=bytes_out + sum(b for _, b in by_reason.values()) if bytes_in is None else bytes_in,
        bytes_out=bytes_out,
        seconds=round(seconds, 3),
        dropped_bytes={reason: b for reason, (_, b) in sorted(by_reason.items())},
    ).check()


def upstream_stats(inputs: dict[str, Folder]) -> StageStats | None:
    """The stats of a stage's `docs` input (None: it has none)."""
    docs = inputs.get("docs")
    return StageStats.from_json(docs.read_text(STATS)) if docs is not None and docs.exists(STATS) else None


def write_stage_output(spark: SparkSession, stage: str, out: StageOutput, upstream: Folder | None,
                       work: Folder, started: float) -> StageStats:
    """Write a stage's kept and dropped tables (unless it wrote them itself), its extra
    tables and `stats.json`. Its
    input counts are the upstream stage's output counts (none upstream: the stage's
    input is what it kept plus what it dropped); the stats check that they add up."""
    if out.counts is None:
        with step("write kept documents"):
            write_table(out.kept, work.join("docs"))
        with step("write dropped documents"):
            write_table(out.dropped, work.join("dropped"))
    for table_name, table in out.tables.items():
        with step(f"write {table_name}"):
            table.write.parquet(work.join(table_name))
    source = StageStats.from_json(upstream.read_text(STATS)) if upstream else None
    counts = out.counts
    if counts is None and is_local(work.uri):
        counts = local_table_counts(work.sub("docs"), work.sub("dropped"))
    if counts is None:
        with step("count what was kept and dropped"):
            counts = table_counts(read_documents(spark, work.join("docs")),
                                  read_dropped(spark, work.join("dropped")))
    stats = compute_stats(stage, source.docs_out if source else None, source.bytes_out if source else None,
                          counts, time.monotonic() - started)
    stats.extra.update(out.extra)
    work.write_text(STATS, stats.to_json())
    return stats
