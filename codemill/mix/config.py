"""Settings of document kinds and of the token-share mixes."""

from __future__ import annotations

from dataclasses import dataclass

from codemill.config.loader import Section, check_unique_names, invalid, setting
from codemill.errors import ConfigError
from codemill.mix.categories import KINDS, MIX_CATEGORIES


@dataclass
class MixSpec(Section):
    """One training set: token shares per category (code, nl_code, nl, python)."""

    name: str = setting(nonempty=True)
    shares: dict[str, float] = setting(nonempty=True)

    def check(self) -> None:
        for category, share in self.shares.items():
            if category not in MIX_CATEGORIES:
                raise invalid(("shares", category),
                              f"unknown category; known: {list(MIX_CATEGORIES)}")
            if not 0 <= share <= 1:
                raise invalid(("shares", category), f"share {share} is not in [0, 1]")
        total = sum(self.shares.values())
        if abs(total - 1.0) > 1e-6:
            raise invalid("shares", f"shares must sum to 1, got {total:g}")


@dataclass
class MixConfig(Section):
    # Code Llama, paper Table 1: the base mix and the Python mix.
    mixes: list[MixSpec] = setting(lambda: [
        MixSpec("base", {"code": 0.85, "nl_code": 0.08, "nl": 0.07}),
        MixSpec("python", {"python": 0.75, "code": 0.10, "nl_code": 0.10, "nl": 0.05}),
    ], nonempty=True)
    # A category may be repeated up to this many epochs to meet its share.
    max_epochs: float = setting(4.0, gt=0.0)
    # Target tokens per mix; 0: as many as the scarcest category allows.
    total_tokens: int = setting(0, ge=0)
    # Spark partitions that pack sequences (each writes its own shards).
    partitions: int = setting(4, ge=1)
    # Warn when one document holds more than this share of its category's tokens.
    max_document_share: float = setting(0.05, gt=0.0, le=1.0)

    def check(self) -> None:
        check_unique_names(self.mixes, "mixes", "mixes")

    def spec(self, name: str) -> MixSpec:
        for mix in self.mixes:
            if mix.name == name:
                return mix
        raise ConfigError(f"no mix named {name!r}; the config has {[m.name for m in self.mixes]}")


@dataclass
class KindConfig(Section):
    """How each document's kind (code / nl_code / nl) is decided for the mixes."""

    # A fastText model (labels __label__code, __label__nl_code, __label__nl) to use
    # instead of training one from the labels the pipeline derives.
    classifier_model: str | None = setting(None, path=True)
    # Languages whose kind the classifier decides (the rest follow their extension).
    classify_langs: list[str] = setting(lambda: ["text"])
    # Sources whose documents all have one kind, e.g. {"stackexchange" = "nl_code"}.
    source_kinds: dict[str, str] = setting(dict)
    # The classifier trained when no model is given. fastText's own defaults (2M hash
    # buckets of 32-dim n-gram vectors here) made it 260 MB; these keep it under 1 MB
    # at the same accuracy (benchmarks/kind_classifier_size.py).
    classifier_dim: int = setting(16, ge=2, le=300)
    classifier_buckets: int = setting(65_536, ge=1_024, le=10_000_000)
    classifier_min_count: int = setting(2, ge=1, le=1_000)  # rarer words get no vector
    # fastText's product quantisation, saved as .ftz, keeping the `classifier_cutoff`
    # word and n-gram vectors of largest norm (0: all of them). Quantising runs k-means
    # over the vectors kept: 20,000 cost every run about 2.6 s, 5,000 about 0.9 s.
    classifier_quantize: bool = True
    classifier_cutoff: int = setting(5_000, ge=0, le=10_000_000)

    def check(self) -> None:
        for source, kind in self.source_kinds.items():
            if kind not in KINDS:
                raise invalid(("source_kinds", source), f"{kind!r} is not one of {list(KINDS)}")
