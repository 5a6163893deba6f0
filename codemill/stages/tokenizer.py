"""Tokenizer: a sentencepiece BPE model trained on a stable sample of the cleaned
corpus, or the model the config names (checked for the infilling tokens)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codemill.stages.base import Stage, StageRef, docs_path
from codemill.storage.folder import local_file
from codemill.storage.local import file_sha256
from codemill.tokenize.config import TokenizerConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from codemill.storage.folder import Folder

TOKENIZER_FILE = "tokenizer.model"

log = logging.getLogger("codemill")


class Tokenizer(Stage):
    name = "tokenizer"
    sections = {"tokenizer": TokenizerConfig}

    def uses_spark(self) -> bool:
        return not self.cfg.tokenizer.model

    def inputs(self) -> dict[str, StageRef]:
        from codemill.stages import final_document_stage

        return {} if self.cfg.tokenizer.model else {"docs": final_document_stage(self.cfg)}

    def settings(self) -> list[Any]:
        tok = self.cfg.tokenizer
        return [tok, file_sha256(local_file(tok.model))] if tok.model else [tok, self.cfg.seed]

    def run(self, spark: SparkSession | None, inputs: dict[str, Folder], work: Folder) -> None:
        from codemill.tokenize.tokenizer import load_tokenizer, train_tokenizer

        cfg = self.cfg.tokenizer
        if cfg.model:
            model = local_file(cfg.model)
            load_tokenizer(model)  # a clear error if it lacks the infilling tokens
            work.fs.upload(model, work.join(TOKENIZER_FILE))
            return
        from codemill.mix.plan import check_categories
        from codemill.observe import step
        from codemill.pipelines.tables import read_documents
        from codemill.tokenize.jobs import sample_texts

        docs = read_documents(spark, docs_path(inputs))
        with step("check the mixes' categories"):
            check_categories(docs, self.cfg.mix.mixes)  # before training, not after it
        texts = sample_texts(docs, cfg.train_sample_bytes, self.cfg.seed)
        # sentencepiece reports nothing until it is done: say what it works on
        log.info(f"training a {cfg.vocab_size:,}-token BPE tokenizer on {len(texts):,} documents "
                 f"({sum(map(len, texts)) / 1e6:,.1f} M characters)")
        train_tokenizer(texts, work.local() / "tokenizer", config=cfg)


def tokenizer_path(inputs: dict[str, Folder]) -> Path:
    """A local copy of the model file of a `tokenizer` input."""
    return inputs["tokenizer"].fetch(TOKENIZER_FILE)
