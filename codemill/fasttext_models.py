"""fastText models, for the language-id and quality filters and for document kinds:
training a supervised classifier deterministically, loading each model once per
process, checking a model and its labels, and shipping it to Spark executors.

Importing this module imports neither fasttext nor pyspark (executors import it
inside Arrow batch functions; `ship_model` runs on the driver).
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from codemill.errors import ConfigError
from codemill.storage.local import atomic_path

LABEL_PREFIX = "__label__"

# (local path, shipped name): where the driver's copy is, and the name executors on other
# machines find it under with SparkFiles.get
ModelRef = tuple[str, str]


def train_classifier(examples: Iterable[tuple[str, str]], out: str | os.PathLike, *,
                     epoch: int = 25, lr: float = 0.5, word_ngrams: int = 2, dim: int = 32,
                     min_count: int = 1, bucket: int = 2_000_000, quantize: bool = False,
                     cutoff: int = 0, seed: int = 0) -> Path:
    """Train a supervised fastText model on (label, text) pairs and save it to `out`.

    Each text goes on one line (newlines become spaces). One thread, so the same
    examples in the same order give the same model. `quantize`: product-quantise it
    (the .ftz format), keeping the `cutoff` word and n-gram vectors of largest norm
    (0: all); fastText's quantiser seeds its own k-means, so this stays deterministic."""
    import fasttext

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        for label, text in examples:
            line = text.replace("\n", " ")
            f.write(f"{LABEL_PREFIX}{label} {line}\n")
        train_file = f.name
    try:
        model = fasttext.train_supervised(
            input=train_file, epoch=epoch, lr=lr, wordNgrams=word_ngrams, dim=dim,
            minCount=min_count, bucket=bucket, thread=1, seed=seed, verbose=0)
    finally:
        os.unlink(train_file)
    if quantize:
        model.quantize(cutoff=cutoff, retrain=False, thread=1, verbose=0)
    with atomic_path(out) as tmp:
        model.save_model(str(tmp))
    return out


@functools.lru_cache(maxsize=8)
def load_model(path: str) -> Any:
    """One load per process and file."""
    import fasttext

    return fasttext.load_model(path)


def labels(model: Any) -> list[str]:
    """The model's labels without fastText's `__label__` prefix."""
    return [label.removeprefix(LABEL_PREFIX) for label in model.get_labels()]


def checked_model(path: str | None, setting: str, *, error: type[Exception] = ConfigError,
                  labels_ok: Callable[[list[str]], bool] | None = None,
                  labels_rule: str = "") -> Any:
    """The fastText model at `path` (setting `setting`), loaded on the driver. Raises `error`
    naming the setting when the path is unset, holds no file or no fastText model, or when
    `labels_ok(labels)` is false (the message then says the model `labels_rule`)."""
    if not path:
        raise error(f"{setting} is not set: give the path of a fastText model")
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise error(f"{setting}: no fastText model at {resolved} (the file does not exist)")
    try:
        model = load_model(str(resolved))
    except ValueError as exc:
        raise error(f"{setting}: {path} is not a fastText model ({exc})") from None
    if labels_ok is not None and not labels_ok(found := labels(model)):
        raise error(f"{setting}: {path} {labels_rule}; its labels: {found}")
    return model


def ship_model(spark: Any, path: str | os.PathLike) -> ModelRef:
    """Send the model to every executor (codemill.spark.ship_file: a content-addressed
    copy, so two models of one name never clash); `executor_model` opens it there."""
    from codemill.spark import ship_file

    copy = ship_file(spark, path)
    return str(copy), copy.name


def executor_model(ref: ModelRef) -> Any:
    """The shipped model, loaded once per process: the driver's copy where this machine has
    it (local masters), else the one Spark fetched."""
    local, name = ref
    if os.path.exists(local):
        return load_model(local)
    from pyspark import SparkFiles

    return load_model(SparkFiles.get(name))
