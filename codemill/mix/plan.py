"""Token-share plans: how many epochs of each category a mix takes.

Categories are the document kinds (code, nl_code, nl) plus `python`: in a mix
that names a python share, Python code counts as `python` and only other code
as `code`; elsewhere Python is code like any other.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from codemill.errors import InputError
from codemill.mix.config import MixSpec


@dataclass
class MixPlan:
    name: str
    requested: dict[str, float]  # token share per category
    available_tokens: dict[str, int]  # one epoch of each category
    epochs: dict[str, float]  # >1: repeated, <1: subsampled
    target_tokens: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def category(mix: MixSpec) -> Column:
    if "python" in mix.shares:
        return F.when((F.col("kind") == "code") & (F.col("lang") == "python"), F.lit("python")) \
            .otherwise(F.col("kind"))
    return F.col("kind")


def length_bucket(n_tokens: Column) -> Column:
    """The power-of-two bucket of a length: 0 for 0, else the largest 2^k <= n, from the
    bit length of n (a floating log2 misplaces some exact powers of two)."""
    bit_length = F.length(F.bin(n_tokens))
    return F.when(n_tokens < 1, F.lit(0)).otherwise(F.pow(F.lit(2), bit_length - 1)).cast("long")


def category_tokens(docs: DataFrame, mix: MixSpec) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """One Spark aggregation over (document, n_tokens) rows: the tokens of each category
    of `mix` (one epoch), and each category's document count per token-length bucket
    (`{category: {bucket lower bound: documents}}`, for the report)."""
    rows = (docs.groupBy(category(mix).alias("category"), length_bucket(F.col("n_tokens")).alias("bucket"))
            .agg(F.count(F.lit(1)).alias("docs"), F.sum("n_tokens").alias("tokens"))
            .collect())
    tokens: dict[str, int] = {}
    histogram: dict[str, dict[str, int]] = {}
    for r in sorted(rows, key=lambda r: (r["category"], r["bucket"])):
        tokens[r["category"]] = tokens.get(r["category"], 0) + int(r["tokens"])
        histogram.setdefault(r["category"], {})[str(r["bucket"])] = int(r["docs"])
    return tokens, histogram


def plan_mix(mix: MixSpec, available: dict[str, int], max_epochs: float, total_tokens: int) -> MixPlan:
    """Epochs per category so that token shares match `mix.shares`.

    With `total_tokens` 0 the mix is as large as its scarcest category allows
    at `max_epochs`; a category with no tokens, or a total that needs more than
    `max_epochs` of some category, is an error.
    """
    wanted = {c: s for c, s in mix.shares.items() if s > 0}
    empty = sorted(c for c in wanted if available.get(c, 0) == 0)
    if empty:
        raise InputError(f"mix {mix.name!r}: no documents of {', '.join(empty)} "
                         f"(tokens available: {available})")
    limit = min(available[c] * max_epochs / s for c, s in wanted.items())
    total = total_tokens or math.floor(limit)
    if total > limit * (1 + 1e-9):
        scarce = min(wanted, key=lambda c: available[c] / wanted[c])
        raise InputError(f"mix {mix.name!r}: {total:,} tokens need more than mix.max_epochs="
                         f"{max_epochs:g} epochs of {scarce} ({available[scarce]:,} tokens)")
    return MixPlan(
        name=mix.name,
        requested=dict(mix.shares),
        available_tokens={c: int(available.get(c, 0)) for c in mix.shares},
        epochs={c: (s * total / available[c] if s > 0 else 0.0) for c, s in mix.shares.items()},
        target_tokens={c: round(s * total) for c, s in mix.shares.items()},
    )


def _unit_hash(*cols: Column) -> Column:
    """A uniform number in [0, 1) from a seeded 64-bit hash of the columns."""
    return (F.xxhash64(*cols).bitwiseAND(F.lit(0x7FFFFFFFFFFFFFFF)) / F.lit(float(2**63)))


def select_copies(docs: DataFrame, plan: MixPlan, mix: MixSpec, seed: int) -> DataFrame:
    """One row per (document, copy): floor(epochs) copies, plus one more with probability
    frac(epochs), drawn from a hash of (seed, mix, id) — never from row order."""
    epochs = F.create_map(*[F.lit(x) for kv in plan.epochs.items() for x in kv])
    e = F.coalesce(epochs[F.col("category")], F.lit(0.0))
    u = _unit_hash(F.lit(seed), F.lit(mix.name), F.col("id"))
    copies = (F.floor(e) + (u < (e - F.floor(e))).cast("int")).cast("int")
    return (
        docs.withColumn("category", category(mix))
        .withColumn("_copies", copies)
        .where(F.col("_copies") > 0)
        .withColumn("copy", F.explode(F.sequence(F.lit(0), F.col("_copies") - 1)))
        .drop("_copies")
    )
