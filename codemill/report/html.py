"""The run report as one static page: `render_report(report)` turns the dict that
`report.json` holds into `report.html`.

The page is self-contained — inline CSS, inline SVG charts (`codemill.report.svg`), no
script, nothing fetched — so it opens from a laptop's disk or a copy pulled from a
cluster's `out`. It is also well-formed XML, which keeps it parseable by anything.
Sections, each a chart with a caption and the numbers beside it:

* `funnel` — documents in and kept per stage, and drops by stage and reason;
* `clusters` — near-duplicate cluster sizes;
* `token-lengths` — tokens per document, per category of each mix;
* `mix-shares` — requested against realised token shares per mix;
* `fim` — the share of FIM-eligible documents transformed, per mix.

A statistic a run did not record (a disabled stage, shards written before codemill
kept a histogram) shows as a note instead of a chart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from codemill.mix.categories import MIX_CATEGORIES
from codemill.report.svg import Series, bar_chart, color, column_chart, format_count, format_share

SMALL_CHART_WIDTH = 520  # token-length histograms: two per row

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f;
       margin: 0 auto; max-width: 1240px; padding: 24px 32px 64px; line-height: 1.45; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 40px 0 6px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 20px 0 4px; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 12px 0;
         font-size: 14px; }
.facts dt { color: #666; }
.facts dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-all; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
/* a table box is as wide as its chart, and its caption wraps to that width */
figure { margin: 8px 0; display: table; }
figcaption { display: table-caption; caption-side: bottom; }
figcaption, .caption { font-size: 13px; color: #555; max-width: 720px; margin-top: 4px; }
svg.chart { background: #fff; }
svg .title { font-size: 14px; font-weight: 600; fill: #1d1d1f; }
svg .tick, svg .value { font-size: 11px; fill: #444; }
svg .legend, svg .axis-label { font-size: 12px; fill: #333; }
svg .grid { stroke: #e8e8e8; }
svg .axis { stroke: #333; }
svg .reference { stroke: #D55E00; stroke-width: 1.5; stroke-dasharray: 6 4; }
svg .reference-label { font-size: 11px; font-weight: 600; fill: #D55E00;
                       paint-order: stroke; stroke: #fff; stroke-width: 3px; }
svg rect.bar:hover { opacity: 0.8; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f6f6f6; }
td:first-child, th:first-child { text-align: left; }
.note { color: #8a5a00; background: #fff8e6; padding: 6px 10px; border-radius: 4px; }
details { margin: 8px 0; }
summary { cursor: pointer; color: #0072B2; }
pre { background: #f6f6f6; padding: 12px; overflow-x: auto; font-size: 12px; }
"""


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _documents(n: int) -> str:
    return f"{n:,} document" + ("" if n == 1 else "s")


def in_category_order(categories: Iterable[str]) -> list[str]:
    """Mix categories in one order for every mix and chart (code, nl_code, nl, python);
    report.json's keys come sorted alphabetically."""
    rank = {c: i for i, c in enumerate(MIX_CATEGORIES)}
    return sorted(categories, key=lambda c: (rank.get(c, len(rank)), c))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _caption(text: str) -> str:
    """A caption shared by a row of small charts."""
    return f'<p class="caption">{escape(text)}</p>'



def _row(*parts: str) -> str:
    """A chart and its table side by side (wrapping on narrow screens)."""
    return f'<div class="row">{"".join(parts)}</div>'


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _numbers(table: str) -> str:
    """A long table, folded away under the chart it belongs to."""
    return f"<details><summary>the numbers</summary>{table}</details>"


def _section(section_id: str, title: str, *parts: str) -> str:
    return f'<section id="{section_id}"><h2>{escape(title)}</h2>{"".join(parts)}</section>'


