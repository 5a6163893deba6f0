"""The self-instruct stages: questions -> dedup -> tests -> solutions -> execute -> select.

Each writes `records.jsonl` (kept), `dropped.jsonl` (with reasons) and `stats.json`.
Model calls are cached in `<out>/selfinstruct/cache/`, shared by all fingerprints, so a
changed threshold re-runs stages without re-asking the models what they already
answered, and a crashed run resumes mid-stage. None of them uses Spark.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from codemill.filters.config import benchmark_path
from codemill.selfinstruct.config import ModelBackendConfig, SelfInstructConfig
from codemill.stages.base import Stage, StageRef
from codemill.storage.folder import local_file
from codemill.storage.local import file_sha256

if TYPE_CHECKING:
    from codemill.selfinstruct.backends import CachedBackend
    from codemill.selfinstruct.pipeline import StageResult
    from codemill.storage.folder import Folder

RECORDS, DROPPED, STATS, FUNNEL = "records.jsonl", "dropped.jsonl", "stats.json", "funnel.txt"


def model_settings(cfg: ModelBackendConfig) -> dict[str, Any]:
    from codemill.selfinstruct.backends import model_identity

    return model_identity(cfg)


def model_cache_dir(out: str) -> Path:
    """Where model answers are cached: `<out>/selfinstruct/cache` when `out` is local;
    for an `out` in object storage, a local folder named after it (the cache is many
    small files that a crashed run reuses, and local-only like any scratch space)."""
    from codemill.storage import is_local, join, local_path

    if is_local(out):
        return local_path(join(out, "selfinstruct", "cache"))
    root = Path(os.environ.get("CODEMILL_CACHE", Path.home() / ".cache" / "codemill"))
    return root / "selfinstruct" / hashlib.sha256(out.encode()).hexdigest()[:16]


class SelfInstructStage(Stage):
    sections = {"selfinstruct": SelfInstructConfig}
    previous: str | None = None  # the stage whose records this one reads

    @property
    def si(self) -> SelfInstructConfig:
        return self.cfg.selfinstruct

    def uses_spark(self) -> bool:
        return False

    def inputs(self) -> dict[str, StageRef]:
        return {"records": StageRef(self.previous)} if self.previous else {}

    def input_records(self, inputs: dict[str, Folder]) -> list[dict[str, Any]]:
        from codemill.selfinstruct.pipeline import parse_jsonl

        return parse_jsonl(inputs["records"].read_text(RECORDS))

    def model(self, cfg: ModelBackendConfig) -> CachedBackend:
        from codemill.selfinstruct.backends import CachedBackend, make_backend, model_identity

        cache = model_cache_dir(self.cfg.out_uri())
        return CachedBackend(make_backend(cfg), model_identity(cfg), cache, self.si.cache_chunk)

    def write(self, result: StageResult, work: Folder, model: CachedBackend | None = None) -> None:
        from codemill.selfinstruct.pipeline import format_jsonl

        if model is not None:
            result.stats.extra["cache"] = model.stats()
        work.write_text(RECORDS, format_jsonl(result.kept))
        work.write_text(DROPPED, format_jsonl(result.dropped))
        work.write_text(STATS, result.stats.to_json())


class ModelStage(SelfInstructStage):
    """A stage that asks a model: its result depends on the model, its own section of
    the config and the prompt templates."""

    model_key: ClassVar[str]  # question_model | code_model
    section_key: ClassVar[str]  # questions | tests | solutions

    def settings(self) -> list[Any]:
        from codemill.selfinstruct.prompts import PROMPT_VERSION

        return [model_settings(getattr(self.si, self.model_key)), getattr(self.si, self.section_key),
                PROMPT_VERSION]

    def ask(self, model: CachedBackend, records: list[dict[str, Any]]) -> StageResult:
        raise NotImplementedError

    def run(self, spark: None, inputs: dict[str, Folder], work: Folder) -> None:
        records = self.input_records(inputs) if self.previous else []
        with self.model(getattr(self.si, self.model_key)) as model:
            self.write(self.ask(model, records), work, model)


class Questions(ModelStage):
    name = "selfinstruct/questions"
    model_key, section_key = "question_model", "questions"

    def settings(self) -> list[Any]:
        seeds = self.si.seed_tasks  # without seeds, the fingerprint of runs before them
        return [*super().settings(), *([file_sha256(local_file(seeds))] if seeds else [])]

    def ask(self, model: CachedBackend, records: list[dict[str, Any]]) -> StageResult:
        from codemill.selfinstruct.pipeline import generate_questions
        from codemill.selfinstruct.seeds import read_seed_tasks

        seeds = read_seed_tasks(local_file(self.si.seed_tasks)) if self.si.seed_tasks else []
        return generate_questions(model, self.si.questions, seeds)


class DedupQuestions(SelfInstructStage):
    name = "selfinstruct/dedup"
    previous = Questions.name

    def settings(self) -> list[Any]:
        decontam = self.si.decontam
        files = [file_sha256(benchmark_path(b)) for b in decontam.benchmarks] if decontam.enabled else []
        return [self.si.dedup, decontam, files]

    def run(self, spark: None, inputs: dict[str, Folder], work: Folder) -> None:
        from codemill.selfinstruct.pipeline import dedup_questions

        self.write(dedup_questions(self.input_records(inputs), self.si.dedup, self.si.decontam),
                   work)


class WriteTests(ModelStage):
    name = "selfinstruct/tests"
    previous = DedupQuestions.name
    model_key, section_key = "code_model", "tests"

    def ask(self, model: CachedBackend, records: list[dict[str, Any]]) -> StageResult:
        from codemill.selfinstruct.pipeline import write_tests

        return write_tests(model, records, self.si.tests)


class WriteSolutions(ModelStage):
    name = "selfinstruct/solutions"
    previous = WriteTests.name
    model_key, section_key = "code_model", "solutions"

    def ask(self, model: CachedBackend, records: list[dict[str, Any]]) -> StageResult:
        from codemill.selfinstruct.pipeline import write_solutions

        return write_solutions(model, records, self.si.solutions)


class ExecuteCandidates(SelfInstructStage):
    name = "selfinstruct/execute"
    previous = WriteSolutions.name

    def settings(self) -> list[Any]:
        # the pool's size and uids change no verdict
        limits = dataclasses.asdict(self.si.sandbox)
        return [{k: v for k, v in limits.items() if k not in ("workers", "uid_base")}]

    def run(self, spark: None, inputs: dict[str, Folder], work: Folder) -> None:
        from codemill.selfinstruct.pipeline import execute_candidates
        from codemill.selfinstruct.sandbox import Sandbox

        records = self.input_records(inputs)
        with Sandbox(self.si.sandbox) as sandbox:
            result = execute_candidates(records, sandbox)
        self.write(result, work)


class SelectSolutions(SelfInstructStage):
    """The dataset: `dataset/` (Hugging Face), `selfinstruct.jsonl`, `instruct.jsonl`
    (Llama 2 chat), `shards/` when a tokenizer is configured, and the funnel."""

    name = "selfinstruct/select"
    previous = ExecuteCandidates.name

    def inputs(self) -> dict[str, StageRef]:
        # every earlier stage, for the funnel; `records` is the one read
        from codemill.stages import SELFINSTRUCT_CHAIN

        earlier = SELFINSTRUCT_CHAIN[:SELFINSTRUCT_CHAIN.index(self.name)]
        return {**{name: StageRef(name) for name in earlier}, **super().inputs()}

    def provenance(self) -> dict[str, Any]:
        si = self.si
        return {"model": {"questions": model_settings(si.question_model),
                          "code": model_settings(si.code_model)},
                "sampling": {"questions": dataclasses.asdict(si.questions.sampling),
                             "tests": dataclasses.asdict(si.tests.sampling),
                             "solutions": dataclasses.asdict(si.solutions.sampling)}}

    def settings(self) -> list[Any]:
        tokenizer = self.si.output.tokenizer
        return [self.si.output, file_sha256(local_file(tokenizer)) if tokenizer else None, self.provenance()]

    def run(self, spark: None, inputs: dict[str, Folder], work: Folder) -> None:
        from codemill.selfinstruct.pipeline import (
            format_funnel,
            funnel,
            select_solutions,
            write_dataset,
            write_instruction_shards,
        )
        from codemill.stats import StageStats

        out = self.si.output
        result = select_solutions(self.input_records(inputs), out.keep, self.provenance())
        write_dataset(result.kept, work.local())
        if out.tokenizer:
            result.stats.extra["shards"] = write_instruction_shards(
                result.kept, str(local_file(out.tokenizer)), out.seq_len, work.local() / "shards")
        earlier = [StageStats.from_json(folder.read_text(STATS))
                   for name, folder in inputs.items() if name != "records"]
        steps = funnel(earlier + [result.stats])
        work.write_text("funnel.json", json.dumps(steps, indent=2) + "\n")
        work.write_text(FUNNEL, format_funnel(steps))
        self.write(result, work)
