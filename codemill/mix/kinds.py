"""Each document's kind for the mixes, and what decided it.

Order of authority: a kind configured for the whole source ("source"); the
language from the file name ("extension"); for languages that do not settle
it (plain text by default) a telling file name such as LICENSE or README
("filename"), else a fastText classifier ("classifier") — the user's model or
one trained here on the documents whose kind is certain.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from codemill.errors import InputError
from codemill.fasttext_models import LABEL_PREFIX, ModelRef, checked_model, executor_model, ship_model, train_classifier
from codemill.ingest.languages import NL_CODE_LANGS, NL_LANGS
from codemill.mix.categories import KINDS
from codemill.mix.config import KindConfig
from codemill.observe import step
from codemill.schema import DROPPED_SCHEMA, StageOutput
from codemill.storage.folder import local_file

CLASSIFIER_NAME = "kind-classifier"
# File names that tell the kind of a plain-text file: they label the classifier's training data.
NL_CODE_NAMES = ("readme", "changelog", "changes", "history", "contributing", "install")
NL_NAMES = ("license", "licence", "copying", "notice", "authors", "patents")
SNIPPET_CHARS = 4000
EXAMPLES_PER_LABEL = 1000


def derived_label() -> Column:
    """The kind a document certainly has, from its file name or language; null if unsure."""
    name = F.lower(F.regexp_extract(F.col("path"), r"([^/]*)$", 1))
    code_langs = F.col("kind") == "code"
    return (
        F.when(name.rlike(f"^({'|'.join(NL_NAMES)})"), F.lit("nl"))
        .when(name.rlike(f"^({'|'.join(NL_CODE_NAMES)})") | F.col("lang").isin(*NL_CODE_LANGS),
              F.lit("nl_code"))
        .when(code_langs & ~F.col("lang").isin(*NL_LANGS), F.lit("code"))
    )


def fasttext_line(text: str) -> str:
    """fastText reads one example per line: the head of the document, whitespace folded."""
    return " ".join(text[:SNIPPET_CHARS].split())


def classifier_file(cfg: KindConfig) -> str:
    """The trained model's file name: fastText's .ftz for a quantised model."""
    return CLASSIFIER_NAME + (".ftz" if cfg.classifier_quantize else ".bin")


def train_kind_classifier(docs: DataFrame, out_path: Path, seed: int, cfg: KindConfig) -> dict[str, int]:
    """Train a fastText model on up to EXAMPLES_PER_LABEL documents per derived label,
    chosen by a seeded hash of their id, with the classifier settings of `cfg`.
    Returns the labelled documents per kind."""
    # Only the head fastText reads is kept: the top rows below hold these, not whole files.
    # (One window query over all labels would buffer each label's documents at once: a
    # 1 GB driver ran out of memory on a million.)
    labelled = (
        docs.select("id", F.substring("content", 1, SNIPPET_CHARS).alias("content"), derived_label().alias("label"))
        .where(F.col("label").isNotNull())
        .withColumn("_order", F.xxhash64("id", F.lit(seed)))
    )
    available = {r["label"]: r["n"] for r in labelled.groupBy("label").agg(F.count("*").alias("n")).collect()}
    if sum(1 for n in available.values() if n) < 2:
        raise InputError(f"cannot train a kind classifier: labelled examples per kind {available}; "
                         "give kinds.classifier_model or more varied sources")
    # Balanced classes: fastText has no class weights and code outnumbers the rest, so
    # each kind gets the same number of examples, the rarer ones repeated.
    per_label = min(EXAMPLES_PER_LABEL, max(available.values()))
    examples = []
    for label in KINDS:
        rows = (labelled.where(F.col("label") == label).orderBy("_order", "id")
                .limit(per_label).select("content").collect())
        texts = [fasttext_line(r["content"]) for r in rows]
        examples += [(label, texts[i % len(texts)]) for i in range(per_label)] if texts else []
    counts = {label: int(available.get(label, 0)) for label in KINDS}
    examples.sort(key=lambda e: (e[0], e[1]))
    train_classifier(examples, out_path, epoch=10, lr=0.5, word_ngrams=2, dim=cfg.classifier_dim,
                     min_count=cfg.classifier_min_count, bucket=cfg.classifier_buckets,
                     quantize=cfg.classifier_quantize, cutoff=cfg.classifier_cutoff, seed=seed)
    return counts


def check_classifier_model(path: str) -> None:
    checked_model(path, "kinds.classifier_model", error=InputError,
                  labels_ok=lambda labels: set(labels) <= set(KINDS),
                  labels_rule=f"has labels that are not among {[LABEL_PREFIX + lab for lab in KINDS]}")


def _predict(batches: Iterator[pa.RecordBatch], model_ref: ModelRef) -> Iterator[pa.RecordBatch]:
    model = executor_model(model_ref)
    for batch in batches:
        texts = [fasttext_line(t) for t in batch.column("content").to_pylist()]
        labels, _ = model.predict(texts) if texts else ([], [])
        kinds = [lab[0].removeprefix(LABEL_PREFIX) for lab in labels]
        yield pa.RecordBatch.from_arrays([batch.column("id"), pa.array(kinds, pa.string())],
                                         names=["id", "predicted"])


def assign_kinds(
    spark: SparkSession, docs: DataFrame, cfg: KindConfig, model_path: str | None
) -> DataFrame:
    """`docs` with `kind` and `kind_source` decided; `model_path` is the fastText model
    for the languages in cfg.classify_langs (None: they keep their extension's kind)."""
    by_source = F.create_map(*[F.lit(x) for kv in cfg.source_kinds.items() for x in kv]) \
        if cfg.source_kinds else F.lit(None).cast("map<string,string>")
    source_kind = by_source[F.col("source")]
    ambiguous = F.col("lang").isin(*cfg.classify_langs) if cfg.classify_langs else F.lit(False)
    by_name = F.when(ambiguous, derived_label())
    out = docs
    if model_path is not None:
        ref = ship_model(spark, model_path)
        predicted = docs.where(ambiguous & source_kind.isNull() & by_name.isNull()) \
            .select("id", "content").mapInArrow(lambda batches: _predict(batches, ref),
                                                "id string, predicted string")
        out = docs.join(predicted, "id", "left")
    else:
        out = docs.withColumn("predicted", F.lit(None).cast("string"))
    columns = docs.columns
    return out.select(
        *[c for c in columns if c not in ("kind", "kind_source")],
        F.coalesce(source_kind, by_name, F.col("predicted"), F.col("kind")).alias("kind"),
        F.when(source_kind.isNotNull(), F.lit("source"))
        .when(by_name.isNotNull(), F.lit("filename"))
        .when(F.col("predicted").isNotNull(), F.lit("classifier"))
        .otherwise(F.col("kind_source")).alias("kind_source"),
    ).select(*columns)


def decide_kinds(
    spark: SparkSession, docs: DataFrame, cfg: KindConfig, seed: int, work_dir: Path
) -> StageOutput:
    """Decide every document's kind, with the user's classifier (checked first) or one
    trained into `work_dir` when some documents need it. Nothing is dropped."""
    extra: dict = {}
    model = cfg.classifier_model
    if model:
        model = str(local_file(model))
        check_classifier_model(model)
    elif cfg.classify_langs:
        with step("train the kind classifier"):
            needs_classifier = docs.where(F.col("lang").isin(*cfg.classify_langs)).limit(1).count() > 0
            if needs_classifier:
                model = str(work_dir / classifier_file(cfg))
                extra["classifier_examples"] = train_kind_classifier(docs, Path(model), seed, cfg)
    extra["classifier"] = "user" if cfg.classifier_model else ("trained" if model else "none")
    kept = assign_kinds(spark, docs, cfg, model)
    dropped = spark.createDataFrame([], DROPPED_SCHEMA)
    return StageOutput(kept, dropped, extra)
