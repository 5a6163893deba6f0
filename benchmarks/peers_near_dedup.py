"""codemill's near dedup beside datatrove's and text-dedup's MinHash dedup, on one corpus.

All three see the same corpus of real files and their near-copies
(benchmarks/near_dedup_accuracy.py), 5-gram shingles and 2 processes, and are
scored against the same exact-Jaccard ground truth. The peers get the bands x
rows that minimise false positives plus false negatives at the threshold (25 x 10
for 0.7 and 256 permutations), the right choice for tools that do not check
candidates; codemill uses its own default (37 x 6: a pair at the threshold is a
candidate with probability 0.99, and every candidate is checked). Seconds are the
dedup's own wall time, from reading the corpus files to writing the kept
documents, without interpreter start or imports; codemill's is measured on a
warm SparkSession: the median of three runs after a cold one (whose time is kept as
`cold_seconds`).

The peers are never project dependencies. They live in a side virtualenv:

    /root/.pyenv/versions/3.11.7/bin/python -m venv .venv-peers   # any Python 3.11
    .venv-peers/bin/pip install datatrove==0.10.1 text-dedup==0.4.0 orjson tokenizers \
        "xxhash<4" "datasets<5"

text-dedup 0.4.1 needs Python >= 3.12; datatrove 0.10.1 hashes str, which xxhash 4
refuses. datatrove 0.10.1 needs huggingface_hub >= 1.6, which transformers 4.x refuses:
if another benchmark put transformers 4 in .venv-peers, make this venv elsewhere and
pass --peers-python. Then, from the repository root:

    .venv/bin/python benchmarks/peers_near_dedup.py [--sizes 1,2,4] [--json out.json]

This script runs itself inside .venv-peers for each peer (`--peer NAME`).

Shingle definitions, made as equal as each peer allows: datatrove gets a word
tokenizer that splits on `[^A-Za-z_0-9]` and a text normalisation that does
nothing; text-dedup's token pattern is set to `[^A-Za-z_0-9]`, but it always
lower-cases and keeps empty tokens (its own choices, left as they are).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
PEERS = ("datatrove", "text-dedup")
SHARDS = 2  # corpus files, one per peer process
CODE_TOKEN_SPLIT = re.compile(r"[^A-Za-z_0-9]")

# Also imported inside .venv-peers (this script runs itself there): it needs only numpy.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from near_dedup_accuracy import add_corpus_arguments  # noqa: E402

# --- inside .venv-peers -------------------------------------------------------------------


def _run_datatrove(corpus: Path, work: Path, ngram: int, bands: int, rows: int) -> list[str]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class CodeTokenizer(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return [t for t in CODE_TOKEN_SPLIT.split(text) if t]

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    cfg = MinhashConfig(
        n_grams=ngram,
        num_buckets=bands,
        hashes_per_bucket=rows,
        hash_config=HashConfig(precision=64, hash_fc="xxhash"),
        norm_config=TextNormConfig(
            lowercase=False, norm_whitespace=False, remove_punctuation=False,
            norm_unicode_diacritics=False, norm_numbers=False,
        ),  # fmt: skip
    )

    def reader():
        return JsonlReader(str(corpus), text_key="content", id_key="id")

    def run(pipeline, tasks, name):
        LocalPipelineExecutor(
            pipeline, tasks=tasks, workers=2, logging_dir=str(work / "logs" / name), start_method="fork"
        ).run()

    run([reader(), MinhashDedupSignature(str(work / "sigs"), config=cfg, language=CodeTokenizer())], SHARDS, "sigs")
    run([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)], bands, "buckets")
    run([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg)], 1, "cluster")
    run([reader(), MinhashDedupFilter(str(work / "remove")), JsonlWriter(str(work / "kept"))], SHARDS, "filter")
    kept = []
    for path in sorted((work / "kept").glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            kept += [json.loads(line)["id"] for line in f]
    return kept


def _run_text_dedup(corpus: Path, work: Path, ngram: int, bands: int, rows: int, num_perm: int,
                    threshold: float) -> list[str]:
    import datasets
    from text_dedup import minhash

    minhash.NON_ALPHA = CODE_TOKEN_SPLIT  # codemill's token split (it still lower-cases)
    minhash.main.main(
        args=[
            "--path", "json", "--data_files", str(corpus / "*.jsonl"), "--split", "train",
            "--cache_dir", str(work / "cache"), "--output", str(work / "kept"),
            "--column", "content", "--num_proc", "2", "--ngram", str(ngram), "--min_length", "0",
            "--num_perm", str(num_perm), "--threshold", str(threshold),
            "--b", str(bands), "--r", str(rows), "--hash_func", "xxh3",
        ],
        standalone_mode=False,
    )  # fmt: skip
    return list(datasets.load_from_disk(str(work / "kept"))["id"])


def peer_main(args: argparse.Namespace) -> None:
    corpus, work = Path(args.corpus), Path(args.work)
    started = time.perf_counter()
    if args.peer == "datatrove":
        kept = _run_datatrove(corpus, work, args.ngram, args.bands, args.rows)
    else:
        kept = _run_text_dedup(corpus, work, args.ngram, args.bands, args.rows, args.num_perm, args.threshold)
    seconds = time.perf_counter() - started
    print("PEER_RESULT " + json.dumps({"seconds": seconds, "kept": kept}))


# --- the orchestrator, in the project venv -----------------------------------------------------


def _write_corpus(docs, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(SHARDS):
        with open(folder / f"part-{k}.jsonl", "w") as f:
            for doc in docs[k::SHARDS]:
                f.write(json.dumps({"id": doc.id, "content": doc.content}) + "\n")


def _run_peer(name: str, corpus: Path, work: Path, args: argparse.Namespace, bands: int,
              rows: int) -> tuple[set[str], float]:
    cmd = [
        args.peers_python, __file__, "--peer", name, "--corpus", str(corpus), "--work", str(work),
        "--ngram", str(args.ngram), "--num-perm", str(args.num_perm), "--threshold", str(args.threshold),
        "--bands", str(bands), "--rows", str(rows),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("PEER_RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{name} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(line.removeprefix("PEER_RESULT "))
    return set(result["kept"]), result["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--bands", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    add_corpus_arguments(ap, "/tmp/codemill-bench-peers")
    ap.add_argument("--peers-python", default=str(DEFAULT_PEERS_PYTHON), help="the peers' venv interpreter")
    args = ap.parse_args()
    if args.peer:
        peer_main(args)
        return
    if not Path(args.peers_python).exists():
        raise SystemExit(f"{args.peers_python} is missing; see this script's docstring to create it")

    import shutil

    from near_dedup_accuracy import build_corpus, ground_truth, run_codemill, score_removals

    from codemill.dedup.lsh import optimal_bands_rows

    bands, rows = optimal_bands_rows(args.threshold, args.num_perm)
    results = []
    for scale in [int(s) for s in args.sizes.split(",")]:
        docs = build_corpus(args.originals * scale, args.copies, args.unrelated * scale, seed=args.seed)
        ids = [d.id for d in docs]
        pairs = ground_truth([d.content for d in docs], args.ngram, args.threshold)
        work = Path(args.workdir) / f"x{scale}"
        shutil.rmtree(work, ignore_errors=True)
        _write_corpus(docs, work / "corpus")
        removed, seconds, extra = run_codemill(docs, work / "codemill", args.ngram, args.num_perm, args.threshold)
        runs = {"codemill": (removed, seconds)}
        for peer in PEERS:
            kept, peer_seconds = _run_peer(peer, work / "corpus", work / peer, args, bands, rows)
            runs[peer] = (set(ids) - kept, peer_seconds)
        for name, (removed, secs) in runs.items():
            results.append({"tool": name, "docs": len(docs), "seconds": secs, "docs_per_s": len(docs) / secs,
                            **score_removals(removed, ids, pairs)})  # fmt: skip
            if name == "codemill":
                results[-1]["cold_seconds"] = extra["first_run_seconds"]
                results[-1]["extra_survivors"] = extra["extra_survivors"]
    print(f"\nnear dedup, {args.ngram}-grams, {args.num_perm} permutations ({bands} bands x {rows} rows), "
          f"threshold {args.threshold}, 2 processes")  # fmt: skip
    print(f"{'tool':<11} {'docs':>6} {'seconds':>8} {'docs/s':>8} {'precision':>9} {'recall':>7} {'F1':>6} "
          f"{'orphaned':>8}")
    for r in results:
        print(f"{r['tool']:<11} {r['docs']:>6} {r['seconds']:>8.1f} {r['docs_per_s']:>8.0f} "
              f"{r['precision']:>9.4f} {r['recall']:>7.4f} {r['f1']:>6.4f} {r['orphaned']:>8}")  # fmt: skip
        print("  recall by similarity: " + ", ".join(f"{k} {v:.3f}" for k, v in r["recall_by_bucket"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
