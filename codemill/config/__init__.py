"""Configuration: one loader (`codemill.config.loader`) and one run config type
(`codemill.config.run`), whose sections are declared by the registered stages.

`from codemill.config import RunConfig, load_run_config` works; the run config is
loaded on first use, because the stages' config modules import the loader from this
package. Nothing here loads Spark, fastText or torch: a trainer can use it.
"""

from typing import Any

_RUN_NAMES = ("DEFAULT_SPARK_CONF", "LuigiConfig", "RunConfig", "SMALL_CORPUS_TOML", "SparkConfig",
              "load_run_config", "to_dict")


def __getattr__(name: str) -> Any:
    if name in _RUN_NAMES:
        from codemill.config import run

        return getattr(run, name)
    raise AttributeError(f"module 'codemill.config' has no attribute {name!r}")


__all__ = list(_RUN_NAMES)
