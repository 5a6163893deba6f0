"""A stage: one step of a DAG, as an object a generic Luigi task can run.

A stage declares
* `name` — its key in the registry and the folder of its outputs;
* `sections` — the run-config tables it reads, each a Spark-free `Section` class
  (validated on construction), so the run config is built from the stages;
* `inputs()` — the outputs of other stages it reads, by name;
* `settings()` — everything besides its inputs that changes its result (config
  sections, the sha256 of model files, the seed). The task hashes these with the
  inputs' fingerprints into the output folder's name, so a changed setting never
  reuses stale output;
* `run(spark, inputs, work)` — the work: reads its inputs' committed folders, calls
  the stage's kernels (plain functions over DataFrames or records) and writes into
  `work`, this run's attempt folder, which becomes the output only when `run` returns
  and the task commits it. Folders are `codemill.storage.folder.Folder`s: any URI,
  with Spark writing tables to `work.join(name)` and local-only libraries writing
  into `work.local()`. A stage that returns a `StageOutput` has its document table,
  dropped table and statistics written for it.

Stage modules import their kernels (and Spark) inside `run`, so that loading the
registry, and with it the run config, stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from codemill.schema import StageOutput
    from codemill.storage.folder import Folder


@dataclass(frozen=True)
class StageRef:
    """One stage's output: the stage's name, and which item for a stage run per item
    (e.g. the shards of one mix)."""

    stage: str
    item: str = ""


class Stage:
    name: ClassVar[str]
    sections: ClassVar[dict[str, type]] = {}

    def __init__(self, cfg: Any, item: str = "") -> None:
        self.cfg = cfg
        self.item = item

    def uses_spark(self) -> bool:
        """False: `run` gets no SparkSession (and none is started for it)."""
        return True

    def enabled(self) -> bool:
        """A disabled stage is skipped: its readers read what it would have read."""
        return True

    def inputs(self) -> dict[str, StageRef]:
        return {}

    def settings(self) -> list[Any]:
        return []

    def output_parts(self) -> tuple[str, ...]:
        """Folders under the run's `out` (the fingerprint folder goes below)."""
        return (*self.name.split("/"), *([self.item] if self.item else []))

    def run(self, spark: SparkSession | None, inputs: dict[str, Folder],
            work: Folder) -> StageOutput | None:
        raise NotImplementedError


class DocumentStage(Stage):
    """A step of the document chain: reads the document table of the enabled stage
    before it (input `docs`) and returns what it keeps and what it drops."""

    def inputs(self) -> dict[str, StageRef]:
        from codemill.stages import previous_document_stage  # the registry imports this module

        return {"docs": StageRef(previous_document_stage(self.cfg, self.name))}


def docs_path(inputs: dict[str, Folder]) -> str:
    """The document table of a `docs` input."""
    return inputs["docs"].join("docs")
