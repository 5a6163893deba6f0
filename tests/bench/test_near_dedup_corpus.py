"""The near-dedup benchmark's corpus and scoring: copies land near their target
similarity, renames are consistent, the corpus is reproducible, ground truth is exact
and the scores follow their definitions. Small corpora, no Spark."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from benchmarks import near_dedup_accuracy as nda
from benchmarks.edited_copies import Donors, copy_near, edited, jaccard, whitespace_copy

DONORS = Donors(lines=("total += 1", "return None"), comments=("why this is here",),
                names=("widget", "gadget"), headers=("# Licensed to you\n# under terms\n\n",))


@pytest.fixture(scope="module")
def corpus() -> list[nda.CorpusDoc]:
    return nda.build_corpus(originals=8, copies=2, unrelated=16, seed=3)


def test_the_corpus_is_reproducible_and_counts_add_up(corpus):
    again = nda.build_corpus(originals=8, copies=2, unrelated=16, seed=3)
    assert [(d.id, d.content) for d in again] == [(d.id, d.content) for d in corpus]
    kinds = [d.kind for d in corpus]
    assert kinds.count("original") == 8 and kinds.count("unrelated") == 16 and len(corpus) > 8 * 2 + 16
    assert len({d.id for d in corpus}) == len(corpus)


def test_copies_land_near_their_target_similarity(corpus):
    text = next(d.content for d in corpus if d.kind == "original")
    for target in (0.35, 0.6, 0.8, 0.95):
        copy, score = copy_near(text, target, seed=11, donors=DONORS)
        assert score == pytest.approx(jaccard(text, copy)) and abs(score - target) < 0.08
    assert jaccard(text, whitespace_copy(text, random.Random(1))) == 1.0


def test_a_longer_edit_prefix_only_adds_edits():
    text = "\n".join(f"value_{i} = compute(item_{i}, limit)" for i in range(40))
    assert edited(text, 0, 5, DONORS) == text + "\n"
    scores = [jaccard(text, edited(text, n, 5, DONORS)) for n in (2, 10, 40)]
    assert scores[0] > scores[-1] < 0.9


def test_renames_are_consistent():
    text = "def fetch(items):\n    for entry in items:\n        fetch(entry)\n    return items\n"
    for seed in range(30):
        out = edited(text, 8, seed, Donors(("pass",), ("c",), ("renamed",), ()))
        names = set(re.findall(r"\w+", out))
        # a name is renamed at every occurrence or at none (lines may also be deleted)
        for old in ("fetch", "items", "entry"):
            assert not (old in names and names & {old + "s", f"renamed_{old[:3]}"}), out


def brute_force_pairs(contents: list[str]) -> list[tuple[int, int, float]]:
    out = []
    for a, b in itertools.combinations(range(len(contents)), 2):
        j = jaccard(contents[a], contents[b])
        if j >= 0.7:
            out.append((a, b, j))
    return out


def test_ground_truth_is_every_pair_over_the_threshold(corpus):
    contents = [d.content for d in corpus]
    truth = nda.ground_truth(contents)
    expected = brute_force_pairs(contents)
    assert [(a, b) for a, b, _ in truth] == [(a, b) for a, b, _ in expected] and truth
    assert all(j == pytest.approx(k) for (_, _, j), (_, _, k) in zip(truth, expected, strict=True))


def test_scores_count_orphaned_removals_and_resolved_pairs():
    ids = ["a", "b", "c", "d"]
    pairs = [(0, 1, 0.8), (1, 2, 0.72), (0, 3, 1.0)]  # a chain a ~ b ~ c, and a = d
    # drop b and c: c's only near-duplicate is gone too
    score = nda.score_removals({"b", "c"}, ids, pairs)
    assert (score["precision"], score["recall"], score["orphaned"]) == (0.5, pytest.approx(2 / 3), 1)
    assert score["recall_by_bucket"] == {"0.70-0.75": 1.0, "0.80-0.85": 1.0, "1.0": 0.0}
    # keep a and c: every removal has a kept partner and every pair lost a side
    score = nda.score_removals({"b", "d"}, ids, pairs)
    assert (score["precision"], score["recall"], score["f1"]) == (1.0, 1.0, 1.0)
