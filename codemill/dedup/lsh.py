"""LSH banding: how many bands x rows for a Jaccard threshold, and the bucket key of each band.

Two documents become candidates when all `rows` signature values of at least
one band agree; with Jaccard s that happens with probability
1 - (1 - s**rows)**bands. codemill checks every candidate pair by exact Jaccard,
so a false candidate costs only that check: bands x rows are chosen to make a
pair at the threshold a candidate with high probability (0.99 by default), with
the fewest candidates below the threshold. Pipelines that remove candidates
unchecked (datasketch's `MinHashLSH`, BigCode's) instead minimise the weighted
area of false positives plus false negatives, which leaves a pair at the
threshold a candidate only about half the time; that choice remains available.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from codemill.arrow_batches import byte_slices
from codemill.dedup.config import NearDedupConfig
from codemill.dedup.minhash import fmix64, permutations, signatures_from_hashes
from codemill.dedup.shingles import batch_shingle_hashes, string_bytes


def _integrate(f, lo: float, hi: float, nodes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Gauss-Legendre quadrature of f over [lo, hi] (f maps an array of points to rows of values)."""
    half = (hi - lo) / 2
    return half * (f(half * nodes + (lo + hi) / 2) @ weights)


def _bands(threshold: float, num_perm: int):
    """Every (bands, rows) with bands * rows <= num_perm, in (bands, rows) ascending order;
    their candidate probability as a function of Jaccard s (one row per choice); and the
    Gauss-Legendre nodes and weights that integrate it exactly (a polynomial in s of
    degree bands * rows <= num_perm)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    grid = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    bands = np.array([g[0] for g in grid], dtype=np.float64)[:, None]
    rows = np.array([g[1] for g in grid], dtype=np.float64)[:, None]

    def p_candidate(s: np.ndarray | float) -> np.ndarray:
        return 1.0 - (1.0 - np.atleast_1d(s)[None, :] ** rows) ** bands

    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)
    return grid, p_candidate, nodes, weights


def optimal_bands_rows(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows), bands * rows <= num_perm, minimising fp_weight * FP + fn_weight * FN
    (areas under and over the candidate probability curve). Ties go to the first
    (bands, rows) in (bands, rows) ascending order, as datasketch's search does.
    """
    grid, p_candidate, nodes, weights = _bands(threshold, num_perm)
    fp = _integrate(p_candidate, 0.0, threshold, nodes, weights)
    fn = _integrate(lambda s: 1.0 - p_candidate(s), threshold, 1.0, nodes, weights)
    best = int(np.argmin(fp * fp_weight + fn * fn_weight))  # first minimum on ties
    return grid[best]


def verified_bands_rows(threshold: float, num_perm: int, min_probability: float) -> tuple[int, int]:
    """(bands, rows), bands * rows <= num_perm, with which a pair of Jaccard `threshold`
    becomes a candidate with probability >= `min_probability`, and the least area of
    candidates below the threshold among those (then the fewest hashes per document).
    When no choice reaches `min_probability`, the one that comes closest."""
    grid, p_candidate, nodes, weights = _bands(threshold, num_perm)
    at_threshold = p_candidate(threshold)[:, 0]
    fp = _integrate(p_candidate, 0.0, threshold, nodes, weights)
    reach = at_threshold >= min_probability
    if not reach.any():
        reach = at_threshold == at_threshold.max()
    hashes = np.array([b * r for b, r in grid])
    # lexsort: the last key first; ties then go to the grid's ascending order
    order = np.lexsort((np.arange(len(grid)), hashes, fp, ~reach))
    return grid[int(order[0])]


def band_params(cfg: NearDedupConfig) -> tuple[int, int]:
    """Bands x rows from the config: as given when set; else, for its threshold, the choice
    that makes a pair at the threshold a candidate with probability
    `candidate_probability`, or (when that is 0) the fp/fn-weighted optimum."""
    if cfg.bands or cfg.rows:
        if cfg.bands < 1 or cfg.rows < 1 or cfg.bands * cfg.rows > cfg.num_perm:
            raise ValueError(
                f"near_dedup bands={cfg.bands} x rows={cfg.rows} must both be set, "
                f"with bands * rows <= num_perm={cfg.num_perm}"
            )
        return cfg.bands, cfg.rows
    if cfg.candidate_probability > 0:
        return verified_bands_rows(cfg.threshold, cfg.num_perm, cfg.candidate_probability)
    return optimal_bands_rows(cfg.threshold, cfg.num_perm, cfg.fp_weight, cfg.fn_weight)


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """docs x bands bucket keys: a 64-bit hash of each band's `rows` signature values.

    A polynomial of the (already well-mixed) minima, finalised by fmix64. A
    collision between different bands only adds a candidate pair, which the
    Jaccard check then rejects.
    """
    out = np.zeros((sig.shape[0], bands), dtype=np.uint64)
    for r in range(rows):
        out = out * np.uint64(0x9E3779B97F4A7C15) + sig[:, r : bands * rows : rows]
    return fmix64(out)


def band_key_batches(
    batches: Iterator[pa.RecordBatch], cfg: NearDedupConfig, bands: int, rows: int
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (content, other columns...) -> (band, key, other columns...), one
    row per band of each document that has at least one shingle (documents without one
    never reach a bucket)."""
    a, b = permutations(cfg.num_perm, cfg.hash_seed)
    for batch in (s for big in batches for s in byte_slices(big, "content")):
        texts = string_bytes(batch.column("content"))
        hashes, offsets = batch_shingle_hashes(texts, cfg.ngram, cfg.lowercase)
        has = np.flatnonzero(np.diff(offsets) > 0)
        sig = signatures_from_hashes(hashes, offsets, a, b)[has]
        keys = band_hashes(sig, bands, rows)
        carried = [name for name in batch.schema.names if name != "content"]
        at = pa.array(np.repeat(has, bands))
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(np.tile(np.arange(bands, dtype=np.int32), len(has))),
                pa.array(keys.reshape(-1).view(np.int64)),
                *(batch.column(name).take(at) for name in carried),
            ],
            names=["band", "key", *carried],
        )
