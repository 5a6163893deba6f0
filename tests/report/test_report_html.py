"""report.html: the page built from a report dict holds every chart with its data, and a
real run's page, rendered by a real headless Chromium, shows them."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from codemill.config import load_run_config as load_config
from codemill.report.html import cluster_size_bins, power_of_two_label, render_report, token_length_bins

SVG = "{http://www.w3.org/2000/svg}"
SECTIONS = ("funnel", "clusters", "token-lengths", "mix-shares", "fim")
CHROMIUM = Path("/usr/bin/chromium")


def stage(name, docs_in, dropped, extra=None):
    kept = docs_in - sum(dropped.values())
    return {"stage": name, "docs_in": docs_in, "docs_out": kept, "dropped": dropped,
            "bytes_in": docs_in * 1000, "bytes_out": kept * 1000, "seconds": 1.5,
            "dropped_bytes": {r: n * 1000 for r, n in dropped.items()}, "extra": extra or {}}


def mix(requested, realised, histogram, psm, spm, packed, long):
    return {"shards": "/out/shards/x", "sequences": 10, "tokens": 5120, "seq_len": 512,
            "fim_docs": {"psm": psm, "spm": spm, "packed": packed, "long": long,
                         "eligible": packed - long},
            "fim_rate": 0.9, "requested": requested, "realised": realised,
            "realised_tokens": {c: int(s * 5120) for c, s in realised.items()},
            "epochs": {c: 1.0 for c in requested}, "token_length_histogram": histogram}


def sample_report():
    near = {"bands": 25, "rows": 10, "candidate_pairs": 40, "pairs_rejected_by_jaccard": 3,
            "cluster_size_histogram": {"2": 12, "3": 4, "5": 1}}
    return {
        "schema_version": 2, "codemill_version": "0.1.0", "run_id": "20260101T000000Z-abcdef12",
        "run_started_at": "2026-01-01T00:00:00+00:00", "generated_at": "2026-01-01T00:10:00+00:00",
        "out": "/tmp/out", "config": {"seed": 0, "spark": {"conf": {}}},
        "stages": [stage("ingest", 500, {"binary": 12, "unsupported_extension": 30}),
                   stage("exact_dedup", 458, {"exact_duplicate": 8}),
                   stage("near_dedup", 450, {"near_duplicate": 23}, near),
                   stage("filters", 427, {"max_line_length": 5, "<odd & reason>": 1}),
                   stage("kinds", 421, {})],
        "final": {"docs": 421, "bytes": 421000, "table": "/tmp/out/kinds/x/docs"},
        "by_lang": [], "outputs": {},
        "mixes": {
            "base": mix({"code": 0.85, "nl_code": 0.08, "nl": 0.07},
                        {"code": 0.86, "nl_code": 0.08, "nl": 0.06},
                        {"code": {"8": 30, "32": 200, "64": 120}, "nl_code": {"16": 9}, "nl": {"0": 1, "4": 2}},
                        psm=150, spm=140, packed=330, long=10),
            "python": mix({"python": 0.75, "code": 0.10, "nl_code": 0.10, "nl": 0.05},
                          {"python": 0.74, "code": 0.11, "nl_code": 0.10, "nl": 0.05},
                          {"python": {"32": 100}, "code": {"64": 50}, "nl_code": {"16": 9}, "nl": {"4": 2}},
                          psm=100, spm=90, packed=240, long=30),
        },
    }


def sections(page: str) -> dict[str, ET.Element]:
    root = ET.fromstring(page)
    return {s.get("id"): s for s in root.iter("section")}


def bars(element: ET.Element, series: str | None = None) -> list[tuple[str, float]]:
    return [(r.get("data-label"), float(r.get("data-value"))) for r in element.iter(f"{SVG}rect")
            if r.get("class") == "bar" and (series is None or r.get("data-series") == series)]


def charts(element: ET.Element) -> list[ET.Element]:
    return list(element.iter(f"{SVG}svg"))


def texts(chart: ET.Element, cls: str) -> list[str]:
    return [t.text for t in chart.iter(f"{SVG}text") if t.get("class") == cls]


def test_every_chart_has_a_title_axis_labels_a_caption_and_its_data():
    page = render_report(sample_report())
    found = sections(page)  # the page parses as XML
    assert set(SECTIONS) <= set(found)
    for section_id in SECTIONS:
        for figure in found[section_id].iter("figure"):
            (chart,) = charts(figure)
            assert texts(chart, "title") and figure.find("figcaption").text
            assert len(texts(chart, "axis-label")) >= 1 and bars(chart)

    funnel = found["funnel"]
    stacked, by_reason = charts(funnel)
    assert bars(stacked, "kept") == [("ingest", 458), ("exact_dedup", 450), ("near_dedup", 427),
                                     ("filters", 421), ("kinds", 421)]
    assert bars(stacked, "dropped") == [("ingest", 42), ("exact_dedup", 8), ("near_dedup", 23),
                                        ("filters", 6), ("kinds", 0)]
    assert texts(stacked, "axis-label") == ["stage (in pipeline order)", "documents"]
    assert bars(by_reason)[:2] == [("ingest / unsupported_extension", 30), ("ingest / binary", 12)]
    assert ("filters / <odd & reason>", 1) in bars(by_reason)  # escaped, read back intact

    assert bars(found["clusters"]) == [("2", 12), ("3", 4), ("4", 0), ("5", 1)]

    lengths = charts(found["token-lengths"])
    assert [texts(c, "title")[0] for c in lengths] == [  # one category order for all mixes
        "base: code", "base: nl_code", "base: nl",
        "python: code", "python: nl_code", "python: nl", "python: python"]
    # every category of a mix on the same bins, empty ones included
    assert bars(lengths[0]) == [("0", 0), ("1", 0), ("2", 0), ("4", 0), ("8", 30), ("16", 0),
                                ("32", 200), ("64", 120)]
    assert bars(lengths[2])[0] == ("0", 1)

    base_shares, python_shares = charts(found["mix-shares"])
    assert bars(base_shares, "requested") == [("code", 0.85), ("nl_code", 0.08), ("nl", 0.07)]
    assert bars(python_shares, "realised")[-1] == ("python", 0.74)

    (fim,) = charts(found["fim"])
    assert bars(fim, "PSM") == [("base", pytest.approx(150 / 320)), ("python", pytest.approx(100 / 210))]
    assert bars(fim, "SPM") == [("base", pytest.approx(140 / 320)), ("python", pytest.approx(90 / 210))]
    assert texts(fim, "reference-label") == ["fim.rate 90%"]

    assert '"seed": 0' in page and "20260101T000000Z-abcdef12" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_missing_statistics_show_as_notes():
    report = sample_report()
    del report["stages"][2]  # near dedup disabled
    report["mixes"]["base"]["token_length_histogram"] = {}  # shards from an older codemill
    found = sections(render_report(report))
    assert not charts(found["clusters"])
    assert "near_dedup.enabled = false" in "".join(found["clusters"].itertext())
    assert "older codemill" in "".join(found["token-lengths"].itertext())
    assert len(charts(found["token-lengths"])) == 4  # the python mix's charts still drawn


def test_cluster_sizes_with_a_long_tail_fall_into_doubling_bins():
    bins = cluster_size_bins({"2": 50, "3": 7, "9": 2, "40": 1})
    assert bins == [("2–3", 57, 121), ("4–7", 0, 0), ("8–15", 2, 18), ("16–31", 0, 0), ("32–63", 1, 40)]
    assert cluster_size_bins({}) == []


def test_token_length_bins_span_every_category():
    lows, counts = token_length_bins({"code": {"4": 3}, "nl": {"1": 1, "16": 2}})
    assert lows == [1, 2, 4, 8, 16]
    assert counts == {"code": [0, 0, 3, 0, 0], "nl": [1, 0, 0, 0, 2]}
    assert [power_of_two_label(n) for n in (512, 1024, 16384, 1 << 20)] == ["512", "1k", "16k", "1M"]


class ChartCollector(HTMLParser):
    """From a browser's serialized DOM: the bars of each section and its chart titles."""

    def __init__(self) -> None:
        super().__init__()
        self.section = ""
        self.bars: dict[str, list[tuple[str, str, float]]] = {}
        self.svgs: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.section = a["id"]
        elif tag == "svg":
            self.svgs[self.section] = self.svgs.get(self.section, 0) + 1
        elif tag == "rect" and a.get("class") == "bar":
            self.bars.setdefault(self.section, []).append(
                (a["data-series"], a["data-label"], float(a["data-value"])))


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium "
                    "(Debian: apt-get install chromium)")
