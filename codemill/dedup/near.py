"""The near-dedup stage: MinHash LSH candidates, a real-Jaccard guard, clusters, survivors.

1. Executors shingle each document, compute its MinHash signature and emit one
   bucket key per LSH band (documents without a shingle emit nothing: only
   exact dedup covers them).
2. Documents sharing a (band, key) bucket become candidate pairs (a bucket too large
   for all its pairs links its members in a star around its best document by the
   keep rule, plus a chain).
3. The guard: candidate pairs inside clusters of at least
   `verify_min_cluster_size` documents are checked by exact Jaccard over the
   shingle sets, and pairs below the threshold are removed — so boilerplate
   shared by unrelated files cannot chain them into one giant cluster.
4. Connected components of the remaining pairs are the clusters. Each keeps its
   best document by the keep rule (keep_rule.keep_order), plus as few others as
   needed for every dropped document to have a kept document it is paired with
   (survivors.py); the rest are dropped with their cluster id and that kept
   document's id.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, LongType, StructField, StructType

from codemill.dedup.components import DRIVER_EDGES, components_on_driver, connected_components
from codemill.dedup.config import NearDedupConfig
from codemill.dedup.keep_rule import keep_key, keep_order
from codemill.dedup.lsh import band_key_batches, band_params
from codemill.dedup.shingles import shingle_set_batches
from codemill.dedup.survivors import survivor_batches, survivors
from codemill.observe import step
from codemill.schema import DOC_COLUMNS, StageOutput, dropped_rows
from codemill.stats import StageStats

STAGE = "near_dedup"
REASON = "near_duplicate"
# Upper bounds of a row's size in a broadcast join: one 32-character id, and a drop
# decision (three ids).
_ID_ROW_BYTES = 64
_DECISION_ROW_BYTES = 128


@dataclass
class NearDedupResult:
    kept: DataFrame  # DOC_SCHEMA columns
    dropped: DataFrame  # DROPPED_SCHEMA columns
    clusters: DataFrame  # cluster_id, size, members (sorted ids), kept_ids (keep-rule order)
    stats: StageStats


def _bucket_pairs(members: str, all_pairs_max: int) -> F.Column:
    """Candidate pairs (a, b) of a bucket's member array, as an array of structs: all pairs,
    or for a bucket over `all_pairs_max` members a star around its first member plus a
    chain through the rest in array order."""
    all_pairs_max = max(all_pairs_max, 2)  # the star-and-chain form needs >= 3 members
    every = (
        f"flatten(transform(sequence(1, size({members}) - 1), i -> "
        f"transform(slice({members}, i + 1, size({members}) - i), "
        f"x -> named_struct('a', {members}[i - 1], 'b', x))))"
    )
    star_and_chain = (
        f"concat(transform(slice({members}, 2, size({members}) - 1), "
        f"x -> named_struct('a', {members}[0], 'b', x)), "
        f"transform(sequence(2, size({members}) - 1), "
        f"i -> named_struct('a', {members}[i - 1], 'b', {members}[i])))"
    )
    return F.when(F.size(members) <= all_pairs_max, F.expr(every)).otherwise(
        F.expr(star_and_chain)
    )


def candidate_pairs(docs: DataFrame, cfg: NearDedupConfig, bands: int, rows: int) -> DataFrame:
    """Distinct (a, b), a < b, of documents that share at least one LSH bucket."""
    # Each bucket's members are ordered by the keep rule, so a star drawn in a large bucket
    # centres on the document its cluster will keep.
    keys = docs.select(keep_key().alias("keep"), "content").mapInArrow(
        partial(band_key_batches, cfg=cfg, bands=bands, rows=rows),
        StructType([StructField("band", IntegerType()), StructField("key", LongType()),
                    StructField("keep", docs.select(keep_key()).schema[0].dataType)]),
    )
    buckets = (
        keys.groupBy("band", "key")
        .agg(F.transform(F.array_sort(F.collect_set("keep")), lambda k: k["id"]).alias("m"))
        .where(F.size("m") > 1)
    )
    return (
        buckets.select(F.explode(_bucket_pairs("m", cfg.all_pairs_max_bucket)).alias("p"))
        .select(F.least("p.a", "p.b").alias("a"), F.greatest("p.a", "p.b").alias("b"))
        .distinct()
    )


def _sorted_intersection_size(x: np.ndarray, y: np.ndarray) -> int:
    """|x & y| of two sorted arrays of distinct values: a binary search of the smaller in
    the larger (~3x faster than np.intersect1d, which concatenates and sorts)."""
    if len(x) < len(y):
        x, y = y, x
    if not len(y):
        return 0
    at = np.searchsorted(x, y)
    at[at == len(x)] = 0
    return int(np.count_nonzero(x[at] == y))


def jaccard_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (a, b, sa, sb) with distinct shingle-hash lists -> (a, b, jaccard)."""
    for batch in batches:
        sa, sb = batch.column("sa"), batch.column("sb")
        # Sorted as uint64 (shingle_set_batches stores them as int64 bit patterns).
        va, vb = sa.values.to_numpy().view(np.uint64), sb.values.to_numpy().view(np.uint64)
        oa, ob = sa.offsets.to_numpy(), sb.offsets.to_numpy()
        scores = np.empty(batch.num_rows, dtype=np.float64)
        for i in range(batch.num_rows):
            x, y = va[oa[i] : oa[i + 1]], vb[ob[i] : ob[i + 1]]
            inter = _sorted_intersection_size(x, y)
            union = len(x) + len(y) - inter
            scores[i] = inter / union if union else 0.0
        yield pa.RecordBatch.from_arrays(
            [batch.column("a"), batch.column("b"), pa.array(scores)], names=["a", "b", "jaccard"]
        )


