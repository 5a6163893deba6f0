"""Self-instruct stages as plain functions over records (dicts), knowing nothing of Luigi.

questions -> dedup (exact, near, decontamination) -> tests -> solutions -> execute
-> select. Each stage returns what it kept, what it dropped (each with a `reason`)
and its StageStats, whose `extra["funnel"]` holds the stage's steps of the funnel
(the paper's 62k questions -> 52k unique -> 14k kept).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from codemill.dedup.lsh import band_hashes, optimal_bands_rows
from codemill.dedup.minhash import signatures
from codemill.dedup.shingles import shingles
from codemill.filters.decontam import read_benchmark
from codemill.selfinstruct.backends import Backend
from codemill.selfinstruct.config import (
    QuestionDecontamConfig,
    QuestionDedupConfig,
    QuestionsConfig,
    SolutionsConfig,
    UnitTestsConfig,
)
from codemill.selfinstruct.parse import ParseStats, parse_questions, parse_solution, parse_tests
from codemill.selfinstruct.prompts import (
    PROMPT_VERSION,
    instruction_text,
    instruction_turn,
    question_prompt,
    solution_prompt,
    tests_prompt,
)
from codemill.selfinstruct.sandbox import Candidate, Sandbox
from codemill.stats import StageStats
from codemill.tokenize.config import FimConfig, PackConfig
from codemill.tokenize.pack import SequencePacker
from codemill.tokenize.shards import ShardWriter, write_manifest
from codemill.tokenize.tokenizer import load_tokenizer

Record = dict[str, Any]


@dataclass
class StageResult:
    kept: list[Record]
    dropped: list[Record]  # the records plus `reason` (and `detail` where there is one)
    stats: StageStats


def _bytes(records: Sequence[Record]) -> int:
    return sum(len(r["question"].encode()) for r in records)


def _result(stage: str, kept: list[Record], dropped: list[Record], started: float,
            funnel: Mapping[str, int], extra: Mapping[str, Any] = (),
            lost: Mapping[str, int] = ()) -> StageResult:
    """`lost`: items dropped before they became records (unparseable list items)."""
    reasons = Counter(r["reason"] for r in dropped) + Counter(dict(lost))
    stats = StageStats(stage, len(kept) + sum(reasons.values()), len(kept), dict(sorted(reasons.items())),
                       _bytes(kept) + _bytes(dropped), _bytes(kept),
                       round(time.monotonic() - started, 3),
                       extra={"funnel": dict(funnel), **dict(extra)}).check()
    return StageResult(kept, dropped, stats)


# --- questions ---------------------------------------------------------------------------

def generate_questions(backend: Backend, cfg: QuestionsConfig, seeds: Sequence[Record] = ()
                       ) -> StageResult:
    """Round r asks for `per_completion` questions on every topic, sampled with seed + r
    (a new seed, else the cache would answer every round with the first one). Seed tasks
    (codemill.selfinstruct.seeds) follow the generated questions, with their tests."""
    started, stats, kept = time.monotonic(), ParseStats(), []
    prompts = [question_prompt(topic, cfg.per_completion) for topic in cfg.topics]
    completions = 0
    for rnd in range(cfg.rounds):
        sampling = dataclasses.replace(cfg.sampling, seed=cfg.sampling.seed + rnd)
        for t, samples in enumerate(backend.generate(prompts, sampling)):
            for s, text in enumerate(samples):
                completions += 1
                for k, question in enumerate(parse_questions(text, stats)):
                    kept.append({"id": f"q{rnd}-{t}-{s}-{k}", "question": question,
                                 "topic": cfg.topics[t]})
    steps = {"generated": len(kept), **({"seeded": len(seeds)} if seeds else {})}
    kept += [{**task, "id": f"seed/{task['id']}"} for task in seeds]
    return _result("questions", kept, [], started, steps,
                   {"completions": completions, "parse": stats.to_dict()}, stats.failed)


# --- dedup and decontamination -------------------------------------------------------------

def normalise_question(text: str) -> str:
    """Equal for questions differing only in case, punctuation, Unicode forms or spacing."""
    return " ".join(re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold()))


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def near_duplicates(texts: Sequence[str], cfg: QuestionDedupConfig) -> dict[int, tuple[int, float]]:
    """index -> (earlier kept index, Jaccard) for texts whose word-shingle Jaccard with an
    earlier kept text reaches the threshold. MinHash LSH (codemill.dedup) proposes the
    candidates and real Jaccard decides; comparing with kept texts only (never with a
    dropped one) keeps chains of small edits from linking unlike questions."""
    if not texts:
        return {}
    sigs = signatures(list(texts), cfg.num_perm, cfg.seed, cfg.ngram, lowercase=True)
    bands, rows = optimal_bands_rows(cfg.threshold, cfg.num_perm)
    keys = band_hashes(sigs, bands, rows)
    sets = [set(shingles(t, cfg.ngram, lowercase=True)) for t in texts]
    buckets: dict[tuple[int, int], list[int]] = {}
    found: dict[int, tuple[int, float]] = {}
    for i, shingle_set in enumerate(sets):
        if not shingle_set:  # fewer words than a shingle: exact dedup covers it
            continue
        candidates = {j for b in range(bands) for j in buckets.get((b, int(keys[i, b])), ())}
        scored = sorted((-_jaccard(shingle_set, sets[j]), j) for j in candidates)
        if scored and -scored[0][0] >= cfg.threshold:
            found[i] = (scored[0][1], -scored[0][0])
            continue
        for b in range(bands):
            buckets.setdefault((b, int(keys[i, b])), []).append(i)
    return found


@dataclass
class BenchmarkNgrams:
    """Word n-gram -> the benchmark items (labels) whose text holds it."""

    ngram: int
    owners: dict[tuple[str, ...], tuple[str, ...]]


def benchmark_ngrams(cfg: QuestionDecontamConfig) -> BenchmarkNgrams:
    """Why word n-grams, not codemill.filters.decontam's normalised code tokens: questions are
    prose, which that normalisation (every identifier -> ID) would erase. The benchmark files
    are read with decontam's reader, so both checks accept the same benchmark configs."""
    owners: dict[tuple[str, ...], set[str]] = {}
    per_benchmark: list[dict[tuple[str, ...], set[str]]] = []
    for bench in cfg.benchmarks:
        grams: dict[tuple[str, ...], set[str]] = {}
        for unit in read_benchmark(bench):
            for gram in shingles(unit.code, cfg.ngram, lowercase=True):
                grams.setdefault(gram, set()).add(unit.label)
        per_benchmark.append(grams)
    for grams in per_benchmark:
        for gram, labels in grams.items():
            if len(labels) <= cfg.max_items_per_ngram:  # else boilerplate, not evidence
                owners.setdefault(gram, set()).update(labels)
    return BenchmarkNgrams(cfg.ngram, {g: tuple(sorted(ls)) for g, ls in owners.items()})