def cluster_size_bins(histogram: dict[str, int]) -> list[tuple[str, int, int]]:
    """(label, clusters, documents in them) per bin: one bin per size up to 16, else
    power-of-two ranges, so a long tail of rare large clusters stays readable."""
    sizes = {int(k): n for k, n in histogram.items()}
    if not sizes:
        return []
    smallest, largest = min(sizes), max(sizes)
    if largest <= 16:
        return [(str(s), sizes.get(s, 0), s * sizes.get(s, 0)) for s in range(smallest, largest + 1)]
    bins, lo = [], smallest
    while lo <= largest:
        hi = 2 * lo - 1
        members = {s: n for s, n in sizes.items() if lo <= s <= hi}
        bins.append((f"{lo}–{hi}", sum(members.values()), sum(s * n for s, n in members.items())))
        lo *= 2
    return bins


def token_length_bins(histogram: dict[str, dict[str, int]]) -> tuple[list[int], dict[str, list[int]]]:
    """Shared bins and each category's document counts, from buckets keyed by their
    lower bound (0, 1, 2, 4, ...: bucket b holds lengths b to 2b - 1). Every category
    gets every bin between the shortest and the longest, so they compare."""
    bounds = sorted({int(b) for per_category in histogram.values() for b in per_category})
    if not bounds:
        return [], {}
    lows = [0] if bounds[0] == 0 else []
    b = max(bounds[0], 1)
    while b <= bounds[-1]:
        lows.append(b)
        b *= 2
    counts = {cat: [per_category.get(str(lo), 0) for lo in lows]
              for cat, per_category in histogram.items()}
    return lows, counts


def power_of_two_label(n: int) -> str:
    """A bin's lower bound under a bar: 512, 1k (1,024), 16k, 1M (1,048,576)."""
    for shift, suffix in ((20, "M"), (10, "k")):
        if n >= 1 << shift:
            return f"{n >> shift}{suffix}"
    return str(n)


def _bin_range(lo: int) -> str:
    return f"{lo:,}" if lo < 2 else f"{lo:,}–{2 * lo - 1:,}"


def _header(report: dict[str, Any]) -> str:
    final = report.get("final", {})
    stages = report.get("stages", [])
    facts = [("output", report.get("out", "")), ("run", report.get("run_id", "")),
             ("run started", report.get("run_started_at", "")),
             ("report written", report.get("generated_at", "")),
             ("codemill", report.get("codemill_version", "")),
             ("report schema", report.get("schema_version", ""))]
    listing = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts)
    kept = (f"Kept {final.get('docs', 0):,} documents ({_mb(final.get('bytes', 0))}) of "
            f"{stages[0]['docs_in']:,} input files." if stages else "")
    mixes = "; ".join(f"mix {name}: {m['tokens']:,} tokens in {m['sequences']:,} sequences of "
                      f"{m['seq_len']:,}" for name, m in report.get("mixes", {}).items())
    return (f"<header><h1>codemill run report</h1><dl class=\"facts\">{listing}</dl>"
            f"<p>{escape(kept)} {escape(mixes)}</p></header>")


def funnel_section(stages: list[dict[str, Any]]) -> str:
    if not stages:
        return _section("funnel", "Drop funnel", _note("This report lists no document stage."))
    names = [s["stage"] for s in stages]
    kept = [s["docs_out"] for s in stages]
    dropped = [sum(s["dropped"].values()) for s in stages]
    funnel = column_chart("Documents in and kept, per stage", names,
                          [Series("kept", kept), Series("dropped", dropped)],
                          x_label="stage (in pipeline order)", y_label="documents", stacked=True,
                          width=540)
    rows = [(s["stage"], format_count(s["docs_in"]), format_count(s["docs_out"]),
             format_count(d), format_share(s["docs_out"] / s["docs_in"]) if s["docs_in"] else "–",
             _mb(s["bytes_out"]), f"{s['seconds']:.1f}") for s, d in zip(stages, dropped)]
    table = _table(["stage", "docs in", "kept", "dropped", "kept share", "out", "seconds"], rows)
    caption = ("Each bar is all the documents a stage read: the lower part it kept (the next "
               "stage reads exactly those), the upper part it dropped.")
    parts = [_row(_figure(funnel, caption), table)]
    reasons = [(i, s["stage"], reason, n) for i, s in enumerate(stages)
               for reason, n in sorted(s["dropped"].items(), key=lambda kv: (-kv[1], kv[0]))]
    if reasons:
        drops = bar_chart("Dropped documents by stage and reason",
                          [f"{stage} / {reason}" for _, stage, reason, _ in reasons],
                          [n for *_, n in reasons], x_label="documents dropped",
                          colors=[color(i) for i, *_ in reasons])
        parts.append(_figure(drops, "Why documents left the pipeline: one bar per stage and "
                             "reason (colour by stage), largest first within a stage. Every "
                             "dropped document is in that stage's dropped table with its reason."))
    else:
        parts.append(_note("No stage dropped any document."))
    return _section("funnel", "Drop funnel", *parts)


