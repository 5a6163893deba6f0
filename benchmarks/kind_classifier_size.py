"""The kind classifier's size and accuracy on the demo's documents: the settings it was
trained with before (fastText's 2M n-gram buckets, 32-dim vectors, every word, not
quantised) against the current defaults of `[kinds]`.

The documents are the kinds stage's real input: the demo config (stdlib +
site-packages) run through the DAG up to `filters` into bench-out/kind-classifier
(finished stages are skipped on a second run). The labelled documents (kind certain
from file name or language, what the stage trains on) are split into folds by a hash
of their id; each setting is trained by the stage's own function on all folds but one
and tested on that one, so every labelled document is predicted once by a model that
never saw it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from codemill.config import load_run_config
from codemill.fasttext_models import LABEL_PREFIX, load_model
from codemill.mix.categories import KINDS
from codemill.mix.config import KindConfig
from codemill.mix.kinds import SNIPPET_CHARS, classifier_file, derived_label, fasttext_line, train_kind_classifier
from codemill.pipelines.runner import run_dag
from codemill.pipelines.tables import read_table
from codemill.pipelines.task import stage_task
from codemill.spark import get_spark

OUT = Path("bench-out/kind-classifier")
FOLDS = 5
SETTINGS = {
    "before (dim 32, 2M buckets, min count 1, .bin)":
        KindConfig(classifier_dim=32, classifier_buckets=2_000_000, classifier_min_count=1,
                   classifier_quantize=False),
    "dim 16, 65,536 buckets, min count 2, quantised .ftz, cutoff 20,000 (the previous default)":
        KindConfig(classifier_cutoff=20_000),
    "now: `[kinds]` defaults (dim 16, 65,536 buckets, min count 2, quantised .ftz, cutoff 5,000)":
        KindConfig(),
}


def demo_documents() -> DataFrame:
    """The demo's documents after the filters: what the kinds stage reads."""
    overrides = [f"out={json.dumps(str(OUT))}"]
    cfg = load_run_config(None, overrides)
    task = run_dag(cfg, lambda: stage_task("filters", None, overrides))
    if task is None:
        raise RuntimeError("the demo DAG did not finish the filters stage")
    return read_table(get_spark(cfg.spark), task.committed().join("docs"))


def with_folds(docs: DataFrame) -> DataFrame:
    """The labelled documents, each with its fold."""
    return (docs.withColumn("label", derived_label()).where(F.col("label").isNotNull())
            .withColumn("fold", F.pmod(F.xxhash64("id", F.lit("folds")), F.lit(FOLDS))))


def test_examples(labelled: DataFrame, fold: int) -> list[tuple[str, str]]:
    rows = (labelled.where(F.col("fold") == fold)
            .select("label", F.substring("content", 1, SNIPPET_CHARS).alias("head")).collect())
    return [(r["label"], fasttext_line(r["head"])) for r in rows]


def evaluate(labelled: DataFrame, name: str, cfg: KindConfig) -> dict:
    """Train on all folds but one, test on it, for every fold: sizes, seconds, hits."""
    hits, seen, sizes, seconds = Counter(), Counter(), [], 0.0
    for fold in range(FOLDS):
        path = OUT / "models" / f"{list(SETTINGS).index(name)}-fold{fold}-{classifier_file(cfg)}"
        started = time.perf_counter()
        train_kind_classifier(labelled.where(F.col("fold") != fold), path, 0, cfg)
        seconds += time.perf_counter() - started
        sizes.append(path.stat().st_size)
        examples = test_examples(labelled, fold)
        predicted, _ = load_model(str(path.resolve())).predict([text for _, text in examples])
        path.unlink()  # 268 MB each with the old settings
        for (label, _), guess in zip(examples, predicted):
            seen[label] += 1
            hits[label] += guess[0] == LABEL_PREFIX + label
    recall = {kind: hits[kind] / seen[kind] for kind in KINDS}
    return {"mb": max(sizes) / 1e6, "seconds": seconds / FOLDS, "seen": seen,
            "accuracy": sum(hits.values()) / sum(seen.values()),
            "balanced": sum(recall.values()) / len(recall), "recall": recall}


def main() -> str:
    labelled = with_folds(demo_documents())
    results = {name: evaluate(labelled, name, cfg) for name, cfg in SETTINGS.items()}
    before, now = results[next(iter(SETTINGS))], results[list(SETTINGS)[-1]]
    seen = before["seen"]
    lines = [
        f"## Kind classifier: size and accuracy (demo documents, {FOLDS}-fold)",
        "",
        "| settings | model MB | train s | accuracy | balanced accuracy | code | nl_code | nl |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['mb']:.2f} | {r['seconds']:.1f} | {r['accuracy']:.2%} | "
                     f"{r['balanced']:.2%} | " + " | ".join(f"{r['recall'][k]:.1%}" for k in KINDS) + " |")
    lines += [
        "",
        f"{sum(seen.values()):,} labelled documents ({', '.join(f'{seen[k]:,} {k}' for k in KINDS)}), "
        "each predicted by the model trained on the other folds with the stage's own function "
        "(up to 1,000 examples per kind, the rarer kinds repeated). The kind columns are each "
        f"kind's recall; balanced accuracy is their mean. The model is {before['mb'] / now['mb']:,.0f}x "
        f"smaller; accuracy {100 * (now['accuracy'] - before['accuracy']):+.2f} points, balanced "
        f"accuracy {100 * (now['balanced'] - before['balanced']):+.2f} points. Train s: the stage's "
        "training call (sampling the examples in Spark, fastText, quantising), mean over folds.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
