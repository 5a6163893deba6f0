"""Near-dedup accuracy and speed on real code with planted near-duplicates.

The corpus is built from Python files on this machine (the standard library,
then site-packages when more are needed): some files get near-copies with a
known fraction of their lines edited, the others stay unrelated. Ground
truth is exact Jaccard over the same shingles the stage uses (tokens split on
`[^A-Za-z_0-9]`, word n-grams): documents linked by Jaccard >= threshold form
groups, and each group should lose all but one member. A removal counts as
correct while it stays within that budget, so precision also catches "all
copies removed" and recall catches missed copies.

    .venv/bin/python benchmarks/near_dedup_accuracy.py [--sizes 1,2,4] [--json out.json]

`build_corpus`, `ground_truth` and `score_removals` are shared with
benchmarks/peers_near_dedup.py, so peers are scored on the same corpus.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import statistics
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Edited-line fractions of the planted copies: from trivially near to clearly different.
EDIT_LEVELS = (0.01, 0.03, 0.06, 0.1, 0.2, 0.35)


@dataclass
class CorpusDoc:
    id: str
    path: str
    content: str
    original: int  # index of the file it derives from (its own index for originals)
    edit_level: float  # 0.0 for an original or unrelated file


def _source_files(min_bytes: int, max_bytes: int, rng: random.Random) -> list[Path]:
    """The standard library's files first, then site-packages' (each shuffled), so a small
    corpus does not change when packages are installed."""
    paths = sysconfig.get_paths()
    out = []
    for root in (paths["stdlib"], paths["purelib"]):
        files = sorted(
            p for p in Path(root).rglob("*.py")
            if p.is_file() and min_bytes <= p.stat().st_size <= max_bytes
            and (root == paths["purelib"] or "site-packages" not in p.parts)
        )  # fmt: skip
        rng.shuffle(files)
        out += files
    return out


def _edit(text: str, level: float, rng: random.Random) -> str:
    """Replace, delete or insert lines at `level` of the line positions."""
    lines = text.splitlines()
    for i in sorted(rng.sample(range(len(lines)), max(1, round(len(lines) * level))), reverse=True):
        op = rng.randrange(3)
        new = f"{rng.choice(['value', 'item', 'node'])}_{rng.randrange(10**6)} = call_{rng.randrange(10**6)}(x)"
        if op == 0:
            lines[i] = new
        elif op == 1:
            del lines[i]
        else:
            lines.insert(i, new)
    return "\n".join(lines)


def build_corpus(
    originals: int = 150,
    copies: int = 2,
    unrelated: int = 600,
    edit_levels: tuple[float, ...] = EDIT_LEVELS,
    seed: int = 0,
    min_bytes: int = 1_000,
    max_bytes: int = 100_000,
) -> list[CorpusDoc]:
    """Distinct real Python files: `originals` of them with `copies` edited copies each
    (edit levels round-robin), plus `unrelated` files; shuffled, deterministic for a seed."""
    rng = random.Random(seed)
    files = _source_files(min_bytes, max_bytes, rng)
    texts, seen = [], set()
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        digest = hashlib.sha256(text.encode()).digest()
        if digest not in seen:
            seen.add(digest)
            texts.append((path, text))
        if len(texts) == originals + unrelated:
            break
    if len(texts) < originals + unrelated:
        raise SystemExit(f"only {len(texts)} distinct source files found; ask for fewer")
    docs = []
    for i, (path, text) in enumerate(texts):
        docs.append(CorpusDoc("", str(path), text, i, 0.0))
        for c in range(copies if i < originals else 0):
            level = edit_levels[(i * copies + c) % len(edit_levels)]
            docs.append(CorpusDoc("", f"{path}#copy{c}", _edit(text, level, rng), i, level))
    rng.shuffle(docs)
    for k, doc in enumerate(docs):
        doc.id = f"d{k:07d}"
    return docs


def ground_truth(contents: list[str], ngram: int = 5, threshold: float = 0.7) -> list[list[int]]:
    """Groups (document indices, 2+ members) linked by exact Jaccard >= threshold.

    An exact all-pairs similarity join with a prefix filter: order shingles rarest
    first; two sets with Jaccard >= t share a shingle among the first
    |s| - ceil(t * |s|) + 1 of each, so only pairs sharing a prefix shingle are
    compared, and each of those exactly.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    from codemill.dedup.shingles import shingles

    # Python's own 64-bit hash of each shingle tuple (independent of codemill's hashing);
    # a collision inside 10**8 distinct shingles has probability ~3e-4.
    sets = [np.unique(np.fromiter(map(hash, shingles(text, ngram)), dtype=np.int64)) for text in contents]
    sizes = [len(s) for s in sets]
    vocab, token = np.unique(np.concatenate([np.empty(0, np.int64), *sets]), return_inverse=True)
    df = np.bincount(token, minlength=len(vocab))
    rank = np.empty(len(vocab), dtype=np.int64)
    rank[np.argsort(df, kind="stable")] = np.arange(len(vocab))
    ranked = [np.sort(r) for r in np.split(rank[token], np.cumsum(sizes)[:-1])]
    postings: dict[int, list[int]] = {}
    for doc, r in enumerate(ranked):
        for tok in r[: len(r) - math.ceil(threshold * len(r)) + 1].tolist():
            postings.setdefault(tok, []).append(doc)
    candidates = {(a, b) for docs in postings.values() for i, a in enumerate(docs) for b in docs[i + 1 :]}
    rows, cols = [], []
    for a, b in candidates:
        common = len(np.intersect1d(ranked[a], ranked[b], assume_unique=True))
        if common / (len(ranked[a]) + len(ranked[b]) - common) >= threshold:
            rows.append(a)
            cols.append(b)
    graph = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(contents),) * 2)
    _, label = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(label):
        groups.setdefault(int(g), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def score_removals(
    removed: set[str], ids: list[str], groups: list[list[int]]
) -> dict[str, float]:
    """Precision / recall / F1 of removed ids: a group of k true duplicates should lose k-1."""
    should = sum(len(g) - 1 for g in groups)
    correct = sum(min(len(removed & {ids[i] for i in g}), len(g) - 1) for g in groups)
    precision = correct / len(removed) if removed else 1.0
    recall = correct / should if should else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "removed": len(removed), "should_remove": should}


