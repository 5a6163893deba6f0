"""Settings of a self-instruct run: the `[selfinstruct]` table of a run config.

Defaults follow Code Llama's recipe: ~60,000 questions, five tests per question, ten
solutions per question, the first passing one kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from codemill.config.loader import Section, invalid, setting
from codemill.errors import ConfigError
from codemill.filters.config import BenchmarkConfig


@dataclass(frozen=True)
class SamplingSettings(Section):
    """How one model call samples: `n` completions per prompt."""

    n: int = setting(1, ge=1)
    temperature: float = setting(0.8, ge=0.0)  # 0: greedy (then n must be 1)
    top_p: float = setting(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = setting(512, ge=1)
    seed: int = setting(0, ge=0)
    stop: tuple[str, ...] = ()  # completions end before the first of these strings

    def check(self) -> None:
        if self.temperature == 0 and self.n > 1:
            raise invalid("temperature", f"greedy decoding (temperature 0) gives {self.n} "
                                         "identical samples; use n = 1 or a positive temperature")


BUILTIN_BACKENDS = ("transformers", "vllm", "http")


@dataclass
class ModelBackendConfig(Section):
    """One generating model and how to reach it. Weights always come from a local path."""

    # transformers | vllm | http | "package.module:factory" (a callable taking this
    # ModelBackendConfig and returning a codemill.selfinstruct.backends.Backend)
    backend: str = "transformers"
    path: str = setting("", path=True)  # local model directory (config.json, weights, tokenizer)
    url: str = ""  # http: the server's root, e.g. http://127.0.0.1:8000
    served_name: str = ""  # http: the `model` the server knows it by
    api_key_env: str = ""  # http: environment variable holding a bearer token, if any
    device: str = "auto"  # transformers: auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # transformers and vllm: auto | float32 | bfloat16 | float16
    batch_size: int = setting(8, ge=1)  # prompts per forward pass (transformers) or request (http)
    timeout_s: float = setting(600.0, gt=0.0)  # http: per request
    # Data parallel: one worker process per entry, with CUDA_VISIBLE_DEVICES set to it
    # ("0", "1", or "0,1" for a tensor-parallel pair; "cpu" for none). [] = in this process.
    devices: list[str] = setting(list)
    # vllm: extra vllm.LLM arguments, e.g. {gpu_memory_utilization = 0.9, max_model_len = 4096}
    engine_args: dict[str, Any] = setting(dict)

    def check(self) -> None:
        if self.backend not in BUILTIN_BACKENDS and ":" not in self.backend:
            raise invalid("backend", f"{self.backend!r}: use one of {list(BUILTIN_BACKENDS)} or "
                                     "'package.module:factory'")

    def require_model(self) -> None:
        """What a run that calls this model needs, beyond valid settings."""
        if self.backend in ("transformers", "vllm") and not self.path:
            raise invalid("path", "give the local directory of the model's weights")
        if self.backend == "http" and not (self.url and self.served_name):
            raise invalid("url", "the http backend needs url and served_name")


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
class QuestionsConfig(Section):
    topics: list[str] = setting(lambda: list(DEFAULT_TOPICS), nonempty=True)
    per_completion: int = setting(10, ge=1)  # questions asked for in one completion
    # Passes over the topics, each sampled with seed `sampling.seed + round`. Defaults:
    # 30 topics x 20 rounds x 10 samples x 10 questions = 60,000 (the paper: 62,000).
    rounds: int = setting(20, ge=1)
    sampling: SamplingSettings = setting(
        lambda: SamplingSettings(n=10, temperature=1.0, max_new_tokens=1024))


@dataclass
class QuestionDedupConfig(Section):
    """Exact dedup after normalisation always runs; then MinHash near dedup."""

    near: bool = True
    ngram: int = setting(3, ge=1)  # questions are short: word 3-grams, not code's 5-grams
    num_perm: int = setting(128, ge=2, le=8192)
    threshold: float = setting(0.7, gt=0.0, lt=1.0)
    seed: int = setting(1, ge=0)


@dataclass
class QuestionDecontamConfig(Section):
    """Word n-gram overlap between a question and a benchmark item's text."""

    enabled: bool = True
    # The text of an item is its code_fields joined; HumanEval's prompt holds its docstring.
    benchmarks: list[BenchmarkConfig] = setting(lambda: [
        BenchmarkConfig(name="humaneval", code_fields=["prompt"], substring_fields=[])])
    ngram: int = setting(8, ge=1)
    min_matches: int = setting(1, ge=1)  # shared n-grams that make a question contaminated
    max_items_per_ngram: int = setting(2, ge=1)  # in more items of a benchmark: boilerplate


