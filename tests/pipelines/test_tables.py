"""What written document and dropped tables hold, counted by the driver and by Spark."""

from __future__ import annotations

from pyspark.sql import functions as F

from codemill.pipelines import tables
from codemill.pipelines.tables import (
    local_table_counts,
    read_documents,
    read_dropped,
    table_counts,
    write_table,
)
from codemill.schema import DOC_COLUMNS, DOC_SCHEMA, dropped_rows
from codemill.storage.folder import Folder


def _write_tables(spark, work: Folder) -> None:
    rows = [(f"id{i}", "src", None, f"f{i}.py", "python", "code", None, None, "x" * i, i, None, None, False)
            for i in range(1, 40)]
    docs = spark.createDataFrame(rows, DOC_SCHEMA).repartition(3)
    size = F.col("size_bytes")
    reason = F.when(size % 3 == 0, "too_long").when(size % 5 == 0, "empty").when(size == 7, F.lit(None))
    flagged = docs.withColumn("why", reason)
    write_table(flagged.where(size % 2 == 0).select(*DOC_COLUMNS), work.join("docs"))
    write_table(dropped_rows(flagged.where(size % 2 == 1), "filters", F.col("why")), work.join("dropped"))


def test_the_driver_counts_local_tables_as_the_spark_job_does(spark, tmp_path):
    work = Folder(str(tmp_path))
    _write_tables(spark, work)
    expected = table_counts(read_documents(spark, work.join("docs")), read_dropped(spark, work.join("dropped")))
    assert expected[None][0] > 0 and expected["too_long"][0] > 0 and expected["empty"][0] > 0
    assert local_table_counts(work.sub("docs"), work.sub("dropped")) == expected


def test_tables_too_large_for_the_driver_are_left_to_spark(spark, tmp_path, monkeypatch):
    work = Folder(str(tmp_path))
    _write_tables(spark, work)
    monkeypatch.setattr(tables, "LOCAL_COUNT_ROWS", 38)  # the tables hold 39 rows
    assert local_table_counts(work.sub("docs"), work.sub("dropped")) is None