def run_codemill(
    docs: list[CorpusDoc], workdir: Path, ngram: int, num_perm: int, threshold: float
) -> tuple[set[str], float, dict]:
    """Removed ids, seconds of a warm run (read Parquet, dedup, write kept + dropped Parquet:
    the median of three after one cold run), and the stage's stats extra plus the cold run's
    seconds."""
    from codemill.config.run import SparkConfig
    from codemill.dedup.config import NearDedupConfig
    from codemill.dedup.near import near_dedup
    from codemill.schema import DOC_COLUMNS, DOC_SCHEMA
    from codemill.spark import get_spark

    spark = get_spark(SparkConfig(master="local[2]",
                                  conf={"spark.sql.shuffle.partitions": "8", "spark.driver.memory": "4g"}))
    rows = [
        {"id": d.id, "source": "bench", "path": d.path, "lang": "python", "kind": "code",
         "content": d.content, "size_bytes": len(d.content.encode()), "invalid_utf8": False}
        for d in docs
    ]  # fmt: skip
    src = str(workdir / "docs.parquet")
    frame = spark.createDataFrame([tuple(r.get(c) for c in DOC_COLUMNS) for r in rows], DOC_SCHEMA)
    frame.write.mode("overwrite").parquet(src)
    cfg = NearDedupConfig(ngram=ngram, num_perm=num_perm, threshold=threshold)
    # The first run pays one-off JVM code generation and Python worker start-up; the later
    # ones are the stage's steady-state cost, the one a long pipeline sees (its earlier
    # stages have warmed the JVM). Their median, as the JIT keeps shaving time off each.
    runs = []
    for _ in range(4):
        started = time.perf_counter()
        result = near_dedup(spark, spark.read.parquet(src), cfg)
        result.kept.write.mode("overwrite").parquet(str(workdir / "kept.parquet"))
        result.dropped.write.mode("overwrite").parquet(str(workdir / "dropped.parquet"))
        runs.append(time.perf_counter() - started)
    removed = {r["id"] for r in spark.read.parquet(str(workdir / "dropped.parquet")).select("id").collect()}
    return removed, statistics.median(runs[1:]), {**result.stats.extra, "first_run_seconds": runs[0]}


