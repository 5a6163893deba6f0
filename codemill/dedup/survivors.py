"""Which documents of a near-duplicate cluster survive, so that no removal is orphaned.

A cluster is a connected component of verified pairs, so two of its members may
be far apart (a ~ b ~ c with a and c below the threshold). Keeping only one
document would drop c although nothing like it survives. Instead the survivors
form a dominating set of the cluster's pair graph: every removed document has a
kept document it was paired with (Jaccard >= the threshold), recorded as its
`duplicate_of`.

The keep rule's best document always survives; further survivors are picked
greedily, each time the document whose pairs cover the most still-uncovered
members (ties: one not yet covered, then the better one by the keep rule). Greedy is within a factor
ln(size) of the smallest dominating set, which is NP-hard to find exactly, and
it keeps one document for every cluster in which the best one is paired with
all the others: the common case of a file and its copies.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence

import pyarrow as pa


def survivors(size: int, a: Sequence[int], b: Sequence[int]) -> list[int]:
    """For members 0..size-1 in keep-rule order and the pairs (a[i], b[i]) between them:
    kept_by[m] = the member that m is kept as a duplicate of (m itself for a survivor)."""
    neighbours: list[set[int]] = [set() for _ in range(size)]
    for x, y in zip(a, b, strict=True):
        if x != y:
            neighbours[x].add(y)
            neighbours[y].add(x)
    kept_by = [-1] * size

    def keep(m: int) -> None:
        kept_by[m] = m
        for n in sorted(neighbours[m]):
            if kept_by[n] < 0:
                kept_by[n] = m

    keep(0)
    # Lazy greedy over keys (-gain, covered, member): gain (uncovered members among itself
    # and its neighbours) only shrinks and `covered` only turns true as survivors are added,
    # so a stored key never exceeds the current one: pop the smallest, recompute it, and
    # keep the member if it is unchanged. Among equal gains an uncovered member goes first,
    # so survivors are rarely near-duplicates of each other, then the keep rule's order.
    heap = [(-(len(neighbours[m]) + 1), False, m) for m in range(1, size)]
    heapq.heapify(heap)
    uncovered = size - 1 - len(neighbours[0])
    while uncovered:
        stored = heapq.heappop(heap)
        m = stored[2]
        gain = (kept_by[m] < 0) + sum(kept_by[n] < 0 for n in neighbours[m])
        if gain == 0:
            continue
        current = (-gain, kept_by[m] >= 0, m)
        if current != stored:
            heapq.heappush(heap, current)
            continue
        keep(m)
        uncovered -= gain
    return kept_by


def survivor_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: one row per cluster (cluster_id, members: ids in keep-rule order,
    a, b: the pairs as positions in members) -> (id, cluster_id, rank, kept_id), one row
    per member; rank is its position in keep-rule order."""
    for batch in batches:
        ids, clusters, ranks, kept = [], [], [], []
        for cluster, members, a, b in zip(*(batch.column(c).to_pylist()
                                            for c in ("cluster_id", "members", "a", "b"))):
            kept_by = survivors(len(members), a, b)
            ids += members
            clusters += [cluster] * len(members)
            ranks += range(len(members))
            kept += [members[k] for k in kept_by]
        yield pa.RecordBatch.from_arrays(
            [pa.array(ids, pa.string()), pa.array(clusters, pa.string()),
             pa.array(ranks, pa.int32()), pa.array(kept, pa.string())],
            names=["id", "cluster_id", "rank", "kept_id"],
        )
