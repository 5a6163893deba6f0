"""Kinds: each document's kind (code / nl_code / nl) for the mixes, and what decided it.
Where a language needs the classifier and the user gave none, one is trained on the
documents whose kind is certain. Nothing is dropped."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from codemill.atomic import file_sha256
from codemill.mix.config import KindConfig
from codemill.stages.base import DocumentStage, docs_path

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from codemill.schema import StageOutput

CLASSIFIER_FILE = "kind-classifier.bin"


class Kinds(DocumentStage):
    name = "kinds"
    sections = {"kinds": KindConfig}

    def settings(self) -> list[Any]:
        model = self.cfg.kinds.classifier_model
        return [self.cfg.kinds, self.cfg.seed, file_sha256(model) if model else None]

    def run(self, spark: SparkSession, inputs: dict[str, Path], work_dir: Path) -> StageOutput:
        from pyspark.sql import functions as F

        from codemill.mix.kinds import assign_kinds, check_classifier_model, train_kind_classifier
        from codemill.pipelines.tables import read_table
        from codemill.schema import DROPPED_SCHEMA, StageOutput

        cfg = self.cfg.kinds
        docs = read_table(spark, docs_path(inputs))
        extra: dict[str, Any] = {}
        model = cfg.classifier_model
        if model:
            check_classifier_model(model)
        elif cfg.classify_langs and docs.where(F.col("lang").isin(*cfg.classify_langs)).limit(1).count():
            model = str(work_dir / CLASSIFIER_FILE)
            extra["classifier_examples"] = train_kind_classifier(docs, Path(model), self.cfg.seed)
        extra["classifier"] = "user" if cfg.classifier_model else ("trained" if model else "none")
        kept = assign_kinds(spark, docs, cfg, model)
        return StageOutput(kept, spark.createDataFrame([], DROPPED_SCHEMA), extra)
