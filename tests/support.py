"""Helpers the tests share: real corpora copied from this interpreter, run configs,
running a DAG, and waiting on other processes."""

from __future__ import annotations

import importlib.metadata
import shutil
import socket
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

from codemill.config.run import SMALL_CORPUS_TOML, SparkConfig
from codemill.pipelines.runner import build
from codemill.pipelines.task import stage_task
from codemill.storage import local_path

STDLIB = Path(sysconfig.get_paths()["stdlib"])
INCLUDE = Path(sysconfig.get_paths()["include"])
TEST_SPARK = SparkConfig(
    master="local[2]",
    # the UI keeps every job of the session, so a test can read a whole run's jobs
    conf={"spark.sql.shuffle.partitions": "4", "spark.driver.memory": "2g",
          "spark.ui.retainedJobs": "100000"},
)


def copy_real_tree(dest: Path, stdlib_dirs: tuple[str, ...], headers: int = 40) -> Path:
    """Copy real code from this interpreter: some stdlib packages, C headers, docs."""
    for name in stdlib_dirs:
        shutil.copytree(STDLIB / name, dest / "py" / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "include").mkdir(parents=True, exist_ok=True)
    for header in sorted(INCLUDE.glob("*.h"))[:headers]:
        shutil.copy(header, dest / "include" / header.name)
    shutil.copy(STDLIB / "LICENSE.txt", dest / "LICENSE.txt")
    # package descriptions: natural language about code
    for dist in ("luigi", "datasketch", "sentencepiece", "pyarrow", "xxhash", "tqdm"):
        (dest / "docs" / dist).mkdir(parents=True, exist_ok=True)
        (dest / "docs" / dist / "METADATA").write_text(
            importlib.metadata.distribution(dist).read_text("METADATA"))
    return dest


def write_config(path: Path, tree: Path | str, out: Path | str, extra: str = "",
                 spark_conf: dict[str, str] | None = None) -> Path:
    """A run config over one directory source; `spark_conf` adds to the test Spark settings."""
    conf = {"spark.sql.shuffle.partitions": "4", "spark.driver.memory": "2g", **(spark_conf or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""
out = "{out}"
[[sources]]
name = "real"
type = "dir"
path = "{tree}"
license = "PSF-2.0"
[spark]
master = "local[2]"
conf = {{ {", ".join(f'"{k}" = "{v}"' for k, v in conf.items())} }}
{SMALL_CORPUS_TOML}{extra}
""")
    return path


def run_dag(config: Path, overrides=(), target: str = "report", **luigi_cfg) -> bool:
    task = stage_task(target, config, overrides)
    return build([task], task.cfg.luigi, **luigi_cfg)


def output_dir(task) -> Path:
    """The local folder of a task's committed output."""
    return local_path(task.committed().uri)


def attempts(fingerprint_dir: Path) -> list[str]:
    return sorted(p.name for p in fingerprint_dir.iterdir() if p.name.startswith("attempt-"))


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition (another process's progress), failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
