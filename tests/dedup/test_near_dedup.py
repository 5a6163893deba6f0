"""Near dedup: shingles, MinHash vs datasketch, LSH parameters, Spark components, the stage."""

from __future__ import annotations

import hashlib
import random
import sysconfig
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash, MinHashLSH
from datasketch.lsh import _optimal_param
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from codemill.dedup.components import connected_components
from codemill.dedup.config import NearDedupConfig
from codemill.dedup.lsh import band_params, optimal_bands_rows, verified_bands_rows
from codemill.dedup.minhash import signatures, to_datasketch
from codemill.dedup.near import _decide, _fits_broadcast, candidate_pairs, jaccard_batches, near_dedup, verify_pairs
from codemill.dedup.shingles import (
    batch_shingle_hashes,
    shingle_hash,
    shingle_set_batches,
    shingles,
    tokens,
)
from codemill.schema import DOC_COLUMNS, DOC_SCHEMA, DROPPED_COLUMNS, document_id

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def stdlib_texts(count: int, min_bytes: int = 2_000, max_bytes: int = 30_000) -> list[str]:
    """`count` distinct real Python files of moderate size, in a fixed order."""
    out, seen = [], set()
    for path in sorted(STDLIB.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if min_bytes <= len(text.encode()) <= max_bytes and text not in seen:
            seen.add(text)
            out.append(text)
        if len(out) == count:
            break
    assert len(out) == count, "not enough stdlib files on this machine"
    return out


def doc_row(path: str, content: str, license: str | None = None, stars: int | None = None) -> dict:
    sha = hashlib.sha256(content.encode()).hexdigest()
    return {
        "id": document_id("test", path, sha), "source": "test", "path": path, "lang": "python",
        "kind": "code", "license": license, "content": content,
        "size_bytes": len(content.encode()), "sha256": sha, "stars": stars, "invalid_utf8": False,
    }  # fmt: skip


def make_docs(spark: SparkSession, rows: list[dict]) -> DataFrame:
    """Rows by column name, so columns this test does not set stay null."""
    return spark.createDataFrame([tuple(r.get(c) for c in DOC_COLUMNS) for r in rows], DOC_SCHEMA)


def edit_lines(text: str, fraction: float, rng: random.Random) -> str:
    """Replace a fraction of the lines with new random code."""
    lines = text.splitlines()
    for i in rng.sample(range(len(lines)), max(1, int(len(lines) * fraction))):
        lines[i] = f"edited_{rng.randrange(10**9)} = value_{rng.randrange(10**9)}"
    return "\n".join(lines)


def exact_jaccard(x: str, y: str, cfg: NearDedupConfig) -> float:
    sx = set(shingles(x, cfg.ngram, cfg.lowercase))
    sy = set(shingles(y, cfg.ngram, cfg.lowercase))
    return len(sx & sy) / len(sx | sy) if sx or sy else 0.0


# --- shingles and signatures ------------------------------------------------------------


def test_tokens_and_shingles():
    assert tokens("foo.bar(baz_1, 2)+QUX") == ["foo", "bar", "baz_1", "2", "QUX"]
    assert tokens("Été = x", lowercase=True) == ["t", "x"]  # non-ASCII letters separate tokens
    assert shingles("a b c d", n=5) == []  # fewer tokens than n: no shingle
    assert shingles("a b c d e f", n=5) == [("a", "b", "c", "d", "e"), ("b", "c", "d", "e", "f")]
    assert shingles("A.B", n=2, lowercase=True) == [("a", "b")]


def test_batch_shingle_hashes_match_the_reference():
    texts = ["a b c d e f g", "x", "", "Foo(bar, baz); qux = 1 + 2 * 3", "a b c d e"]
    hashes, offsets = batch_shingle_hashes([t.encode() for t in texts], n=5, lowercase=True)
    assert list(np.diff(offsets)) == [3, 0, 0, 3, 1]
    expected = [shingle_hash(s) for t in texts for s in shingles(t, 5, lowercase=True)]
    assert hashes.tolist() == expected
    # order matters: the same tokens reordered hash differently
    assert shingle_hash(("a", "b", "c")) != shingle_hash(("b", "a", "c"))


@pytest.mark.parametrize("num_perm,seed,n,lowercase", [(256, 1, 5, False), (128, 7, 3, True)])
def test_signatures_equal_datasketch(num_perm, seed, n, lowercase):
    texts = stdlib_texts(6) + ["short text", "one two three four five six"]
    sig = signatures(texts, num_perm=num_perm, seed=seed, n=n, lowercase=lowercase)
    assert sig.shape == (len(texts), num_perm) and sig.dtype == np.uint64
    for text, row in zip(texts, sig):
        ref = MinHash(num_perm=num_perm, seed=seed, hashfunc=shingle_hash, scheme="affine64")
        ref.update_batch(shingles(text, n, lowercase))
        assert np.array_equal(ref.hashvalues, row)


def test_exported_signatures_query_datasketch_lsh():
    rng = random.Random(3)
    base = stdlib_texts(20)
    near = edit_lines(base[0], 0.02, rng)
    sigs = signatures(base + [near])
    lsh = MinHashLSH(threshold=0.7, num_perm=256)
    for i, text in enumerate(base):  # index sketches built by datasketch itself
        mh = MinHash(num_perm=256, seed=1, hashfunc=shingle_hash, scheme="affine64")
        mh.update_batch(shingles(text))
        lsh.insert(f"doc{i}", mh)
    assert lsh.query(to_datasketch(sigs[-1])) == ["doc0"]
    assert to_datasketch(sigs[1]).jaccard(to_datasketch(sigs[1])) == 1.0


def test_jaccard_of_shingle_sets_is_exact():
    rng = random.Random(4)
    texts = stdlib_texts(4)
    texts += [edit_lines(texts[0], 0.1, rng), edit_lines(texts[1], 0.4, rng), "x = 1", ""]
    batch = pa.record_batch([pa.array([f"t{i}" for i in range(len(texts))]), pa.array(texts)],
                            names=["id", "content"])  # fmt: skip
    (sets,) = list(shingle_set_batches(iter([batch]), n=5, lowercase=False))
    shingle_lists = sets.column("shingles").to_pylist()
    assert min(min(s) for s in shingle_lists if s) < 0  # int64 bit patterns of uint64 hashes
    pairs = [(i, j) for i in range(len(texts)) for j in range(len(texts)) if i != j]
    pair_batch = pa.record_batch(
        [pa.array([f"t{i}" for i, _ in pairs]), pa.array([f"t{j}" for _, j in pairs]),
         pa.array([shingle_lists[i] for i, _ in pairs], pa.list_(pa.int64())),
         pa.array([shingle_lists[j] for _, j in pairs], pa.list_(pa.int64()))],
        names=["a", "b", "sa", "sb"],
    )  # fmt: skip
    (scored,) = list(jaccard_batches(iter([pair_batch])))
    cfg = NearDedupConfig()
    expected = [exact_jaccard(texts[i], texts[j], cfg) for i, j in pairs]
    assert scored.column("jaccard").to_pylist() == pytest.approx(expected, abs=1e-12)
    assert max(expected) > 0.7


# --- LSH parameters ---------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.85])
@pytest.mark.parametrize("num_perm", [64, 256])
@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.2, 0.8)])
def test_band_params_agree_with_datasketch(threshold, num_perm, weights):
    assert optimal_bands_rows(threshold, num_perm, *weights) == _optimal_param(
        threshold, num_perm, *weights
    )


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.85])
@pytest.mark.parametrize("num_perm", [64, 256])
def test_verified_bands_make_a_pair_at_the_threshold_a_candidate_with_the_fewest_false_ones(threshold, num_perm):
    """Checked against a search of its own: every bands x rows that reaches 0.99 at the
    threshold, the least area of candidates below it (summed on a fine grid)."""
    def p(s, b, r):
        return 1 - (1 - s**r) ** b

    below = np.linspace(0, threshold, 2001)
    reaching = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)
                if p(threshold, b, r) >= 0.99]
    expected = min(reaching, key=lambda g: (np.trapezoid(p(below, *g), below), g[0] * g[1], g))
    chosen = verified_bands_rows(threshold, num_perm, 0.99)
    assert p(threshold, *chosen) >= 0.99
    assert chosen == expected


