"""The self-instruct DAG: questions -> dedup -> tests -> solutions -> execute -> select.

Thin Luigi tasks over codemill.selfinstruct.pipeline. Each writes
`<out>/selfinstruct/<stage>/<fingerprint>/` atomically: `records.jsonl` (kept),
`dropped.jsonl` (with reasons) and `stats.json`. The fingerprint covers the
upstream fingerprint, the models (path and a digest of their files), the
stage's settings and the prompt version. Model calls are cached in
`<out>/selfinstruct/cache/`, shared by all fingerprints, so a changed
threshold re-runs stages without re-asking the models what they already
answered, and a crashed run resumes mid-stage.

    codemill selfinstruct run.toml
    luigi --module codemill.selfinstruct.tasks SelectSolutions --config-path run.toml --local-scheduler
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import luigi

from codemill.atomic import atomic_dir, file_sha256
from codemill.config import ConfigError, RunConfig, fingerprint
from codemill.filters.decontam import benchmark_path
from codemill.pipelines.base import RunConfigTask
from codemill.pipelines.runner import build
from codemill.selfinstruct.backends import CachedBackend, make_backend, model_identity
from codemill.selfinstruct.config import ModelConfig, SelfInstructConfig, load_selfinstruct_config
from codemill.selfinstruct.pipeline import (
    StageResult, dedup_questions, execute_candidates, format_funnel, funnel, generate_questions,
    read_jsonl, select_solutions, write_dataset, write_instruction_shards, write_jsonl,
    write_solutions, write_tests)
from codemill.selfinstruct.prompts import PROMPT_VERSION
from codemill.selfinstruct.sandbox import Sandbox
from codemill.stats import StageStats

RECORDS, DROPPED, STATS, FUNNEL = "records.jsonl", "dropped.jsonl", "stats.json", "funnel.txt"


class SelfInstructTask(RunConfigTask):
    stage: ClassVar[str]

    @cached_property
    def configs(self) -> tuple[RunConfig, SelfInstructConfig]:
        if not self.config_path:
            raise ConfigError("self-instruct needs a run config with a [selfinstruct] table "
                              "naming its models")
        return load_selfinstruct_config(self.config_path, list(self.overrides))

    @cached_property
    def cfg(self) -> RunConfig:
        return self.configs[0]

    @property
    def si(self) -> SelfInstructConfig:
        return self.configs[1]

    def previous(self) -> SelfInstructTask | None:
        return None

    def requires(self) -> SelfInstructTask | list:
        return self.previous() or []

    def settings(self) -> list[Any]:
        """What changes this stage's result besides its input."""
        raise NotImplementedError

    @cached_property
    def _fingerprint(self) -> str:
        previous = self.previous()
        return fingerprint(previous.fingerprint() if previous else None, self.settings())

    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def root(self) -> Path:
        return self.cfg.out_path() / "selfinstruct"

    @property
    def output_dir(self) -> Path:
        return self.root / self.stage / self.fingerprint()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.output_dir / "_SUCCESS"))

    def stats(self) -> StageStats:
        return StageStats.read(self.output_dir / STATS)

    def input_records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.previous().output_dir / RECORDS)

    def model(self, cfg: ModelConfig) -> CachedBackend:
        return CachedBackend(make_backend(cfg), model_identity(cfg), self.root / "cache",
                             self.si.cache_chunk)

    def write(self, result: StageResult, tmp: Path, model: CachedBackend | None = None) -> None:
        if model is not None:
            result.stats.extra["cache"] = model.stats()
        write_jsonl(tmp / RECORDS, result.kept)
        write_jsonl(tmp / DROPPED, result.dropped)
        result.stats.write(tmp / STATS)


def _params(task: SelfInstructTask) -> dict[str, Any]:
    return {"config_path": task.config_path, "overrides": task.overrides}


class Questions(SelfInstructTask):
    stage = "questions"

    def settings(self) -> list[Any]:
        return [model_identity(self.si.question_model), self.si.questions, PROMPT_VERSION]

    def run(self) -> None:
        with self.model(self.si.question_model) as model, atomic_dir(self.output_dir) as tmp:
            self.write(generate_questions(model, self.si.questions), tmp, model)


class DedupQuestions(SelfInstructTask):
    stage = "dedup"

    def previous(self) -> SelfInstructTask:
        return Questions(**_params(self))

    def settings(self) -> list[Any]:
        decontam = self.si.decontam
        files = [file_sha256(benchmark_path(b)) for b in decontam.benchmarks] if decontam.enabled else []
        return [self.si.dedup, decontam, files]

    def run(self) -> None:
        result = dedup_questions(self.input_records(), self.si.dedup, self.si.decontam)
        with atomic_dir(self.output_dir) as tmp:
            self.write(result, tmp)


class WriteTests(SelfInstructTask):
    stage = "tests"

    def previous(self) -> SelfInstructTask:
        return DedupQuestions(**_params(self))

    def settings(self) -> list[Any]:
        return [model_identity(self.si.code_model), self.si.tests, PROMPT_VERSION]

    def run(self) -> None:
        records = self.input_records()
        with self.model(self.si.code_model) as model, atomic_dir(self.output_dir) as tmp:
            self.write(write_tests(model, records, self.si.tests), tmp, model)


