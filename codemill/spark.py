"""The one place a SparkSession is made.

`local[*]` by default; any master URL (`spark://…`, `yarn`, `k8s://…`) and
any Spark setting come from the run config.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import sys
import tempfile
import zipfile
from pathlib import Path

import py4j.protocol
from py4j.java_gateway import JVMView
from pyspark.sql import SparkSession
from pyspark.sql.types import NumpyArrayConverter, NumpyScalarConverter

from codemill.config import DEFAULT_SPARK_CONF, SparkConfig
from codemill.jvm_classes import archive_options


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


def _package_zip(folder: Path) -> str:
    """Zip the codemill package so executors without it installed can import it: once
    per driver, into its shipped-file folder."""
    from codemill.storage.local import atomic_path

    root = Path(__file__).resolve().parent
    out = folder / "codemill.zip"
    if not out.exists():
        with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(root.rglob("*.py")):
                zf.write(path, path.relative_to(root.parent).as_posix())
    return str(out)


def ship_file(spark: SparkSession, path: str | os.PathLike) -> Path:
    """Send a file to every executor under a content-addressed name and return a local
    copy with that name, in the driver's folder (`shipped_folder`). Executors find it
    with `SparkFiles.get(copy.name)`; Spark refuses a second file of the same name with
    other contents, which a fixed name (tokenizer.model) would hit when one session
    serves several runs."""
    from codemill.storage.local import atomic_path, file_sha256

    source = Path(path)
    copy = shipped_folder(spark) / f"{file_sha256(source)[:16]}-{source.name}"
    if not copy.exists():
        with atomic_path(copy) as tmp:
            shutil.copyfile(source, tmp)
    added = (spark.sparkContext.applicationId, str(copy))
    if added not in _ADDED:  # Spark warns on a second addFile of one path
        spark.sparkContext.addFile(str(copy))
        _ADDED.add(added)
    return copy


def shipped_root() -> Path:
    return Path(tempfile.gettempdir()) / "codemill-shipped"


# driver JVM pid -> its folder of shipped copies, once this process has made or found it
_SHIPPED: dict[int, Path] = {}
# (Spark application, copy) for every copy added to an application's files
_ADDED: set[tuple[str, str]] = set()


def shipped_folder(spark: SparkSession) -> Path:
    """The folder of the copies `ship_file` makes for this session's driver:
    `<tmp>/codemill-shipped/<host>-<driver JVM pid>/`. The driver serves them to
    executors as long as it runs, so the folder lives as long as the JVM: the Python
    process that started the JVM (or that the JVM started, under spark-submit) removes
    it at exit, and a folder whose JVM is gone (a killed run) is removed by the next
    process that makes one. Two runs at once have two JVMs, hence two folders; Luigi
    workers forked from a run share its JVM and its folder."""
    jvm = spark.sparkContext._jvm.java.lang.ProcessHandle.current()
    pid = int(jvm.pid())
    folder = _SHIPPED.get(pid)
    if folder is None:
        folder = shipped_root() / f"{socket.gethostname()}-{pid}"
        remove_orphaned_folders()
        folder.mkdir(parents=True, exist_ok=True)
        parent = jvm.parent()
        if os.getppid() == pid or (parent.isPresent() and int(parent.get().pid()) == os.getpid()):
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _SHIPPED[pid] = folder
    return folder


def remove_orphaned_folders() -> list[Path]:
    """Remove the shipped-file folders of this host whose driver JVM has exited."""
    host = socket.gethostname()
    root = shipped_root()
    orphaned = []
    for folder in sorted(root.glob(f"{glob.escape(host)}-*")):
        pid = folder.name.removeprefix(f"{host}-")
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            orphaned.append(folder)
    return orphaned


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _driver_options(cfg: SparkConfig, conf: dict[str, str]) -> str:
    """The user's driver JVM options, with the class archive and the compiler setting
    unless they name their own."""
    user = conf.get("spark.driver.extraJavaOptions", "")
    options = [user, archive_options(conf)]
    if cfg.driver_jit == "quick" and "TieredStopAtLevel" not in user and "TieredCompilation" not in user:
        options.append("-XX:TieredStopAtLevel=1")
    return " ".join(o for o in options if o)


def _java_options(user: str, log_file: Path | None) -> str:
    """The user's JVM options plus codemill's log4j2 configuration (a user's own
    `-Dlog4j2.configurationFile` wins)."""
    from codemill.runlog import jvm_log_properties

    if "log4j2.configurationFile" in user:
        return user
    return f"{user} -Dlog4j2.configurationFile=file:{jvm_log_properties(log_file).as_posix()}".strip()


_CODEGEN_KEYS = ("spark.sql.codegen.wholeStage", "spark.sql.codegen.factoryMode")


def set_codegen(spark: SparkSession, cfg: SparkConfig, documents: int | None) -> None:
    """Compile the queries of a stage about to read `documents` input documents (None:
    not known) to Java, or interpret them, as `cfg.codegen` says; the user's own codegen
    settings in `cfg.conf` stand."""
    if any(key in cfg.conf for key in _CODEGEN_KEYS):
        return
    compiled = cfg.codegen == "on" or (cfg.codegen == "auto" and (documents is None
                                                                  or documents >= cfg.codegen_min_documents))
    spark.conf.set("spark.sql.codegen.wholeStage", str(compiled).lower())
    spark.conf.set("spark.sql.codegen.factoryMode", "FALLBACK" if compiled else "NO_CODEGEN")


# Classes PySpark names bare (`jvm.PythonUtils`) on every select, join and Python UDF.
# py4j first tries a bare name in the default package: a miss that searches every jar
# on Spark's class path, about half a millisecond each time, for an answer that never
# changes.
_BARE_CLASS_NAMES = ("functions", "PythonUtils", "PythonSQLUtils", "SimplePythonFunction", "PythonRDD",
                     "SerDeUtil")


def _remember_classes(jvm: JVMView) -> None:
    """Resolve the bare class names once; later lookups find them on the view itself."""
    for name in _BARE_CLASS_NAMES:
        vars(jvm)[name] = getattr(jvm, name)


# An object can be a numpy value only once numpy is imported: no import needed to tell.
def _is_numpy_array(obj: object) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(obj, numpy.ndarray) and obj.ndim == 1


def _is_numpy_scalar(obj: object) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(obj, numpy.generic)


def _check_numpy_without_pandas() -> None:
    """PySpark's converters of numpy values ask `pyspark.testing.utils` whether numpy is
    installed, on every argument of every call into the JVM; the first ask imports that
    module and pandas with it (about half a second of every driver's start here). The
    same tests, without the import."""
    for converter in py4j.protocol.INPUT_CONVERTER:
        if type(converter) is NumpyArrayConverter:
            converter.can_convert = _is_numpy_array
        elif type(converter) is NumpyScalarConverter:
            converter.can_convert = _is_numpy_scalar


def get_spark(cfg: SparkConfig, log_file: Path | None = None) -> SparkSession:
    """Return the process's SparkSession, creating it from `cfg` if needed; a new JVM
    logs everything to `log_file` and only first lines to the console."""
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
        # Spark's progress bar redraws with carriage returns: junk in a log file
        .config("spark.ui.showConsoleProgress", str(sys.stderr.isatty()).lower())
    )
    conf = {**DEFAULT_SPARK_CONF, **cfg.conf}
    if cfg.master.startswith("local"):  # workers run this interpreter, codemill installed
        conf.setdefault("spark.python.daemon.module", "codemill.spark_daemon")
    conf["spark.driver.extraJavaOptions"] = _java_options(_driver_options(cfg, conf), log_file)
    for key, value in conf.items():
        builder = builder.config(key, str(value))
    _check_numpy_without_pandas()
    spark = builder.getOrCreate()
    _remember_classes(spark.sparkContext._jvm)
    spark.sparkContext.setLogLevel(cfg.log_level)
    if cfg.ship_package:
        spark.sparkContext.addPyFile(_package_zip(shipped_folder(spark)))
    return spark
