"""Token counts: every document's token count, what the mix plans are made from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from codemill.stages.base import Stage, StageRef, docs_path
from codemill.stages.tokenizer import tokenizer_path

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from codemill.storage.folder import Folder

class TokenCounts(Stage):
    name = "token_counts"

    def inputs(self) -> dict[str, StageRef]:
        from codemill.stages import final_document_stage

        return {"docs": final_document_stage(self.cfg), "tokenizer": StageRef("tokenizer")}

    def run(self, spark: SparkSession, inputs: dict[str, Folder], work: Folder) -> None:
        from codemill.mix.plan import check_categories
        from codemill.observe import step
        from codemill.pipelines.tables import read_documents, write_table
        from codemill.tokenize.jobs import count_tokens
        from codemill.tokenize.tokenizer import load_tokenizer

        docs = read_documents(spark, docs_path(inputs))
        if self.cfg.tokenizer.model:  # else the tokenizer stage checked them
            check_categories(docs, self.cfg.mix.mixes)
        counts = count_tokens(spark, docs, load_tokenizer(tokenizer_path(inputs)))
        with step("count every document's tokens"):
            write_table(counts, work.join("counts"))
