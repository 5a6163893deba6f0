"""The pretraining DAG: ingest -> exact dedup -> near dedup -> filters -> kinds
-> tokenizer -> token counts -> shards of each mix -> report.

Run it with `codemill run CONFIG`, or with Luigi's own launcher:

    luigi --module codemill.pipelines.pretrain PretrainReport --config-path run.toml --local-scheduler
"""

from __future__ import annotations

import shutil
from functools import cached_property
from pathlib import Path

import luigi
from pyspark.sql import functions as F

from codemill.atomic import atomic_dir, file_sha256
from codemill.config import ConfigError, MixSpec, fingerprint
from codemill.dedup.exact import exact_dedup
from codemill.dedup.near import near_dedup_stage
from codemill.filters.stage import filter_stage
from codemill.ingest.stage import ingest, list_directory_source
from codemill.ingest.walk import FileEntry, listing_signature
from codemill.mix.kinds import check_classifier_model, kinds_stage
from codemill.mix.plan import category, plan_mix, select_copies
from codemill.pipelines.base import RunConfigTask, StageTask
from codemill.pipelines.tables import count_and_bytes, read_table, write_table
from codemill.report.summary import write_report
from codemill.spark import get_spark
from codemill.tokenize.jobs import count_tokens, sample_texts, write_shards
from codemill.tokenize.shards import MANIFEST, TOKENIZER_FILE, write_manifest
from codemill.tokenize.tokenizer import Tokenizer, load_tokenizer, train_tokenizer


def _record_files_signature(path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return fingerprint([(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files])


class Ingest(StageTask):
    stage = "ingest"

    @cached_property
    def listings(self) -> dict[str, list[FileEntry]]:
        return {
            src.name: list_directory_source(src, self.cfg.ingest)
            for src in self.cfg.sources
            if src.type == "dir"
        }

    def fingerprint(self) -> str:
        inputs = [
            (src, str(src.resolved_path()),
             listing_signature(self.listings[src.name]) if src.type == "dir"
             else _record_files_signature(src.resolved_path()))
            for src in self.cfg.sources
        ]
        return fingerprint(inputs, self.cfg.ingest)

    def run(self) -> None:
        self.write_stage(lambda spark, _: ingest(spark, self.cfg.sources, self.cfg.ingest, self.listings))


class ExactDedup(StageTask):
    stage = "exact_dedup"

    def requires(self) -> Ingest:
        return Ingest(config_path=self.config_path, overrides=self.overrides)

    def fingerprint(self) -> str:
        return fingerprint(self.requires().fingerprint(), self.cfg.exact_dedup)

    def run(self) -> None:
        docs = self.input_docs()
        n_in, bytes_in = count_and_bytes(docs)
        self.write_stage(lambda spark, _: exact_dedup(spark, docs, self.cfg.exact_dedup), n_in, bytes_in)


class NearDedup(StageTask):
    """MinHash LSH near-duplicates; also writes the cluster table."""

    stage = "near_dedup"

    def requires(self) -> ExactDedup:
        return ExactDedup(config_path=self.config_path, overrides=self.overrides)

    def fingerprint(self) -> str:
        return fingerprint(self.requires().fingerprint(), self.cfg.near_dedup)

    def run(self) -> None:
        docs = self.input_docs()
        n_in, bytes_in = count_and_bytes(docs)
        self.write_stage(lambda spark, _: near_dedup_stage(spark, docs, self.cfg.near_dedup),
                         n_in, bytes_in)


class Filter(StageTask):
    """Code heuristics, language id, quality, decontamination and PII scrubbing."""

    stage = "filters"

    def requires(self) -> NearDedup:
        return NearDedup(config_path=self.config_path, overrides=self.overrides)

    def fingerprint(self) -> str:
        c = self.cfg
        models = [file_sha256(m.model_path) if m.enabled else None for m in (c.langid, c.quality)]
        return fingerprint(self.requires().fingerprint(), c.filters, c.langid, c.quality,
                           c.decontam, c.pii, models)

    def run(self) -> None:
        docs = self.input_docs()
        n_in, bytes_in = count_and_bytes(docs)
        self.write_stage(lambda spark, _: filter_stage(spark, docs, self.cfg), n_in, bytes_in)


# The last stage that removes documents; later stages only label and tokenize.
LAST_FILTER_STAGE = Filter


class AssignKinds(StageTask):
    """Decides each document's kind (code / nl_code / nl) for the mixes."""

    stage = "kinds"

    def requires(self) -> StageTask:
        return LAST_FILTER_STAGE(config_path=self.config_path, overrides=self.overrides)

    def fingerprint(self) -> str:
        model = self.cfg.kinds.classifier_model
        return fingerprint(self.requires().fingerprint(), self.cfg.kinds, self.cfg.seed,
                           file_sha256(model) if model else None)

    def run(self) -> None:
        if self.cfg.kinds.classifier_model:
            check_classifier_model(self.cfg.kinds.classifier_model)
        docs = self.input_docs()
        n_in, bytes_in = count_and_bytes(docs)
        self.write_stage(
            lambda spark, tmp: kinds_stage(spark, docs, self.cfg.kinds, self.cfg.seed, tmp),
            n_in, bytes_in)


class TrainTokenizer(RunConfigTask):
    """Trains the sentencepiece tokenizer on a stable sample of the cleaned corpus,
    or validates the model the config names."""

    def requires(self) -> AssignKinds:
        return AssignKinds(config_path=self.config_path, overrides=self.overrides)

    def fingerprint(self) -> str:
        tok = self.cfg.tokenizer
        if tok.model:
            return fingerprint(tok, file_sha256(tok.model))
        return fingerprint(self.requires().fingerprint(), tok, self.cfg.seed)

    @property
    def output_dir(self) -> Path:
        return self.cfg.out_path() / "tokenizer" / self.fingerprint()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.output_dir / TOKENIZER_FILE))

    def tokenizer(self) -> Tokenizer:
        return load_tokenizer(self.output_dir / TOKENIZER_FILE)

    def run(self) -> None:
        cfg = self.cfg.tokenizer
        with atomic_dir(self.output_dir) as tmp:
            if cfg.model:
                load_tokenizer(cfg.model)  # a clear error if missing or without infilling tokens
                shutil.copyfile(cfg.model, tmp / TOKENIZER_FILE)
            else:
                spark = get_spark(self.cfg.spark)
                docs = read_table(spark, self.requires().output_dir / "docs")
                texts = sample_texts(docs, cfg.train_sample_bytes, self.cfg.seed)
                train_tokenizer(texts, tmp / "tokenizer", config=cfg)


