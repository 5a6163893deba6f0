"""The driver JVM and Python workers of a local run: the class archive (built once by a real
sample run, mapped by later drivers), the compiler setting, and workers importing the
installed pyspark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from codemill.jvm_classes import archive_options, archive_path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def test_no_archive_no_options(cache):
    assert archive_options({}) == ""


def test_options_name_the_archive_unless_the_classpath_or_the_users_options_differ(cache):
    path = archive_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"archive")
    assert f"-XX:SharedArchiveFile={path}" in archive_options({})
    assert archive_options({"spark.jars.packages": "org.example:lib:1.0"}) == ""
    assert archive_options({"spark.driver.extraClassPath": "/opt/lib/*"}) == ""
    assert archive_options({"spark.driver.extraJavaOptions": "-Xshare:off"}) == ""
    assert f"-XX:SharedArchiveFile={path}" in archive_options({"spark.driver.extraJavaOptions": "-Xss4m"})


def test_an_archive_belongs_to_one_installation_of_the_jars(tmp_path, monkeypatch):
    # the same Spark in two virtualenvs: the JVM maps an archive only for the jar paths
    # and times it was recorded from
    import codemill.jvm_classes as jvm_classes

    first, second = tmp_path / "venv-a" / "jars", tmp_path / "venv-b" / "jars"
    for jars in (first, second):
        jars.mkdir(parents=True)
        (jars / "spark-core.jar").write_bytes(b"classes")
        os.utime(jars / "spark-core.jar", ns=(1_000_000_000, 1_000_000_000))
    keys = []
    for jars in (first, second):
        monkeypatch.setattr(jvm_classes, "_spark_jars", lambda jars=jars: jars)
        keys.append(jvm_classes.archive_key())
    os.utime(second / "spark-core.jar", ns=(2_000_000_000, 2_000_000_000))  # reinstalled
    keys.append(jvm_classes.archive_key())
    assert None not in keys and len(set(keys)) == 3


def test_archives_of_removed_installations_are_pruned(tmp_path):
    from codemill.jvm_classes import prune_archives

    live = tmp_path / "venv" / "jars"
    live.mkdir(parents=True)
    archives = {name: tmp_path / f"spark-classes-{name}.jsa" for name in ("new", "live", "gone", "unowned")}
    for archive in archives.values():
        archive.write_bytes(b"archive")
    (tmp_path / "spark-classes-live.jars").write_text(str(live))
    (tmp_path / "spark-classes-gone.jars").write_text(str(tmp_path / "deleted-venv" / "jars"))
    prune_archives(archives["new"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "spark-classes-live.jars", "spark-classes-live.jsa", "spark-classes-new.jsa"]


def _cli(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codemill.cli", "jvm-archive"], env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.spark
def test_the_archive_is_built_once_and_a_later_driver_maps_it(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    built = _cli(env)
    assert built.returncode == 0, built.stdout + built.stderr
    folder = tmp_path / "codemill" / "jvm"
    archives = sorted(p.name for p in folder.glob("*.jsa"))
    assert len(archives) == 1 and archives[0].startswith("spark-classes-")
    # beside it, the jars folder it was recorded from (what pruning checks)
    assert (folder / archives[0]).with_suffix(".jars").read_text().endswith("/jars")
    again = _cli(env)
    assert again.returncode == 0 and "up to date" in again.stdout
    # -Xshare:on makes a JVM that cannot map the archive refuse to start
    script = ("from codemill.config import SparkConfig\n"
              "from codemill.spark import get_spark\n"
              "spark = get_spark(SparkConfig(master='local[1]', conf={'spark.driver.extraJavaOptions': "
              f"'-Xshare:on -XX:SharedArchiveFile={folder / archives[0]}'}}))\n"
              "print('rows', spark.range(3).count())\n")
    mapped = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert mapped.returncode == 0 and "rows 3" in mapped.stdout, mapped.stdout + mapped.stderr


@pytest.mark.spark
def test_a_driver_starts_without_pandas_and_still_passes_numpy_values_to_the_jvm():
    # PySpark's own check for numpy imported pandas on the first call into the JVM
    script = ("import sys\n"
              "from codemill.config import SparkConfig\n"
              "from codemill.spark import get_spark\n"
              "spark = get_spark(SparkConfig(master='local[1]'))\n"
              "print('rows', spark.range(3).count(), 'pandas', 'pandas' in sys.modules)\n"
              "import numpy as np\n"
              "jvm = spark.sparkContext._jvm\n"
              "print(jvm.java.util.Arrays.toString(np.array([1, 2, 3])), jvm.java.lang.Math.abs(np.int64(-5)))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.split("\n")[:2] == ["rows 3 pandas False", "[1, 2, 3] 5"], run.stdout


def test_the_driver_compiles_with_c1_unless_told_otherwise(cache):
    from codemill.config import SparkConfig
    from codemill.spark import _driver_options

    assert _driver_options(SparkConfig(), {}) == "-XX:TieredStopAtLevel=1"
    assert _driver_options(SparkConfig(driver_jit="full"), {}) == ""
    own = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=4 -Xss4m"}
    assert _driver_options(SparkConfig(), own) == "-XX:TieredStopAtLevel=4 -Xss4m"


def test_zips_of_pyspark_and_py4j_go_last_on_the_workers_path():
    from codemill.spark_daemon import installed_pyspark_first

    path = ["/spark/python/lib/pyspark.zip", "/spark/python/lib/py4j-0.10.9.9-src.zip", "/work",
            "/venv/lib/python3.11/site-packages", "/data/deps.zip"]
    assert installed_pyspark_first(path) == ["/work", "/venv/lib/python3.11/site-packages", "/data/deps.zip",
                                             "/spark/python/lib/pyspark.zip",
                                             "/spark/python/lib/py4j-0.10.9.9-src.zip"]


@pytest.mark.spark
def test_local_python_workers_import_the_installed_pyspark(spark):
    def where(_):
        import pyspark

        yield pyspark.__file__

    files = spark.sparkContext.parallelize(range(2), 2).mapPartitions(where).collect()
    assert files and all(".zip" not in f for f in files), files


@pytest.mark.spark
def test_rdd_and_sql_tasks_fork_from_one_daemon_that_imported_their_modules(spark):
    """Ingest runs RDD tasks and the later stages SQL ones: one warm daemon serves both,
    and its workers find pandas, pyarrow and codemill's task code imported already."""
    import pyarrow as pa

    def parent(_):
        yield os.getppid()

    def parent_batches(batches):
        for _ in batches:
            yield pa.RecordBatch.from_pydict({"pid": [os.getppid()]})

    rdd_parents = set(spark.sparkContext.parallelize(range(2), 2).mapPartitions(parent).collect())
    sql_parents = {r["pid"] for r in spark.range(2).repartition(2).mapInArrow(parent_batches, "pid long").collect()}
    assert len(rdd_parents) == 1 and rdd_parents == sql_parents, (rdd_parents, sql_parents)
    daemon = rdd_parents.pop()
    assert "codemill.spark_daemon" in Path(f"/proc/{daemon}/cmdline").read_text()
    mapped = Path(f"/proc/{daemon}/maps").read_text()
    assert "/pandas/_libs/" in mapped and "/pyarrow/lib." in mapped


