"""The survivor rule: a dominating set of each cluster's pair graph, keep-rule best first."""

from __future__ import annotations

import itertools
import random

import pytest

from codemill.dedup.survivors import survivors


def kept_set(kept_by: list[int]) -> set[int]:
    return {m for m, k in enumerate(kept_by) if k == m}


def test_the_best_document_covers_its_copies_alone():
    assert survivors(4, [0, 0, 0, 1], [1, 2, 3, 2]) == [0, 0, 0, 0]


def test_a_chain_keeps_its_far_end():
    # 1 and 2 would both cover 2: the one not yet covered survives, so the two survivors
    # are not near-duplicates of each other
    assert survivors(3, [0, 1], [1, 2]) == [0, 0, 2]
    # 0-1-2-3-4: after 0, member 3 covers the three still uncovered
    assert survivors(5, [0, 1, 2, 3], [1, 2, 3, 4]) == [0, 0, 3, 3, 3]


def test_a_star_around_a_worse_document_adds_its_centre():
    # 0 (the best) is paired with 1 only; 1 is paired with everyone
    assert survivors(5, [0, 1, 1, 1], [1, 2, 3, 4]) == [0, 1, 1, 1, 1]


def test_ties_go_to_the_better_document_and_repeated_pairs_do_not_count_twice():
    # after 0: 2 covers {2, 3, 4} and 3 covers {2, 3, 5}; 2 is better by the keep rule.
    # Then 3 and 5 both cover 5 alone: 5 is not yet covered, so 5 survives.
    assert survivors(6, [0, 2, 2, 3, 3, 2], [1, 3, 4, 3, 5, 4]) == [0, 0, 2, 2, 2, 5]


def smallest_dominating_with_best(size: int, pairs: set[tuple[int, int]]) -> int:
    near = {m: {m} for m in range(size)}
    for x, y in pairs:
        near[x].add(y)
        near[y].add(x)
    for k in range(1, size + 1):
        for rest in itertools.combinations(range(1, size), k - 1):
            chosen = {0, *rest}
            if all(near[m] & chosen for m in range(size)):
                return k
    raise AssertionError("unreachable")


@pytest.mark.parametrize("seed", range(40))
def test_random_clusters_every_removal_has_a_kept_partner(seed):
    rng = random.Random(seed)
    size = rng.randrange(2, 9)
    # a random spanning tree (clusters are connected) plus random extra pairs
    pairs = {(rng.randrange(m), m) for m in range(1, size)}
    pairs |= {tuple(sorted(rng.sample(range(size), 2))) for _ in range(rng.randrange(size))}
    a, b = zip(*sorted(pairs))
    kept_by = survivors(size, list(a), list(b))
    kept = kept_set(kept_by)
    assert 0 in kept
    for m, k in enumerate(kept_by):
        assert k in kept and (k == m or (min(k, m), max(k, m)) in pairs)
    # greedy stays within ln(size) + 1 of the optimum (with the best document kept)
    best = smallest_dominating_with_best(size, pairs)
    assert best <= len(kept) <= best * (1 + 2.08)  # ln 8 = 2.08