def test_without_enough_hashes_the_bands_come_closest_to_the_wanted_probability():
    # two hashes: one band of one or two rows, or two bands of one (0.99 at J = 0.9)
    assert verified_bands_rows(0.9, 2, 0.9999) == (2, 1)


def test_band_params_from_config():
    assert band_params(NearDedupConfig()) == (37, 6)  # P(candidate | J = 0.7) = 0.9903
    # unchecked-candidate optimum, as datasketch and BigCode choose
    assert band_params(NearDedupConfig(candidate_probability=0)) == (25, 10)
    assert band_params(NearDedupConfig(candidate_probability=0, num_perm=250)) == (25, 10)  # BigCode's
    assert band_params(NearDedupConfig(bands=16, rows=16)) == (16, 16)
    with pytest.raises(ValueError):
        band_params(NearDedupConfig(bands=30, rows=10))


# --- connected components ---------------------------------------------------------------


def reference_components(edges: list[tuple[str, str]]) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def test_connected_components_match_union_find(spark):
    rng = random.Random(11)
    chain_ids = [f"c{i:04d}" for i in range(200)]
    rng.shuffle(chain_ids)  # a chain whose id order is scrambled
    chain = list(zip(chain_ids, chain_ids[1:]))
    sorted_chain = [(f"s{i:03d}", f"s{i + 1:03d}") for i in range(64)]  # the slowest shape
    star = [("h500", f"h{i:03d}") for i in range(200)]  # hub is not the smallest id
    isolated = [(f"i{i}", f"i{i}") for i in range(5)]  # self-loops: single-node components
    random_graph = [
        (f"r{rng.randrange(1500):04d}", f"r{rng.randrange(1500):04d}") for _ in range(3000)
    ]
    edges = chain + sorted_chain + star + isolated + random_graph
    expected = reference_components(edges)
    df = spark.createDataFrame(edges, "src string, dst string").repartition(7)
    on_driver = connected_components(df)
    distributed = connected_components(df, driver_edges=0)  # large graphs: star rounds in Spark
    assert dict(on_driver.collect()) == dict(distributed.collect()) == expected
    assert on_driver.count() == distributed.count() == len(expected)
    assert on_driver.schema == distributed.schema
    assert expected[chain_ids[0]] == "c0000" and expected["h123"] == "h000"
    assert expected["i3"] == "i3"


