"""MinHash signatures, vectorised with numpy over whole batches of documents.

The permutation scheme is datasketch 2.0's "affine64": each 64-bit shingle
hash is pre-mixed once with the MurmurHash3 64-bit finaliser, then permutation
k maps it to `a_k * h + b_k mod 2**64` (a_k odd, so a bijection) and keeps the
minimum. The (a, b) parameters are drawn exactly as datasketch draws them from
the same seed, so `to_datasketch(signature)` is a `LeanMinHash` that compares
with, and can query a `MinHashLSH` of, sketches built by datasketch itself
with `hashfunc=shingle_hash, scheme="affine64"`.

Why this scheme: it needs no modulo by a prime (the costly step of the
"legacy" scheme that datatrove and text-dedup use) — uint64 wrap-around *is*
the modulo — and it is collision-free on 64-bit hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from codemill.dedup.shingles import batch_shingle_hashes

if TYPE_CHECKING:
    from datasketch import LeanMinHash

SCHEME = "affine64"
EMPTY = np.uint64((1 << 64) - 1)  # a signature slot that saw no shingle
# Shingles per numpy chunk: keeps the per-permutation temporaries inside the CPU cache.
_CHUNK_SHINGLES = 1 << 15


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of the affine permutations, the same draws as datasketch's affine64 scheme."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = gen.randint(0, 1 << 64, num_perm, dtype=np.uint64)
    return a, b


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: an avalanching bijection of uint64 values."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def signatures_from_hashes(
    hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Signatures (docs x num_perm, uint64) of the shingle-hash runs hashes[offsets[i]:offsets[i+1]].

    A document without shingles gets all-EMPTY slots.
    """
    n_docs = len(offsets) - 1
    sig = np.full((n_docs, len(a)), EMPTY, dtype=np.uint64)
    counts = np.diff(offsets)
    docs = np.flatnonzero(counts)
    # Chunks of whole documents; each chunk is a contiguous run of `hashes`.
    start = 0
    while start < len(docs):
        stop = start + 1
        limit = offsets[docs[start]] + _CHUNK_SHINGLES
        stop = max(stop, int(np.searchsorted(offsets[docs + 1], limit, side="right")))
        chunk_docs = docs[start:stop]
        lo, hi = offsets[chunk_docs[0]], offsets[chunk_docs[-1] + 1]
        h = fmix64(hashes[lo:hi])
        # reduceat needs strictly increasing starts: only documents with shingles are in `docs`.
        starts = offsets[chunk_docs] - lo
        tmp = np.empty_like(h)
        for k in range(len(a)):
            np.multiply(h, a[k], out=tmp)
            np.add(tmp, b[k], out=tmp)
            sig[chunk_docs, k] = np.minimum.reduceat(tmp, starts)
        start = stop
    return sig


def signatures(
    texts: Sequence[str | bytes],
    num_perm: int = 256,
    seed: int = 1,
    n: int = 5,
    lowercase: bool = False,
) -> np.ndarray:
    """MinHash signatures (len(texts) x num_perm, uint64) of documents' shingle sets."""
    raw = [t.encode("utf-8", "surrogatepass") if isinstance(t, str) else t for t in texts]
    hashes, offsets = batch_shingle_hashes(raw, n, lowercase)
    a, b = permutations(num_perm, seed)
    return signatures_from_hashes(hashes, offsets, a, b)


def to_datasketch(signature: np.ndarray, seed: int = 1) -> LeanMinHash:
    """One signature as a datasketch `LeanMinHash` (for `MinHashLSH` queries, `jaccard`, ...)."""
    # Imported here: datasketch pulls in scipy, which executors computing signatures never need.
    from datasketch import LeanMinHash, MinHash

    mh = MinHash(seed=seed, hashvalues=signature, scheme=SCHEME)
    return LeanMinHash(mh)
