"""Spark's Python worker daemon for local masters: pyspark's own, run with the installed
pyspark ahead of the pyspark.zip and py4j zip that Spark puts first on the workers'
PYTHONPATH, and with the modules every worker needs imported before it forks any.

Python compiles a module imported from a zip on every import (it caches no bytecode
there), and every worker imports pyspark's worker modules after it is forked, so each
one compiled them again: seconds of CPU in a run on two cores. Installed, they load
from cached bytecode. The zip is the installed package's own copy: the same code.
Imported here, pandas, pyarrow and codemill's task code are imported once per run
instead of once per worker (the forks share them).
"""

from __future__ import annotations

import gc
import importlib
import sys

# What a worker imports for codemill's tasks: pyspark's worker, its Arrow serializers and
# pandas (imported by Arrow functions' workers), and the modules whose functions tasks run.
PRELOADED = ("pyspark.worker", "pyspark.sql.pandas.serializers", "pandas", "pyarrow", "pyarrow.parquet",
             "codemill.ingest.parts", "codemill.ingest.records", "codemill.dedup.near", "codemill.filters.steps",
             "codemill.mix.kinds", "codemill.tokenize.jobs")


def installed_pyspark_first(path: list[str]) -> list[str]:
    """`path` with Spark's pyspark and py4j zips moved to its end."""
    zips = [p for p in path if p.endswith(".zip") and ("pyspark" in p or "py4j" in p)]
    return [p for p in path if p not in zips] + zips


if __name__ == "__main__":
    sys.path[:] = installed_pyspark_first(sys.path)
    for module in PRELOADED:
        importlib.import_module(module)
    from pyspark.daemon import manager

    # The preloaded modules' objects never die: out of the collector's reach, a worker's
    # collections skip them (and leave their pages shared with the daemon).
    gc.freeze()

    manager()
