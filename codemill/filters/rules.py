"""Code heuristics of The Stack / StarCoder as one Spark stage over Arrow batches.

A rule is a name, a built-in threshold, a direction and a measure: a function
from the batch's shared statistics (`Measures`, computed with pyarrow.compute
and numpy, once per batch and only when some rule asks) to one number per
document. The shared evaluator compares every document's number with its
threshold and drops the document with the *first* failing rule as reason and
"measured vs threshold" as detail.

Thresholds come from three places, the most specific winning: the global
table `FilterConfig.rules`, then an entry for the document's language
(`by_type["json"]`), then one for its extension (`by_type[".json"]`). A
setting is a number (the threshold), `true` (on, with the built-in threshold)
or `false` (off). Both tables are merged over the built-in defaults, so a
config names only what it changes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codemill.arrow_batches import byte_slices

if TYPE_CHECKING:
    from codemill.filters.config import FilterConfig

Setting = float | bool

# Runs of encoded data (StarCoder2's "encoded data" filter, our own regexes):
# base64 / long hex words, 0x.. or \x.. byte lists, and \u escape runs.
ENCODED_PATTERN = (
    r"[A-Za-z0-9+/]{64,}={0,2}"
    r"|(?:(?:0[xX]|\\x)[0-9A-Fa-f]{2}[,\s]*){16,}"
    r"|(?:\\u[0-9A-Fa-f]{4}){8,}"
)
# What a browser would not show: scripts, styles, comments, tags.
HTML_INVISIBLE_PATTERN = r"(?is)<script\b.*?</script>|<style\b.*?</style>|<!--.*?-->|<[^>]*>"
# A minified line: long, and almost free of spaces (minifiers strip them).
MINIFIED_LINE_CHARS = 200
MINIFIED_SPACE_SHARE = 0.1
# Rows of an Arrow batch are cut into slices of about this many content bytes: Spark's
# batches count rows, and the per-line intermediates are a few times the content.
CHUNK_BYTES = 8 << 20


class Measures:
    """Per-document statistics of one batch of contents, each computed at most once."""

    def __init__(self, content: pa.Array, marker_pattern: str):
        self.content = pc.fill_null(content, "")
        self.marker_pattern = marker_pattern

    @cached_property
    def chars(self) -> np.ndarray:
        return np.asarray(pc.utf8_length(self.content), dtype=np.float64)

    def _share(self, kept_chars: pa.Array) -> np.ndarray:
        kept = np.asarray(pc.utf8_length(kept_chars), dtype=np.float64)
        return np.divide(kept, self.chars, out=np.zeros_like(kept), where=self.chars > 0)

    def _removed_chars(self, pattern: str) -> np.ndarray:
        rest = np.asarray(pc.utf8_length(pc.replace_substring_regex(self.content, pattern, "")))
        return self.chars - rest

    @cached_property
    def _lines(self) -> pa.ListArray:
        return pc.split_pattern(self.content, "\n")

    @cached_property
    def line_lengths(self) -> np.ndarray:
        return np.asarray(pc.utf8_length(self._lines.flatten()), dtype=np.float64)

    @cached_property
    def line_offsets(self) -> np.ndarray:
        offsets = np.asarray(self._lines.offsets, dtype=np.int64)
        return offsets - offsets[0]

    @cached_property
    def line_counts(self) -> np.ndarray:
        """Lines as str.splitlines counts them: a final newline does not start a line."""
        pieces = np.diff(self.line_offsets)
        last_empty = self.line_lengths[self.line_offsets[1:] - 1] == 0
        return np.maximum(pieces - (last_empty & (pieces > 1)), 1)

    @cached_property
    def max_line_length(self) -> np.ndarray:
        # split_pattern gives every document at least one (maybe empty) piece
        return np.maximum.reduceat(self.line_lengths, self.line_offsets[:-1])

    @cached_property
    def mean_line_length(self) -> np.ndarray:
        newlines = np.diff(self.line_offsets) - 1
        return (self.chars - newlines) / self.line_counts

    @cached_property
    def alnum_fraction(self) -> np.ndarray:
        return self._share(pc.replace_substring_regex(self.content, r"[^\pL\pN]+", ""))

    @cached_property
    def alpha_fraction(self) -> np.ndarray:
        return self._share(pc.replace_substring_regex(self.content, r"[^\pL]+", ""))

    @cached_property
    def _marker(self) -> pa.StructArray:
        return pc.extract_regex(self.content, self.marker_pattern)

    @cached_property
    def marker_line(self) -> np.ndarray:
        """0-based line of the first auto-generated marker; inf where there is none."""
        newlines = np.asarray(pc.count_substring(self._marker.field("head"), "\n"), dtype=np.float64)
        found = np.asarray(self._marker.is_valid())
        return np.where(found, newlines, np.inf)

    def marker(self, i: int) -> str:
        return self._marker.field("marker")[i].as_py()

    @cached_property
    def xml_declaration_at(self) -> np.ndarray:
        """Byte offset of an XML declaration; inf where there is none."""
        at = np.asarray(pc.find_substring(self.content, "<?xml version="), dtype=np.float64)
        return np.where(at < 0, np.inf, at)

    @cached_property
    def html_visible_fraction(self) -> np.ndarray:
        visible = pc.replace_substring_regex(self.content, HTML_INVISIBLE_PATTERN, "")
        return self._share(pc.replace_substring_regex(visible, r"\s+", ""))

    @cached_property
    def encoded_chars(self) -> np.ndarray:
        return self._removed_chars(ENCODED_PATTERN)

    @cached_property
    def encoded_fraction(self) -> np.ndarray:
        return np.divide(self.encoded_chars, self.chars, out=np.zeros_like(self.chars),
                         where=self.chars > 0)

    @cached_property
    def minified_fraction(self) -> np.ndarray:
        """Share of a document's characters on long lines with almost no spaces."""
        long = np.flatnonzero(self.line_lengths >= MINIFIED_LINE_CHARS)
        dense_chars = np.zeros_like(self.line_lengths)
        if len(long):
            spaces = np.asarray(pc.count_substring(self._lines.flatten().take(long), " "))
            dense = spaces < MINIFIED_SPACE_SHARE * self.line_lengths[long]
            dense_chars[long[dense]] = self.line_lengths[long[dense]]
        per_doc = np.add.reduceat(dense_chars, self.line_offsets[:-1])
        return np.divide(per_doc, self.chars, out=np.zeros_like(per_doc), where=self.chars > 0)


