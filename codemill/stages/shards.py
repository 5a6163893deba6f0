"""Shards of one mix: the plan (epochs per category to meet the token shares), the
selected document copies, tokenized, FIM-transformed and packed on executors, and the
manifest that records all of it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from codemill.mix.config import MixConfig
from codemill.stages.base import Stage, StageRef, docs_path
from codemill.stages.tokenizer import tokenizer_path
from codemill.tokenize.config import PACKING_VERSION, FimConfig, PackConfig

log = logging.getLogger("codemill")

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from codemill.storage.folder import Folder

class Shards(Stage):
    name = "shards"
    sections = {"mix": MixConfig, "fim": FimConfig, "pack": PackConfig}

    def inputs(self) -> dict[str, StageRef]:
        from codemill.stages import final_document_stage

        return {"docs": final_document_stage(self.cfg), "counts": StageRef("token_counts"),
                "tokenizer": StageRef("tokenizer")}

    def settings(self) -> list[Any]:
        c = self.cfg
        return [c.mix.spec(self.item), c.mix.max_epochs, c.mix.total_tokens, c.mix.partitions,
                c.fim, c.pack, c.seed, PACKING_VERSION]

    def run(self, spark: SparkSession, inputs: dict[str, Folder], work: Folder) -> None:
        from codemill.mix.plan import category_tokens, mix_warnings, plan_mix, select_copies
        from codemill.observe import step
        from codemill.pipelines.tables import read_documents
        from codemill.tokenize.jobs import read_token_counts, write_shards
        from codemill.tokenize.shards import write_manifest
        from codemill.tokenize.tokenizer import load_tokenizer

        c, spec = self.cfg, self.cfg.mix.spec(self.item)
        docs = read_documents(spark, docs_path(inputs)).join(
            read_token_counts(spark, inputs["counts"].join("counts")), "id")
        with step("tokens per category"):
            available = category_tokens(docs, spec)
        plan = plan_mix(spec, available.tokens, c.mix.max_epochs, c.mix.total_tokens)
        tok = load_tokenizer(tokenizer_path(inputs))
        shards, counts = write_shards(spark, select_copies(docs, plan, spec, c.seed), tok, c.fim, c.pack,
                                      c.seed, c.mix.partitions, work)
        realised = dict(sorted(counts.category_tokens.items()))
        total = sum(realised.values())
        warnings = mix_warnings(spec, available, realised, c.mix.max_document_share)
        for warning in warnings:
            log.warning(warning)
        mix = {**plan.to_dict(), "realised_tokens": realised,
               "realised": {k: v / total for k, v in realised.items()},
               "token_length_histogram": available.histogram, "warnings": warnings}
        write_manifest(work, tokenizer=tok, pack=c.pack, fim=c.fim, seed=c.seed,
                       shards=shards, stats=counts.pack, mix=mix)