def add_corpus_arguments(ap: argparse.ArgumentParser, workdir: str) -> None:
    """The planted corpus, its sizes and the dedup parameters (shared with peers_near_dedup.py)."""
    ap.add_argument("--originals", type=int, default=150)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--unrelated", type=int, default=600)
    ap.add_argument("--sizes", default="1", help="corpus scale factors, e.g. 1,2,4")
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--num-perm", type=int, default=256)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=workdir)
    ap.add_argument("--json", help="write the results here too")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_corpus_arguments(ap, "/tmp/codemill-bench-near")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for scale in [int(s) for s in args.sizes.split(",")]:
        docs = build_corpus(args.originals * scale, args.copies, args.unrelated * scale, seed=args.seed)
        ids, contents = [d.id for d in docs], [d.content for d in docs]
        groups = ground_truth(contents, args.ngram, args.threshold)
        removed, seconds, extra = run_codemill(docs, workdir, args.ngram, args.num_perm, args.threshold)
        score = score_removals(removed, ids, groups)
        results.append({"docs": len(docs), "mib": sum(len(c.encode()) for c in contents) / 2**20,
                        "seconds": seconds, "first_run_seconds": extra["first_run_seconds"],
                        "docs_per_s": len(docs) / seconds, **score,
                        "candidate_pairs": extra["candidate_pairs"],
                        "pairs_rejected_by_jaccard": extra["pairs_rejected_by_jaccard"]})  # fmt: skip
        if scale == 1:
            print(_edit_level_table(docs, removed, args.ngram, args.threshold))
    print(f"\nnear_dedup  ngram={args.ngram} num_perm={args.num_perm} threshold={args.threshold}  local[2]")
    print(f"{'docs':>7} {'MiB':>6} {'seconds':>8} {'1st run':>8} {'docs/s':>8} {'precision':>9} "
          f"{'recall':>7} {'F1':>6} {'removed':>8} {'truth':>6}")
    for r in results:
        print(f"{r['docs']:>7} {r['mib']:>6.1f} {r['seconds']:>8.1f} {r['first_run_seconds']:>8.1f} "
              f"{r['docs_per_s']:>8.0f} {r['precision']:>9.4f} {r['recall']:>7.4f} {r['f1']:>6.4f} "
              f"{r['removed']:>8} {r['should_remove']:>6}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def _edit_level_table(docs: list[CorpusDoc], removed: set[str], ngram: int, threshold: float) -> str:
    """Per planted edit level: exact Jaccard of copy vs original, and how often one was removed."""
    from codemill.dedup.shingles import shingles

    original = {d.original: d for d in docs if d.edit_level == 0.0}
    by_level: dict[float, list[tuple[float, bool]]] = {}
    for d in docs:
        if d.edit_level:
            o = original[d.original]
            a, b = set(shingles(d.content, ngram)), set(shingles(o.content, ngram))
            jac = len(a & b) / len(a | b) if a | b else 0.0
            by_level.setdefault(d.edit_level, []).append((jac, d.id in removed or o.id in removed))
    lines = [f"{'edit level':>10} {'copies':>6} {'mean J':>7} {'J>=t':>5} {'pair hit':>8}"]
    for level in sorted(by_level):
        vals = by_level[level]
        above = sum(j >= threshold for j, _ in vals)
        mean = float(np.mean([j for j, _ in vals]))
        lines.append(f"{level:>10.2f} {len(vals):>6} {mean:>7.3f} {above:>5} {sum(h for _, h in vals):>8}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
