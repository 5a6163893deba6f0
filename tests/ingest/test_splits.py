"""Record files read in pieces: JSONL byte ranges aligned to lines, gzip files one task
each, Parquet by row groups. Split reading must give what reading each file whole gives."""

from __future__ import annotations

import gzip
import io
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.errors import PythonException

from codemill.errors import InputError, explain
from codemill.ingest.config import DEFAULT_COLUMNS, IngestConfig, SourceConfig
from codemill.ingest.records import read_jsonl, read_jsonl_pieces
from codemill.ingest.splits import (
    count_newlines,
    file_pieces,
    numbered_blocks,
    plan_jsonl,
    range_blocks,
    split_size,
    with_line_offsets,
)
from codemill.ingest.stage import _jsonl_readers, _remote_parquet_rows, _task_per_reader, ingest

from support import STDLIB


def _records(n: int) -> list[dict]:
    files = sorted((STDLIB / "json").glob("*.py")) + sorted((STDLIB / "email").glob("*.py"))
    return [{"content": f.read_text(), "path": f"{f.parent.name}/{f.name}", "lang": "Python", "repo_name": "cpython",
             "license": ["PSF-2.0"], "stars": i} for i, f in enumerate(files[:n])]


@pytest.fixture
def messy_jsonl(tmp_path):
    """Every kind of line: long records straddling any small range, blank and
    whitespace-only lines, CRLF endings, malformed JSON, non-objects, invalid UTF-8,
    records without a path, and a last line without a newline."""
    good = [json.dumps(r).encode() for r in _records(12)]
    lines = [
        good[0] + b"\n", b"\n", good[1] + b"\r\n", b"   \n", b"{not json\n", good[2] + b"\n",
        b"[1, 2]\n", b'{"content": "caf\xe9 = 1\\n", "path": "latin.py"}\n',
        json.dumps({"content": "x = 1\n"}).encode() + b"\n", b"\r\n", b"\n",
        *(g + b"\n" for g in good[3:11]), b'{"content": 5, "path": "n.py"}\n', good[11],
    ]
    path = tmp_path / "messy.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def _pieces(path, split):
    pieces = file_pieces(str(path), path.stat().st_size, split)
    counts = {(p.path, p.start): count_newlines(p.path, p.start, p.end) for p in pieces if p.end is not None}
    return with_line_offsets(pieces, counts)


