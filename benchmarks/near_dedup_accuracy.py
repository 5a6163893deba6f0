"""Near-dedup accuracy and speed on real code with near-copies made the way they arise.

The corpus is built from Python files on this machine (the standard library,
then site-packages when more are needed): each of `originals` files gets
1 + a geometric number of copies, `copies` on average (benchmarks/edited_copies.py) — exact, whitespace-only, or
edited by renames, line edits, comments, spacing and license headers to a
Jaccard similarity drawn uniformly from 0.3–1.0 — made from the original or,
half the time, from the previous copy, so chains a ~ b ~ c arise whose ends
are not similar. `unrelated` further files stay alone and lend the edits their
inserted lines, comments and names.

Ground truth is every pair with exact Jaccard >= threshold over the same
shingles the stage uses (tokens split on `[^A-Za-z_0-9]`, word n-grams).
Scores of a set of removed documents:
* precision: the share of removed documents that have a kept document among
  their true near-duplicates (a removal without one lost content);
* recall: the share of true pairs with at least one side removed, also per
  similarity bucket (0.70–0.75, …, 0.95–1.0, and exactly 1.0);
* F1 of the two.

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

from benchmarks.edited_copies import copy_near, donors_from, whitespace_copy  # noqa: E402

SIMILARITY_RANGE = (0.3, 1.0)
# Of the copies: exact, whitespace-only; the rest are edited.
EXACT_SHARE, WHITESPACE_SHARE = 0.08, 0.08
RECALL_BUCKETS = (0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 1.0)


@dataclass
class CorpusDoc:
    id: str
    path: str
    content: str
    original: int  # index of the file it derives from (its own index for originals)
    kind: str  # original, unrelated, exact, whitespace, edited
    parent_jaccard: float  # to the document it was copied from (1.0 for originals)


def source_files(min_bytes: int, max_bytes: int, rng: random.Random) -> list[Path]:
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


def _license_files() -> list[Path]:
    purelib = Path(sysconfig.get_paths()["purelib"])
    found = [*purelib.glob("*.dist-info/LICENSE*"), *purelib.glob("*.dist-info/licenses/*")]
    return sorted(p for p in found if p.is_file())


def build_corpus(
    originals: int = 150,
    copies: int = 2,
    unrelated: int = 600,
    seed: int = 0,
    min_bytes: int = 1_000,
    max_bytes: int = 100_000,
) -> list[CorpusDoc]:
    """Distinct real Python files: `originals` of them with `copies` copies each on average, plus
    `unrelated` files; shuffled, deterministic for a seed and the files on the machine."""
    rng = random.Random(seed)
    files = source_files(min_bytes, max_bytes, rng)
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
    donors = donors_from([t for _, t in texts[originals:]], _license_files())
    docs = []
    for i, (path, text) in enumerate(texts):
        docs.append(CorpusDoc("", str(path), text, i, "original" if i < originals else "unrelated", 1.0))
        parent = text
        # Families of varied size: 1 + a geometric number of copies, `copies` on average.
        family = 1 + int(math.log(1 - rng.random()) / math.log(1 - 1 / copies)) if copies > 1 else copies
        for c in range(family if i < originals else 0):
            if c and rng.random() < 0.5:  # from the original, else from the previous copy
                parent = text
            draw = rng.random()
            if draw < EXACT_SHARE:
                copy, kind, jac = parent, "exact", 1.0
            elif draw < EXACT_SHARE + WHITESPACE_SHARE:
                copy, kind, jac = whitespace_copy(parent, rng), "whitespace", 1.0
            else:
                target = rng.uniform(*SIMILARITY_RANGE)
                copy, jac = copy_near(parent, target, rng.randrange(2**32), donors)
                kind = "edited"
            docs.append(CorpusDoc("", f"{path}#copy{c}", copy, i, kind, jac))
            parent = copy
    rng.shuffle(docs)
    for k, doc in enumerate(docs):
        doc.id = f"d{k:07d}"
    return docs


def ground_truth(contents: list[str], ngram: int = 5, threshold: float = 0.7) -> list[tuple[int, int, float]]:
    """Every pair (i, j, Jaccard), i < j, of documents with exact Jaccard >= threshold.

    An exact all-pairs similarity join with a prefix filter: order shingles rarest
    first; two sets with Jaccard >= t share a shingle among the first
    |s| - ceil(t * |s|) + 1 of each, so only pairs sharing a prefix shingle are
    compared, and each of those exactly.
    """
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
    pairs = []
    for a, b in sorted(candidates):
        common = len(np.intersect1d(ranked[a], ranked[b], assume_unique=True))
        jac = common / (len(ranked[a]) + len(ranked[b]) - common)
        if jac >= threshold:
            pairs.append((a, b, jac))
    return pairs


def _bucket(jac: float) -> str:
    if jac >= 1.0:
        return "1.0"
    low = max(b for b in RECALL_BUCKETS if b <= jac)
    return f"{low:.2f}-{RECALL_BUCKETS[RECALL_BUCKETS.index(low) + 1]:.2f}"


def score_removals(removed: set[str], ids: list[str], pairs: list[tuple[int, int, float]]) -> dict:
    """Precision (removed documents with a kept true near-duplicate), recall (true pairs with
    a side removed, overall and per similarity bucket) and F1; see the module docstring."""
    gone = [i in removed for i in ids]
    has_kept_partner = set()
    for a, b, _ in pairs:
        if gone[a] and not gone[b]:
            has_kept_partner.add(a)
        if gone[b] and not gone[a]:
            has_kept_partner.add(b)
    orphans = len(removed) - len(has_kept_partner)
    precision = len(has_kept_partner) / len(removed) if removed else 1.0
    resolved = [gone[a] or gone[b] for a, b, _ in pairs]
    recall = sum(resolved) / len(pairs) if pairs else 1.0
    buckets: dict[str, list[int]] = {}
    for (_, _, jac), hit in zip(pairs, resolved, strict=True):
        tally = buckets.setdefault(_bucket(jac), [0, 0])
        tally[0] += hit
        tally[1] += 1
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "removed": len(removed),
            "orphaned": orphans, "true_pairs": len(pairs),
            "recall_by_bucket": {k: hit / n for k, (hit, n) in sorted(buckets.items())},
            "pairs_by_bucket": {k: n for k, (_, n) in sorted(buckets.items())}}


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
        pairs = ground_truth(contents, args.ngram, args.threshold)
        removed, seconds, extra = run_codemill(docs, workdir, args.ngram, args.num_perm, args.threshold)
        score = score_removals(removed, ids, pairs)
        results.append({"docs": len(docs), "mib": sum(len(c.encode()) for c in contents) / 2**20,
                        "seconds": seconds, "first_run_seconds": extra["first_run_seconds"],
                        "docs_per_s": len(docs) / seconds, **score,
                        "candidate_pairs": extra["candidate_pairs"],
                        "pairs_rejected_by_jaccard": extra["pairs_rejected_by_jaccard"],
                        "extra_survivors": extra["extra_survivors"]})  # fmt: skip
    print(f"\nnear_dedup  ngram={args.ngram} num_perm={args.num_perm} threshold={args.threshold}  local[2]")
    print(f"{'docs':>7} {'MiB':>6} {'seconds':>8} {'1st run':>8} {'docs/s':>8} {'precision':>9} "
          f"{'recall':>7} {'F1':>6} {'removed':>8} {'pairs':>6}")
    for r in results:
        print(f"{r['docs']:>7} {r['mib']:>6.1f} {r['seconds']:>8.1f} {r['first_run_seconds']:>8.1f} "
              f"{r['docs_per_s']:>8.0f} {r['precision']:>9.4f} {r['recall']:>7.4f} {r['f1']:>6.4f} "
              f"{r['removed']:>8} {r['true_pairs']:>6}")
        print("  recall by similarity: " + ", ".join(
            f"{k} {v:.3f} ({r['pairs_by_bucket'][k]})" for k, v in r["recall_by_bucket"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
