"""What one Spark task holds of large documents is bounded by bytes, whatever the row
count: Arrow batches sent to Python workers, and the row groups of written tables
(each buffered whole when written and when read)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from codemill.pipelines.tables import write_table

MB = 1 << 20


def test_arrow_batches_to_python_are_cut_by_bytes(spark):
    docs = spark.range(80).selectExpr("id", "repeat('x', 1048576) AS content").coalesce(1)

    def sizes(batches):
        for batch in batches:
            yield pa.RecordBatch.from_pylist([{"rows": batch.num_rows, "bytes": batch.nbytes}])

    seen = docs.mapInArrow(sizes, "rows long, bytes long").collect()
    assert sum(r["rows"] for r in seen) == 80 and len(seen) >= 4
    assert max(r["bytes"] for r in seen) <= 17 * MB  # 16 MB, overshot by at most one row


def test_written_tables_have_row_groups_of_tens_of_megabytes(spark, tmp_path):
    # 80 MB of hex digests: next to incompressible, like a corpus of large files
    digests = "transform(sequence(1, 64), i -> sha2(concat(id, '-', i), 256))"
    docs = spark.range(20_000).selectExpr("cast(id AS string) AS id", f"concat_ws('', {digests}) AS content")
    write_table(docs, str(tmp_path / "t"))
    groups = [sum(meta.row_group(g).column(c).total_compressed_size for c in range(meta.num_columns))
              for meta in (pq.ParquetFile(p).metadata for p in (tmp_path / "t").glob("part-*.parquet"))
              for g in range(meta.num_row_groups)]
    assert len(groups) >= 3 and max(groups) <= 24 * MB  # 16 MB, overshot by the last check's rows