def test_a_real_runs_report_renders_in_chromium(finished_run, tmp_path):
    out = Path(load_config(finished_run).out)
    page, report = out / "report.html", json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 2 and report["config"]["seed"] == 0
    assert "report.html" in (out / "summary.txt").read_text()

    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    collected = ChartCollector()
    collected.feed(dom.stdout)
    stages = report["stages"]
    sizes = next(s["extra"]["cluster_size_histogram"] for s in stages if s["stage"] == "near_dedup")
    for section_id in SECTIONS:
        if section_id == "clusters" and not sizes:  # a small corpus may have no near duplicates
            assert "No near-duplicate clusters were found." in dom.stdout
            continue
        assert collected.svgs.get(section_id, 0) > 0, section_id
    kept = [(label, value) for series, label, value in collected.bars["funnel"] if series == "kept"]
    assert kept == [(s["stage"], s["docs_out"]) for s in stages]
    assert sum(v for *_, v in collected.bars.get("clusters", [])) == sum(sizes.values())
    # the base mix's categories are the kinds: its histograms count the final table's documents
    base = report["mixes"]["base"]["token_length_histogram"]
    per_kind = {}
    for row in report["by_lang"]:
        per_kind[row["kind"]] = per_kind.get(row["kind"], 0) + row["docs"]
    assert {kind: sum(buckets.values()) for kind, buckets in base.items()} == per_kind
    assert sum(v for *_, v in collected.bars["token-lengths"]) == 2 * sum(per_kind.values())
    assert len(collected.bars["mix-shares"]) == 2 * sum(len(m["requested"]) for m in report["mixes"].values())
    assert all(v > 0 for series, _, v in collected.bars["fim"] if series == "PSM")

    # and it paints: the screenshot holds the kept bars' colour
    from PIL import Image

    from codemill.report.svg import PALETTE

    shot = tmp_path / "report.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri(),
                    profile=tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    kept_colour = tuple(int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5))
    colours = {colour: n for n, colour in Image.open(shot).convert("RGB").getcolors(1 << 24)}
    assert colours.get(kept_colour, 0) > 1000
