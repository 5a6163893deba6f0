"""Exact dedup on a real local SparkSession."""

from __future__ import annotations

import hashlib

from codemill.dedup.config import ExactDedupConfig
from codemill.dedup.exact import exact_dedup
from codemill.schema import DOC_SCHEMA


def doc(doc_id, content, license=None, stars=None):
    return {
        "id": doc_id, "source": "s", "repo": "r", "path": f"{doc_id}.py", "lang": "python",
        "kind": "code", "kind_source": "extension", "license": license, "content": content,
        "size_bytes": len(content.encode()), "stars": stars, "invalid_utf8": False,
        "sha256": hashlib.sha256(content.encode()).hexdigest(),
    }


def dedup(spark, rows, **cfg):
    df = spark.createDataFrame([tuple(r[f.name] for f in DOC_SCHEMA.fields) for r in rows], DOC_SCHEMA)
    out = exact_dedup(spark, df, ExactDedupConfig(**cfg))
    kept = sorted(r["id"] for r in out.kept.collect())
    dropped = {r["id"]: (r["reason"], r["duplicate_of"]) for r in out.dropped.collect()}
    return kept, dropped


def test_keep_rule_permissive_license_then_stars_then_id(spark):
    code = "def f(x):\n    return x + 1\n"
    rows = [
        doc("a", code, license=None, stars=1000),
        doc("b", code, license="GPL-3.0", stars=500),
        doc("c", code, license="GPL-3.0,MIT", stars=1),   # any permissive entry counts
        doc("d", code, license="Apache-2.0", stars=1),    # ties with c on license and stars
        doc("e", "print('other')\n"),
    ]
    kept, dropped = dedup(spark, rows)
    assert kept == ["c", "e"]
    assert dropped == {k: ("exact_duplicate", "c") for k in ("a", "b", "d")}


def test_stars_break_license_ties(spark):
    code = "x = 1\n"
    kept, dropped = dedup(spark, [doc("a", code, "MIT", 1), doc("b", code, "MIT", 9), doc("c", code, "MIT")])
    assert kept == ["b"] and set(dropped) == {"a", "c"}


def test_whitespace_normalised_mode(spark):
    rows = [doc("a", "def f():\n    return 1\n"), doc("b", "def f():\n\treturn 1   \n\n")]
    assert dedup(spark, rows)[0] == ["a", "b"]
    kept, dropped = dedup(spark, rows, normalize_whitespace=True)
    assert kept == ["a"] and dropped == {"b": ("exact_duplicate_whitespace", "a")}


def test_result_does_not_depend_on_partitioning(spark):
    rows = [doc(f"{i:03d}", f"v = {i % 7}\n", stars=i % 3) for i in range(60)]
    df = spark.createDataFrame([tuple(r[f.name] for f in DOC_SCHEMA.fields) for r in rows], DOC_SCHEMA)
    results = []
    for parts in (1, 5):
        out = exact_dedup(spark, df.repartition(parts), ExactDedupConfig())
        results.append(sorted((r["id"], r["duplicate_of"]) for r in out.dropped.collect()))
    assert results[0] == results[1] and len(results[0]) == 53
