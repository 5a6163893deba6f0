"""A class-data archive for Spark's driver JVM.

A Spark driver loads some 20,000 classes from jars, parsing and verifying each one,
before and during its first jobs; on two cores that is seconds of every run. Java's
class-data sharing stores the loaded classes in an archive that later JVMs map
instead. `build_archive` records one by running a small pipeline once per Java
runtime and Spark installation (`codemill jvm-archive`, which `make` runs);
`archive_options` points every later driver at it. Without an archive, or with a
classpath the archive was not made for, the JVM simply loads classes as before.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sysconfig
import tempfile
import uuid
from pathlib import Path
from typing import Any

# Settings that change the driver's classpath: an archive is only valid for its own.
CLASSPATH_SETTINGS = ("spark.driver.extraClassPath", "spark.jars", "spark.jars.packages")
# A user's own class-data options win over ours.
OWN_OPTIONS = ("SharedArchiveFile", "ArchiveClassesAtExit", "-Xshare")
# The JVM's class-data messages go to standard output (classes it skips, an archive it
# cannot use).
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def java_executable() -> str | None:
    """The java Spark's launcher runs: $JAVA_HOME/bin/java, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return str(Path(home, "bin", "java"))
    return shutil.which("java")


def _spark_jars() -> Path:
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home()) / "jars"


def archive_key() -> str | None:
    """What an archive is valid for: the Java runtime (its resolved executable, size and
    modification time) and the Spark jars (their folder, and each one's name, size and
    modification time). The JVM maps an archive only for the very jar paths and times it
    was recorded from: the same Spark installed in a second virtualenv needs its own
    archive. None without Java."""
    java = java_executable()
    if java is None:
        return None
    java_file = Path(java).resolve()
    stat = java_file.stat()
    parts = [str(java_file), str(stat.st_size), str(stat.st_mtime_ns)]
    jars = _spark_jars()
    if jars.is_dir():
        parts.append(str(jars.resolve()))
        for jar in sorted(jars.glob("*.jar")):
            jar_stat = jar.stat()
            parts.append(f"{jar.name}:{jar_stat.st_size}:{jar_stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def archive_folder() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root, "codemill", "jvm")


def archive_path() -> Path | None:
    key = archive_key()
    return archive_folder() / f"spark-classes-{key}.jsa" if key else None


def archive_options(conf: dict[str, Any]) -> str:
    """JVM options that map the archive, when it exists and fits this driver: its
    classpath is Spark's own, and the user's options name no archive of their own.
    The JVM's warning about an archive it cannot use is turned off: it then loads
    classes from the jars, as it would without one."""
    if any(conf.get(key) for key in CLASSPATH_SETTINGS):
        return ""
    if any(option in str(conf.get("spark.driver.extraJavaOptions", "")) for option in OWN_OPTIONS):
        return ""
    path = archive_path()
    if path is None or not path.is_file():
        return ""
    return f"-XX:SharedArchiveFile={path} {QUIET}"


def _sample_tree(root: Path) -> Path:
    """A small tree of this interpreter's own files: code, C headers and prose, as the
    demo reads (every stage and both mixes then have something to do)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for package in ("json", "http", "wsgiref"):
        shutil.copytree(stdlib / package, root / "py" / package, ignore=shutil.ignore_patterns("__pycache__"))
    include = Path(sysconfig.get_paths()["include"])
    (root / "include").mkdir(parents=True)
    for header in sorted(include.glob("*.h"))[:40]:
        shutil.copy(header, root / "include" / header.name)
    (root / "docs").mkdir()
    for text in sorted(stdlib.glob("*.txt")):
        shutil.copy(text, root / "docs" / text.name)
    from importlib.metadata import distribution

    for dist in ("luigi", "pyarrow", "sentencepiece", "datasketch", "tqdm"):
        (root / "docs" / f"{dist}.md").write_text(distribution(dist).read_text("METADATA") or dist)
    return root


SAMPLE_RUN = """\
out = "{out}"
[[sources]]
name = "sample"
type = "dir"
path = "{tree}"
[spark]
master = "local[2]"
[spark.conf]
"spark.sql.shuffle.partitions" = "4"
"spark.driver.extraJavaOptions" = "-XX:ArchiveClassesAtExit={archive} {quiet}"
"""


def build_archive() -> Path:
    """Run the pipeline on a small sample with a driver that records its classes at exit,
    and move the archive it leaves into place (atomically: two builds at once leave one
    whole archive). Returns its path."""
    from pyspark import SparkContext

    from codemill.config import SMALL_CORPUS_TOML
    from codemill.pipelines.pretrain import run_pretrain

    path = archive_path()
    if path is None:
        raise RuntimeError("no Java runtime: Spark needs Java 17 or newer")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tempfile.TemporaryDirectory(prefix="codemill-jvm-") as tmp:
        tree = _sample_tree(Path(tmp, "tree"))
        config = Path(tmp, "run.toml")
        config.write_text(SAMPLE_RUN.format(out=Path(tmp, "out"), tree=tree, archive=partial, quiet=QUIET)
                          + SMALL_CORPUS_TOML)
        try:
            if run_pretrain(str(config)) is None:
                raise RuntimeError("the sample run failed; see the errors above")
        finally:
            _stop_driver(SparkContext._gateway)
    if not partial.is_file():
        raise RuntimeError(f"the driver JVM wrote no class archive to {partial}")
    # named before the archive lands: a build for another installation prunes at once
    _owner(path).write_text(str(_spark_jars().resolve()))
    os.replace(partial, path)
    prune_archives(path)
    return path


def _owner(archive: Path) -> Path:
    """The file beside an archive that names the jars folder it was recorded from."""
    return archive.with_suffix(".jars")


def prune_archives(keep: Path) -> None:
    """Remove the archives (some 200 MB each) of Spark installations that are gone: those
    whose jars folder no longer exists, and those that do not say which it was."""
    for archive in keep.parent.glob("spark-classes-*.jsa"):
        owner = _owner(archive)
        if archive != keep and not (owner.is_file() and Path(owner.read_text()).is_dir()):
            archive.unlink(missing_ok=True)
            owner.unlink(missing_ok=True)


def _stop_driver(gateway: Any) -> None:
    """Stop Spark and wait for the driver JVM to exit: it writes the archive on its way
    out, once it sees its standard input close."""
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()
    proc = getattr(gateway, "proc", None)
    if proc is None:
        return
    gateway.shutdown()
    proc.stdin.close()
    try:
        proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