def verify_pairs(
    docs: DataFrame, pairs: DataFrame, cfg: NearDedupConfig, broadcast_ids: bool = False
) -> DataFrame:
    """(a, b, jaccard) of `pairs`, by exact Jaccard of the two documents' shingle sets.
    `broadcast_ids`: the pairs' ids are few enough to broadcast, so selecting their
    documents shuffles no content."""
    ids = pairs.select(F.col("a").alias("id")).unionByName(pairs.select(F.col("b").alias("id")))
    ids = ids.distinct()
    if broadcast_ids:
        ids = F.broadcast(ids)
    sets = (
        docs.select("id", "content")
        .join(ids, "id", "left_semi")
        .mapInArrow(
            partial(shingle_set_batches, n=cfg.ngram, lowercase=cfg.lowercase),
            "id string, shingles array<long>",
        )
        # Both sides of the pair join read the sets: materialise them once.
        .localCheckpoint(eager=True)
    )
    joined = pairs.join(
        sets.select(F.col("id").alias("a"), F.col("shingles").alias("sa")), "a"
    ).join(sets.select(F.col("id").alias("b"), F.col("shingles").alias("sb")), "b")
    return joined.select("a", "b", "sa", "sb").mapInArrow(
        jaccard_batches, "a string, b string, jaccard double"
    )


def _split_by_cluster_size(pairs: DataFrame, min_size: int) -> tuple[DataFrame, DataFrame]:
    """(pairs inside clusters of >= min_size documents, the other pairs), clusters taken
    over all candidate pairs."""
    if min_size <= 2:  # every pair lies in a cluster of two or more
        return pairs, pairs.limit(0)
    comp = connected_components(pairs, "a", "b")
    size = comp.groupBy("component").agg(F.count(F.lit(1)).alias("size"))
    sized = pairs.join(comp.select(F.col("id").alias("a"), "component"), "a").join(
        size, "component"
    )
    big = F.col("size") >= min_size
    return sized.where(big).select("a", "b"), sized.where(~big).select("a", "b")


def _decide(docs: DataFrame, edges: DataFrame, driver_edges: int = DRIVER_EDGES) -> DataFrame:
    """(id, cluster_id, rank, kept_id, size_bytes) of every document in a cluster: rank is
    its place in keep-rule order, kept_id the survivor it is a duplicate of (itself for a
    survivor). Up to `driver_edges` edges are decided on the driver (a distributed pass
    is a dozen small Spark jobs, which dominate a small run); both ways agree."""
    edges = edges.select("a", "b").localCheckpoint(eager=False)  # read by the check, then the pass
    head = edges.limit(driver_edges + 1).collect()
    if len(head) <= driver_edges:
        return _decide_on_driver(docs, [(r["a"], r["b"]) for r in head])
    comp = connected_components(edges, "a", "b", driver_edges=0).withColumnRenamed("component", "cluster_id")
    ranked = (
        docs.select("id", "license", "stars", "size_bytes").join(comp, "id")
        .withColumn("rank", F.row_number().over(Window.partitionBy("cluster_id").orderBy(*keep_order())) - 1)
        .select("id", "cluster_id", "rank", "size_bytes")
        .localCheckpoint(eager=False)
    )  # fmt: skip
    members = ranked.groupBy("cluster_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("rank", "id"))), lambda m: m["id"]).alias("members")
    )
    links = (
        edges.join(ranked.select(F.col("id").alias("a"), F.col("rank").alias("ra")), "a")
        .join(ranked.select(F.col("id").alias("b"), "cluster_id", F.col("rank").alias("rb")), "b")
        .groupBy("cluster_id")
        .agg(F.collect_list("ra").alias("a"), F.collect_list("rb").alias("b"))
    )
    decided = members.join(links, "cluster_id").mapInArrow(
        survivor_batches, "id string, cluster_id string, rank int, kept_id string"
    )
    return decided.join(ranked.select("id", "size_bytes"), "id")