def clusters_section(stages: list[dict[str, Any]]) -> str:
    near = next((s for s in stages if "cluster_size_histogram" in s.get("extra", {})), None)
    if near is None:
        return _section("clusters", "Near-duplicate clusters",
                        _note("Near dedup did not run (near_dedup.enabled = false)."))
    bins = cluster_size_bins(near["extra"]["cluster_size_histogram"])
    extra = near["extra"]
    facts = (f"LSH with {extra.get('bands', '?')} bands × {extra.get('rows', '?')} rows found "
             f"{extra.get('candidate_pairs', 0):,} candidate pairs; "
             f"{extra.get('pairs_rejected_by_jaccard', 0):,} were rejected by their real Jaccard "
             f"similarity.")
    if not bins:
        return _section("clusters", "Near-duplicate clusters",
                        _note("No near-duplicate clusters were found."), _caption(facts))
    chart = column_chart("Near-duplicate clusters by size", [b[0] for b in bins],
                         [Series("clusters", [b[1] for b in bins])],
                         x_label="documents in the cluster", y_label="clusters")
    table = _table(["cluster size", "clusters", "documents"],
                   [(label, format_count(n), format_count(docs)) for label, n, docs in bins])
    extra_kept = extra.get("extra_survivors", 0)
    caption = ("How many clusters of near-duplicate documents (Jaccard ≥ the threshold) had "
               "each size. Each cluster keeps its best document by the keep rule and drops "
               "the others, except that a document no survivor is similar to survives too "
               f"({format_count(extra_kept)} such), so every dropped document has a kept "
               "near-copy. " + facts)
    return _section("clusters", "Near-duplicate clusters", _row(_figure(chart, caption), table))


