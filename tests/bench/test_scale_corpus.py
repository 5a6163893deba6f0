"""The scale benchmark's corpus generator: same seed, same bytes; planted exact and near
copies where the plan says; distinct originals; records that ingest reads as kept rows
of every kind the mixes need. Small corpora, no Spark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from benchmarks import scale_corpus as sc
from codemill.dedup.shingles import shingles
from codemill.ingest.config import DEFAULT_COLUMNS
from codemill.ingest.languages import kind_of, normalise_lang
from codemill.ingest.records import read_jsonl

SMALL = sc.CorpusSpec(docs=1200, files=3, pool_bytes=2 << 20)


@pytest.fixture(scope="module")
def pools() -> dict[str, sc.Pool]:
    return sc.load_pools(SMALL.pool_bytes)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / sc.DATA).glob("*.jsonl"))}


def _jaccard(a: str, b: str) -> float:
    x, y = set(shingles(a)), set(shingles(b))
    return len(x & y) / len(x | y)


def test_same_seed_same_bytes_in_any_number_of_processes(tmp_path, pools):
    one = sc.write_corpus(SMALL, tmp_path / "a", processes=1, pools=pools)
    two = sc.write_corpus(SMALL, tmp_path / "b", processes=2, pools=pools)
    assert _files(one) == _files(two) and len(_files(one)) == SMALL.files
    assert (one / sc.MANIFEST).read_text() == (two / sc.MANIFEST).read_text()
    other = sc.write_corpus(sc.CorpusSpec(**{**SMALL.__dict__, "seed": 1}), tmp_path / "c", pools=pools)
    assert _files(other) != _files(one)


def test_a_written_corpus_is_reused(tmp_path, pools):
    folder = sc.write_corpus(SMALL, tmp_path, pools=pools)
    (folder / sc.DATA / "part-000.jsonl").write_text("")
    assert sc.write_corpus(SMALL, tmp_path) == folder  # no pools needed, nothing rewritten
    assert (folder / sc.DATA / "part-000.jsonl").read_text() == ""


def test_planted_copies(pools):
    p = sc.plan(SMALL)
    exact = np.flatnonzero(p.role == sc.EXACT_COPY)
    near = np.flatnonzero(p.role == sc.NEAR_COPY)
    assert 0.03 < len(exact) / SMALL.docs < 0.07 and 0.03 < len(near) / SMALL.docs < 0.07
    for i in exact:
        j = int(p.source[i])
        assert p.role[j] == sc.ORIGINAL
        assert sc.content(i, p, pools) == sc.content(j, p, pools)
        assert sc.path_of(i, p) == sc.path_of(j, p)
    scores = []
    for i in near:
        copy, original = sc.content(i, p, pools), sc.content(int(p.source[i]), p, pools)
        assert copy != original
        scores.append(_jaccard(copy, original))
    assert np.mean(np.array(scores) >= 0.7) >= 0.9  # near dedup's threshold


def test_originals_are_distinct_documents(pools):
    p = sc.plan(SMALL)
    originals = [sc.content(i, p, pools) for i in np.flatnonzero(p.role == sc.ORIGINAL)]
    assert len(set(originals)) == len(originals)


def test_sizes_follow_the_stack(pools):
    p = sc.plan(sc.CorpusSpec(docs=200_000))
    assert 1_700 < np.median(p.size) < 2_300
    assert p.size.max() <= 1_000_000 and (p.size > 100_000).sum() > 100
    texts = [sc.content(i, sc.plan(SMALL), pools) for i in range(300)]
    assert 1_000 < np.median([len(t.encode()) for t in texts]) < 3_500


def test_ingest_keeps_every_record_and_the_mixes_find_every_kind(tmp_path, pools):
    folder = sc.write_corpus(SMALL, tmp_path, pools=pools)
    path = folder / sc.DATA / "part-000.jsonl"
    rows = pa.Table.from_batches(list(read_jsonl(str(path), DEFAULT_COLUMNS, "stack", "replace", "error")))
    assert rows.num_rows == len(path.read_text().splitlines())
    assert rows.column("reason").null_count == rows.num_rows
    records = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = {kind_of(normalise_lang(r["lang"])) for r in records}
    assert kinds == {"code", "nl_code", "nl"}
    assert {"python", "c"} <= {normalise_lang(r["lang"]) for r in records}
    assert set(records[0]) == {"content", "path", "lang", "repo_name", "license", "stars"}