@pytest.mark.parametrize("block", [1, 10, 1 << 20])
@pytest.mark.parametrize("split", [1, 7, 64, 1000, 10**9])
def test_ranges_read_every_line_once_with_its_true_number(messy_jsonl, split, block):
    pieces = _pieces(messy_jsonl, split)
    assert len(pieces) == (1 if split == 10**9 else -(-messy_jsonl.stat().st_size // split))
    blocks = [b for piece in pieces for b in range_blocks(piece, block)]
    assert all(data.tobytes().endswith(b"\n") for _, data in blocks[:-1])  # whole lines only
    read = [line for first, data in blocks
            for line in enumerate(re.findall(rb"[^\n]*\n|[^\n]+$", data.tobytes()), first)]
    with open(messy_jsonl, "rb") as f:
        assert read == list(enumerate(f, start=1))


@pytest.mark.parametrize("split", [1, 50, 333, 4096])
def test_split_rows_equal_whole_file_rows(messy_jsonl, split):
    args = (DEFAULT_COLUMNS, "s", "replace", "quarantine")
    whole = pa.Table.from_batches(read_jsonl(str(messy_jsonl), *args))
    parts = [b for piece in _pieces(messy_jsonl, split) for b in read_jsonl_pieces([piece], *args)]
    assert pa.Table.from_batches(parts, schema=whole.schema).equals(whole)
    reasons = dict(zip(whole.column("path").to_pylist(), whole.column("reason").to_pylist()))
    assert reasons["messy.jsonl:5"] == reasons["messy.jsonl:7"] == reasons["messy.jsonl:20"] == "malformed_jsonl"
    assert reasons["messy.jsonl:9"] == "unknown_language"  # no path, no extension: named by its line
    assert whole.num_rows == 17  # 21 lines, 4 of them blank


@pytest.mark.parametrize("split", [1, 64, 10**9])
def test_error_names_the_true_line_in_any_range(messy_jsonl, split):
    args = (DEFAULT_COLUMNS, "s", "replace", "error")
    errors = []
    for piece in _pieces(messy_jsonl, split):
        try:
            list(read_jsonl_pieces([piece], *args))
        except InputError as exc:
            errors.append(str(exc).split(": malformed")[0])
    expected = [f"{messy_jsonl}:{n}" for n in (5, 7, 20)]
    assert errors == (expected if split < 10**9 else expected[:1])


def test_invalid_utf8_drop_policy_in_ranges(messy_jsonl):
    args = (DEFAULT_COLUMNS, "s", "drop", "quarantine")
    whole = pa.Table.from_batches(read_jsonl(str(messy_jsonl), *args))
    parts = [b for piece in _pieces(messy_jsonl, 40) for b in read_jsonl_pieces([piece], *args)]
    assert pa.Table.from_batches(parts, schema=whole.schema).equals(whole)
    assert "invalid_utf8" in whole.column("reason").to_pylist()


def test_split_size_keeps_every_core_busy_within_bounds():
    assert split_size(10 << 30, 32 << 20, 8) == 32 << 20
    assert split_size(8 << 20, 32 << 20, 2) == 4 << 20  # small input: a share per core
    assert split_size(100, 32 << 20, 2) == 1 << 20  # tiny input: no tiny splits
    assert split_size(10_000, 64, 2) == 64  # an explicit small split holds


def test_small_files_are_packed_and_big_ones_cut(tmp_path):
    files = [(f"/d/{i}.jsonl", 10) for i in range(10)] + [("/d/big.jsonl", 95), ("/d/z.jsonl.gz", 500)]
    tasks = plan_jsonl(files, 40)
    assert [len(t) for t in tasks[:3]] == [4, 4, 2]  # 40 bytes of small files per task
    big = [p for t in tasks for p in t if p.path == "/d/big.jsonl"]
    assert [(p.start, p.end) for p in big] == [(0, 40), (40, 80), (80, None)]
    assert [p for t in tasks for p in t if p.path.endswith(".gz")] == [file_pieces("/d/z.jsonl.gz", 500, 40)[0]]


def _rows(out):
    kept = {r["path"]: r.asDict() for r in out.kept.collect()}
    dropped = {r["path"]: r.asDict() for r in out.dropped.collect()}
    return kept, dropped


def test_spark_split_read_equals_whole_file_read(spark, messy_jsonl):
    src = SourceConfig(name="s", type="jsonl", path=str(messy_jsonl))
    whole = _rows(ingest(spark, [src], IngestConfig(malformed_jsonl="quarantine")))
    split = _rows(ingest(spark, [src], IngestConfig(malformed_jsonl="quarantine", split_bytes=100)))
    spark.catalog.clearCache()
    assert split == whole
    assert len(whole[0]) == 13 and whole[1]["messy.jsonl:20"]["detail"].startswith(f"{messy_jsonl}:20: ")


def test_spark_split_read_error_names_file_and_line(spark, messy_jsonl):
    src = SourceConfig(name="s", type="jsonl", path=str(messy_jsonl))
    with pytest.raises(PythonException) as info:
        ingest(spark, [src], IngestConfig(split_bytes=100)).kept.collect()
    assert f"{messy_jsonl}:" in explain(info.value)
    assert any(f"{messy_jsonl}:{n}: malformed JSONL record" in explain(info.value) for n in (5, 7, 20))


def test_many_gzip_files_become_many_tasks(spark, tmp_path):
    records = _records(12)
    for i in range(6):
        with gzip.open(tmp_path / f"part-{i}.jsonl.gz", "wt") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records[2 * i:2 * i + 2]))
    src = SourceConfig(name="gz", type="jsonl", path=str(tmp_path))
    rows = _task_per_reader(spark, _jsonl_readers(spark, src, DEFAULT_COLUMNS, IngestConfig(split_bytes=1)))
    assert rows.rdd.getNumPartitions() == 6
    assert sorted(r["path"] for r in rows.collect()) == sorted(r["path"] for r in records)


def test_parquet_row_groups_read_like_spark_reads_them(spark, tmp_path):
    records = _records(12) + [{"content": None, "path": "gone.py"}, {"content": "y = 2\n", "lang": "python"}]
    for i in range(2):
        pq.write_table(pa.Table.from_pylist(records[i * 7:i * 7 + 7]), tmp_path / f"part-{i}.parquet",
                       row_group_size=2)
    (tmp_path / "_SUCCESS").write_text("")
    src = SourceConfig(name="pq", type="parquet", path=str(tmp_path))
    kept, dropped = _rows(ingest(spark, [src], IngestConfig(split_bytes=1)))
    spark.catalog.clearCache()
    assert len(kept) == 13 and "part-1.parquet:6" in kept  # a record without a path: file:row
    assert dropped["gone.py"]["detail"] == f"{tmp_path / 'part-1.parquet'}:5"
    by_spark = _remote_parquet_rows(spark, src, {**DEFAULT_COLUMNS}).where("reason is null").collect()
    assert {r["id"] for r in by_spark} == {r["id"] for r in kept.values()}


@pytest.mark.parametrize("rewind", [False, True])
@pytest.mark.parametrize("size", [1, 5, 64, 1 << 20])
def test_blocks_hold_whole_lines_and_number_them_whether_the_stream_rewinds_or_not(messy_jsonl, size, rewind):
    data = messy_jsonl.read_bytes()
    blocks = [(n, b.tobytes()) for n, b in numbered_blocks(io.BytesIO(data), size=size, rewind=rewind)]
    assert b"".join(b for _, b in blocks) == data
    assert all(b.endswith(b"\n") for _, b in blocks[:-1])
    assert [n for n, _ in blocks] == [1 + sum(b.count(b"\n") for _, b in blocks[:i]) for i in range(len(blocks))]
