"""Records kept in Arrow give the rows that records read one by one give; so do JSONL
blocks read by pyarrow."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest

from codemill.ingest.config import DEFAULT_COLUMNS
from codemill.ingest.records import _batch_rows, jsonl_blocks_batches, jsonl_rows, plain_records, records_batches
from codemill.ingest.rows import to_batches
from codemill.ingest.splits import numbered_blocks, numbered_lines

from support import STDLIB

TEXTS = ["def f():\n    return 1\n", "", "   \n\t", "\u3000\u2003\n", " " * 100 + "\u00a0x", "\x1c\x1f ",
         None, "print('caf\u00e9')\n", "just words", " " * 70 + "\n\u0085", "y = 2\n"]
PATHS = ["a.py", "b.py", "c.py", "d.py", "e.py", "f.py", "g.py", "h.py", "notes", None, ""]


REPOS = ["r/one", "", None, "r/two", None, None, "r/one", None, None, None, "r/three"]
LICENSES = [["MIT"], [], None, ["MIT", "Apache-2.0"], ["BSD"], None, [], ["MIT"], None, None, ["X"]]
STARS = [1, None, 3, 0, 5, 6, None, 8, 9, 10, 11]


def _both(batch: pa.RecordBatch, default_name: str | None = "f.parquet") -> tuple[pa.Table, pa.Table]:
    by_rows = pa.Table.from_batches(list(to_batches(
        _batch_rows(batch, 5, "/d/f.parquet", default_name, dict(DEFAULT_COLUMNS), "s"))))
    by_arrow = pa.Table.from_batches(list(records_batches(
        batch, 5, "/d/f.parquet", default_name, dict(DEFAULT_COLUMNS), "s")))
    return by_rows, by_arrow


def test_arrow_records_equal_row_by_row_records():
    for content_type in (pa.string(), pa.large_string()):
        batch = pa.record_batch({"content": pa.array(TEXTS, content_type), "path": PATHS,
                                 "lang": [None] * 10 + ["Python"]})
        by_rows, by_arrow = _both(batch)
        assert by_arrow.to_pylist() == by_rows.to_pylist()
        reasons = by_arrow.column("reason").to_pylist()
        assert reasons[1:4] == ["empty"] * 3 and reasons[6] == "missing_content" and reasons[8] == "unknown_language"
        assert reasons[0] is None and reasons[4] is None and by_arrow.column("path").to_pylist()[9] == "f.parquet:14"


def test_a_slice_of_records_gives_the_rows_of_its_records():
    # a slice starts inside its buffers: dropped texts are nulled by a bitmap that must
    # line up with the slice's offset (parquet_to_rows passes such slices)
    batch = pa.record_batch({"content": TEXTS, "path": PATHS, "lang": [None] * 10 + ["Python"]})
    for start in (1, 3, 9):
        by_rows, by_arrow = _both(batch.slice(start))
        assert by_arrow.to_pylist() == by_rows.to_pylist()
        by_arrow.validate(full=True)


def test_every_field_of_plain_or_other_types_gives_the_rows_of_one_record_at_a_time():
    plain = {"content": TEXTS, "path": PATHS, "lang": [None] * 10 + ["Python"], "repo_name": REPOS,
             "license": LICENSES, "stars": STARS}
    variants = [
        plain,
        {**plain, "license": [",".join(v) if v else None for v in LICENSES]},  # text licenses
        {**plain, "license": pa.array([["MIT", None]] + LICENSES[1:], pa.list_(pa.string()))},  # null inside
        {**plain, "stars": [float(v) if v is not None else None for v in STARS]},  # not whole-number typed
        {**plain, "path": [None] * len(TEXTS)},  # no paths at all: the default names
        {"content": TEXTS},  # only content
    ]
    for columns in variants:
        for default_name in ("f.parquet", None):
            by_rows, by_arrow = _both(pa.record_batch(columns), default_name)
            assert by_arrow.to_pylist() == by_rows.to_pylist(), (columns.keys(), default_name)


def _jsonl_lines() -> list[bytes]:
    """Plain records of real stdlib code (ASCII-escaped and raw UTF-8, escaped surrogate
    pairs, null, missing and blank content, no path, unknown language, every license
    form) and, between them, every line the line-by-line reader must judge itself."""
    files = sorted((STDLIB / "json").glob("*.py")) + sorted((STDLIB / "email").glob("*.py"))
    plain = [{"content": f.read_text(), "path": f"lib/{f.name}", "repo_name": "cpython", "license": ["PSF-2.0"],
              "stars": i} for i, f in enumerate(files)]
    plain += [{"content": "x = 'caf\u00e9 \U0001f600'\n", "path": "u.py"}, {"content": None, "path": "n.py"},
              {"path": "missing.py"}, {"content": " \n"}, {"content": "text", "path": "notes.xyz"},
              {"content": "y = 1\n", "license": "MIT", "lang": "Python"},
              {"content": "z\n", "path": "2020-01-01 00:00:00"}]
    good = ([json.dumps(r).encode() for r in plain[:-4]]
            + [json.dumps(r, ensure_ascii=False).encode() for r in plain[-4:]])
    odd = [b"", b"   ", b"{not json", b"[1, 2]", b'{"content": "caf\xe9"}', b'{"content": "a"} {"content": "b"}',
           b'{"content": "a", "content": "b", "path": "d.py"}', b'{"content": "a\\ud800", "path": "s.py"}',
           b'{"content": 5, "path": "n.py"}', b'{"content": "x", "path": 7}', b'{"content": "x", "stars": 1.5}',
           b'{"content": "a"}\r{"content": "b"}', b'{"content": "x", "path": "p.py", "stars": NaN}']
    lines = []
    for i, line in enumerate(good):
        lines.append(line + (b"\r\n" if i % 7 == 3 else b"\n"))
        if i % 3 == 2 and odd:
            lines.append(odd.pop() + b"\n")
    return lines + [line + b"\n" for line in odd] + [good[0]]  # the last line without a newline


@pytest.mark.parametrize("block", [1, 3000, 40_000, 1 << 30])
def test_jsonl_blocks_read_by_pyarrow_give_the_rows_read_line_by_line(tmp_path, block):
    data = b"".join(_jsonl_lines())
    path = str(tmp_path / "mixed.jsonl")
    args = (path, dict(DEFAULT_COLUMNS), "s", "replace", "quarantine")
    by_line = pa.Table.from_batches(list(to_batches(jsonl_rows(numbered_lines(io.BytesIO(data)), *args))))
    blocks = list(numbered_blocks(io.BytesIO(data), size=block))
    by_block = pa.Table.from_batches(list(jsonl_blocks_batches(iter(blocks), *args)), schema=by_line.schema)
    assert by_block.to_pylist() == by_line.to_pylist()
    assert {"malformed_jsonl", "missing_content", "empty", "unknown_language"} <= set(by_line["reason"].to_pylist())
    fast = [plain_records(b, dict(DEFAULT_COLUMNS)) is not None for _, b in blocks]
    assert any(fast) and (block == 1 << 30 or not all(fast))  # both readers took part


def test_pyarrow_reads_a_block_only_when_every_line_is_one_plain_record():
    columns = dict(DEFAULT_COLUMNS)
    assert plain_records(b'{"content": "a", "path": "a.py"}\n{"content": null}\n', columns).num_rows == 2
    for block in (b'{"content": "a"}\n\n', b'{"content": "a"}\n {"content": "b"}\n',
                  b'{"content": "a"} {"content": "b"}',
                  b'{"content": "a", "content": "b"}', b'{"content": "\xff"}', b'{"content": "\\udc00"}',
                  b'{"content": ["a"]}', b'{"content": "a", "path": 1}', b'{"content": "a", "stars": true}',
                  b'{"content": "a"}\r{"content": "b"}\n', b'[{"content": "a"}]'):
        assert plain_records(block, columns) is None, block