def token_lengths_section(mixes: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, mix in mixes.items():
        lows, by_category = token_length_bins(mix.get("token_length_histogram", {}))
        counts = {cat: by_category[cat] for cat in in_category_order(by_category)}
        parts.append(f"<h3>mix {escape(name)}</h3>")
        if not lows:
            parts.append(_note(f"The shards of mix {name} record no token-length histogram "
                               "(written by an older codemill)."))
            continue
        parts.append(_caption(f"Documents of each category of mix {name} by their length in "
                              "tokens, one epoch (before repetition or subsampling). Bins double "
                              "in width: the bar at n counts documents of n to 2n − 1 tokens "
                              "(1k = 1,024)."))
        labels = [power_of_two_label(lo) for lo in lows]
        charts = [_figure(column_chart(f"{name}: {cat}", labels, [Series(cat, values)],
                                       x_label="tokens per document", y_label="documents",
                                       width=SMALL_CHART_WIDTH, height=260),
                          f"{cat}: {_documents(sum(values))}")
                  for cat, values in counts.items()]
        parts.append(_row(*charts))
        rows = [(_bin_range(lo), *(format_count(counts[cat][i]) for cat in counts))
                for i, lo in enumerate(lows)]
        parts.append(_numbers(_table(["tokens", *counts], rows)))
    if not mixes:
        parts.append(_note("This run wrote no mixes."))
    return _section("token-lengths", "Token lengths per category", *parts)


def mix_shares_section(mixes: dict[str, dict[str, Any]]) -> str:
    parts = [_caption("Requested: the config's token shares. Realised: what the shards hold. Whole "
                      "documents are drawn, so small corpora land a few points off; epochs above 1 "
                      "repeat a category, below 1 subsample it.")] if mixes else []
    for name, mix in mixes.items():
        categories = in_category_order(mix["requested"])
        requested = [mix["requested"][c] for c in categories]
        realised = [mix["realised"].get(c, 0.0) for c in categories]
        chart = column_chart(f"Mix {name}: token share per category", categories,
                             [Series("requested", requested), Series("realised", realised)],
                             x_label="category", y_label="share of the mix's tokens", share=True)
        rows = [(c, format_share(req), format_share(real),
                 format_count(mix["realised_tokens"].get(c, 0)), f"{mix['epochs'][c]:.3g}")
                for c, req, real in zip(categories, requested, realised)]
        table = _table(["category", "requested", "realised", "tokens", "epochs"], rows)
        caption = (f"Mix {name}: {mix['tokens']:,} tokens in {mix['sequences']:,} sequences of "
                   f"{mix['seq_len']:,} ({mix['shards']}).")
        parts.append(_row(_figure(chart, caption), table))
    if not mixes:
        parts.append(_note("This run wrote no mixes."))
    return _section("mix-shares", "Requested and realised mix shares", *parts)


def fim_section(mixes: dict[str, dict[str, Any]]) -> str:
    if not mixes:
        return _section("fim", "Fill-in-the-middle", _note("This run wrote no mixes."))
    names = list(mixes)
    fim = [mixes[n]["fim_docs"] for n in names]
    eligible = [f.get("eligible", f["packed"]) for f in fim]
    psm = [f["psm"] / e if e else 0.0 for f, e in zip(fim, eligible)]
    spm = [f["spm"] / e if e else 0.0 for f, e in zip(fim, eligible)]
    rate = mixes[names[0]].get("fim_rate")
    chart = column_chart("FIM share of eligible documents, per mix", names,
                         [Series("PSM", psm), Series("SPM", spm)], x_label="mix",
                         y_label="share of eligible documents", share=True, stacked=True,
                         reference=(rate, f"fim.rate {rate:.0%}") if rate is not None else None,
                         width=480)
    rows = [(n, format_count(f["packed"]), format_count(f.get("long", 0)), format_count(e),
             format_count(f["psm"]), format_count(f["spm"]), format_share(p + s))
            for n, f, e, p, s in zip(names, fim, eligible, psm, spm)]
    table = _table(["mix", "documents", "longer than a row", "eligible", "PSM", "SPM", "FIM share"],
                   rows)
    caption = ("A document that fits in one row is eligible for fill-in-the-middle; the bar is "
               "the share of eligible documents transformed, split into PSM and SPM. The dashed "
               "line is fim.rate: the share varies around it by chance, and falls a little short "
               "when a document drawn for FIM no longer fits its row with the FIM tokens added.")
    return _section("fim", "Fill-in-the-middle", _row(_figure(chart, caption), table))


def config_section(config: dict[str, Any] | None) -> str:
    if not config:
        return ""
    text = json.dumps(config, indent=2, sort_keys=True)
    return _section("config", "Configuration",
                    f"<details><summary>the resolved run config</summary><pre>{escape(text, quote=False)}</pre>"
                    "</details>")


def render_report(report: dict[str, Any]) -> str:
    """The whole page for one report dict (what `report.json` holds)."""
    stages, mixes = report.get("stages", []), report.get("mixes", {})
    body = "".join([_header(report), funnel_section(stages), clusters_section(stages),
                    token_lengths_section(mixes), mix_shares_section(mixes), fim_section(mixes),
                    config_section(report.get("config"))])
    title = escape(f"codemill run report: {report.get('out', '')}")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
            f"<title>{title}</title><style>{CSS}</style></head><body>{body}</body></html>\n")
