"""The embedded demo's input (this interpreter's standard library) through the DAG."""

from __future__ import annotations

import json

from codemill.config import load_run_config
from codemill.pipelines.task import stage_task
from codemill.stages import document_chain
from codemill.stats import StageStats

from support import run_dag


def test_stage_counts_add_up_on_the_demo_input(spark, tmp_path):
    demo = load_run_config()
    stdlib = demo.sources[0]
    config = tmp_path / "run.toml"
    config.write_text(f"""
out = "{tmp_path / 'out'}"
[[sources]]
name = "{stdlib.name}"
type = "dir"
path = "{stdlib.path}"
license = "{stdlib.license}"
exclude = {json.dumps(stdlib.exclude)}
""")
    # up to the last document stage: the stdlib alone has no NL about code for the mixes
    assert run_dag(config, target="kinds")
    task = stage_task("kinds", config)
    chain = [stage_task(name, config) for name in document_chain(task.cfg)]
    stages = [StageStats.from_json(t.committed().read_text("stats.json")) for t in chain]
    assert [s.stage for s in stages] == ["ingest", "exact_dedup", "near_dedup", "filters", "kinds"]
    for s in stages:
        assert s.docs_in == s.docs_out + sum(s.dropped.values())
        kept_and_dropped = s.bytes_out + sum(s.dropped_bytes.values())
        if s.stage == "filters":  # PII placeholders are shorter than what they replace
            assert s.bytes_in >= kept_and_dropped
        else:
            assert s.bytes_in == kept_and_dropped
    for before, after in zip(stages, stages[1:]):
        assert after.docs_in == before.docs_out
    ingest = stages[0]
    assert ingest.docs_out > 500  # hundreds of real modules
    assert ingest.dropped.get("unsupported_extension", 0) > 0  # e.g. compiled files in lib-dynload
    kinds = {r["kind"] for r in spark.read.parquet(task.committed().join("docs")).select("kind").distinct().collect()}
    assert {"code", "nl"} <= kinds