# --- the stage --------------------------------------------------------------------------


def planted_corpus(rng: random.Random) -> tuple[list[dict], list[str]]:
    """Originals with 1-2 lightly and heavily edited copies each, plus unrelated files."""
    texts = stdlib_texts(70)
    rows, contents = [], []
    for i, text in enumerate(texts):
        variants = [text]
        if i < 40:
            variants += [edit_lines(text, rng.choice([0.01, 0.03, 0.3]), rng) for _ in range(2)]
        for j, variant in enumerate(variants):
            rows.append(doc_row(f"f{i:03d}/v{j}.py", variant))
            contents.append(variant)
    return rows, contents


def removal_scores(
    contents: list[str], ids: list[str], removed: set[str], cfg: NearDedupConfig
) -> tuple[float, float]:
    """Precision and recall of removals against exact-Jaccard ground truth: each connected
    group of documents (Jaccard >= threshold) should lose all but one member."""
    sets = [set(shingles(c, cfg.ngram)) for c in contents]
    edges = [(ids[i], ids[i]) for i in range(len(ids))]
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            inter = len(sets[i] & sets[j])
            if inter and inter / len(sets[i] | sets[j]) >= cfg.threshold:
                edges.append((ids[i], ids[j]))
    groups: dict[str, list[str]] = {}
    for node, root in reference_components(edges).items():
        groups.setdefault(root, []).append(node)
    should = sum(len(g) - 1 for g in groups.values())
    correct = sum(min(len(removed & set(g)), len(g) - 1) for g in groups.values())
    return correct / max(len(removed), 1), correct / max(should, 1)


@pytest.fixture(scope="module")
def planted(spark):
    rows, contents = planted_corpus(random.Random(5))
    docs = make_docs(spark, rows).repartition(1)
    cfg = NearDedupConfig()
    return rows, contents, docs, cfg, near_dedup(spark, docs, cfg)


def test_planted_duplicates_precision_and_recall(planted):
    rows, contents, _, cfg, result = planted
    removed = {r["id"] for r in result.dropped.select("id").collect()}
    precision, recall = removal_scores(contents, [r["id"] for r in rows], removed, cfg)
    assert precision >= 0.95 and recall >= 0.9, (precision, recall)
    assert len(removed) >= 40  # the lightly edited copies at least


