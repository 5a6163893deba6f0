"""fastText classifiers on natural-language documents: language identification with a
user-supplied lid.176-style model, and a small quality classifier codemill trains.

Both stages look only at documents whose `kind` is listed (natural language and
docs about code by default); code passes through. The model file is read by each
Python worker once; on a cluster master it is shipped with `SparkContext.addFile`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import fasttext
import pyarrow as pa
from pyspark import SparkFiles, StorageLevel
from pyspark.sql import DataFrame, SparkSession

from codemill.errors import ConfigError
from codemill.filters.rules import FLAGGED_SCHEMA, byte_chunks, split_flagged
from codemill.schema import DOC_COLUMNS, StageOutput

LABEL_PREFIX = "__label__"


@dataclass
class LangIdConfig:
    enabled: bool = False  # needs a model: fastText's lid.176.bin / .ftz or one like it
    model_path: str = ""
    allowed: list[str] = field(default_factory=lambda: ["en"])
    # datatrove's LanguageFilter default; CCNet used 0.5
    threshold: float = 0.65
    kinds: list[str] = field(default_factory=lambda: ["nl", "nl_code"])


@dataclass
class QualityConfig:
    enabled: bool = False  # needs a model trained with `train_classifier`
    model_path: str = ""
    good_label: str = "hq"
    threshold: float = 0.5  # drop when P(good_label) is below
    kinds: list[str] = field(default_factory=lambda: ["nl", "nl_code"])


def fasttext_line(text: str) -> str:
    """fastText predicts on one line (it splits words on any whitespace itself)."""
    return text.replace("\n", " ")


def train_classifier(examples: Iterable[tuple[str, str]], out: str | os.PathLike, *,
                     epoch: int = 25, lr: float = 0.5, word_ngrams: int = 2, dim: int = 32,
                     min_count: int = 1, seed: int = 0) -> Path:
    """Train a supervised fastText model on (label, text) pairs and save it to `out`.

    One thread, so the same examples give the same model."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        for label, text in examples:
            f.write(f"{LABEL_PREFIX}{label} {fasttext_line(text)}\n")
        train_file = f.name
    try:
        model = fasttext.train_supervised(
            input=train_file, epoch=epoch, lr=lr, wordNgrams=word_ngrams, dim=dim,
            minCount=min_count, thread=1, seed=seed, verbose=0)
    finally:
        os.unlink(train_file)
    model.save_model(str(out))
    return out


_MODELS: dict[str, fasttext.FastText._FastText] = {}


def load_model(path: str) -> fasttext.FastText._FastText:
    """One load per process and file."""
    if path not in _MODELS:
        _MODELS[path] = fasttext.load_model(path)
    return _MODELS[path]


def _checked_model(setting: str, path: str) -> fasttext.FastText._FastText:
    if not path:
        raise ConfigError(f"{setting} is not set: give the path of a fastText model")
    if not Path(path).is_file():
        raise ConfigError(f"{setting}: no fastText model at {Path(path).resolve()}")
    try:
        return load_model(str(Path(path).resolve()))
    except ValueError as exc:
        raise ConfigError(f"{setting}: {path} is not a fastText model ({exc})") from None


def _model_on_executors(spark: SparkSession, path: str) -> tuple[str, str]:
    """(local path, shipped name): local masters share the driver's files; others get a copy
    (executors find shipped files by name, so two models may not share one)."""
    sc, resolved = spark.sparkContext, Path(path).resolve()
    if not sc.master.startswith("local"):
        shipped = {Path(urlparse(f).path).name: urlparse(f).path for f in sc.listFiles}
        if shipped.get(resolved.name, str(resolved)) != str(resolved):
            raise ConfigError(f"{resolved}: another model named {resolved.name} was already shipped "
                              f"to the executors ({shipped[resolved.name]}); rename one of them")
        if resolved.name not in shipped:
            sc.addFile(str(resolved))
    return str(resolved), resolved.name


def _executor_model(ref: tuple[str, str]) -> fasttext.FastText._FastText:
    path, name = ref
    return load_model(path if os.path.exists(path) else SparkFiles.get(name))


# (top label, its probability) of one document -> (reason, detail), or None to keep it
Decision = Callable[[str, float], tuple[str, str] | None]


def classify_batches(batches: Iterator[pa.RecordBatch], model_ref: tuple[str, str],
                     kinds: list[str], decide: Decision) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: documents of the listed kinds are predicted in one call per chunk.

    Only the top label is asked for: fasttext-wheel 0.9.2's list-form predict repeats the
    top probability for every label when k > 1."""
    model = _executor_model(model_ref)
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


def _run(spark: SparkSession, docs: DataFrame, model_ref: tuple[str, str], kinds: list[str],
         decide: Decision, stage: str) -> StageOutput:
    flagged = docs.select(*DOC_COLUMNS).mapInArrow(
        lambda batches: classify_batches(batches, model_ref, kinds, decide), FLAGGED_SCHEMA)
    return split_flagged(flagged.persist(StorageLevel.MEMORY_AND_DISK), stage)


def language_filter(spark: SparkSession, docs: DataFrame, cfg: LangIdConfig) -> StageOutput:
    """Keep documents of the listed kinds whose top language is allowed with prob >= threshold;
    drop the others (reason "language", detail "<lang> <prob>")."""
    _checked_model("langid.model_path", cfg.model_path)
    allowed, threshold = frozenset(cfg.allowed), cfg.threshold

    def decide(lang: str, prob: float) -> tuple[str, str] | None:
        if lang not in allowed:
            return "language", f"{lang} {prob:.3f} not in {sorted(allowed)}"
        if prob < threshold:
            return "language", f"{lang} {prob:.3f} < {threshold}"
        return None

    ref = _model_on_executors(spark, cfg.model_path)
    return _run(spark, docs, ref, cfg.kinds, decide, "langid")


def quality_filter(spark: SparkSession, docs: DataFrame, cfg: QualityConfig) -> StageOutput:
    """Drop documents of the listed kinds whose P(good_label) is below the threshold
    (reason "quality", detail "<good_label> <prob> < threshold"). The model is binary
    (good vs. not), so P(good) is the top probability or its complement."""
    model = _checked_model("quality.model_path", cfg.model_path)
    labels = [label.removeprefix(LABEL_PREFIX) for label in model.labels]
    if cfg.good_label not in labels or len(labels) != 2:
        raise ConfigError(f"quality.model_path: {cfg.model_path} must be a binary classifier with "
                          f"the label quality.good_label {cfg.good_label!r}; its labels: {labels}")
    good, threshold = cfg.good_label, cfg.threshold

    def decide(label: str, prob: float) -> tuple[str, str] | None:
        p_good = prob if label == good else 1.0 - prob
        return ("quality", f"{good} {p_good:.3f} < {threshold}") if p_good < threshold else None

    ref = _model_on_executors(spark, cfg.model_path)
    return _run(spark, docs, ref, cfg.kinds, decide, "quality")
