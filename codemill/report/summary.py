"""The run report: every stage's accounting plus what the final table holds.

`report.json` is versioned by `codemill.report.SCHEMA_VERSION`. It records when it was
written and the run's start, so unlike the tables and shards it is not byte-identical
across re-runs (the stages' timings never were either).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import codemill
from codemill.config import to_dict
from codemill.observe import step
from codemill.pipelines.tables import read_documents
from codemill.report import SCHEMA_VERSION
from codemill.report.html import render_report
from codemill.report.svg import share_of
from codemill.stats import StageStats
from codemill.storage import display
from codemill.storage.folder import Folder
from codemill.storage.lease import RUN_ID
from codemill.tokenize.shard_format import MANIFEST

# Spark settings whose values are credentials (s3a keys, tokens, passwords): kept out of
# the report, which is meant to be shared.
SECRET_SETTING = re.compile(r"secret|password|token|credential|access\.key|session\.key", re.I)
REDACTED = "<redacted>"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _mix_summary(shard_dir: Folder) -> dict[str, Any]:
    manifest = json.loads(shard_dir.read_text(MANIFEST))
    mix, counts = manifest["mix"], manifest["counts"]
    return {
        "shards": display(shard_dir.uri),
        "sequences": counts["sequences"],
        "tokens": counts["tokens"],
        "seq_len": manifest["seq_len"],
        # FIM applies only to documents that fit in one row: those are its eligible ones
        "fim_docs": {"psm": counts["docs_psm"], "spm": counts["docs_spm"],
                     "packed": counts["docs_packed"], "long": counts["docs_long"],
                     "eligible": counts["docs_packed"] - counts["docs_long"]},
        "fim_tokens": counts.get("fim_tokens", 0),  # absent from older manifests
        "docs_cut": counts.get("docs_cut", 0),
        "pad_tokens": counts["pad_tokens"],
        "fim_rate": manifest["fim"]["rate"],
        "requested": mix["requested"],
        "realised": mix["realised"],
        "realised_tokens": mix["realised_tokens"],
        "epochs": mix["epochs"],
        # absent from shards written before the histogram was recorded
        "token_length_histogram": mix.get("token_length_histogram", {}),
    }


def run_started_at(run_id: str) -> str:
    """The start of a run, ISO-8601 UTC, from its id (`20261130T163020Z-221547c0`)."""
    started = datetime.strptime(run_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return started.isoformat()


def shareable_config(cfg: Any) -> dict[str, Any]:
    """The resolved run config, with credential-like Spark settings redacted."""
    config = to_dict(cfg)
    conf = config["spark"]["conf"]
    config["spark"]["conf"] = {k: REDACTED if SECRET_SETTING.search(k) else v for k, v in conf.items()}
    return config


def build_report(
    spark: SparkSession, cfg: Any, stage_dirs: dict[str, Folder], shard_dirs: dict[str, Folder]
) -> dict[str, Any]:
    stages = [StageStats.from_json(d.read_text("stats.json")) for d in stage_dirs.values()]
    final_dir = list(stage_dirs.values())[-1]
    with step("documents per kind and language"):
        rows = (read_documents(spark, final_dir.join("docs"))
                .groupBy("kind", "lang")
                .agg(F.count("*").alias("docs"), F.sum("size_bytes").alias("bytes"))
                .collect())
    by_lang = sorted(rows, key=lambda r: (-r["bytes"], r["kind"] or "", r["lang"] or ""))
    return {
        "schema_version": SCHEMA_VERSION,
        "codemill_version": codemill.__version__,
        "run_id": RUN_ID,
        "run_started_at": run_started_at(RUN_ID),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": shareable_config(cfg),
        "out": display(cfg.out_uri()),
        "stages": [asdict(s) for s in stages],
        "outputs": {name: display(d.uri) for name, d in stage_dirs.items()},
        "final": {
            "docs": stages[-1].docs_out,
            "bytes": stages[-1].bytes_out,
            "table": display(final_dir.join("docs")),
        },
        "by_lang": [r.asDict() for r in by_lang],
        "mixes": {name: _mix_summary(d) for name, d in shard_dirs.items()},
    }


def format_summary(report: dict[str, Any], top_langs: int = 12) -> str:
    lines = [f"codemill run summary ({report['out']})", ""]
    lines.append(f"{'stage':<14}{'docs in':>10}{'docs out':>10}{'dropped':>10}{'MB out':>10}{'sec':>8}")
    for s in report["stages"]:
        dropped = sum(s["dropped"].values())
        lines.append(
            f"{s['stage']:<14}{s['docs_in']:>10,}{s['docs_out']:>10,}{dropped:>10,}"
            f"{s['bytes_out'] / 1e6:>10,.1f}{s['seconds']:>8.1f}"
        )
    lines += ["", "drops by reason:"]
    for s in report["stages"]:
        for reason, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {s['stage'] + '/' + reason:<40}{n:>10,}")
    dupes = sum(
        n for s in report["stages"] for r, n in s["dropped"].items() if "duplicate" in r
    )
    lines += ["", f"duplicates removed: {dupes:,}"]
    for s in report["stages"]:
        histogram = s["extra"].get("cluster_size_histogram")
        if histogram:
            sizes = sorted(histogram.items(), key=lambda kv: int(kv[0]))
            shown = ", ".join(f"{size}: {n:,}" for size, n in sizes[:8])
            more = f", ... largest {sizes[-1][0]}" if len(sizes) > 8 else ""
            lines.append(f"near-duplicate clusters by size (size: clusters): {shown}{more}")
            lines.append(f"  candidate pairs {s['extra']['candidate_pairs']:,}, rejected by real "
                         f"Jaccard {s['extra']['pairs_rejected_by_jaccard']:,}; survivors beyond "
                         f"one per cluster {s['extra'].get('extra_survivors', 0):,}")
    lines += ["", "final documents by kind and language:"]
    by_kind: dict[str, list[int]] = {}
    for row in report["by_lang"]:
        tot = by_kind.setdefault(row["kind"], [0, 0])
        tot[0] += row["docs"]
        tot[1] += row["bytes"]
    for kind, (docs, size) in sorted(by_kind.items()):
        lines.append(f"  {kind:<10}{docs:>10,} docs {_mb(size):>14}")
    for row in report["by_lang"][:top_langs]:
        label = f"{row['lang']} ({row['kind']})"
        lines.append(f"    {label:<26}{row['docs']:>8,} docs {_mb(row['bytes']):>14}")
    rest = report["by_lang"][top_langs:]
    if rest:
        lines.append(f"    ... {len(rest)} more languages")
    for name, mix in report["mixes"].items():
        lines += ["", f"mix {name}: {mix['tokens']:,} tokens in {mix['sequences']:,} sequences "
                  f"of {mix['seq_len']:,} ({mix['shards']})",
                  f"  {'category':<10}{'tokens':>14}{'requested':>11}{'realised':>10}{'epochs':>8}"]
        for cat, share in mix["requested"].items():
            lines.append(f"  {cat:<10}{mix['realised_tokens'].get(cat, 0):>14,}{share:>11.1%}"
                         f"{mix['realised'].get(cat, 0):>10.1%}{mix['epochs'][cat]:>8.3g}")
        fim = mix["fim_docs"]
        transformed = fim["psm"] + fim["spm"]
        lines.append(f"  FIM: {fim['psm']:,} PSM + {fim['spm']:,} SPM = {transformed:,} of "
                     f"{fim['eligible']:,} eligible documents ({share_of(transformed, fim['eligible'])}; "
                     f"eligible: fit in one row, of {fim['packed']:,} packed), "
                     f"{mix['fim_tokens']:,} of {mix['tokens']:,} tokens "
                     f"({share_of(mix['fim_tokens'], mix['tokens'])})")
        lines.append(f"  packing: {mix['docs_cut']:,} of {fim['packed']:,} documents cut across rows, "
                     f"{share_of(mix['pad_tokens'], mix['sequences'] * mix['seq_len'])} padding")
    final = report["final"]
    lines += [
        "",
        f"kept {final['docs']:,} documents ({_mb(final['bytes'])}): {final['table']}",
        "outputs:",
        *(f"  {name:<14}{path}" for name, path in report["outputs"].items()),
        f"report: {report['out']}/report.json",
        f"report page: {report['out']}/report.html (charts; opens in any browser)",
    ]
    return "\n".join(lines) + "\n"


def write_report(
    spark: SparkSession, cfg: Any, stage_dirs: dict[str, Folder], shard_dirs: dict[str, Folder],
    report_dir: Folder,
) -> dict[str, Any]:
    """Write report.json, report.html and summary.txt for this run, and as the output
    root's latest."""
    report = build_report(spark, cfg, stage_dirs, shard_dirs)
    text = format_summary(report)
    blob = json.dumps(report, indent=2, sort_keys=True) + "\n"
    page = render_report(report)
    for directory in (Folder(cfg.out_uri(), report_dir.fs), report_dir):
        directory.write_text("summary.txt", text)
        directory.write_text("report.json", blob)
        directory.write_text("report.html", page)
    return report