class CountTokens(RunConfigTask):
    """Every document's token count: what the mix plans are made from."""

    def requires(self) -> dict[str, luigi.Task]:
        return {"docs": AssignKinds(config_path=self.config_path, overrides=self.overrides),
                "tokenizer": TrainTokenizer(config_path=self.config_path, overrides=self.overrides)}

    def fingerprint(self) -> str:
        req = self.requires()
        return fingerprint(req["docs"].fingerprint(), req["tokenizer"].fingerprint())

    @property
    def output_dir(self) -> Path:
        return self.cfg.out_path() / "token_counts" / self.fingerprint()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.output_dir / "_SUCCESS"))

    def run(self) -> None:
        req = self.requires()
        spark = get_spark(self.cfg.spark)
        docs = read_table(spark, req["docs"].output_dir / "docs")
        with atomic_dir(self.output_dir) as tmp:
            counts = count_tokens(spark, docs, req["tokenizer"].tokenizer())
            write_table(counts, tmp / "counts")


class BuildShards(RunConfigTask):
    """One training set of the config's mixes: planned, tokenized, FIM-transformed,
    packed and written as shards with a manifest."""

    mix = luigi.Parameter(description="name of a [[mix.mixes]] entry")

    def spec(self) -> MixSpec:
        for spec in self.cfg.mix.mixes:
            if spec.name == self.mix:
                return spec
        raise ConfigError(f"no mix named {self.mix!r}; the config has "
                          f"{[m.name for m in self.cfg.mix.mixes]}")

    def requires(self) -> dict[str, luigi.Task]:
        counts = CountTokens(config_path=self.config_path, overrides=self.overrides)
        return {"counts": counts, **counts.requires()}

    def fingerprint(self) -> str:
        c = self.cfg
        return fingerprint(self.requires()["counts"].fingerprint(), self.spec(), c.mix.max_epochs,
                           c.mix.total_tokens, c.mix.partitions, c.fim, c.pack, c.seed)

    @property
    def output_dir(self) -> Path:
        return self.cfg.out_path() / "shards" / self.mix / self.fingerprint()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.output_dir / MANIFEST))

    def run(self) -> None:
        req, c, spec = self.requires(), self.cfg, self.spec()
        spark = get_spark(c.spark)
        docs = read_table(spark, req["docs"].output_dir / "docs").join(
            read_table(spark, req["counts"].output_dir / "counts"), "id")
        tokens = docs.groupBy(category(spec).alias("category")).agg(F.sum("n_tokens").alias("n"))
        available = {r["category"]: r["n"] for r in tokens.collect()}
        plan = plan_mix(spec, available, c.mix.max_epochs, c.mix.total_tokens)
        selected = select_copies(docs, plan, spec, c.seed).persist()
        realised = {r["category"]: r["n"] for r in
                    selected.groupBy("category").agg(F.sum("n_tokens").alias("n")).collect()}
        total = sum(realised.values())
        tok = req["tokenizer"].tokenizer()
        with atomic_dir(self.output_dir) as tmp:
            shards, stats = write_shards(spark, selected, tok, c.fim, c.pack, c.seed,
                                         c.mix.partitions, tmp)
            mix = {**plan.to_dict(), "realised_tokens": realised,
                   "realised": {k: v / total for k, v in sorted(realised.items())}}
            write_manifest(tmp, tokenizer=tok, pack=c.pack, fim=c.fim, seed=c.seed,
                           shards=shards, stats=stats, mix=mix)
        selected.unpersist()



class PretrainReport(RunConfigTask):
    """Gathers every stage's statistics and each mix's manifest into `<out>/report.json`."""

    def requires(self) -> dict[str, luigi.Task]:
        p = dict(config_path=self.config_path, overrides=self.overrides)
        return {"docs": AssignKinds(**p), **{m.name: BuildShards(mix=m.name, **p) for m in self.cfg.mix.mixes}}

    @property
    def report_dir(self) -> Path:
        parts = [t.fingerprint() for t in self.requires().values()]
        return self.cfg.out_path() / "reports" / fingerprint(parts)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.report_dir / "report.json"))

    def stage_tasks(self) -> list[StageTask]:
        chain = [self.requires()["docs"]]
        while chain[-1].requires():
            chain.append(chain[-1].requires())
        return chain[::-1]

    def run(self) -> None:
        shards = {m.name: self.requires()[m.name].output_dir for m in self.cfg.mix.mixes}
        write_report(get_spark(self.cfg.spark), self.cfg, self.stage_tasks(), shards, self.report_dir)
