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
from codemill.mix.categories import KINDS
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


@dataclass
class CategoryTokens:
    tokens: dict[str, int]  # one epoch of each category
    histogram: dict[str, dict[str, int]]  # {category: {bucket lower bound: documents}}
    largest: dict[str, int]  # the tokens of each category's largest document

    def lopsided(self, max_share: float) -> dict[str, float]:
        """Categories where one document holds more than `max_share` of the tokens: a
        subsampled or repeated category then realises its share only roughly."""
        return {c: self.largest[c] / n for c, n in sorted(self.tokens.items())
                if n and self.largest[c] / n > max_share}


def category_tokens(docs: DataFrame, mix: MixSpec) -> CategoryTokens:
    """One Spark aggregation over (document, n_tokens) rows: the tokens of each category
    of `mix`, its documents per token-length bucket (for the report) and its largest
    document."""
    rows = (docs.groupBy(category(mix).alias("category"), length_bucket(F.col("n_tokens")).alias("bucket"))
            .agg(F.count(F.lit(1)).alias("docs"), F.sum("n_tokens").alias("tokens"),
                 F.max("n_tokens").alias("largest"))
            .collect())
    result = CategoryTokens({}, {}, {})
    for r in sorted(rows, key=lambda r: (r["category"], r["bucket"])):
        c = r["category"]
        result.tokens[c] = result.tokens.get(c, 0) + int(r["tokens"])
        result.histogram.setdefault(c, {})[str(r["bucket"])] = int(r["docs"])
        result.largest[c] = max(result.largest.get(c, 0), int(r["largest"]))
    return result


def mix_warnings(mix: MixSpec, available: CategoryTokens, realised: dict[str, int],
                 max_document_share: float) -> list[str]:
    """What makes a mix's realised shares differ from the requested ones, in words."""
    warnings = [f"mix {mix.name!r}: one {c} document holds {share:.1%} of all {c} tokens "
                f"(over mix.max_document_share = {max_document_share:g}), so the realised shares "
                "are rough; drop such documents or add more of that kind"
                for c, share in available.lopsided(max_document_share).items()]
    total = sum(realised.values())
    for c, wanted in sorted(mix.shares.items()):
        got = realised.get(c, 0) / total if total else 0.0
        if abs(got - wanted) > 0.05:
            warnings.append(f"mix {mix.name!r}: {c} is {got:.1%} of the tokens, {wanted:.1%} requested")
    return warnings


def check_categories(docs: DataFrame, mixes: list[MixSpec]) -> None:
    """Fail before the long work when the corpus is empty or a mix wants a category of
    which it has no documents, with a `[[mix.mixes]]` that would work."""
    counts = {(r["kind"], r["python"]): int(r["n"]) for r in
              docs.groupBy("kind", (F.col("lang") == "python").alias("python"))
              .agg(F.count(F.lit(1)).alias("n")).collect()}
    if not counts:
        raise InputError("no documents are left after the document stages: every input was "
                         "dropped (see each stage's dropped table and reasons), or the sources are "
                         "empty; check `sources` and the filters")
    have = {kind: sum(n for (k, _), n in counts.items() if k == kind) for kind in KINDS}
    have["python"] = counts.get(("code", True), 0)
    problems, fixes = [], []
    for mix in mixes:
        missing = sorted(c for c, share in mix.shares.items() if share > 0 and not have.get(c))
        if not missing:
            continue
        problems.append(f"mix {mix.name!r} wants {', '.join(missing)}")
        left = {c: s for c, s in mix.shares.items() if s > 0 and have.get(c)}
        if left:
            total = sum(left.values())
            shares = ", ".join(f"{c} = {s / total:.3g}" for c, s in left.items())
            fixes.append(f'[[mix.mixes]]\nname = "{mix.name}"\nshares = {{ {shares} }}')
    if problems:
        found = ", ".join(f"{c} {n:,}" for c, n in have.items() if n) or "none"
        raise InputError(
            f"{'; '.join(problems)}, but the corpus has no documents of that kind (documents: {found}). "
            "Add sources with such documents, or change the mixes in the run config"
            + (", e.g.:\n" + "\n".join(fixes) if fixes else ""))


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