@dataclass
class UnitTestsConfig(Section):
    count: int = setting(5, ge=2)  # asserts asked for (paper: 5)
    min_tests: int = setting(2, ge=2)  # one is shown to the solution prompt; one or more hidden
    sampling: SamplingSettings = setting(
        lambda: SamplingSettings(n=1, temperature=0.2, max_new_tokens=512))

    def check(self) -> None:
        if self.min_tests > self.count:
            raise invalid("min_tests", f"{self.min_tests} is more than count = {self.count}")


@dataclass
class SolutionsConfig(Section):
    sampling: SamplingSettings = setting(
        lambda: SamplingSettings(n=10, temperature=0.8, max_new_tokens=512))


@dataclass
class OutputConfig(Section):
    keep: Literal["first", "all"] = "first"  # passing solutions kept per question
    # A sentencepiece tokenizer.model: also write instruction shards (answer-masked) with it.
    tokenizer: str = setting("", path=True)
    seq_len: int = setting(4096, ge=16)


@dataclass(frozen=True)
class SandboxConfig(Section):
    timeout_s: float = setting(5.0, gt=0.0)        # wall clock per candidate
    # per process (RLIMIT_AS) and for its whole tree (cgroup)
    memory_bytes: int = setting(1 << 30, ge=16 << 20)
    max_processes: int = setting(16, ge=1)         # processes and threads (RLIMIT_NPROC, cgroup)
    max_file_bytes: int = setting(16 << 20, ge=0)  # RLIMIT_FSIZE
    max_open_files: int = setting(256, ge=16)      # RLIMIT_NOFILE
    scratch_bytes: int = setting(64 << 20, ge=1 << 20)  # size of each candidate's scratch tmpfs
    output_bytes: int = setting(4096, ge=0)        # tail kept of stdout and of stderr
    workers: int = setting(0, ge=0)                # 0: one per usable core
    # workers run candidates as uids/gids from uid_base up, an unused range; each
    # Sandbox reserves its own (a lock file per uid), so concurrent ones never share
    uid_base: int = setting(1_500_000_000, ge=1000, lt=1 << 32)
    allow_weaker_isolation: bool = False
    # "own": the tests run in a process of their own that no candidate code reaches, so a
    # pass cannot be forged from inside the solution (two processes per candidate);
    # "shared": in the solution's process, at 1.3 to 1.8 times the rate, for candidates that do
    # not set out to forge one (the sandbox module's docstring says what that allows)
    tests_process: Literal["own", "shared"] = "own"
    # Without root, what starts each worker as root of a user namespace of its own:
    # bubblewrap (`bwrap`) where installed, else util-linux `unshare` ("auto"), or that one
    rootless_launcher: Literal["auto", "bubblewrap", "unshare"] = "auto"


@dataclass
class SelfInstructConfig(Section):
    question_model: ModelBackendConfig = setting(ModelBackendConfig)  # paper: Llama 2 70B
    code_model: ModelBackendConfig = setting(ModelBackendConfig)  # paper: Code Llama 7B
    # Prompts per model call as the cache sees it: a crash loses at most one such call.
    # Data parallel splits a call across devices: give each device a few hundred for vLLM.
    cache_chunk: int = setting(64, ge=1)
    # JSONL of tasks that arrive with their tests, maybe with a reference solution
    # (codemill.selfinstruct.seeds; `codemill seeds` mines them from documented code)
    seed_tasks: str = setting("", path=True)
    questions: QuestionsConfig = setting(QuestionsConfig)
    dedup: QuestionDedupConfig = setting(QuestionDedupConfig)
    decontam: QuestionDecontamConfig = setting(QuestionDecontamConfig)
    tests: UnitTestsConfig = setting(UnitTestsConfig)
    solutions: SolutionsConfig = setting(SolutionsConfig)
    sandbox: SandboxConfig = setting(SandboxConfig)
    output: OutputConfig = setting(OutputConfig)

    def require_models(self) -> None:
        """A self-instruct run needs both models; a pretraining run needs neither."""
        for name in ("question_model", "code_model"):
            try:
                getattr(self, name).require_model()
            except ConfigError as exc:
                raise ConfigError(f"selfinstruct.{name}.{exc}") from None
