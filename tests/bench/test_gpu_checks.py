"""The GPU machine's prepared check, run the same way on this CPU with a tiny model, so
that it works the first time a GPU is lent."""

from __future__ import annotations

import json

from benchmarks.gpu_checks import main


def test_gpu_checks_run_end_to_end_on_a_cpu_with_a_tiny_model(tmp_path):
    results = main(["--out", str(tmp_path), "--smoke", "--steps", "2"])
    assert results["device"] == "cpu"
    assert results["train"]["steps"] == 2 and results["train"]["tokens_per_s"] > 0
    assert results["export"]["architecture"] == "LlamaForCausalLM"
    assert "tokenizer.json" in results["export"]["tokenizer_files"]
    assert results["generate"]["new_tokens"] == 16 * 16
    assert "error" not in json.dumps(results)
    assert json.loads((tmp_path / "gpu_checks.json").read_text()) == results