class WriteSolutions(SelfInstructTask):
    stage = "solutions"

    def previous(self) -> SelfInstructTask:
        return WriteTests(**_params(self))

    def settings(self) -> list[Any]:
        return [model_identity(self.si.code_model), self.si.solutions, PROMPT_VERSION]

    def run(self) -> None:
        records = self.input_records()
        with self.model(self.si.code_model) as model, atomic_dir(self.output_dir) as tmp:
            self.write(write_solutions(model, records, self.si.solutions), tmp, model)


class ExecuteCandidates(SelfInstructTask):
    stage = "execute"

    def previous(self) -> SelfInstructTask:
        return WriteSolutions(**_params(self))

    def settings(self) -> list[Any]:
        # the pool's size and uids change no verdict
        limits = dataclasses.asdict(self.si.sandbox)
        return [{k: v for k, v in limits.items() if k not in ("workers", "uid_base")}]

    def run(self) -> None:
        records = self.input_records()
        with Sandbox(self.si.sandbox) as sandbox:
            result = execute_candidates(records, sandbox)
        with atomic_dir(self.output_dir) as tmp:
            self.write(result, tmp)


class SelectSolutions(SelfInstructTask):
    """The dataset: `dataset/` (Hugging Face), `selfinstruct.jsonl`, `instruct.jsonl`
    (Llama 2 chat), `shards/` when a tokenizer is configured, and the funnel."""

    stage = "select"

    def previous(self) -> SelfInstructTask:
        return ExecuteCandidates(**_params(self))

    def provenance(self) -> dict[str, Any]:
        si = self.si
        return {"model": {"questions": model_identity(si.question_model),
                          "code": model_identity(si.code_model)},
                "sampling": {"questions": dataclasses.asdict(si.questions.sampling),
                             "tests": dataclasses.asdict(si.tests.sampling),
                             "solutions": dataclasses.asdict(si.solutions.sampling)}}

    def settings(self) -> list[Any]:
        tokenizer = self.si.output.tokenizer
        return [self.si.output, file_sha256(tokenizer) if tokenizer else None, self.provenance()]

    def chain(self) -> list[SelfInstructTask]:
        tasks: list[SelfInstructTask] = [self]
        while (previous := tasks[-1].previous()) is not None:
            tasks.append(previous)
        return tasks[::-1]

    def run(self) -> None:
        out = self.si.output
        result = select_solutions(self.input_records(), out.keep, self.provenance())
        with atomic_dir(self.output_dir) as tmp:
            write_dataset(result.kept, tmp)
            if out.tokenizer:
                result.stats.extra["shards"] = write_instruction_shards(
                    result.kept, out.tokenizer, out.seq_len, tmp / "shards")
            steps = funnel([t.stats() for t in self.chain()[:-1]] + [result.stats])
            (tmp / "funnel.json").write_text(json.dumps(steps, indent=2) + "\n")
            (tmp / FUNNEL).write_text(format_funnel(steps))
            self.write(result, tmp)


def run_selfinstruct(config_path: str, overrides: list[str] = ()) -> bool:
    """Run the DAG to the selected dataset; True when it finished. Config errors (and
    missing model directories) raise ConfigError before any task starts."""
    run_cfg, si = load_selfinstruct_config(config_path, list(overrides))
    for model in (si.question_model, si.code_model):
        model_identity(model)  # a missing model directory fails here, not inside Luigi
    task = SelectSolutions(config_path=str(config_path), overrides=list(overrides))
    return build([task], run_cfg.luigi)


def _cmd_selfinstruct(args: argparse.Namespace) -> int:
    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"out={json.dumps(args.out)}")
    if args.workers:
        overrides.append(f"luigi.workers={args.workers}")
    if not run_selfinstruct(args.config, overrides):
        print("codemill: the self-instruct run did not finish; see the errors above. Re-running "
              "resumes: finished stages are kept and completed model calls are cached.",
              file=sys.stderr)
        return 1
    task = SelectSolutions(config_path=args.config, overrides=overrides)
    print(f"\n{(task.output_dir / FUNNEL).read_text()}output: {task.output_dir}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `codemill selfinstruct CONFIG` to the codemill command line."""
    p = subparsers.add_parser(
        "selfinstruct", help="generate a self-instruct set: questions, tests, solutions, sandbox",
        description="Run the self-instruct DAG (questions -> dedup -> tests -> solutions -> "
        "execute -> select) on the [selfinstruct] table of a run config. Finished stages are "
        "skipped and every model call is cached, so a re-run resumes where a run stopped.")
    p.add_argument("config", help="run config (TOML) with a [selfinstruct] table")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set selfinstruct.code_model.path=/models/x")
    p.add_argument("--out", help="output root (config key `out`)")
    p.add_argument("--workers", type=int, help="Luigi workers running tasks in parallel")
    p.set_defaults(func=_cmd_selfinstruct)
