"""Settings of a self-instruct run: the `[selfinstruct]` table of a run's TOML file.

Defaults follow Code Llama §2.5 (DESIGN.md §3): ~60,000 questions, five tests
per question, ten solutions per question, the first passing one kept. Plain
dataclasses with TOML-friendly fields, loaded with dacite like the rest of the
run config.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dacite

from codemill.config import ConfigError, RunConfig, run_config_from_dict, apply_overrides
from codemill.filters.decontam import BenchmarkConfig
from codemill.selfinstruct.sandbox import SandboxConfig


@dataclass(frozen=True)
class SamplingSettings:
    """How one model call samples: `n` completions per prompt."""

    n: int = 1
    temperature: float = 0.8  # 0: greedy (then n must be 1)
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0
    stop: tuple[str, ...] = ()  # completions end before the first of these strings

    def check(self, where: str = "sampling") -> None:
        if self.n < 1:
            raise ConfigError(f"{where}.n must be at least 1, got {self.n}")
        if self.temperature < 0:
            raise ConfigError(f"{where}.temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.n > 1:
            raise ConfigError(f"{where}: greedy decoding (temperature 0) gives {self.n} identical "
                              "samples; use n = 1 or a positive temperature")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"{where}.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"{where}.max_new_tokens must be positive, got {self.max_new_tokens}")


@dataclass
class ModelConfig:
    """One model and how to reach it. Weights always come from a local path."""

    # transformers | vllm | http | "package.module:factory" (a callable taking this
    # ModelConfig and returning a codemill.selfinstruct.backends.Backend)
    backend: str = "transformers"
    path: str = ""  # local model directory (config.json, weights, tokenizer)
    url: str = ""  # http: the server's root, e.g. http://127.0.0.1:8000
    served_name: str = ""  # http: the `model` the server knows it by
    api_key_env: str = ""  # http: environment variable holding a bearer token, if any
    device: str = "auto"  # transformers: auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # transformers and vllm: auto | float32 | bfloat16 | float16
    batch_size: int = 8  # prompts per forward pass (transformers) or per request (http)
    timeout_s: float = 600.0  # http: per request
    # Data parallel: one worker process per entry, with CUDA_VISIBLE_DEVICES set to it
    # ("0", "1", or "0,1" for a tensor-parallel pair; "cpu" for none). [] = in this process.
    devices: list[str] = field(default_factory=list)
    # vllm: extra vllm.LLM arguments, e.g. {gpu_memory_utilization = 0.9, max_model_len = 4096}
    engine_args: dict[str, Any] = field(default_factory=dict)


DEFAULT_TOPICS = [
    "string manipulation", "lists and arrays", "dictionaries and counting", "sets",
    "sorting and searching", "recursion", "dynamic programming", "greedy algorithms",
    "graphs and trees", "number theory", "prime numbers", "bit manipulation",
    "date and time arithmetic", "parsing structured text", "regular expressions",
    "matrices and grids", "geometry", "combinatorics", "intervals and ranges",
    "stacks and queues", "linked structures built from lists", "text formatting",
    "validation of input formats", "simulation of simple games", "statistics",
    "binary search", "two pointers and sliding windows", "hashing and checksums",
    "unit conversion", "encoding and decoding schemes",
]


@dataclass
class QuestionsConfig:
    topics: list[str] = field(default_factory=lambda: list(DEFAULT_TOPICS))
    per_completion: int = 10  # questions asked for in one completion
    # Passes over the topics, each sampled with seed `sampling.seed + round`. Defaults:
    # 30 topics x 20 rounds x 10 samples x 10 questions = 60,000 (the paper: 62,000).
    rounds: int = 20
    sampling: SamplingSettings = field(
        default_factory=lambda: SamplingSettings(n=10, temperature=1.0, max_new_tokens=1024))


@dataclass
class QuestionDedupConfig:
    """Exact dedup after normalisation always runs; then MinHash near dedup."""

    near: bool = True
    ngram: int = 3  # questions are short: word 3-grams, not code's 5-grams
    num_perm: int = 128
    threshold: float = 0.7
    seed: int = 1


@dataclass
class QuestionDecontamConfig:
    """Word n-gram overlap between a question and a benchmark item's text."""

    enabled: bool = True
    # The text of an item is its code_fields joined; HumanEval's prompt holds its docstring.
    benchmarks: list[BenchmarkConfig] = field(default_factory=lambda: [
        BenchmarkConfig(name="humaneval", code_fields=["prompt"], substring_fields=[])])
    ngram: int = 8
    min_matches: int = 1  # shared n-grams that make a question contaminated
    max_items_per_ngram: int = 2  # an n-gram in more items of a benchmark is boilerplate