def leaked_item(question: str, index: BenchmarkNgrams, min_matches: int) -> str | None:
    """The benchmark item sharing the most n-grams with the question, if at least min_matches."""
    hits = Counter(label for gram in set(shingles(question, index.ngram, lowercase=True))
                   for label in index.owners.get(gram, ()))
    if not hits:
        return None
    label, count = hits.most_common(1)[0]
    return label if count >= min_matches else None


def dedup_questions(questions: Sequence[Record], dedup: QuestionDedupConfig,
                    decontam: QuestionDecontamConfig) -> StageResult:
    started, dropped = time.monotonic(), []
    first: dict[str, str] = {}
    unique = []
    for q in questions:
        key = normalise_question(q["question"])
        if key in first:
            dropped.append({**q, "reason": "exact_duplicate", "detail": first[key]})
        else:
            first[key] = q["id"]
            unique.append(q)
    near = near_duplicates([q["question"] for q in unique], dedup) if dedup.near else {}
    distinct = []
    for i, q in enumerate(unique):
        if i in near:
            j, score = near[i]
            dropped.append({**q, "reason": "near_duplicate",
                            "detail": f"{unique[j]['id']} (jaccard {score:.2f})"})
        else:
            distinct.append(q)
    kept = distinct
    if decontam.enabled:
        index, kept = benchmark_ngrams(decontam), []
        for q in distinct:
            item = leaked_item(q["question"], index, decontam.min_matches)
            if item is None:
                kept.append(q)
            else:
                dropped.append({**q, "reason": "benchmark_contamination", "detail": item})
    funnel = {"unique": len(unique), "near_unique": len(distinct), "decontaminated": len(kept)}
    return _result("dedup", kept, dropped, started, funnel)


# --- tests -------------------------------------------------------------------------------

def write_tests(backend: Backend, questions: Sequence[Record], cfg: UnitTestsConfig) -> StageResult:
    """Tests per question (one-shot prompt); the first sample with min_tests asserts wins.
    A seed task keeps its own tests and asks nothing."""
    started, stats, kept, dropped = time.monotonic(), ParseStats(), [], []
    asked = [q for q in questions if "tests" not in q]
    prompts = [tests_prompt(q["question"], cfg.count) for q in asked]
    answers = dict(zip((q["id"] for q in asked), backend.generate(prompts, cfg.sampling) if asked else []))
    for q in questions:
        tests, samples = q.get("tests", []), answers.get(q["id"], [])
        for text in samples:
            tests = parse_tests(text, stats, cfg.count)
            if len(tests) >= cfg.min_tests:
                break
        if len(tests) >= cfg.min_tests:
            kept.append({**q, "tests": tests})
        else:
            reason = "too_few_tests" if tests else "no_parseable_tests"
            dropped.append({**q, "reason": reason, "raw": samples})
    return _result("tests", kept, dropped, started, {"with_parseable_tests": len(kept)},
                   {"parse": stats.to_dict()})