def _decide_on_driver(docs: DataFrame, pairs: list[tuple[str, str]]) -> DataFrame:
    """`_decide` for a graph small enough to hold: components by union-find, the members'
    keep-rule order from Spark (one sort of just those documents), survivors here."""
    spark = docs.sparkSession
    cluster_of = dict(components_on_driver(pairs))
    wanted = F.broadcast(spark.createDataFrame([(i,) for i in cluster_of], "id string"))
    ordered = (docs.select("id", "size_bytes", keep_key().alias("keep")).join(wanted, "id")
               .orderBy("keep").select("id", "size_bytes").collect())
    members: dict[str, list[str]] = {}
    for row in ordered:
        members.setdefault(cluster_of[row["id"]], []).append(row["id"])
    rank = {i: k for ids in members.values() for k, i in enumerate(ids)}
    links: dict[str, tuple[list[int], list[int]]] = {c: ([], []) for c in members}
    for a, b in pairs:
        ends = links[cluster_of[a]]
        ends[0].append(rank[a])
        ends[1].append(rank[b])
    kept = {}
    for cluster, ids in members.items():
        kept_by = survivors(len(ids), *links[cluster])
        kept.update({i: ids[kept_by[k]] for k, i in enumerate(ids)})
    rows = [(r["id"], cluster_of[r["id"]], rank[r["id"]], kept[r["id"]], r["size_bytes"]) for r in ordered]
    return spark.createDataFrame(rows, "id string, cluster_id string, rank int, kept_id string, size_bytes long")


def _cluster_table(decisions: DataFrame) -> DataFrame:
    """One row per cluster; `stray` counts members whose kept_id is not one of the
    cluster's survivors (always 0)."""
    survivor = F.col("id") == F.col("kept_id")
    kept_ids = F.transform(
        F.array_sort(F.collect_list(F.when(survivor, F.struct("rank", "id")))), lambda m: m["id"]
    )
    return (
        decisions.groupBy("cluster_id")
        .agg(
            F.count(F.lit(1)).alias("size"),
            F.array_sort(F.collect_list("id")).alias("members"),
            kept_ids.alias("kept_ids"),
            F.collect_set("kept_id").alias("kept_by"),
            F.sum(F.when(~survivor, F.col("size_bytes"))).alias("dropped_bytes"),
        )
        .withColumn("survivors", F.size("kept_ids"))
        .withColumn("stray", F.size(F.array_except("kept_by", "kept_ids")))
    )


def _fits_broadcast(spark: SparkSession, rows: int, row_bytes: int) -> bool:
    """Spark's own broadcast threshold, applied to an exactly known row count: the planner
    only sees a checkpoint's estimate, and would shuffle every document's content to join
    it with a few thousand ids."""
    # The session's parsed value: the setting itself may be a byte string such as "20m".
    limit = spark._jsparkSession.sessionState().conf().autoBroadcastJoinThreshold()
    return 0 <= rows * row_bytes <= limit


