"""Records kept in Arrow give the rows that records read one by one give."""

from __future__ import annotations

import pyarrow as pa

from codemill.ingest.config import DEFAULT_COLUMNS
from codemill.ingest.records import _batch_rows, records_batches
from codemill.ingest.rows import to_batches

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