@dataclass(frozen=True)
class Rule:
    """Drop a document when `measure` is above (`drop_above`) or below its threshold."""

    name: str
    threshold: float
    on_by_default: bool
    drop_above: bool
    measure: Callable[[Measures], np.ndarray]
    fraction: bool = False
    note: Callable[[Measures, int], str] | None = None

    def detail(self, m: Measures, i: int, value: float, threshold: float) -> str:
        text = f"{value:.4g} {'>' if self.drop_above else '<'} {threshold:.4g}"
        return f"{text}: {self.note(m, i)}" if self.note else text


def _rule(name: str, threshold: float, drop_above: bool, measure: Callable[[Measures], np.ndarray],
          on: bool = True, **kw) -> tuple[str, Rule]:
    return name, Rule(name, threshold, on, drop_above, measure, **kw)


# Table order is evaluation order: a document failing several rules is dropped by the first.
RULES: dict[str, Rule] = dict([
    # value: 0-based line of the first marker (on the first line or a comment line);
    # threshold: how many head lines are searched
    _rule("autogenerated", 5, False, lambda m: m.marker_line,
          note=lambda m, i: f"{m.marker(i)!r} on line {int(m.marker_line[i]) + 1}"),
    # value: byte offset of "<?xml version="; StarCoder drops it within the first 100 bytes
    _rule("xml_declaration", 100, False, lambda m: m.xml_declaration_at),
    _rule("max_chars", 5000, True, lambda m: m.chars, on=False),
    _rule("html_visible_text", 0.2, False, lambda m: m.html_visible_fraction, on=False,
          fraction=True),
    _rule("encoded_fraction", 0.5, True, lambda m: m.encoded_fraction, fraction=True),
    _rule("minified_fraction", 0.5, True, lambda m: m.minified_fraction, fraction=True),
    _rule("max_line_length", 1000, True, lambda m: m.max_line_length),
    _rule("mean_line_length", 100, True, lambda m: m.mean_line_length),
    _rule("alnum_fraction", 0.25, False, lambda m: m.alnum_fraction, fraction=True),
    _rule("alpha_fraction", 0.5, False, lambda m: m.alpha_fraction, on=False, fraction=True),
])

DEFAULT_RULES: dict[str, Setting] = {
    name: (float(rule.threshold) if rule.on_by_default else False) for name, rule in RULES.items()
}

# StarCoder: JSON / YAML kept only with at most 5000 characters and > 50% alphabetic
# characters; HTML only with >= 20% visible text. CSV gets the same size cap (our choice:
# big CSV files are data). Prose formats keep long lines: paragraphs are often one line.
_PROSE = {"max_line_length": False, "mean_line_length": False}
DEFAULT_BY_TYPE: dict[str, dict[str, Setting]] = {
    "json": {"max_chars": True, "alpha_fraction": True},
    "yaml": {"max_chars": True, "alpha_fraction": True},
    "csv": {"max_chars": True},
    "html": {"html_visible_text": True},
    "markdown": dict(_PROSE),
    "restructuredtext": dict(_PROSE),
    "text": dict(_PROSE),
    "tex": dict(_PROSE),
}


