"""The run config: one TOML file describes a run.

Its core is where the run writes (`out`), its seed, its sources and how Spark and
Luigi run. Every other table (`[near_dedup]`, `[fim]`, `[selfinstruct]`, ...) is a
section that a registered stage declares (`Stage.sections`), so a new stage brings
its settings with it. Defaults reproduce Code Llama's recipe.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from codemill.config.loader import Section, check_unique_names, invalid, load, parse_toml, read_toml, setting
from codemill.ingest.config import SourceConfig
from codemill.stages import STAGES

DEMO_CONFIG = "configs/demo.toml"

# What Spark's master URL parser accepts (checked here so a typo fails before Spark starts).
MASTER_URLS = (r"local", r"local\[(\*|[1-9]\d*)(,\s*[1-9]\d*)?\]", r"local-cluster\[\d+,\s*\d+,\s*\d+\]",
               r"spark://\S+", r"yarn", r"k8s://\S+")

# The settings a run over a few hundred files needs besides its sources: sentencepiece
# cannot learn the default 32,000-piece vocabulary from so little text, and 512-token
# rows in 2 mix partitions keep every shard file non-empty.
SMALL_CORPUS_TOML = """\
[tokenizer]
vocab_size = 2000
[pack]
seq_len = 512
[mix]
partitions = 2
"""

# Merged under the user's [spark.conf].
DEFAULT_SPARK_CONF = {
    "spark.driver.memory": "4g",
    "spark.sql.shuffle.partitions": "16",
    # Sources on Hadoop file systems are read file by file (binaryFile): Spark's defaults,
    # made for a few large Parquet files, would give a task per 32 source files and a
    # 10,000-task job to look up a long list of paths.
    "spark.sql.files.openCostInBytes": str(64 << 10),
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "64",
    # In local mode every task runs in the driver's heap (1 GB must do for a million
    # documents), so what one task holds is kept small. Parquet row groups are buffered
    # whole when written and read (128 MB by default).
    "spark.hadoop.parquet.block.size": str(16 << 20),
    # Arrow batches to Python workers are cut at 10,000 rows: bound their bytes too.
    "spark.sql.execution.arrow.maxBytesPerBatch": str(16 << 20),
    # Cached tables are batches of this many rows (10,000 by default), and the memory
    # store checks its budget only every 16 of them while caching a partition.
    "spark.sql.inMemoryColumnarStorage.batchSize": "1000",
    # lower() of license names and file names by the JVM, not ICU: ICU's first use
    # initialises its break iterators, seconds on a small machine, for the same ASCII.
    "spark.sql.icu.caseMappings.enabled": "false",
    # PySpark's DataFrame debugging records the Python call site of every function call
    # in the JVM (about 18 round trips to it per `F.col`, a third of a small run's); our
    # errors name the stage and step instead.
    "spark.python.sql.dataFrameDebugging.enabled": "false",
    # Spark starts one Python worker daemon per distinct worker environment, and its SQL
    # functions add this variable where its RDD functions do not: set for both, ingest
    # (RDD) and the later stages (SQL) share one daemon and its warm workers.
    "spark.executorEnv.SPARK_SIMPLIFIED_TRACEBACK": "1",
    # pyarrow's allocator (mimalloc) hands freed memory back to the kernel after 10 ms,
    # and a worker's next batch faults it in again, zeroed: a tenth of ingest's time.
    # Kept 10 s, it serves the worker's next batches and the next job's tasks.
    "spark.executorEnv.MIMALLOC_PURGE_DELAY": "10000",
}


@dataclass
class SparkConfig(Section):
    master: str = setting("local[*]", nonempty=True)  # or spark://host:7077, yarn, k8s://...
    app_name: str = setting("codemill", nonempty=True)
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"] = "WARN"
    # Zip the codemill package onto spark.submit.pyFiles for executors that lack it.
    ship_package: bool = False
    # Any Spark setting; merged over DEFAULT_SPARK_CONF.
    conf: dict[str, str] = setting(dict)
    # "quick": the driver JVM compiles with its quick compiler (C1) only. The optimising
    # one (C2) takes cores from the tasks while it compiles Spark's planner, and the
    # stages' heavy work runs in Python workers (benchmarks/RESULTS.md: a tiny run 10 s
    # sooner, 100k documents no slower). Executors' JVMs are left as they are.
    driver_jit: Literal["quick", "full"] = "quick"
    # Spark compiles each query's operators to Java (Janino, then the JIT) before running
    # it: worth it over millions of rows, most of a small run's driver CPU otherwise.
    # "auto": compiled for a stage whose input holds at least `codegen_min_documents`
    # documents, interpreted below (same results either way).
    codegen: Literal["auto", "on", "off"] = "auto"
    codegen_min_documents: int = setting(50_000, ge=0)

    def check(self) -> None:
        if not any(re.fullmatch(pattern, self.master) for pattern in MASTER_URLS):
            raise invalid("master", f"{self.master!r} is not a Spark master URL: use local, local[N], "
                          "local[*], local[N,retries], spark://HOST:PORT, yarn or k8s://HOST:PORT")


@dataclass
class LuigiConfig(Section):
    workers: int = setting(1, ge=1, le=256)
    # False: use a running `luigid` at scheduler_host:scheduler_port.
    local_scheduler: bool = True
    scheduler_host: str = setting("localhost", nonempty=True)
    scheduler_port: int = setting(8082, ge=1, le=65535)
    # Luigi's own logging; INFO shows each task starting and finishing.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # "json": every console line of Luigi and codemill is a JSON object.
    log_format: Literal["text", "json"] = "text"
    # Print the running Spark job and its tasks every this many seconds (0: never).
    progress_seconds: int = setting(0, ge=0, le=3600)


class _RunConfigBase(Section):
    """What every run config has besides its fields."""

    def check(self) -> None:
        check_unique_names(self.sources, "sources", "sources")

    def out_uri(self) -> str:
        """`out` as a URI: a local path made absolute, any other URI as given."""
        from codemill.storage.uri import to_uri

        return to_uri(self.out)


def _stage_sections() -> list[tuple[str, type, Any]]:
    """Each table the registered stages declare, once, in registry order."""
    sections: dict[str, type] = {}
    for stage in STAGES.values():
        for name, cls in stage.sections.items():
            if sections.setdefault(name, cls) is not cls:
                raise TypeError(f"config section [{name}] is declared as two different classes")
    return [(name, cls, setting(cls)) for name, cls in sections.items()]


RunConfig = dataclasses.make_dataclass(
    "RunConfig",
    [
        ("out", str, setting("codemill-out", path=True, nonempty=True)),
        ("seed", int, setting(0, ge=0)),
        # A run holds a lease on `out`; a crashed run's lease expires after this long.
        ("lease_seconds", int, setting(120, ge=10, le=86400)),
        ("sources", list[SourceConfig], setting(list)),
        ("spark", SparkConfig, setting(SparkConfig)),
        ("luigi", LuigiConfig, setting(LuigiConfig)),
        *_stage_sections(),
    ],
    bases=(_RunConfigBase,),
)
RunConfig.__module__ = __name__  # so that pickle finds it (executors receive configs)
RunConfig.__doc__ = "One run: core settings plus each registered stage's sections."


def load_run_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Any:
    """A run config from a TOML file (None: the embedded demo) and `--set` overrides.
    Every value is type- and range-checked here, before Spark starts."""
    if path is None:
        origin = f"codemill/{DEMO_CONFIG}"
        data = parse_toml(resources.files("codemill").joinpath(DEMO_CONFIG).read_text(), origin)
    else:
        origin, data = str(path), read_toml(path)
    return load(RunConfig, data, origin, list(overrides))


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


__all__ = ["DEFAULT_SPARK_CONF", "LuigiConfig", "RunConfig", "SparkConfig",
           "load_run_config", "to_dict"]
