"""The one place a SparkSession is made.

`local[*]` by default; any master URL (`spark://…`, `yarn`, `k8s://…`) and
any Spark setting come from the run config.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from pyspark.sql import SparkSession

from codemill.config import DEFAULT_SPARK_CONF, SparkConfig


class JavaMissingError(RuntimeError):
    pass


def require_java() -> None:
    """Fail at once, with the fix, when no Java runtime is reachable."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return
    if shutil.which("java"):
        return
    raise JavaMissingError(
        "Spark needs a Java runtime (17 or newer) and none was found on PATH "
        "or in JAVA_HOME. Install one, e.g. `sudo apt-get install "
        "openjdk-17-jre-headless` (Debian/Ubuntu), `brew install openjdk@17` "
        "(macOS), or set JAVA_HOME to an existing JDK."
    )


def _package_zip() -> str:
    """Zip the codemill package so executors without it installed can import it."""
    root = Path(__file__).resolve().parent
    out = Path(tempfile.mkdtemp(prefix="codemill-pyfiles-")) / "codemill.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*.py")):
            zf.write(path, path.relative_to(root.parent).as_posix())
    return str(out)


def ship_file(spark: SparkSession, path: str | os.PathLike) -> Path:
    """Send a file to every executor under a content-addressed name and return a local
    copy with that name. Executors find it with `SparkFiles.get(copy.name)`; Spark
    refuses a second file of the same name with other contents, which a fixed name
    (tokenizer.model) would hit when one session serves several runs."""
    from codemill.storage.local import atomic_path, file_sha256

    source = Path(path)
    copy = Path(tempfile.gettempdir()) / "codemill-shipped" / f"{file_sha256(source)[:16]}-{source.name}"
    if not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(copy) as tmp:
            shutil.copyfile(source, tmp)
    spark.sparkContext.addFile(str(copy))
    return copy


def get_spark(cfg: SparkConfig) -> SparkSession:
    """Return the process's SparkSession, creating it from `cfg` if needed."""
    require_java()
    # Executors must run the interpreter the driver runs (the project venv),
    # unless the config says otherwise (e.g. a packed venv shipped with --archives).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(cfg.master)
        .appName(cfg.app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "true")
    )
    for key, value in {**DEFAULT_SPARK_CONF, **cfg.conf}.items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    if cfg.ship_package:
        spark.sparkContext.addPyFile(_package_zip())
    return spark
