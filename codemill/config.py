"""One run = one TOML file, loaded into typed dataclasses.

Defaults reproduce Code Llama's recipe where the paper has one and the best
public pipelines' parameters elsewhere (DESIGN.md §3–4). Unknown keys and
wrongly typed values are errors that name the file and the key, raised before
any Spark job starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sysconfig
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import dacite

from codemill.errors import ConfigError
from codemill.filters.decontam import DecontamConfig, benchmark_path
from codemill.filters.langid import LangIdConfig, QualityConfig
from codemill.filters.pii import PiiConfig
from codemill.filters.rules import FilterConfig, validate_filter_config


@dataclass
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "codemill"
    log_level: str = "WARN"
    # Zip the codemill package onto spark.submit.pyFiles for executors that lack it.
    ship_package: bool = False
    # Any Spark setting; merged over DEFAULT_SPARK_CONF.
    conf: dict[str, str] = field(default_factory=dict)


DEFAULT_SPARK_CONF = {
    "spark.driver.memory": "4g",
    "spark.sql.shuffle.partitions": "16",
}


@dataclass
class LuigiConfig:
    workers: int = 1
    # False: use a running `luigid` at scheduler_host:scheduler_port.
    local_scheduler: bool = True
    scheduler_host: str = "localhost"
    scheduler_port: int = 8082
    # Luigi's own logging; INFO shows each task starting and finishing.
    log_level: str = "INFO"


SourceType = Literal["dir", "jsonl", "parquet", "hf_disk"]


@dataclass
class SourceConfig:
    """One input. `path` may use {stdlib} and {site_packages} (this interpreter's)."""

    name: str
    type: SourceType
    path: str
    # Record sources: our column -> the source's column (The Stack's names by default).
    columns: dict[str, str] = field(default_factory=dict)
    # Directory sources: metadata applied to every file, and extra excluded names.
    repo: str | None = None
    license: str | None = None
    exclude: list[str] = field(default_factory=list)

    def resolved_path(self) -> Path:
        paths = sysconfig.get_paths()
        text = self.path.format(stdlib=paths["stdlib"], site_packages=paths["purelib"])
        return Path(os.path.expandvars(text)).expanduser().resolve()


DEFAULT_COLUMNS = {
    "content": "content",
    "path": "path",
    "lang": "lang",
    "repo": "repo_name",
    "license": "license",
    "stars": "stars",
}


@dataclass
class IngestConfig:
    # The Stack drops files over 1 MB; larger files are almost never hand-written code.
    max_file_bytes: int = 1_000_000
    # "replace": decode with U+FFFD and flag the row; "drop": drop it with a reason.
    invalid_utf8: Literal["replace", "drop"] = "replace"
    # "error": stop, naming file and line; "quarantine": count the line and keep it aside.
    malformed_jsonl: Literal["error", "quarantine"] = "error"
    # Directory and file names (glob patterns) never walked into.
    exclude: list[str] = field(
        default_factory=lambda: [".git", ".hg", ".svn", "__pycache__", ".venv", "node_modules"]
    )
    files_per_partition: int = 400


@dataclass
class ExactDedupConfig:
    enabled: bool = True
    # Also treat documents equal up to whitespace runs (and leading/trailing space) as duplicates.
    normalize_whitespace: bool = False


@dataclass
class NearDedupConfig:
    """MinHash LSH near-dedup of code (BigCode / The Stack parameters)."""

    enabled: bool = True
    ngram: int = 5
    num_perm: int = 256
    threshold: float = 0.7
    lowercase: bool = False
    # Weights of false positives / false negatives when choosing bands x rows.
    fp_weight: float = 0.5
    fn_weight: float = 0.5
    # 0: chosen from threshold and weights; else used as given (bands * rows <= num_perm).
    bands: int = 0
    rows: int = 0
    # Clusters at least this large have their candidate pairs checked by real Jaccard.
    verify_min_cluster_size: int = 2
    hash_seed: int = 1
    # LSH buckets up to this size yield all their pairs as candidates; a larger bucket
    # (mass copies or shared boilerplate) yields a star from its smallest id plus a chain
    # in id order, so candidate pairs grow linearly, not quadratically, with bucket size.
    all_pairs_max_bucket: int = 64


@dataclass(frozen=True)
class TokenizerConfig:
    """Defaults are Llama's (paper: 32k BPE, digits split, byte fallback)."""

    # Load this tokenizer.model (e.g. Llama's or Code Llama's) instead of training one.
    model: str | None = None
    vocab_size: int = 32000
    # Llama's value: the rarest 0.005% of characters are left to byte fallback.
    character_coverage: float = 0.99995
    # Documents longer than this (UTF-8 bytes) are skipped by the trainer.
    max_doc_bytes: int = 1 << 30
    # 0 = all documents; else sentencepiece samples this many.
    max_docs: int = 0
    # How much of the cleaned corpus (a stable sample by id) the trainer reads.
    train_sample_bytes: int = 20_000_000


@dataclass(frozen=True)
class FimConfig:
    rate: float = 0.9  # paper §2.3: share of documents transformed
    spm_rate: float = 0.5  # share of transformed documents in SPM format (the rest PSM)


@dataclass(frozen=True)
class PackConfig:
    # Paper: 4,096-token sequences; 16,384 for long-context fine-tuning.
    seq_len: int = 4096
    remainder: Literal["pad", "drop"] = "pad"


MIX_CATEGORIES = ("code", "nl_code", "nl", "python")


@dataclass
class MixSpec:
    """One training set: token shares per category (code, nl_code, nl, python)."""

    name: str
    shares: dict[str, float]


@dataclass
class KindConfig:
    """How each document's kind (code / nl_code / nl) is decided for the mixes."""

    # A fastText model (labels __label__code, __label__nl_code, __label__nl) to use
    # instead of training one from the labels the pipeline derives.
    classifier_model: str | None = None
    # Languages whose kind the classifier decides (the rest follow their extension).
    classify_langs: list[str] = field(default_factory=lambda: ["text"])
    # Sources whose documents all have one kind, e.g. {"stackexchange" = "nl_code"}.
    source_kinds: dict[str, str] = field(default_factory=dict)


@dataclass
class MixConfig:
    # Code Llama, paper Table 1: the base mix and the Python mix.
    mixes: list[MixSpec] = field(
        default_factory=lambda: [
            MixSpec("base", {"code": 0.85, "nl_code": 0.08, "nl": 0.07}),
            MixSpec("python", {"python": 0.75, "code": 0.10, "nl_code": 0.10, "nl": 0.05}),
        ]
    )
    # A category may be repeated up to this many epochs to meet its share.
    max_epochs: float = 4.0
    # Target tokens per mix; 0: as many as the scarcest category allows.
    total_tokens: int = 0
    # Spark partitions that pack sequences (each writes its own shards).
    partitions: int = 4


@dataclass
class RunConfig:
    out: str = "codemill-out"
    seed: int = 0
    sources: list[SourceConfig] = field(default_factory=list)
    spark: SparkConfig = field(default_factory=SparkConfig)
    luigi: LuigiConfig = field(default_factory=LuigiConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    kinds: KindConfig = field(default_factory=KindConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    fim: FimConfig = field(default_factory=FimConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    # `codemill selfinstruct` reads this table into codemill.selfinstruct.config.SelfInstructConfig.
    selfinstruct: dict[str, Any] = field(default_factory=dict)

    def out_path(self) -> Path:
        return Path(self.out).expanduser().resolve()


def run_config_from_dict(data: dict[str, Any], origin: str) -> RunConfig:
    try:
        cfg = dacite.from_dict(RunConfig, data, config=dacite.Config(strict=True))
    except dacite.DaciteError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    _validate(cfg, origin)
    return cfg


def _validate(cfg: RunConfig, origin: str) -> None:
    names = [s.name for s in cfg.sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"{origin}: source names must be unique, got {names}")
    for src in cfg.sources:
        unknown = set(src.columns) - set(DEFAULT_COLUMNS)
        if unknown:
            raise ConfigError(
                f"{origin}: source {src.name!r}: unknown columns {sorted(unknown)}; "
                f"known: {sorted(DEFAULT_COLUMNS)}"
            )
    try:
        validate_filter_config(cfg.filters)
        if cfg.decontam.enabled:
            for bench in cfg.decontam.benchmarks:
                if not benchmark_path(bench).is_file():
                    raise ConfigError(f"decontam benchmark {bench.name!r}: "
                                      f"{benchmark_path(bench)} does not exist")
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    for name, model in (("langid", cfg.langid), ("quality", cfg.quality)):
        if model.enabled and not Path(model.model_path).expanduser().is_file():
            raise ConfigError(f"{origin}: {name}.model_path: {model.model_path or '(not set)'} "
                              "is not a file")
    if cfg.ingest.max_file_bytes <= 0:
        raise ConfigError(f"{origin}: ingest.max_file_bytes must be positive")
    for mix in cfg.mix.mixes:
        unknown = set(mix.shares) - set(MIX_CATEGORIES)
        if unknown:
            raise ConfigError(f"{origin}: mix {mix.name!r}: unknown categories {sorted(unknown)}; "
                              f"known: {list(MIX_CATEGORIES)}")
        total = sum(mix.shares.values())
        if abs(total - 1.0) > 1e-6 or any(v < 0 for v in mix.shares.values()):
            raise ConfigError(f"{origin}: mix {mix.name!r}: shares must be non-negative and sum "
                              f"to 1, got {total:g} ({mix.shares})")
    for name, kind in cfg.kinds.source_kinds.items():
        if kind not in ("code", "nl_code", "nl"):
            raise ConfigError(f"{origin}: kinds.source_kinds.{name} = {kind!r}: "
                              "must be code, nl_code or nl")


def parse_override(text: str) -> dict[str, Any]:
    """`a.b."c.d"=value` -> {"a": {"b": {"c.d": value}}}, read with TOML's own key and
    value syntax; a value that is not TOML (e.g. local[2]) is taken as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value")
    try:
        return tomllib.loads(f"{key} = {raw}")
    except tomllib.TOMLDecodeError:
        try:
            return tomllib.loads(f"{key} = {json.dumps(raw)}")
        except tomllib.TOMLDecodeError:
            raise ConfigError(f"override {text!r}: {key.strip()!r} is not a valid key") from None


def _merge(base: dict[str, Any], update: dict[str, Any], text: str) -> None:
    for key, value in update.items():
        if isinstance(value, dict):
            node = base.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {key!r} is not a table")
            _merge(node, value, text)
        else:
            base[key] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        _merge(data, parse_override(text), text)
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> RunConfig:
    """Load a run config; None loads the embedded demo config."""
    if path is None:
        origin = "codemill/configs/demo.toml"
        text = resources.files("codemill").joinpath("configs/demo.toml").read_text()
    else:
        origin = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: invalid TOML: {exc}") from None
    return run_config_from_dict(apply_overrides(data, list(overrides)), origin)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def fingerprint(*parts: Any) -> str:
    """Short hash of everything that changes a stage's result."""
    blob = json.dumps(
        [to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
