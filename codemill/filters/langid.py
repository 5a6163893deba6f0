"""fastText classifiers on natural-language documents: language identification with a
user-supplied lid.176-style model, and a small quality classifier codemill trains.

Both stages look only at documents whose `kind` is listed (natural language and
docs about code by default); code passes through. The model file is read by each
Python worker once, and shipped to the executors (codemill.fasttext_models).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from codemill.fasttext_models import LABEL_PREFIX, ModelRef, checked_model, executor_model, ship_model, train_classifier  # noqa: F401
from codemill.filters.config import LangIdConfig, QualityConfig
from codemill.filters.rules import byte_chunks
from codemill.filters.steps import FLAGGED_SCHEMA, split_flagged
from codemill.schema import DOC_COLUMNS, DOCUMENT_STORAGE, StageOutput

# train_classifier is here for users of the quality filter, who train its model with it
from codemill.storage.folder import local_file


def fasttext_line(text: str) -> str:
    """fastText predicts on one line (it splits words on any whitespace itself)."""
    return text.replace("\n", " ")


# (top label, its probability) of one document -> (reason, detail), or None to keep it
Decision = Callable[[str, float], tuple[str, str] | None]


def classify_batches(batches: Iterator[pa.RecordBatch], model_ref: ModelRef,
                     kinds: list[str], decide: Decision) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: documents of the listed kinds are predicted in one call per chunk.

    Only the top label is asked for: fasttext-wheel 0.9.2's list-form predict repeats the
    top probability for every label when k > 1."""
    model = executor_model(model_ref)
    for batch in batches:
        for chunk in byte_chunks(batch, "content"):
            reasons: list[str | None] = [None] * chunk.num_rows
            details: list[str | None] = [None] * chunk.num_rows
            todo = [i for i, kind in enumerate(chunk.column("kind").to_pylist()) if kind in kinds]
            texts = [fasttext_line(t or "") for t in chunk.column("content").take(todo).to_pylist()]
            if texts:
                labels, probs = model.predict(texts, k=1)
                for i, label, prob in zip(todo, labels, probs):
                    drop = decide(label[0].removeprefix(LABEL_PREFIX), float(prob[0]))
                    if drop:
                        reasons[i], details[i] = drop
            yield (chunk.append_column("_reason", pa.array(reasons, pa.string()))
                   .append_column("_detail", pa.array(details, pa.string())))


def _run(spark: SparkSession, docs: DataFrame, model_ref: ModelRef, kinds: list[str],
         decide: Decision, stage: str) -> StageOutput:
    flagged = docs.select(*DOC_COLUMNS).mapInArrow(
        lambda batches: classify_batches(batches, model_ref, kinds, decide), FLAGGED_SCHEMA)
    return split_flagged(flagged.persist(DOCUMENT_STORAGE), stage)


def language_filter(spark: SparkSession, docs: DataFrame, cfg: LangIdConfig) -> StageOutput:
    """Keep documents of the listed kinds whose top language is allowed with prob >= threshold;
    drop the others (reason "language", detail "<lang> <prob>")."""
    checked_model(str(local_file(cfg.model_path)), "langid.model_path")
    allowed, threshold = frozenset(cfg.allowed), cfg.threshold

    def decide(lang: str, prob: float) -> tuple[str, str] | None:
        if lang not in allowed:
            return "language", f"{lang} {prob:.3f} not in {sorted(allowed)}"
        if prob < threshold:
            return "language", f"{lang} {prob:.3f} < {threshold}"
        return None

    ref = ship_model(spark, local_file(cfg.model_path))
    return _run(spark, docs, ref, cfg.kinds, decide, "langid")


def quality_filter(spark: SparkSession, docs: DataFrame, cfg: QualityConfig) -> StageOutput:
    """Drop documents of the listed kinds whose P(good_label) is below the threshold
    (reason "quality", detail "<good_label> <prob> < threshold"). The model is binary
    (good vs. not), so P(good) is the top probability or its complement."""
    good, threshold = cfg.good_label, cfg.threshold
    checked_model(str(local_file(cfg.model_path)), "quality.model_path",
                  labels_ok=lambda labels: good in labels and len(labels) == 2,
                  labels_rule=f"must be a binary classifier with the label quality.good_label {good!r}")

    def decide(label: str, prob: float) -> tuple[str, str] | None:
        p_good = prob if label == good else 1.0 - prob
        return ("quality", f"{good} {p_good:.3f} < {threshold}") if p_good < threshold else None

    ref = ship_model(spark, local_file(cfg.model_path))
    return _run(spark, docs, ref, cfg.kinds, decide, "quality")
