"""Code shingles for near dedup: identifier-like tokens, word n-grams, 64-bit shingle hashes.

Tokens are the runs of `[A-Za-z_0-9]` (splitting on every other character and
dropping empty pieces), as BigCode does for The Stack. A shingle is `n`
consecutive tokens; a document with fewer than `n` tokens has no shingle, so it
never enters LSH (exact dedup alone covers it).

Hashing is two-level so that it vectorises: each token is hashed once with
xxh64, and the hash of an n-gram is a fixed polynomial of its token hashes
modulo 2**64, computed with numpy over every window of a whole batch at once
(codemill.ngrams, shared with decontamination).
`shingle_hash` computes the same value for one shingle in plain Python, which
is what lets datasketch reproduce codemill's signatures.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain

import numpy as np
import pyarrow as pa
import xxhash

from codemill.arrow_batches import byte_slices
from codemill.ngrams import MULTIPLIERS, check_n, window_hashes

_WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_0123456789")
# Byte maps that turn every non-token byte into a space (and optionally A-Z into a-z), so
# that C-level bytes.translate + bytes.split tokenise ~2x faster than a regex.
_SEPARATE = bytes(c if c in _WORD_BYTES else 0x20 for c in range(256))
_SEPARATE_LOWER = _SEPARATE.lower()
_MASK64 = (1 << 64) - 1


def _token_bytes(text: bytes, lowercase: bool) -> list[bytes]:
    return text.translate(_SEPARATE_LOWER if lowercase else _SEPARATE).split()


def tokens(text: str, lowercase: bool = False) -> list[str]:
    """Split on `[^A-Za-z_0-9]`, dropping empty tokens; lower-casing touches ASCII only."""
    raw = text.encode("utf-8", "surrogatepass")
    return [t.decode("ascii") for t in _token_bytes(raw, lowercase)]


def shingles(text: str, n: int = 5, lowercase: bool = False) -> list[tuple[str, ...]]:
    """All word n-grams of `text`, in order (repeats kept); [] when it has fewer than n tokens."""
    check_n(n)
    toks = tokens(text, lowercase)
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def shingle_hash(shingle: Sequence[str | bytes]) -> int:
    """64-bit hash of one shingle; usable as datasketch's `hashfunc`."""
    check_n(len(shingle))
    acc = 0
    for mult, tok in zip(MULTIPLIERS, shingle):
        raw = tok.encode("ascii") if isinstance(tok, str) else tok
        acc = (acc + int(mult) * xxhash.xxh64_intdigest(raw)) & _MASK64
    return acc


def batch_shingle_hashes(
    texts: Sequence[bytes], n: int = 5, lowercase: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of many UTF-8 documents at once.

    Returns (hashes, offsets): document i's shingle hashes (in text order,
    repeats kept) are hashes[offsets[i]:offsets[i + 1]].
    """
    check_n(n)
    tok_lists = [_token_bytes(t, lowercase) for t in texts]
    tok_counts = np.fromiter(map(len, tok_lists), dtype=np.int64, count=len(tok_lists))
    total = int(tok_counts.sum())
    th = np.fromiter(
        map(xxhash.xxh64_intdigest, chain.from_iterable(tok_lists)), dtype=np.uint64, count=total
    )
    return window_hashes(th, tok_counts, n)


def string_bytes(column: pa.Array) -> list[bytes]:
    """A string column of an Arrow batch as UTF-8 bytes objects (no decode/re-encode); null -> b""."""
    return [b"" if v is None else v for v in column.cast(pa.binary()).to_pylist()]


def shingle_set_batches(
    batches: Iterator[pa.RecordBatch], n: int, lowercase: bool
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (id, content) -> (id, shingles): the sorted distinct shingle hashes
    (as int64), for exact Jaccard."""
    for batch in (s for big in batches for s in byte_slices(big, "content")):
        hashes, offsets = batch_shingle_hashes(string_bytes(batch.column("content")), n, lowercase)
        sets = [np.unique(hashes[lo:hi]).view(np.int64) for lo, hi in zip(offsets[:-1], offsets[1:])]
        values = np.concatenate(sets) if sets else np.empty(0, dtype=np.int64)
        list_offsets = np.concatenate(([0], np.cumsum([len(s) for s in sets]))).astype(np.int32)
        yield pa.RecordBatch.from_arrays(
            [batch.column("id"), pa.ListArray.from_arrays(pa.array(list_offsets), pa.array(values))],
            names=["id", "shingles"],
        )
