"""Benchmark decontamination: drop documents that contain a benchmark item.

Two kinds of evidence, per (document, benchmark item):

* **n-gram overlap** on a normalised token stream: code is cut into strings,
  numbers, identifiers and operators; comments, whitespace, parentheses, commas
  and semicolons are dropped (formatters add and remove them), every string
  literal becomes `STR`, numbers get one spelling, every identifier that is not
  a keyword or builtin becomes `ID` and every attribute `.ID`. Renaming and
  reformatting therefore leave the stream unchanged. Each item is indexed as
  written and without its docstrings (a copy may drop them). A document leaks
  an item when it holds at least `min_overlap` of the item's distinct
  non-trivial n-grams, and at least `min_matches` of them, or all of them for
  an item with fewer; an item with fewer than `min_item_ngrams` (one-liners
  such as `return len(string)`, common in real code) is only caught verbatim.
  Besides its text, a document's long triple-quoted strings and runs of
  comment lines are searched as code (a leak pasted as an example).
* **exact substring**: a prompt or solution of at least `min_substring_chars`
  characters found verbatim. Only items whose *anchor* (8 consecutive interior
  words of the substring) occurs among the document's word 8-grams are searched,
  so the cost does not grow with the number of items.

Trivial n-grams do not count as evidence: those shared by more than
`max_items_per_ngram` items of one benchmark, and those of `common_snippets`.

The index (hash -> benchmark units, as numpy arrays) is built on the driver
and broadcast; the per-document work runs in mapInArrow.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import json
import keyword
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from codemill.errors import ConfigError
from codemill.filters.config import BenchmarkConfig, DecontamConfig, benchmark_path
from codemill.filters.rules import byte_chunks
from codemill.filters.steps import FLAGGED_SCHEMA, split_flagged
from codemill.ngrams import window_hashes
from codemill.schema import DOC_COLUMNS, DOCUMENT_STORAGE, StageOutput

STAGE = "decontam"
REASON = "benchmark_contamination"

# --- normalised tokens -----------------------------------------------------------------

# One match per token, swallowing the whitespace and comments before it (half the matches
# of a separate whitespace token). An attribute (`.name`) is one token, so that attributes
# can be told from variables. A name right before a quote is a string prefix
# (f"..."); a lone quote (an apostrophe in prose) and the end of the text match without a
# token, so that every position matches: a failed match would be retried inside a comment.
_TOKEN = re.compile(
    r"""(?:\s+|\#[^\n]*)*+"""
    r"""(?:(?P<i>[^\W\d]\w*+)(?!["'])"""
    r"""|\.\s*(?P<a>[^\W\d]\w*+)(?!["'])"""
    r"""|(?P<n>\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?[jJlL]?|\.\d+(?:[eE][+-]?\d+)?)"""
    r"""|(?P<o>\*\*=?|//=?|->|:=|==|!=|<=|>=|<<=?|>>=?|[-+*/%&|^@]=|[^\s\w"'#])"""
    r"""|(?P<s>[rRbBuUfF]{0,2}(?:""\"(?:\\.|[^\\])*?""\"|'''(?:\\.|[^\\])*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))"""
    r"""|["']|\Z)""",
    re.S,
)
# Names a renaming leaves alone; every other identifier becomes "ID", and every attribute
# ".ID": method names too (`.append`, `.join`), which a careless rename also changes. (Kept,
# they would add little evidence: on the leak benchmark, items shorter than
# min_item_ngrams caused all the false hits either way.)
KEPT_NAMES = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))
_NAME = {name: name for name in KEPT_NAMES}
# Formatters add and remove these freely (redundant parentheses, trailing commas).
_DROPPED_OPS = frozenset("(),;")


def _number(text: str) -> str:
    """One spelling per value: 1. and 1.0, 1e3 and 1000.0, 1_000 and 1000."""
    if text.isdigit() and (text[0] != "0" or len(text) == 1):
        return text
    try:
        return repr(float(text)) if any(c in text for c in ".eE") else str(int(text.rstrip("lL"), 0))
    except ValueError:
        return text