class Thresholds:
    """Each rule's threshold (nan: off) for a document's (extension, language)."""

    def __init__(self, cfg: FilterConfig):
        self.rules = {**DEFAULT_RULES, **cfg.rules}
        self.by_type = {key: {**DEFAULT_BY_TYPE.get(key, {}), **cfg.by_type.get(key, {})}
                        for key in DEFAULT_BY_TYPE.keys() | cfg.by_type.keys()}
        self._rows: dict[tuple[str, str], np.ndarray] = {}

    def _value(self, name: str, setting: Setting) -> float:
        if setting is False:
            return math.nan
        return float(RULES[name].threshold) if setting is True else float(setting)

    def row(self, ext: str, lang: str) -> np.ndarray:
        if (ext, lang) not in self._rows:
            values = []
            for name in RULES:
                setting = self.rules[name]
                for key in (lang, ext):  # the more specific key last, so it wins
                    setting = self.by_type.get(key, {}).get(name, setting)
                values.append(self._value(name, setting))
            self._rows[(ext, lang)] = np.array(values)
        return self._rows[(ext, lang)]

    def max_head_lines(self) -> int:
        """How many lines the marker search must cover for the largest threshold in use."""
        settings = [self.rules["autogenerated"]] + [
            t["autogenerated"] for t in self.by_type.values() if "autogenerated" in t]
        lines = [self._value("autogenerated", s) for s in settings]
        return max([int(math.ceil(v)) for v in lines if not math.isnan(v)], default=1)

    def for_batch(self, paths: pa.Array, langs: pa.Array) -> np.ndarray:
        """(documents x rules) thresholds: one lookup per distinct (extension, language)."""
        ext = pc.utf8_lower(pc.extract_regex(paths, r"(?P<ext>\.[^./]*)$").field("ext"))
        ext = pc.if_else(pc.is_valid(ext), ext, "")
        keys = pc.binary_join_element_wise(ext, pc.fill_null(langs, ""), "\0").dictionary_encode()
        rows = np.stack([self.row(*k.split("\0")) for k in keys.dictionary.to_pylist()]
                        or [np.full(len(RULES), np.nan)])
        return rows[np.asarray(keys.indices, dtype=np.int64)]


# What opens a comment line: #, //, /*, a block comment's *, --, ;, %, !, <!--, (*, {-, REM.
COMMENT_LEADER = r"[ \t]*(?:#|//|/\*|\*|--|;|%|!|<!--|\(\*|\{-|rem\b)"


def marker_pattern(markers: list[str], head_lines: int) -> str:
    """RE2 pattern: `head` is everything before the line holding the first marker. A marker
    counts on the first line, whatever it holds, and on later lines that are comments:
    generators sign their output in a header, while a hand-written module's docstring
    may well say what its code was "generated by"."""
    alternatives = "|".join(re.escape(m.strip()) for m in markers)
    # \A after `head` holds only where `head` is empty: the first line.
    return (rf"(?i)^(?P<head>(?:[^\n]*\n){{0,{max(head_lines - 1, 0)}}}?)(?:{COMMENT_LEADER}|\A)"
            rf"[^\n]*?(?P<marker>{alternatives})")


def byte_chunks(batch: pa.RecordBatch, column: str) -> Iterator[pa.RecordBatch]:
    """The filters' batch slices: about CHUNK_BYTES of `column` each."""
    return byte_slices(batch, column, CHUNK_BYTES)


def evaluate(chunk: pa.RecordBatch, thresholds: Thresholds, pattern: str) -> tuple[pa.Array, pa.Array]:
    """(reason, detail) per document; both null where every rule passes."""
    limits = thresholds.for_batch(chunk.column("path"), chunk.column("lang"))
    m = Measures(chunk.column("content"), pattern)
    failed = np.full(chunk.num_rows, -1)
    values = np.zeros(chunk.num_rows)
    for r, rule in enumerate(RULES.values()):
        limit = limits[:, r]
        todo = (failed < 0) & ~np.isnan(limit)
        if not todo.any():
            continue
        value = rule.measure(m)
        with np.errstate(invalid="ignore"):  # nan limits compare False, as intended
            fails = todo & ((value > limit) if rule.drop_above else (value < limit))
        failed[fails] = r
        values[fails] = value[fails]
    rules = list(RULES.values())
    reasons: list[str | None] = [None] * chunk.num_rows
    details: list[str | None] = [None] * chunk.num_rows
    for i in np.flatnonzero(failed >= 0):
        rule = rules[failed[i]]
        reasons[i] = rule.name
        details[i] = rule.detail(m, i, values[i], limits[i, failed[i]])
    return pa.array(reasons, pa.string()), pa.array(details, pa.string())


def flag_batches(batches: Iterator[pa.RecordBatch], cfg: FilterConfig) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: document batches in, the same rows plus `_reason` and `_detail` out."""
    thresholds = Thresholds(cfg)
    pattern = marker_pattern(cfg.autogen_markers, thresholds.max_head_lines())
    for batch in batches:
        for chunk in byte_chunks(batch, "content"):
            reason, detail = evaluate(chunk, thresholds, pattern)
            yield chunk.append_column("_reason", reason).append_column("_detail", detail)
