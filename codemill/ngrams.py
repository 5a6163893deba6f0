"""N-gram window hashes: the one kernel behind near dedup's shingles and decontamination's
n-grams (numpy only, no Spark).

Each token is hashed once (64 bits, by the caller: xxh64 of its bytes), and the hash
of an n-token window is a fixed polynomial of its token hashes modulo 2**64,
`sum(MULTIPLIERS[j] * token_hash[j])`, computed with numpy over every window of a
whole batch of token lists at once.
"""

from __future__ import annotations

import numpy as np

# Odd 64-bit multipliers, one per n-gram position (drawn once from a fixed seed):
# odd and pairwise different, so reordering tokens changes the hash.
MULTIPLIERS = np.random.RandomState(0x5EED).randint(0, 1 << 63, 64, dtype=np.uint64)
MULTIPLIERS = MULTIPLIERS * np.uint64(2) + np.uint64(1)
MAX_NGRAM = len(MULTIPLIERS)


def check_n(n: int) -> None:
    if not 1 <= n <= MAX_NGRAM:
        raise ValueError(f"n-gram size must be in [1, {MAX_NGRAM}], got {n}")


def window_hashes(token_hashes: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every n-token window of many token lists, given the token hashes of all
    lists concatenated (uint64) and each list's length.

    Returns (hashes, offsets): list i's window hashes (in order, repeats kept) are
    hashes[offsets[i]:offsets[i + 1]]; a list shorter than n has none.
    """
    check_n(n)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = len(token_hashes)
    # Windows over the concatenated tokens; those starting in the last n - 1 tokens of a
    # list run into the next one and are dropped.
    count = max(total - n + 1, 0)
    win = token_hashes[:count] * MULTIPLIERS[0]
    term = np.empty_like(win)
    for j in range(1, n):
        np.multiply(token_hashes[j : j + count], MULTIPLIERS[j], out=term)
        win += term
    ends = np.cumsum(lengths)
    starts = ends - lengths
    crosses = np.zeros(total, dtype=bool)
    for back in range(1, n):
        inside = ends - back >= starts
        crosses[ends[inside] - back] = True
    offsets = np.concatenate(([0], np.cumsum(np.maximum(lengths - (n - 1), 0)))).astype(np.int64)
    return win[~crosses[:count]], offsets