def near_dedup(spark: SparkSession, docs: DataFrame, cfg: NearDedupConfig,
               docs_in: tuple[int, int] | None = None) -> NearDedupResult:
    """Remove near-duplicates (Jaccard >= cfg.threshold over code shingles) from `docs`.

    `docs` is read more than once (signatures, shingle sets for the guard,
    the outputs), so it should be cheap to re-read, e.g. Parquet. `docs_in`:
    its (documents, bytes) when known already, else counted.
    """
    started = time.perf_counter()
    bands, rows = band_params(cfg)

    # Intermediate tables are checkpointed lazily: the count or aggregate that follows each
    # is the job that materialises it, and later steps reuse it instead of recomputing.
    # (A checkpoint runs its plan's shuffles when it is made: it belongs to its step.)
    with step("LSH candidate pairs"):
        pairs = candidate_pairs(docs, cfg, bands, rows).localCheckpoint(eager=False)
        n_candidates = pairs.count()
    with step("clusters of candidate pairs"):
        to_check, unchecked = _split_by_cluster_size(pairs, cfg.verify_min_cluster_size)
    few_ids = _fits_broadcast(spark, 2 * n_candidates, _ID_ROW_BYTES)
    with step("exact Jaccard of candidate pairs"):
        scored = verify_pairs(docs, to_check, cfg, few_ids).localCheckpoint(eager=False)
        passed = scored.where(F.col("jaccard") >= cfg.threshold).select("a", "b")
        n_checked, n_passed = scored.agg(
            F.count(F.lit(1)), F.sum((F.col("jaccard") >= cfg.threshold).cast("long"))
        ).first()
    with step("clusters of near-duplicates and their kept documents"):
        decisions = _decide(docs, passed.unionByName(unchecked)).localCheckpoint(eager=False)
        cluster_rows = _cluster_table(decisions)
        sizes = (
            cluster_rows.groupBy("size")
            .agg(
                F.count(F.lit(1)).alias("clusters"),
                F.sum("survivors").alias("survivors"),
                F.sum(((F.col("survivors") < 1) | (F.col("stray") > 0)).cast("long")).alias("bad"),
                F.sum("dropped_bytes").alias("dropped_bytes"),
            )
            .collect()
        )
    bad = sum(r["bad"] for r in sizes)
    assert bad == 0, f"near_dedup: {bad} clusters drop a document without keeping its duplicate"
    n_clusters = sum(r["clusters"] for r in sizes)
    n_survivors = sum(r["survivors"] for r in sizes)
    n_dropped = sum(r["clusters"] * r["size"] for r in sizes) - n_survivors
    dropped_bytes = sum(int(r["dropped_bytes"] or 0) for r in sizes)
    if docs_in is None:
        with step("count the input"):
            n_in, bytes_in = docs.agg(F.count(F.lit(1)), F.sum("size_bytes")).first()
        docs_in = n_in, int(bytes_in or 0)
    n_in, bytes_in = docs_in

    drops = decisions.where(F.col("id") != F.col("kept_id")).select("id", "cluster_id", "kept_id")
    if _fits_broadcast(spark, n_dropped, _DECISION_ROW_BYTES):
        drops = F.broadcast(drops)
    kept = docs.join(drops.select("id"), "id", "left_anti").select(*DOC_COLUMNS)
    dropped = dropped_rows(docs.join(drops, "id"), STAGE, REASON,
                           duplicate_of=F.col("kept_id"), detail=F.col("cluster_id"))
    stats = StageStats(
        stage=STAGE,
        docs_in=n_in,
        docs_out=n_in - n_dropped,
        dropped={REASON: n_dropped},
        bytes_in=bytes_in,
        bytes_out=bytes_in - dropped_bytes,
        seconds=time.perf_counter() - started,
        dropped_bytes={REASON: dropped_bytes},
        extra={
            "bands": bands,
            "rows": rows,
            "candidate_pairs": n_candidates,
            "pairs_verified": int(n_checked),
            "pairs_rejected_by_jaccard": int(n_checked) - int(n_passed or 0),
            "clusters": n_clusters,
            # Survivors beyond one per cluster, kept because no other survivor is paired
            # with them.
            "extra_survivors": n_survivors - n_clusters,
            "cluster_size_histogram": {
                str(r["size"]): r["clusters"] for r in sorted(sizes, key=lambda r: r["size"])
            },
        },
    ).check()
    clusters = cluster_rows.select("cluster_id", "size", "members", "kept_ids")
    return NearDedupResult(kept=kept, dropped=dropped, clusters=clusters, stats=stats)


def near_dedup_stage(spark: SparkSession, docs: DataFrame, cfg: NearDedupConfig,
                     docs_in: tuple[int, int] | None = None) -> StageOutput:
    """The stage as the DAG runs it: kept and dropped tables, the cluster table beside
    them, and the LSH figures (bands, candidate pairs, cluster sizes) for the stats."""
    result = near_dedup(spark, docs, cfg, docs_in)
    return StageOutput(result.kept, result.dropped, result.stats.extra, {"clusters": result.clusters})