# --- solutions ---------------------------------------------------------------------------

def write_solutions(backend: Backend, records: Sequence[Record], cfg: SolutionsConfig) -> StageResult:
    """`n` solutions per question in one call; the prompt shows the first test only.
    `candidates[i]` is sample i's code, None where it could not be parsed; a seed task's
    reference solution follows the `sampled` ones, so a model's passing sample wins."""
    started, stats, kept, dropped = time.monotonic(), ParseStats(), [], []
    prompts = [solution_prompt(r["question"], r["tests"][0]) for r in records]
    generated = parseable = references = 0
    for r, samples in zip(records, backend.generate(prompts, cfg.sampling) if records else []):
        candidates = [parse_solution(text, stats) for text in samples]
        generated += len(candidates)
        parseable += sum(c is not None for c in candidates)
        sampled = len(candidates)
        if "solution" in r:
            candidates.append(r["solution"])
            references += 1
        if any(c is not None for c in candidates):
            kept.append({**r, "candidates": candidates, "sampled": sampled})
        else:
            dropped.append({**r, "reason": "no_parseable_solution", "raw": samples})
    funnel = {"candidates_generated": generated, "candidates_parseable": parseable,
              **({"references": references} if references else {})}
    return _result("solutions", kept, dropped, started, funnel, {"parse": stats.to_dict()})


# --- execution -----------------------------------------------------------------------------

def execute_candidates(records: Sequence[Record], sandbox: Sandbox, chunk: int = 4096) -> StageResult:
    """Run every parseable candidate against all its question's tests (the shown one and
    the hidden ones) in the sandbox; `statuses[i]` is candidate i's verdict. Candidates go
    `chunk` at a time, so that only verdicts, not outputs, pile up in memory."""
    started, kept, dropped = time.monotonic(), [], []
    jobs = [(r, i) for r, rec in enumerate(records)
            for i, code in enumerate(rec["candidates"]) if code is not None]
    statuses = [["unparseable"] * len(rec["candidates"]) for rec in records]
    verdicts: Counter = Counter()
    missing: set[str] = set()
    for start in range(0, len(jobs), chunk):
        batch = jobs[start:start + chunk]
        results = sandbox.run([Candidate(records[r]["candidates"][i], records[r]["tests"])
                               for r, i in batch])
        for (r, i), result in zip(batch, results):
            statuses[r][i] = result.status
            verdicts[result.status] += 1
            missing.update(result.missing_layers)
    for rec, status in zip(records, statuses):
        out = {**rec, "statuses": status}
        if "passed" in status:
            kept.append(out)
        else:
            dropped.append({**out, "reason": "no_passing_solution"})
    funnel = {"candidates_tried": len(jobs), "candidates_passing": verdicts["passed"],
              "questions_with_a_pass": len(kept)}
    return _result("execute", kept, dropped, started, funnel,
                   {"verdicts": dict(sorted(verdicts.items())),
                    "missing_isolation_layers": sorted(missing), "sandbox_launcher": sandbox.launcher})


# --- selection and outputs -------------------------------------------------------------------

def select_solutions(records: Sequence[Record], keep: str, provenance: Mapping[str, Any]
                     ) -> StageResult:
    """One row per question with its first passing candidate (keep="first"), or one per
    passing candidate (keep="all"), with the fields of the self-instruct record
    (docs/architecture.md, data contracts). `provenance`: the models and sampling
    settings, recorded on every row."""
    started, rows = time.monotonic(), []
    references = any("solution" in rec for rec in records)
    for rec in records:
        passing = [i for i, s in enumerate(rec["statuses"]) if s == "passed"]
        sampled = rec.get("sampled", len(rec["candidates"]))  # runs before seed tasks: all
        for i in passing[:1] if keep == "first" else passing:
            rows.append({
                "id": rec["id"] if keep == "first" else f"{rec['id']}-{i}",
                "question": rec["question"],
                "tests": rec["tests"],
                "solution": rec["candidates"][i],
                # the code model's sample, or a seed task's reference solution
                "solution_source": "model" if i < sampled else "reference",
                "passing_index": i,  # index among the candidates
                "num_tried": sum(c is not None for c in rec["candidates"]),  # run in the sandbox
                "num_candidates": sampled,  # sampled
                "num_passing": len(passing),
                "topic": rec["topic"],
                **provenance,
                "prompt_version": PROMPT_VERSION,
            })
    from_references = sum(row["solution_source"] == "reference" for row in rows)
    return _result("select", rows, [], started,
                   {"kept": len(rows), **({"kept_references": from_references} if references else {})})