def test_stage_outputs_are_consistent(planted):
    rows, _, docs, _, result = planted
    stats = result.stats
    assert stats.docs_in == len(rows) and stats.docs_out == result.kept.count()
    assert stats.dropped == {"near_duplicate": result.dropped.count()}
    dropped_bytes = result.dropped.agg(F.sum("size_bytes")).first()[0]
    assert stats.dropped_bytes == {"near_duplicate": dropped_bytes} and dropped_bytes > 0
    assert stats.bytes_in == sum(r["size_bytes"] for r in rows) == stats.bytes_out + dropped_bytes
    assert (stats.extra["bands"], stats.extra["rows"]) == band_params(NearDedupConfig()) == (37, 6)
    assert sum(int(k) * v for k, v in stats.extra["cluster_size_histogram"].items()) == (
        stats.dropped["near_duplicate"] + stats.extra["clusters"] + stats.extra["extra_survivors"]
    )
    assert result.kept.columns == DOC_COLUMNS and result.dropped.columns == DROPPED_COLUMNS
    clusters = {r["cluster_id"]: r for r in result.clusters.collect()}
    kept_ids = {r["id"] for r in result.kept.select("id").collect()}
    for c in clusters.values():
        assert c["cluster_id"] == c["members"][0] == min(c["members"])
        assert c["members"] == sorted(c["members"]) and c["size"] == len(c["members"])
        assert set(c["kept_ids"]) == kept_ids & set(c["members"]) and c["kept_ids"]
        assert c["kept_ids"][0] == min(c["members"])  # no license or stars: the smallest id
    content = {r["id"]: r["content"] for r in rows}
    for d in result.dropped.collect():
        assert d["stage"] == "near_dedup" and d["reason"] == "near_duplicate"
        assert d["duplicate_of"] in clusters[d["detail"]]["kept_ids"] and d["duplicate_of"] != d["id"]
        # every removal has a kept near-copy
        assert exact_jaccard(content[d["id"]], content[d["duplicate_of"]], NearDedupConfig()) >= 0.7


def test_deterministic_across_partitionings(spark, planted):
    _, _, docs, cfg, result = planted

    def outcome(res):
        return (
            sorted(r["id"] for r in res.kept.select("id").collect()),
            sorted(tuple(r) for r in res.dropped.select("id", "duplicate_of", "detail").collect()),
            sorted((r["cluster_id"], tuple(r["members"])) for r in res.clusters.collect()),
        )

    saved = {k: spark.conf.get(k) for k in ("spark.sql.shuffle.partitions", "spark.sql.autoBroadcastJoinThreshold")}
    # The fixture ran on 1 input partition with its drop decisions broadcast; now 7 input
    # and 3 shuffle partitions, and no broadcast joins at all.
    spark.conf.set("spark.sql.shuffle.partitions", "3")
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    try:
        assert outcome(near_dedup(spark, docs.repartition(7), cfg)) == outcome(result)
    finally:
        for key, value in saved.items():
            spark.conf.set(key, value)


def test_survivors_chosen_on_the_driver_and_in_spark_agree(planted):
    _, _, docs, cfg, _ = planted
    scored = verify_pairs(docs, candidate_pairs(docs, cfg, *band_params(cfg)), cfg)
    edges = scored.where(F.col("jaccard") >= cfg.threshold).select("a", "b")
    on_driver = sorted(tuple(r) for r in _decide(docs, edges).collect())
    in_spark = sorted(tuple(r) for r in _decide(docs, edges, driver_edges=0).collect())
    assert on_driver == in_spark and len(on_driver) > 40
    assert any(r[0] != r[3] for r in on_driver)  # some documents are dropped


def test_broadcast_limit_is_spark_own_setting(spark):
    saved = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    try:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "20m")  # a byte string, as users write it
        assert _fits_broadcast(spark, 100_000, 128) and not _fits_broadcast(spark, 200_000, 128)
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")  # broadcasts off
        assert not _fits_broadcast(spark, 1, 128)
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", saved)


def test_keep_rule_guard_size_and_shingle_less_documents(spark):
    text, other = stdlib_texts(2)
    rows = [
        doc_row("a.py", text),  # no license
        doc_row("b.py", text + "\n# tweak", license="gpl-3.0", stars=500),
        doc_row("c.py", text + "\n# other tweak", license="MIT", stars=1),
        doc_row("d.py", text + "\n# third", license="MIT", stars=9),
        doc_row("x.py", other),
        doc_row("y.py", other + "\nextra = 1"),
    ]
    # Too short for one 5-gram: identical or not, they never meet in LSH.
    rows += [doc_row(f"short{i}.py", "x = 1") for i in range(6)] + [doc_row("empty.py", "")]
    cfg = NearDedupConfig(verify_min_cluster_size=3)
    result = near_dedup(spark, make_docs(spark, rows), cfg)
    kept = {r["path"] for r in result.kept.collect()}
    shingle_less = {f"short{i}.py" for i in range(6)} | {"empty.py"}
    # permissive license first, then stars; the pair's survivor is the smaller id
    assert kept == {"d.py", min(("x.py", rows[4]["id"]), ("y.py", rows[5]["id"]), key=lambda p: p[1])[0]} | shingle_less
    assert result.stats.extra["cluster_size_histogram"] == {"2": 1, "4": 1}
    # only the 4-document cluster reaches the guard's size: its 6 pairs are checked
    assert result.stats.extra["candidate_pairs"] == 7
    assert result.stats.extra["pairs_verified"] == 6
    assert {r["duplicate_of"] for r in result.dropped.where(F.col("path") < "e").collect()} == {
        rows[3]["id"]
    }