@dataclass
class UnitTestsConfig:
    count: int = 5  # asserts asked for (paper: 5)
    min_tests: int = 2  # one is shown to the solution prompt; at least one stays hidden
    sampling: SamplingSettings = field(
        default_factory=lambda: SamplingSettings(n=1, temperature=0.2, max_new_tokens=512))


@dataclass
class SolutionsConfig:
    sampling: SamplingSettings = field(
        default_factory=lambda: SamplingSettings(n=10, temperature=0.8, max_new_tokens=512))


@dataclass
class OutputConfig:
    keep: Literal["first", "all"] = "first"  # passing solutions kept per question
    # A sentencepiece tokenizer.model: also write instruction shards (answer-masked) with it.
    tokenizer: str = ""
    seq_len: int = 4096


@dataclass
class SelfInstructConfig:
    question_model: ModelConfig = field(default_factory=ModelConfig)  # paper: Llama 2 70B
    code_model: ModelConfig = field(default_factory=ModelConfig)  # paper: Code Llama 7B
    # Prompts per model call as the cache sees it: a crash loses at most one such call.
    # Data parallel splits a call across devices: give each device a few hundred for vLLM.
    cache_chunk: int = 64
    questions: QuestionsConfig = field(default_factory=QuestionsConfig)
    dedup: QuestionDedupConfig = field(default_factory=QuestionDedupConfig)
    decontam: QuestionDecontamConfig = field(default_factory=QuestionDecontamConfig)
    tests: UnitTestsConfig = field(default_factory=UnitTestsConfig)
    solutions: SolutionsConfig = field(default_factory=SolutionsConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


BUILTIN_BACKENDS = ("transformers", "vllm", "http")


def check_model(model: ModelConfig, where: str) -> None:
    if model.backend not in BUILTIN_BACKENDS and ":" not in model.backend:
        raise ConfigError(f"{where}.backend = {model.backend!r}: use one of {list(BUILTIN_BACKENDS)} "
                          "or 'package.module:factory'")
    if model.backend in ("transformers", "vllm") and not model.path:
        raise ConfigError(f"{where}.path: give the local directory of the model's weights")
    if model.backend == "http" and not (model.url and model.served_name):
        raise ConfigError(f"{where}: the http backend needs url and served_name")
    if model.batch_size < 1:
        raise ConfigError(f"{where}.batch_size must be positive")


def check_selfinstruct(cfg: SelfInstructConfig, origin: str) -> None:
    where = f"{origin}: selfinstruct"
    check_model(cfg.question_model, f"{where}.question_model")
    check_model(cfg.code_model, f"{where}.code_model")
    cfg.questions.sampling.check(f"{where}.questions.sampling")
    cfg.tests.sampling.check(f"{where}.tests.sampling")
    cfg.solutions.sampling.check(f"{where}.solutions.sampling")
    if not cfg.questions.topics or cfg.questions.rounds < 1 or cfg.questions.per_completion < 1:
        raise ConfigError(f"{where}.questions: needs topics, rounds >= 1 and per_completion >= 1")
    if not 2 <= cfg.tests.min_tests <= cfg.tests.count:
        raise ConfigError(f"{where}.tests: need 2 <= min_tests <= count (one test is shown, "
                          "the rest stay hidden)")
    if not 0 < cfg.dedup.threshold < 1:
        raise ConfigError(f"{where}.dedup.threshold must be in (0, 1)")
    if cfg.cache_chunk < 1:
        raise ConfigError(f"{where}.cache_chunk must be positive")


def load_selfinstruct_config(path: str | os.PathLike, overrides: list[str] = ()
                             ) -> tuple[RunConfig, SelfInstructConfig]:
    """The run config (out, seed, luigi, ...) and its `[selfinstruct]` table, overrides
    (e.g. `selfinstruct.code_model.path="/models/x"`) applied to both."""
    origin = str(path)
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: invalid TOML: {exc}") from None
    data = apply_overrides(data, list(overrides))
    table = data.pop("selfinstruct", {})
    run = run_config_from_dict(data, origin)
    try:
        cfg = dacite.from_dict(SelfInstructConfig, table,
                               config=dacite.Config(strict=True, cast=[tuple]))
    except dacite.DaciteError as exc:
        raise ConfigError(f"{origin}: selfinstruct: {exc}") from None
    check_selfinstruct(cfg, origin)
    return run, cfg
