"""The stage registry and the generic task: wiring, fingerprints, skipping — no Spark."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from codemill.config import RunConfig, load_run_config
from codemill.pipelines.task import stage_task
from codemill.stages import DOCUMENT_CHAIN, STAGES, document_chain, make_stage

from support import write_config


def test_every_stage_section_is_in_the_run_config():
    fields = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    for stage in STAGES.values():
        for name, cls in stage.sections.items():
            assert fields[name] is cls, (stage.name, name)


def test_document_chain_is_the_registry_order():
    assert DOCUMENT_CHAIN == ["ingest", "exact_dedup", "near_dedup", "filters", "kinds"]
    cfg = load_run_config()
    assert make_stage(cfg, "near_dedup").inputs()["docs"].stage == "exact_dedup"
    assert make_stage(cfg, "shards", "base").inputs()["docs"].stage == "kinds"


def test_a_disabled_stage_is_skipped_by_its_readers(tmp_path: Path):
    config = write_config(tmp_path / "run.toml", tmp_path, tmp_path / "out")
    task = stage_task("near_dedup", config, ["exact_dedup.enabled=false"])
    assert task.requires()["docs"].stage == "ingest"
    assert document_chain(task.cfg) == ["ingest", "near_dedup", "filters", "kinds"]


def test_fingerprint_is_computed_once_per_task_and_fresh_per_run(tmp_path: Path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.py").write_text("a = 1\n")
    config = write_config(tmp_path / "run.toml", tree, tmp_path / "out")
    task = stage_task("exact_dedup", config)
    before = task.fingerprint
    (tree / "b.py").write_text("b = 2\n")
    assert task.fingerprint == before  # one listing per run, however often Luigi asks
    fresh = stage_task("exact_dedup", config)
    assert fresh.fingerprint != before  # a new run sees the new input
    assert fresh.output_uri.startswith(f"file://{tmp_path}/out/exact_dedup/")


def test_fingerprints_follow_the_settings_that_change_a_result(tmp_path: Path):
    config = write_config(tmp_path / "run.toml", tmp_path, tmp_path / "out")

    def fingerprints(*overrides: str) -> dict[str, str]:
        return {s: stage_task(s, config, overrides).fingerprint for s in ("ingest", "near_dedup", "filters")}

    base = fingerprints()
    changed = fingerprints("near_dedup.threshold=0.8")
    assert changed["ingest"] == base["ingest"]
    assert changed["near_dedup"] != base["near_dedup"] and changed["filters"] != base["filters"]
    assert fingerprints("luigi.workers=3") == base  # how it runs is not what it computes


def test_output_folders():
    cfg = load_run_config()
    assert make_stage(cfg, "shards", "python").output_parts() == ("shards", "python")
    assert make_stage(cfg, "selfinstruct/tests").output_parts() == ("selfinstruct", "tests")
    assert not make_stage(cfg, "selfinstruct/tests").uses_spark()