def normalised_tokens(text: str) -> list[str]:
    return [
        _NAME.get(i, "ID") if i else ".ID" if a else _number(n) if n
        else "STR" if s else o
        for i, a, n, o, s in _TOKEN.findall(text)
        if i or a or n or s or (o and o not in _DROPPED_OPS)
    ]


def _token_hashes(token_lists: list[list[str]] | list[list[bytes]]) -> np.ndarray:
    """xxh64 of every token, in order: each distinct token is hashed once (Arrow's
    dictionary encoding finds them; a handful of distinct tokens cover most of a text)."""
    flat = list(chain.from_iterable(token_lists))
    if not flat:
        return np.empty(0, dtype=np.uint64)
    encoded = pa.array(flat, pa.binary() if isinstance(flat[0], bytes) else pa.string()).dictionary_encode()
    distinct = np.fromiter((xxhash.xxh64_intdigest(t) for t in encoded.dictionary.cast(pa.binary()).to_pylist()),
                           dtype=np.uint64, count=len(encoded.dictionary))
    return distinct[np.asarray(encoded.indices, dtype=np.int64)]


def token_window_hashes(token_lists: list[list[str]] | list[list[bytes]], n: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every n-token window of many token lists (codemill.ngrams, the kernel near
    dedup uses too): list i's are hashes[offsets[i]:offsets[i+1]], in order; a list shorter
    than n has none."""
    lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
    return window_hashes(_token_hashes(token_lists), lengths, n)


# Code a host file may hold as text: triple-quoted strings (an example in a docstring, a
# template) and runs of comment lines (commented-out code). Only those long enough for a
# leak and holding a Python keyword that starts code are searched. (Each pattern starts
# with a literal, which the regex engine skips to fast.)
_TRIPLE_QUOTED = (re.compile(r'"""(.*?)(?<!\\)"""', re.S), re.compile(r"'''(.*?)(?<!\\)'''", re.S))
_COMMENT_RUN = re.compile(r"#[^\n]*\n(?:[ \t]*#[^\n]*\n)+")
_COMMENT_MARK = re.compile(r"(?m)^[ \t]*# ?")
_ESCAPED = re.compile(r"""\\([\\"'])""")
_CODE_WORD = re.compile(r"\b(?:def|class|return|import|lambda)\b")
EMBEDDED_MIN_CHARS = 64


def embedded_code(text: str) -> list[str]:
    """The texts inside `text` that may be code: contents of its long triple-quoted strings
    (escaped quotes and backslashes undone) and of its runs of comment lines (markers cut)."""
    found = [_ESCAPED.sub(r"\1", m.group(1)) for quoted in _TRIPLE_QUOTED for m in quoted.finditer(text)
             if len(m.group(1)) >= EMBEDDED_MIN_CHARS]
    found += [_COMMENT_MARK.sub("", m.group(0)) for m in _COMMENT_RUN.finditer(text)
              if len(m.group(0)) >= EMBEDDED_MIN_CHARS]
    return [t for t in found if _CODE_WORD.search(t)]


def ngram_hashes(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised-token n-gram hashes of many texts (see `token_window_hashes`)."""
    return token_window_hashes([normalised_tokens(t) for t in texts], n)


# Words for exact-substring anchors: runs of [A-Za-z0-9_] and non-ASCII bytes, on raw text.
_WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") | set(range(128, 256))
_SPLIT_WORDS = bytes(c if c in _WORD_BYTES else 0x20 for c in range(256))
# Consecutive words an anchor spans: a document holding a substring holds its anchor.
ANCHOR_WORDS = 8


def words(text: str) -> list[bytes]:
    return text.encode("utf-8", "surrogatepass").translate(_SPLIT_WORDS).split()


def anchor_hash(substring: str) -> int | None:
    """Hash of the first ANCHOR_WORDS *interior* words (the first and last may be cut off
    in the document); None when the substring has too few words for one."""
    interior = words(substring)[1:-1]
    if len(interior) < ANCHOR_WORDS:
        return None
    return int(token_window_hashes([interior[:ANCHOR_WORDS]], ANCHOR_WORDS)[0][0])


# --- benchmarks --------------------------------------------------------------------------

@dataclass
class Unit:
    """One code text of a benchmark item (an item with several solutions has several)."""

    label: str  # "benchmark:item_id"
    code: str
    substrings: list[str]


def _texts(row: dict[str, Any], name: str, bench: BenchmarkConfig, where: str) -> list[str]:
    if name not in row:
        raise ConfigError(f"{where}: no field {name!r} (fields: {', '.join(sorted(row))}); "
                          f"set the field names of benchmark {bench.name!r}")
    value = row[name]
    if name in bench.json_list_fields:
        value = json.loads(value) if value else []
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def without_docstrings(code: str) -> str | None:
    """`code` with its module, class and function docstrings cut out (the rest of the text
    untouched), or None when it has none or does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                spans.append((first.lineno, first.col_offset, first.end_lineno, first.end_col_offset))
    if not spans:
        return None
    # ast offsets are UTF-8 byte columns: cut on the encoded text.
    data = code.encode()
    byte_starts = [0]
    for line in code.splitlines(keepends=True):
        byte_starts.append(byte_starts[-1] + len(line.encode()))
    for line, col, end_line, end_col in sorted(spans, reverse=True):
        data = data[: byte_starts[line - 1] + col] + data[byte_starts[end_line - 1] + end_col :]
    return data.decode()


def read_benchmark(bench: BenchmarkConfig) -> list[Unit]:
    """The benchmark's units; a missing file or field is a ConfigError naming it."""
    path = benchmark_path(bench)
    if not path.is_file():
        raise ConfigError(f"decontam benchmark {bench.name!r}: no benchmark file at {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    units = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: not JSON ({exc.msg})") from None
            label = f"{bench.name}:{_texts(row, bench.id_field, bench, where)[0]}"
            code_parts = [_texts(row, name, bench, where) for name in bench.code_fields]
            if sum(len(p) > 1 for p in code_parts) > 1:
                raise ConfigError(f"{where}: more than one of {bench.code_fields} holds a list")
            substrings = [t for name in bench.substring_fields for t in _texts(row, name, bench, where)]
            variants = max((len(p) for p in code_parts), default=1)
            for v in range(variants):
                code = "\n".join(p[v] if len(p) > 1 else p[0] for p in code_parts if p)
                units.append(Unit(label, code, substrings))
    return units


@dataclass
class Postings:
    """Sorted distinct hashes -> the ids holding each (CSR arrays: cheap to broadcast)."""

    hashes: np.ndarray  # uint64, sorted, distinct
    starts: np.ndarray  # the ids of hashes[k] are ids[starts[k]:starts[k + 1]]
    ids: np.ndarray

    @classmethod
    def build(cls, hashes: np.ndarray, ids: np.ndarray) -> Postings:
        """From (hash, id) pairs, repeats allowed."""
        order = np.lexsort((ids, hashes))
        hashes, ids = hashes[order], ids[order]
        first = np.ones(len(hashes), dtype=bool)
        first[1:] = (hashes[1:] != hashes[:-1]) | (ids[1:] != ids[:-1])
        hashes, ids = hashes[first], ids[first]
        distinct, starts = np.unique(hashes, return_index=True)
        return cls(distinct, np.append(starts, len(hashes)).astype(np.int64), ids.astype(np.int64))

    def find(self, query: np.ndarray) -> np.ndarray:
        """Positions (in `hashes`) of the query hashes that are present."""
        if not len(self.hashes):
            return np.empty(0, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.hashes, query), len(self.hashes) - 1)
        return at[self.hashes[at] == query]

    def ids_at(self, positions: np.ndarray) -> np.ndarray:
        """The ids of all the given positions, concatenated."""
        lo, lengths = self.starts[positions], np.diff(self.starts)[positions]
        shift = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        return self.ids[shift + np.arange(lengths.sum())]


@dataclass
class Index:
    """What executors need to match documents against the benchmarks (broadcast)."""

    ngrams: Postings        # normalised n-gram -> units
    evidence: np.ndarray    # per n-gram: False when trivial
    totals: np.ndarray      # per unit: its distinct non-trivial n-grams
    anchors: Postings       # substring anchor -> units
    unanchored: np.ndarray  # units with a substring too short in words for an anchor
    substrings: list[list[str]]  # per unit, searched verbatim
    labels: list[str]


def _items_per_ngram(ngrams: Postings, item_of: np.ndarray, bench_of: np.ndarray) -> np.ndarray:
    """Per n-gram: the most distinct items of any one benchmark holding it."""
    ngram = np.repeat(np.arange(len(ngrams.hashes)), np.diff(ngrams.starts))
    pairs = np.unique(ngram * (item_of.max() + 1) + item_of[ngrams.ids])  # distinct (ngram, item)
    ngram, item = np.divmod(pairs, item_of.max() + 1)
    keys, counts = np.unique(ngram * (bench_of.max() + 1) + bench_of[item], return_counts=True)
    most = np.zeros(len(ngrams.hashes), dtype=np.int64)
    np.maximum.at(most, keys // (bench_of.max() + 1), counts)
    return most


def build_index(cfg: DecontamConfig) -> Index:
    units: list[Unit] = []
    bench_of_unit: list[int] = []
    for b, bench in enumerate(cfg.benchmarks):
        read = read_benchmark(bench)
        units += read
        bench_of_unit += [b] * len(read)
    if not units:
        raise ConfigError(f"decontam: the benchmarks {[b.name for b in cfg.benchmarks]} hold no items")
    # A copy that drops the item's docstring breaks every n-gram spanning it: each unit is
    # also indexed without its docstrings, as a unit of the same item.
    bare = [(Unit(u.label, code, []), bench_of_unit[k])
            for k, u in enumerate(units) if (code := without_docstrings(u.code))]
    units += [u for u, _ in bare]
    bench_of_unit += [b for _, b in bare]
    labels = [u.label for u in units]
    item_names, item_of = np.unique(labels, return_inverse=True)
    bench_of_item = np.zeros(len(item_names), dtype=np.int64)
    bench_of_item[item_of] = bench_of_unit
    hashes, offsets = ngram_hashes([u.code for u in units], cfg.ngram)
    ngrams = Postings.build(hashes, np.repeat(np.arange(len(units)), np.diff(offsets)))
    snippets, _ = ngram_hashes(cfg.common_snippets, cfg.ngram)
    evidence = ((_items_per_ngram(ngrams, item_of, bench_of_item) <= cfg.max_items_per_ngram)
                & ~np.isin(ngrams.hashes, snippets))
    totals = np.bincount(ngrams.ids[np.repeat(evidence, np.diff(ngrams.starts))], minlength=len(units))
    substrings = [sorted({t.strip() for t in u.substrings if len(t.strip()) >= cfg.min_substring_chars})
                  for u in units]
    anchor_of = [(u, anchor_hash(t)) for u, texts in enumerate(substrings) for t in texts]
    anchored = [(a, u) for u, a in anchor_of if a is not None]
    unanchored = sorted({u for u, a in anchor_of if a is None})
    anchors = Postings.build(np.array([a for a, _ in anchored], dtype=np.uint64),
                             np.array([u for _, u in anchored], dtype=np.int64))
    return Index(ngrams, evidence, totals, anchors, np.array(unanchored, dtype=np.int64),
                 substrings, labels)


# --- per-document matching ------------------------------------------------------------------

LEAK_TYPE = StructType([
    StructField("benchmark", StringType(), False),
    StructField("item_id", StringType(), False),
    StructField("match", StringType(), False),  # "exact" | "ngram"
    StructField("matched_ngrams", IntegerType(), False),
    StructField("item_ngrams", IntegerType(), False),
    StructField("overlap", DoubleType(), False),
])
_ARROW_LEAK = pa.struct([pa.field(f.name, t, nullable=False) for f, t in zip(
    LEAK_TYPE.fields, [pa.string(), pa.string(), pa.string(), pa.int32(), pa.int32(), pa.float64()])])


def document_leaks(texts: list[str], doc_ngrams: np.ndarray, doc_anchors: np.ndarray, index: Index,
                   cfg: DecontamConfig) -> list[dict]:
    """The benchmark items one document leaks, with the strongest evidence per item.
    `texts`: the document's content and the code embedded in it (`embedded_code`)."""
    found = index.ngrams.find(np.unique(doc_ngrams))
    units, matched = np.unique(index.ngrams.ids_at(found[index.evidence[found]]), return_counts=True)
    matched_of = dict(zip(units.tolist(), matched.tolist()))
    overlap_of = {u: m / index.totals[u] for u, m in matched_of.items()}
    # An item with fewer n-grams than min_matches counts when all of them are present, if it
    # has at least min_item_ngrams (shorter ones are caught only verbatim).
    by_ngrams = {u for u, m in matched_of.items()
                 if m >= min(cfg.min_matches, index.totals[u]) and index.totals[u] >= cfg.min_item_ngrams
                 and overlap_of[u] >= cfg.min_overlap}
    candidates = set(index.anchors.ids_at(index.anchors.find(np.unique(doc_anchors))).tolist())
    exact = {u for u in candidates | set(index.unanchored.tolist())
             if any(t in text for t in index.substrings[u] for text in texts)}
    best: dict[str, tuple[tuple[bool, float], dict]] = {}
    for u in sorted(exact | by_ngrams):
        benchmark, item_id = index.labels[u].split(":", 1)
        leak = {"benchmark": benchmark, "item_id": item_id,
                "match": "exact" if u in exact else "ngram",
                "matched_ngrams": matched_of.get(u, 0), "item_ngrams": int(index.totals[u]),
                "overlap": float(overlap_of.get(u, 0.0))}
        rank = (u in exact, leak["overlap"])
        if index.labels[u] not in best or rank > best[index.labels[u]][0]:
            best[index.labels[u]] = (rank, leak)
    return [best[label][1] for label in sorted(best)]


def leak_batches(batches: Iterator[pa.RecordBatch], index_value: Any, cfg: DecontamConfig
                 ) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: documents plus `_reason`, `_detail` and `_leaks`."""
    index: Index = index_value.value
    for batch in batches:
        for chunk in byte_chunks(batch, "content"):
            # Each document's content, then the code embedded in it: their n-grams and anchors
            # are pooled per document.
            contents = [t or "" for t in chunk.column("content").to_pylist()]
            searched = [[t, *embedded_code(t)] for t in contents]
            flat = list(chain.from_iterable(searched))
            bounds = np.concatenate(([0], np.cumsum([len(texts) for texts in searched])))
            ngrams, n_off = ngram_hashes(flat, cfg.ngram)
            anchors, a_off = token_window_hashes([words(t) for t in flat], ANCHOR_WORDS)
            n_off, a_off = n_off[bounds], a_off[bounds]
            leaks = [document_leaks(texts, ngrams[n_off[i]:n_off[i + 1]], anchors[a_off[i]:a_off[i + 1]],
                                    index, cfg)
                     for i, texts in enumerate(searched)]
            labels = [",".join(f"{x['benchmark']}:{x['item_id']}" for x in found) or None
                      for found in leaks]
            yield (chunk.append_column("_reason", pa.array([REASON if x else None for x in labels],
                                                           pa.string()))
                   .append_column("_detail", pa.array(labels, pa.string()))
                   .append_column("_leaks", pa.array(leaks, pa.list_(_ARROW_LEAK))))


def decontaminate(spark: SparkSession, docs: DataFrame, cfg: DecontamConfig) -> tuple[StageOutput, DataFrame]:
    """Drop documents leaking benchmark items (detail: "benchmark:item" ids); also return the
    leak report: one row per (document, item) with the evidence."""
    index = build_index(cfg)  # reads the benchmarks: their errors come before any Spark work
    shipped = spark.sparkContext.broadcast(index)
    schema = StructType(FLAGGED_SCHEMA.fields + [StructField("_leaks", ArrayType(LEAK_TYPE))])
    flagged = docs.select(*DOC_COLUMNS).mapInArrow(
        lambda batches: leak_batches(batches, shipped, cfg), schema
    ).persist(DOCUMENT_STORAGE)
    leaks = flagged.where(F.size("_leaks") > 0).select(
        F.col("id").alias("doc_id"), "path", F.explode("_leaks").alias("leak")
    ).select("doc_id", "path", "leak.*")
    return split_flagged(flagged, STAGE), leaks