def test_false_cluster_guard_stops_boilerplate_chains(spark):
    """Short files sharing a long license header: LSH pairs many of them, real Jaccard
    (~0.55) is below the threshold, so the guard must keep them apart."""
    rng = random.Random(8)
    header = stdlib_texts(1, min_bytes=1_500, max_bytes=4_000)[0]
    header_tokens = len(tokens(header))
    rows = []
    for i in range(40):
        body = " ".join(f"w{rng.randrange(10**6)}" for _ in range(header_tokens // 3))
        rows.append(doc_row(f"lic{i}.py", f"{header}\n{body}\n"))
    cfg = NearDedupConfig()
    contents = [r["content"] for r in rows]
    assert max(exact_jaccard(contents[0], c, cfg) for c in contents[1:]) < cfg.threshold
    docs = make_docs(spark, rows)

    unguarded = near_dedup(spark, docs, NearDedupConfig(verify_min_cluster_size=10**9))
    assert unguarded.stats.dropped["near_duplicate"] >= 10  # the failure the guard prevents
    assert unguarded.stats.extra["pairs_verified"] == 0

    guarded = near_dedup(spark, docs, cfg)
    assert guarded.stats.dropped["near_duplicate"] == 0
    assert guarded.stats.extra["pairs_rejected_by_jaccard"] == guarded.stats.extra["candidate_pairs"] > 0
    assert guarded.kept.count() == len(rows)


def test_a_chain_keeps_both_ends_so_no_removal_is_orphaned(spark):
    """a ~ b ~ c with a and c below the threshold: dropping b and c (one survivor per
    cluster) would lose c's content; a and c both survive and b points at a."""
    lines = max(stdlib_texts(12, max_bytes=60_000), key=len).splitlines()
    tenth = len(lines) // 10
    a, b, c = ("\n".join(lines[k * tenth : (k + 8) * tenth]) for k in range(3))
    cfg = NearDedupConfig()
    assert exact_jaccard(a, b, cfg) >= 0.7 and exact_jaccard(b, c, cfg) >= 0.7 > exact_jaccard(a, c, cfg)
    rows = [doc_row("a.py", a, license="MIT"), doc_row("b.py", b), doc_row("c.py", c)]
    result = near_dedup(spark, make_docs(spark, rows), cfg)
    assert sorted(r["path"] for r in result.kept.collect()) == ["a.py", "c.py"]
    assert [(d["path"], d["duplicate_of"]) for d in result.dropped.collect()] == [("b.py", rows[0]["id"])]
    (cluster,) = result.clusters.collect()
    assert cluster["kept_ids"] == [rows[0]["id"], rows[2]["id"]]  # the keep-rule best first
    assert result.stats.extra["extra_survivors"] == 1


def test_a_bucket_too_large_for_all_pairs_centres_on_the_document_it_keeps(spark):
    """Star-and-chain buckets: the star's centre is the keep rule's best, so one document
    survives; centred on the smallest id it would need a second survivor."""
    text = stdlib_texts(1)[0]
    rows = [doc_row(f"copy{i}.py", f"{text}\n# copy {i}") for i in range(8)]
    best = max(rows, key=lambda r: r["id"])
    best["license"] = "MIT"
    result = near_dedup(spark, make_docs(spark, rows), NearDedupConfig(all_pairs_max_bucket=2))
    assert [r["id"] for r in result.kept.collect()] == [best["id"]]
    assert {d["duplicate_of"] for d in result.dropped.collect()} == {best["id"]}
    assert result.stats.extra["extra_survivors"] == 0
    assert result.stats.extra["candidate_pairs"] < 8 * 7 // 2  # a star and a chain, not all pairs
