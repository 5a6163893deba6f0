"""Tokenize + FIM + pack throughput, per core, against its physical limit (docs/architecture.md, performance targets).

    .venv/bin/python -m benchmarks.tokenize_throughput [--mb 20] [--repeat 3] [--model PATH]

On the same text (stdlib .py files), single-threaded:
  (a) raw sentencepiece encoding of whole documents (the ceiling),
  (b) codemill: tokenize + FIM (rate 0.9) + pack into 4,096-token rows, best fit
      (the default) and (b') greedy, with their rows, padding and documents cut,
  (c) the same work as a Hugging Face `datasets.map` pipeline (FIM map, then the
      usual group-texts packing map).
Throughput is counted in tokens of the plain encoding of the corpus per second, so
all three do the same amount of work per "token". Best of --repeat runs, interleaved,
because the machine may be shared. Targets: (b) >= 0.8 x (a), (b) > (c).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import sentencepiece as spm

from benchmarks.machine import cpu_model
from codemill.tokenize.config import FimConfig, PackConfig
from codemill.tokenize.pack import PackStats, pack_documents
from codemill.tokenize.tokenizer import Tokenizer, load_tokenizer, train_tokenizer

SEQ_LEN = 4096
BATCH_DOCS = 256


def read_corpus(mb: float) -> tuple[list[str], list[str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, ids, size = [], [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        texts.append(path.read_text(encoding="utf-8", errors="replace"))
        ids.append(str(path.relative_to(root)))
        size += len(texts[-1].encode())
        if size >= mb * 1e6:
            break
    return texts, ids


def raw_encode(tok: Tokenizer, texts: list[str], ids: list[str]) -> int:
    return sum(len(x) for x in _sentencepiece(tok).encode(texts, num_threads=1))


def codemill(tok: Tokenizer, texts: list[str], ids: list[str], packing: str = "best_fit") -> PackStats:
    stats = PackStats()
    starts = range(0, len(texts), BATCH_DOCS)
    batches = ((texts[i : i + BATCH_DOCS], ids[i : i + BATCH_DOCS]) for i in starts)
    for _ in pack_documents(batches, tok, FimConfig(), PackConfig(seq_len=SEQ_LEN, packing=packing), 0, stats):
        pass
    return stats


def hf_datasets(tok: Tokenizer, texts: list[str], ids: list[str]) -> int:
    """FIM and packing written the way HF `datasets` pipelines usually are."""
    import datasets

    datasets.disable_progress_bars()
    sp, cfg = _sentencepiece(tok), FimConfig()

    def fim(batch):
        out = []
        for doc_id, text in zip(batch["id"], batch["text"]):
            rng = np.random.default_rng(list(hashlib.sha256(doc_id.encode()).digest()))
            lo, hi = sorted(rng.integers(0, len(text) + 1, size=2))
            if rng.random() >= cfg.rate:
                out.append(sp.encode(text))
                continue
            prefix, middle, suffix = text[:lo], text[lo:hi], text[hi:]
            if rng.random() < cfg.spm_rate:
                s, pm = sp.encode([suffix, prefix + middle], num_threads=1)
                ids_ = [tok.pre_id, tok.suf_id, *s, tok.mid_id, *pm, tok.eot_id]
            else:
                p, s, m = sp.encode([prefix, suffix, middle], num_threads=1)
                ids_ = [tok.pre_id, *p, tok.suf_id, *s, tok.mid_id, *m, tok.eot_id]
            # Documents that do not fit one context are not transformed.
            out.append(ids_ if len(ids_) + 2 <= SEQ_LEN else sp.encode(text))
        return {"input_ids": out}

    def group(batch):
        stream = [t for doc in batch["input_ids"] for t in (tok.bos_id, *doc, tok.eos_id)]
        n = len(stream) // SEQ_LEN * SEQ_LEN
        return {"input_ids": [stream[i : i + SEQ_LEN] for i in range(0, n, SEQ_LEN)]}

    ds = datasets.Dataset.from_dict({"id": ids, "text": texts})
    ds = ds.map(fim, batched=True, batch_size=BATCH_DOCS, remove_columns=["id", "text"],
                keep_in_memory=True)
    ds = ds.map(group, batched=True, batch_size=BATCH_DOCS, keep_in_memory=True)
    return ds.num_rows


def main(argv: list[str] | None = None) -> str:
    """Run the comparison; returns a markdown section (benchmarks/run_all.py convention)."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mb", type=float, default=20.0, help="corpus size in MB of UTF-8")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", help="tokenizer.model to use (default: train 32k on the corpus)")
    args = ap.parse_args(argv)

    texts, ids = read_corpus(args.mb)
    size = sum(len(t.encode()) for t in texts)
    runs = {
        "(a) sentencepiece encode": raw_encode,
        "(b) codemill tokenize+FIM+pack (best fit)": codemill,
        "(b') codemill tokenize+FIM+pack (greedy)": functools.partial(codemill, packing="greedy"),
        "(c) HF datasets.map tokenize+FIM+pack": hf_datasets,
    }
    best = {name: float("inf") for name in runs}
    packed: dict[str, PackStats] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            tok = load_tokenizer(args.model)
        else:
            tok = train_tokenizer(texts, Path(tmp) / "bench", 32000)
        tokens = raw_encode(tok, texts, ids)
        for _ in range(args.repeat):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                result = fn(tok, texts, ids)
                best[name] = min(best[name], time.perf_counter() - t0)
                if isinstance(result, PackStats):
                    packed[name] = result

    base = tokens / best["(a) sentencepiece encode"]
    b, _, c = (tokens / best[k] for k in list(runs)[1:])
    lines = [
        "## Tokenize + FIM + pack (stdlib .py files, one thread)",
        "",
        f"{len(texts)} files, {size / 1e6:.1f} MB, {tokens:,} tokens "
        f"({size / tokens:.2f} bytes/token), "
        f"{tok.name} vocab {tok.vocab_size}, FIM rate 0.9, seq_len {SEQ_LEN}; "
        f"tokens of the plain encoding per second, best of {args.repeat}; {cpu_model()}.",
        "",
        "| pipeline | seconds | tokens/s per core | vs (a) |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds in best.items():
        rate = tokens / seconds
        lines.append(f"| {name} | {seconds:.2f} | {rate / 1e6:.2f}M | {rate / base:.2f} |")
    lines += ["", f"(b)/(a) = {b / base:.2f} (target >= 0.80); (b)/(c) = {b / c:.1f}x (target > 1).",
              "", "| packing | rows | padding | documents cut across rows | longer than a row | "
              "FIM documents (all within one row) |", "|---|---:|---:|---:|---:|---:|"]
    for name, st in packed.items():
        lines.append(f"| {name.split('(')[-1].rstrip(')')} | {st.sequences:,} | "
                     f"{st.pad_tokens / (st.sequences * SEQ_LEN):.2%} | "
                     f"{st.docs_cut:,} of {st.docs_packed:,} ({st.docs_cut / st.docs_packed:.1%}) | "
                     f"{st.docs_long:,} | {st.docs_psm + st.docs_spm:,} |")
    return "\n".join(lines)


@functools.cache
def _sentencepiece(tok: Tokenizer) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=tok.path)


if __name__ == "__main__":
    print(main())
