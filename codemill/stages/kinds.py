"""Kinds: each document's kind (code / nl_code / nl) for the mixes, and what decided it.
Where a language needs the classifier and the user gave none, one is trained on the
documents whose kind is certain. Nothing is dropped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from codemill.mix.config import KindConfig
from codemill.stages.base import DocumentStage, docs_path
from codemill.storage.folder import local_file
from codemill.storage.local import file_sha256

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from codemill.schema import StageOutput
    from codemill.storage.folder import Folder

class Kinds(DocumentStage):
    name = "kinds"
    sections = {"kinds": KindConfig}

    def settings(self) -> list[Any]:
        model = self.cfg.kinds.classifier_model
        return [self.cfg.kinds, self.cfg.seed, file_sha256(local_file(model)) if model else None]

    def run(self, spark: SparkSession, inputs: dict[str, Folder], work: Folder) -> StageOutput:
        from codemill.mix.kinds import decide_kinds
        from codemill.pipelines.tables import read_documents

        docs = read_documents(spark, docs_path(inputs))
        return decide_kinds(spark, docs, self.cfg.kinds, self.cfg.seed, work.local())
