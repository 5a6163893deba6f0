"""Report: every document stage's statistics and each mix's manifest gathered into
`report.json` and `summary.txt`, in the report's folder and as the output root's latest;
and the shards folder's dataset card (`<out>/shards/README.md`, codemill.report.card)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from codemill.report import CARD_VERSION, SCHEMA_VERSION
from codemill.stages.base import Stage, StageRef
from codemill.stages.shards import Shards

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from codemill.storage.folder import Folder

SHARDS_PREFIX = "shards:"


class Report(Stage):
    name = "report"

    def inputs(self) -> dict[str, StageRef]:
        from codemill.stages import document_chain

        return {**{stage: StageRef(stage) for stage in document_chain(self.cfg)},
                **{SHARDS_PREFIX + m.name: StageRef("shards", m.name) for m in self.cfg.mix.mixes}}

    def settings(self) -> list[Any]:
        # a new report format or card rewrites a finished run's report and card
        return [SCHEMA_VERSION, CARD_VERSION]

    def run(self, spark: SparkSession, inputs: dict[str, Folder], work: Folder) -> None:
        from codemill.report.card import write_dataset_card
        from codemill.report.summary import write_report
        from codemill.storage.folder import Folder

        stage_dirs = {k: v for k, v in inputs.items() if not k.startswith(SHARDS_PREFIX)}
        shard_dirs = {k.removeprefix(SHARDS_PREFIX): v for k, v in inputs.items()
                      if k.startswith(SHARDS_PREFIX)}
        report = write_report(spark, self.cfg, stage_dirs, shard_dirs, work)
        if shard_dirs:
            write_dataset_card(Folder(self.cfg.out_uri(), work.fs).sub(Shards.name), report, shard_dirs)
