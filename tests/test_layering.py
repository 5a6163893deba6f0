"""The layers hold: a trainer imports no Spark stack, and the command line answers at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("pyspark", "fasttext", "luigi")


def imported_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("statement", [
    "import codemill.config",
    "from codemill.config import load_run_config; load_run_config()",
    "import codemill.train_hooks.dataset, codemill.train_hooks.model, codemill.train_hooks.train",
    "import codemill.train_hooks.shards",
    "import codemill.tokenize.shard_format",
    "from codemill.cli import main\ntry:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass",
])
def test_light_entry_points_import_no_spark_stack(statement):
    modules = imported_after(statement)
    assert "codemill" in modules
    assert not {m.split(".")[0] for m in modules} & set(HEAVY)


def test_help_imports_no_config_nor_stages():
    code = ("import sys\nfrom codemill.cli import make_parser\nmake_parser().format_help()\n"
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(out.stdout.split())
    assert "codemill.config.run" not in modules and "codemill.stages" not in modules
    assert not {m.split(".")[0] for m in modules} & {*HEAVY, "numpy", "pyarrow", "torch"}


def test_stage_modules_import_their_kernels_lazily():
    modules = imported_after("import codemill.stages")
    assert "codemill.dedup.near" not in modules and "codemill.filters.decontam" not in modules