FUNNEL_STEPS = ("generated", "seeded", "unique", "near_unique", "decontaminated",
                "with_parseable_tests", "candidates_generated", "candidates_parseable",
                "references", "candidates_tried", "candidates_passing", "questions_with_a_pass",
                "kept", "kept_references")


def funnel(stats: Iterable[StageStats]) -> dict[str, int]:
    """The stages' funnel steps in pipeline order."""
    steps: dict[str, int] = {}
    for s in stats:
        steps.update(s.extra["funnel"])
    return {name: steps[name] for name in FUNNEL_STEPS if name in steps}


def format_funnel(steps: Mapping[str, int]) -> str:
    questions = (steps.get("generated") or 0) + (steps.get("seeded") or 0)
    lines = ["self-instruct funnel"]
    for name, count in steps.items():
        per_question = not name.startswith("candidates") and name != "references"
        share = f"{count / questions:7.1%}" if questions and per_question else ""
        lines.append(f"  {name.replace('_', ' '):<24} {count:>10,} {share}")
    return "\n".join(lines) + "\n"


def format_jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def parse_jsonl(text: str) -> list[Record]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(format_jsonl(rows))


def read_jsonl(path: str | os.PathLike) -> list[Record]:
    with open(path, encoding="utf-8") as f:
        return parse_jsonl(f.read())


def instruction_rows(rows: Sequence[Record]) -> list[Record]:
    """Llama 2 chat examples: `text` = prompt + completion; the loss belongs on the completion."""
    out = []
    for row in rows:
        prompt, completion = instruction_text(row["question"], row["solution"])
        out.append({"id": row["id"], "prompt": prompt, "completion": completion,
                    "text": prompt + completion})
    return out


def _typed(t: pa.DataType) -> pa.DataType:
    """Null -> string: an empty list (no stop strings) is inferred as list<null>, and datasets
    of two runs would then not concatenate."""
    if pa.types.is_null(t):
        return pa.string()
    if pa.types.is_list(t):
        return pa.list_(_typed(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_typed(f.type)) for f in t])
    return t


def write_dataset(rows: Sequence[Record], out_dir: Path) -> None:
    """`dataset/` (Hugging Face, save_to_disk), `selfinstruct.jsonl`, `instruct.jsonl`."""
    import datasets

    table = pa.Table.from_pylist(list(rows))
    table = table.cast(pa.schema([f.with_type(_typed(f.type)) for f in table.schema]))
    datasets.Dataset(table).save_to_disk(str(out_dir / "dataset"))
    write_jsonl(out_dir / "selfinstruct.jsonl", rows)
    write_jsonl(out_dir / "instruct.jsonl", instruction_rows(rows))


def write_instruction_shards(rows: Sequence[Record], tokenizer_path: str, seq_len: int,
                             out_dir: Path) -> dict[str, int]:
    """Shards for the training loop's instruction mode: examples packed whole into rows of
    seq_len tokens (`<s>[INST] q [/INST] answer</s>`, padded with EOS), each example a
    document (`doc_starts`) whose answer tokens and EOS are its `loss_spans`. Examples
    longer than seq_len are skipped (counted), never cut."""
    tok = load_tokenizer(tokenizer_path)
    packer = SequencePacker(seq_len, tok.bos_id, tok.eos_id, tok.eos_id, whole=True, loss_spans=True)
    bodies: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []  # from the example's BOS: the answer and EOS
    for example in rows:
        prompt, answer = instruction_turn(example["question"], example["solution"])
        prompt_ids, answer_ids = tok.encode(prompt), tok.encode_no_prefix(answer)
        size = len(prompt_ids) + len(answer_ids) + 2  # with BOS and EOS, which the packer adds
        if size <= seq_len:
            bodies.append(np.array([*prompt_ids, *answer_ids], dtype=np.int32))
            spans.append((1 + len(prompt_ids), size))
    packed, too_long = len(bodies), len(rows) - len(bodies)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ShardWriter(out_dir, seq_len, loss_spans=True) as writer:
        for batch in (packer.add(bodies, spans), packer.finish()):
            if batch is not None:
                writer.write(batch)
    stats = packer.stats
    stats.docs_in = stats.docs_packed = packed
    write_manifest(out_dir, tokenizer=tok, pack=PackConfig(seq_len=seq_len), fim=FimConfig(rate=0.0),
                   seed=0, shards=writer.shards, stats=stats,
                   mix={"selfinstruct": {"examples": packed, "too_long": too_long}})
    return {"examples": packed, "too_long": too_long, "sequences": stats.sequences,
            "tokens": stats.tokens}