def test_an_unwritable_cache_folder_is_one_line_naming_the_setting(tmp_path):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file")
    failed = _cli({**os.environ, "XDG_CACHE_HOME": str(not_a_folder)})
    assert failed.returncode == 1
    assert "cannot write the JVM class archive" in failed.stderr and "XDG_CACHE_HOME" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_column_expressions_and_selects_make_few_round_trips_to_the_jvm(spark, monkeypatch):
    """No call-site recording per function call, and no bare class name looked up again
    (each such lookup searches every jar on Spark's class path)."""
    from pyspark.sql import functions as F

    client = spark.sparkContext._gateway._gateway_client
    sent: list[str] = []
    send = client.send_command

    def counted(command: str, *args, **kwargs):
        sent.append(command)
        return send(command, *args, **kwargs)

    df = spark.range(3)
    F.col("id")  # PySpark reads the debugging setting on its first call
    monkeypatch.setattr(client, "send_command", counted)
    F.col("id")
    assert len(sent) <= 4, sent
    sent.clear()
    df.select("id").where(F.col("id") > 1)
    assert not [c for c in sent if c.startswith("r\nu\n") and "." not in c.split("\n")[2]], sent


@pytest.mark.parametrize(("mode", "documents", "compiled"), [
    ("auto", 10, False), ("auto", 50_000, True), ("auto", None, True), ("on", 10, True), ("off", 10**9, False)])
def test_queries_are_compiled_by_the_size_of_the_stage_input(spark, mode, documents, compiled):
    from codemill.config import SparkConfig
    from codemill.spark import set_codegen

    session = spark.newSession()  # its own SQL settings
    set_codegen(session, SparkConfig(codegen=mode), documents)
    assert session.conf.get("spark.sql.codegen.wholeStage") == str(compiled).lower()
    assert session.conf.get("spark.sql.codegen.factoryMode") == ("FALLBACK" if compiled else "NO_CODEGEN")


def test_the_users_own_codegen_setting_stands(spark):
    from codemill.config import SparkConfig
    from codemill.spark import set_codegen

    session = spark.newSession()
    session.conf.set("spark.sql.codegen.wholeStage", "true")
    set_codegen(session, SparkConfig(conf={"spark.sql.codegen.wholeStage": "true"}), 10)
    assert session.conf.get("spark.sql.codegen.wholeStage") == "true"
