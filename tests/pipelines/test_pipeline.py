"""The pretraining DAG through the real Luigi scheduler (local and luigid)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from codemill.config import load_run_config as load_config
from codemill.pipelines.tables import table_digest
from codemill.pipelines.task import stage_task
from codemill.stats import StageStats
from codemill.storage.folder import Folder
from codemill.tokenize.shards import fim_layout, read_manifest, verify_shards
from codemill.tokenize.tokenizer import load_tokenizer
from codemill.train_hooks.shards import to_hf_dataset

from support import attempts, free_port, listening, output_dir, run_dag, wait_for, write_config

CODEMILL = [sys.executable, "-m", "codemill.cli"]


def test_dag_accounts_for_every_file(finished_run, real_tree):
    report = json.loads((Path(load_config(finished_run).out) / "report.json").read_text())
    stages = [StageStats(**s) for s in report["stages"]]
    assert [s.stage for s in stages] == ["ingest", "exact_dedup", "near_dedup", "filters", "kinds"]
    ingest, exact, near, _, _ = stages
    n_files = sum(1 for p in real_tree.rglob("*") if p.is_file())
    assert ingest.docs_in == n_files
    for stats in stages:
        assert stats.docs_in == stats.docs_out + sum(stats.dropped.values())
    for before, after in zip(stages, stages[1:]):
        assert after.docs_in == before.docs_out
    assert near.extra["bands"] * near.extra["rows"] <= 256 and "cluster_size_histogram" in near.extra
    assert exact.dropped == {"exact_duplicate": 3}  # the three vendored json modules
    summary = (Path(load_config(finished_run).out) / "summary.txt").read_text()
    assert "duplicates removed: 3" in summary and "python" in summary


def test_shards_of_both_mixes(finished_run):
    import datasets

    for mix in ("base", "python"):
        shard_dir = output_dir(stage_task("shards", finished_run, item=mix))
        assert verify_shards(shard_dir) == []
        manifest = read_manifest(shard_dir)
        realised, requested = manifest["mix"]["realised"], manifest["mix"]["requested"]
        assert set(realised) == set(requested)
        for category, share in requested.items():
            # whole documents are drawn, so small corpora deviate by a few points
            assert abs(realised[category] - share) < 0.06, (mix, category, realised)
        first = manifest["shards"][0]
        ds = datasets.Dataset.from_file(str(shard_dir / first["file"]))
        assert len(ds) == first["rows"] and len(ds[0]["input_ids"]) == 512
        counts = manifest["counts"]
        assert counts["docs_psm"] + counts["docs_spm"] > 0
        # every FIM document lies within one row
        assert fim_layout(shard_dir) == (counts["docs_psm"] + counts["docs_spm"], 0)
    python_plan = read_manifest(output_dir(stage_task("shards", finished_run, item="python")))
    assert set(python_plan["mix"]["epochs"]) == {"python", "code", "nl_code", "nl"}


def test_shards_folder_reads_as_a_hugging_face_dataset(finished_run, tmp_path):
    import datasets
    from transformers import AutoTokenizer

    root = Path(load_config(finished_run).out) / "shards"
    for mix in ("base", "python"):
        loaded = datasets.load_dataset(str(root), mix, split="train", cache_dir=str(tmp_path))
        expected = to_hf_dataset(output_dir(stage_task("shards", finished_run, item=mix)))
        for column in ("input_ids", "doc_starts", "num_tokens"):
            assert loaded[column] == expected[column], (mix, column)
    tok = load_tokenizer(root / "tokenizer.model")
    text = (root / "README.md").read_text(encoding="utf-8")
    assert AutoTokenizer.from_pretrained(root)(text).input_ids == [tok.bos_id] + tok.encode(text)


def test_shards_inspect_command(finished_run):
    shard_dir = output_dir(stage_task("shards", finished_run, item="base"))
    result = subprocess.run([*CODEMILL, "shards", "inspect", str(shard_dir)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "<s>" in result.stdout and "sha256" in result.stdout


def shard_checksums(config: Path) -> dict[str, list[str]]:
    return {mix: [s["sha256"] for s in read_manifest(
                output_dir(stage_task("shards", config, item=mix)))["shards"]]
            for mix in ("base", "python")}


def test_stage_outputs_are_complete_and_fingerprinted(finished_run):
    task = stage_task("exact_dedup", finished_run)
    out = output_dir(task)
    assert task.complete() and (out / "docs").is_dir() and (out / "dropped").is_dir()
    assert StageStats.from_json((out / "stats.json").read_text()).stage == "exact_dedup"
    assert attempts(out.parent) == [out.name]  # one attempt, the committed one
    record = json.loads((out.parent / "_COMMIT.json").read_text())
    assert record["attempt"] == out.name and record["docs_out"] > 0
    assert {"docs/_SUCCESS", "stats.json"} <= {f["path"] for f in record["files"]}


def test_rerun_skips_completed_tasks(finished_run):
    task = stage_task("report", finished_run)
    stats_file = output_dir(stage_task("exact_dedup", finished_run)) / "stats.json"
    before = stats_file.stat().st_mtime_ns
    assert task.complete()
    assert run_dag(finished_run)
    assert stats_file.stat().st_mtime_ns == before


def test_changed_parameter_never_reuses_stale_output(finished_run):
    changed = ["exact_dedup.normalize_whitespace=true"]
    old = stage_task("exact_dedup", finished_run)
    new = stage_task("exact_dedup", finished_run, changed)
    assert new.output_uri != old.output_uri
    assert output_dir(stage_task("ingest", finished_run, changed)) == output_dir(old.requires()["docs"])
    assert not new.complete()
    assert run_dag(finished_run, changed)
    stats = StageStats.from_json((output_dir(new) / "stats.json").read_text())
    assert stats.dropped.keys() <= {"exact_duplicate_whitespace"}


def test_changed_input_file_changes_the_fingerprint(spark, real_tree, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.py").write_text("a = 1\n")
    config = write_config(tmp_path / "run.toml", tree, tmp_path / "out")
    before = stage_task("ingest", config).fingerprint
    (tree / "b.py").write_text("b = 2\n")
    assert stage_task("ingest", config).fingerprint != before


def test_killed_run_resumes_to_identical_result_with_compiled_queries(finished_run, real_tree, tmp_path):
    config = write_config(tmp_path / "run.toml", real_tree, tmp_path / "out")
    ingest_root = tmp_path / "out" / "ingest"
    proc = subprocess.Popen([*CODEMILL, "run", str(config)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: ingest_root.exists() and any(ingest_root.glob("*/attempt-*/docs")),
                  240, "the ingest stage to start writing")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (fingerprint_dir,) = ingest_root.iterdir()
    assert not (fingerprint_dir / "_COMMIT.json").exists()
    (killed,) = attempts(fingerprint_dir)

    # The reference run interprets its small stages' queries; this one compiles them.
    done = subprocess.run([*CODEMILL, "run", str(config), "--set", "spark.codegen=on"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert killed not in attempts(fingerprint_dir)  # the dead run's attempt was cleaned
    for stage in ("ingest", "exact_dedup"):
        resumed = output_dir(stage_task(stage, config))
        reference = output_dir(stage_task(stage, finished_run))
        assert resumed.parent.name == reference.parent.name
        for table in ("docs", "dropped"):
            assert table_digest(Folder(resumed / table)) == table_digest(Folder(reference / table))
    assert shard_checksums(config) == shard_checksums(finished_run)  # byte-identical shards


def test_central_luigid_scheduler(spark, real_tree, tmp_path):
    port = free_port()
    luigid = subprocess.Popen(
        [str(Path(sys.executable).with_name("luigid")), "--port", str(port), "--address", "127.0.0.1",
         "--state-path", str(tmp_path / "state.pickle"), "--logdir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: listening(port), 60, "luigid to listen")
        config = write_config(tmp_path / "run.toml", real_tree, tmp_path / "out")
        assert run_dag(config, local_scheduler=False, scheduler_host="127.0.0.1", scheduler_port=port)
        query = urllib.parse.quote(json.dumps({"status": "DONE"}))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/task_list?data={query}") as r:
            done = json.loads(r.read())["response"]
        stages = {t["params"]["stage"] for t in done.values()}
        assert {"ingest", "exact_dedup", "report"} <= stages
    finally:
        luigid.terminate()
        luigid.wait()


def test_luigi_command_line_convention(finished_run):
    # `luigi --module codemill.pipelines.task RunStage ...` sees completed work as complete
    result = subprocess.run(
        [str(Path(sys.executable).with_name("luigi")), "--module", "codemill.pipelines.task",
         "RunStage", "--stage", "report", "--config-path", str(finished_run), "--local-scheduler"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "complete ones were encountered" in result.stderr + result.stdout


@pytest.mark.spark
def test_cli_reports_bad_input_clearly(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad.jsonl").write_text('{"content": "x = 1\\n", "path": "a.py"}\n{oops\n')
    config = tmp_path / "run.toml"
    config.write_text(f"""
out = "{tmp_path / 'out'}"
[[sources]]
name = "j"
type = "jsonl"
path = "{tmp_path / 'data'}"
[spark]
master = "local[1]"
""")
    result = subprocess.run([*CODEMILL, "run", str(config)], capture_output=True, text=True)
    assert result.returncode == 1
    assert f"{tmp_path / 'data' / 'bad.jsonl'}:2: malformed JSONL record" in result.stderr

    config.write_text("[ingest]\nmax_file_bytes = -1\n")
    result = subprocess.run([*CODEMILL, "run", str(config)], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"ingest.max_file_bytes: -1 is out of range: must be in [1, inf) (in {config})" in result.stderr
