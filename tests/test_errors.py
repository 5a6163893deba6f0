"""Failures become one line that names the cause: Spark's wrapped exceptions are dug out."""

from __future__ import annotations

import errno

import pytest
from pyspark.errors import PythonException

from codemill.errors import DISK_HINT, MEMORY_HINT, ConfigError, InputError, diagnose


def test_an_executor_exception_is_its_last_python_line(spark):
    def fail(batches):  # defined here: executors cannot import test modules
        for batch in batches:
            if batch.num_rows:
                raise ZeroDivisionError("the executor's own message")
            yield batch

    df = spark.range(4).mapInArrow(fail, "id long")
    with pytest.raises(PythonException) as info:
        df.collect()
    assert "Traceback" in str(info.value)  # what Spark gives: a stack
    assert diagnose(info.value).cause == "ZeroDivisionError: the executor's own message"


def test_an_input_error_raised_on_an_executor_keeps_its_file_and_line(spark):
    def fail(batches):
        for _ in batches:
            raise InputError("/data/a.jsonl:7: malformed JSONL record: expected a JSON object")
        yield from ()

    df = spark.range(2).mapInArrow(fail, "id long")
    with pytest.raises(PythonException) as info:
        df.collect()
    assert diagnose(info.value).line("ingest") == \
        "ingest failed: /data/a.jsonl:7: malformed JSONL record: expected a JSON object"


def test_a_jvm_error_is_its_class_and_message(spark):
    with pytest.raises(Exception) as info:  # PySpark turns some Py4JJavaErrors into its own
        spark.sparkContext._jvm.java.lang.Integer.parseInt("seven")
    assert diagnose(info.value).cause == 'NumberFormatException: For input string: "seven"'


def test_out_of_memory_and_full_disk_come_with_a_hint():
    oom = RuntimeError("An error occurred while calling o2344.collectToPython.\n"
                       ": java.lang.OutOfMemoryError: Java heap space\n\tat java.base/...")
    assert diagnose(oom).cause == "out of memory (Java heap space)"
    assert diagnose(oom).hint == MEMORY_HINT
    full = OSError(errno.ENOSPC, "No space left on device", "/out/ingest/x.parquet")
    assert diagnose(full).line("ingest") == "ingest failed: no space left on device (/out/ingest/x.parquet)"
    assert diagnose(full).hint == DISK_HINT
    java_full = RuntimeError("java.io.IOException: No space left on device\n\tat java.io...")
    assert diagnose(java_full, writing="/out/ingest/abc").where == "writing /out/ingest/abc"


def test_codemill_errors_are_their_message():
    assert diagnose(ConfigError("spark.master: bad")).line("run") == "run failed: spark.master: bad"


def test_spark_stopped_by_an_out_of_memory_error_names_it(tmp_path):
    """An executor thread that runs out of heap stops the JVM's Spark; the job fails with
    "SparkContext was shut down" and only the JVM's log says why."""
    stopped = RuntimeError("SparkException: Job 166 cancelled because SparkContext was shut down")
    log = tmp_path / "jvm.log"
    log.write_text("WARN BlockManager: Putting block rdd_584_0 failed\n"
                   "Caused by: java.lang.OutOfMemoryError: Java heap space\n\tat org.apache.parquet.bytes\n")
    diagnosis = diagnose(stopped, jvm_log=log)
    assert (diagnosis.cause, diagnosis.hint) == ("out of memory (Java heap space)", MEMORY_HINT)
    log.write_text("INFO nothing to see\n")
    assert diagnose(stopped, jvm_log=log).cause.endswith("cancelled because SparkContext was shut down")
