"""Parsers for model output that is often malformed.

Models drop closing tags, repeat opening ones, wrap code in Markdown fences,
add prose around lists, number items wrongly or start a new chat turn. Each
parser takes what it can and records, in a ParseStats, every output it could
not use (`failed`, by reason) and every defect it worked around (`repaired`).
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from codemill.selfinstruct.prompts import B_INST, EOS


@dataclass
class ParseStats:
    parsed: int = 0  # items obtained (questions, test lists, solutions)
    failed: Counter = field(default_factory=Counter)  # reason -> outputs or items lost
    repaired: Counter = field(default_factory=Counter)  # defect -> times worked around

    def merge(self, other: ParseStats) -> ParseStats:
        self.parsed += other.parsed
        self.failed.update(other.failed)
        self.repaired.update(other.repaired)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"parsed": self.parsed, "failed": dict(sorted(self.failed.items())),
                "repaired": dict(sorted(self.repaired.items()))}


_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n?", re.M)


def _end_of_turn(text: str, stats: ParseStats) -> str:
    """Cut where the model starts another chat turn (it should have stopped there)."""
    cuts = [i for i in (text.find(B_INST), text.find(EOS)) if i >= 0]
    if cuts:
        stats.repaired["continued_past_turn"] += 1
        return text[:min(cuts)]
    return text


def _strip_fences(text: str, stats: ParseStats) -> str:
    out, count = _FENCE.subn("", text)
    if count:
        stats.repaired["code_fence"] += 1
    return out


def tagged_block(text: str, tag: str, stats: ParseStats) -> str | None:
    """The content of the `[TAG]…[/TAG]` block (tags case- and space-tolerant).

    Repairs: an opening tag repeated (the content after the last one before the close
    is taken: the model restarted), a missing closing tag (the rest of the output), a
    missing opening tag with a closing one present (everything before it). None when
    neither tag occurs.
    """
    opens = [m.end() for m in re.finditer(rf"\[\s*{tag}\s*\]", text, re.I)]
    close = re.search(rf"\[\s*/\s*{tag}\s*\]", text[opens[0]:] if opens else text, re.I)
    if not opens:
        if close is None:
            return None
        stats.repaired["missing_open_tag"] += 1
        return text[:close.start()]
    end = opens[0] + close.start() if close else len(text)
    inside = [o for o in opens if o <= end]
    if len(inside) > 1:
        stats.repaired["doubled_tag"] += 1
    if close is None:
        stats.repaired["missing_close_tag"] += 1
    return text[inside[-1]:end]


# --- questions ---------------------------------------------------------------------------

# "1. …", "1) …", "**2.** …", "Question 3: …", "Q4 - …", "#5. …"
_NUMBERED = re.compile(
    r"^\s*(?:[*_]{2})?\s*(?:(?:question|q)\s*#?\s*(?P<qnum>\d+)|#?(?P<num>\d+)\s*[.)])"
    r"\s*(?:[*_]{2})?\s*[:.)\-–]?\s*(?:[*_]{2})?\s*(?P<body>.*)$", re.I)
_BULLET = re.compile(r"^\s*[-*•]\s+(?P<body>.+)$")


def _is_item(pattern: re.Pattern, line: str) -> bool:
    match = pattern.match(line)
    return bool(match and match.group("body").strip())


def parse_questions(text: str, stats: ParseStats, min_chars: int = 20,
                    max_chars: int = 1500) -> list[str]:
    """The items of a numbered (or bulleted) list of questions.

    An item runs on over following lines until a blank line or the next item; an
    indented line after a blank line still belongs to it. Prose before the first item
    and after the last is dropped.
    """
    lines = _strip_fences(_end_of_turn(text, stats), stats).splitlines()
    # In a numbered list, bullets are sub-points of a question, not questions.
    item = _NUMBERED if any(_is_item(_NUMBERED, line) for line in lines) else _BULLET
    items: list[list[str]] = []
    numbers: list[int] = []
    open_item = prose = False
    for line in lines:
        match = item.match(line)
        if match and match.group("body").strip():
            items.append([match.group("body").strip()])
            number = match.groupdict().get("num") or match.groupdict().get("qnum")
            if number is not None:
                numbers.append(int(number))
            open_item = True
        elif not line.strip():
            open_item = False
        elif items and (open_item or line[:1].isspace()):
            items[-1].append(line.strip())
            open_item = True
        else:
            prose = True
    if prose:
        stats.repaired["prose_dropped"] += 1
    if numbers and numbers != list(range(1, len(numbers) + 1)):
        stats.repaired["broken_numbering"] += 1
    if not items:
        stats.failed["no_list"] += 1
        return []
    questions = []
    for lines in items:
        question = " ".join(lines).strip().strip("*_").strip()
        if len(question) < min_chars:
            stats.failed["too_short"] += 1
        elif len(question) > max_chars:
            stats.failed["too_long"] += 1
        else:
            questions.append(question)
    stats.parsed += len(questions)
    return questions


# --- tests -------------------------------------------------------------------------------

_ASSERT_LINE = re.compile(r"^\s*(?:\d+\s*[.):]\s*)?(?P<stmt>assert\b.*)$")


def _calls_something(node: ast.Assert) -> bool:
    return any(isinstance(n, ast.Call) for n in ast.walk(node.test))


def _assert_nodes(block: str, stats: ParseStats) -> list[ast.Assert]:
    try:
        return [n for n in ast.parse(block).body if isinstance(n, ast.Assert)]
    except SyntaxError:
        pass
    # Not valid Python as a whole (numbering, prose between tests): line by line.
    stats.repaired["line_by_line"] += 1
    nodes = []
    for line in block.splitlines():
        match = _ASSERT_LINE.match(line)
        if not match:
            continue
        try:
            nodes += [n for n in ast.parse(match.group("stmt")).body if isinstance(n, ast.Assert)]
        except SyntaxError:
            stats.failed["broken_assert"] += 1
    return nodes


def parse_tests(text: str, stats: ParseStats, max_tests: int = 5) -> list[str]:
    """Up to `max_tests` distinct assert statements that call something, each normalised
    to one line; [] when none could be read."""
    text = _end_of_turn(text, stats)
    block = tagged_block(text, "TESTS", stats)
    if block is None:
        stats.repaired["no_tags"] += 1
        block = text
    block = _strip_fences(block, stats)
    tests: list[str] = []
    for node in _assert_nodes(block, stats):
        if not _calls_something(node):
            stats.failed["assert_without_call"] += 1
            continue
        source = ast.unparse(node)
        if source not in tests:
            tests.append(source)
    if not tests:
        stats.failed["no_asserts"] += 1
        return []
    stats.parsed += 1
    return tests[:max_tests]


# --- solutions ---------------------------------------------------------------------------

_FENCED = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(?P<code>.*?)(?:```|\Z)", re.S | re.I)


def parse_solution(text: str, stats: ParseStats) -> str | None:
    """The code of a solution: between [PYTHON] tags, else in a Markdown fence, else the
    whole output if it is Python; it must parse and define a function."""
    text = _end_of_turn(text, stats)
    code = tagged_block(text, "PYTHON", stats)
    if code is None:
        fenced = _FENCED.search(text)
        if fenced:
            stats.repaired["fence_without_tags"] += 1
            code = fenced.group("code")
        else:
            stats.repaired["no_tags"] += 1
            code = text
    code = textwrap.dedent(_strip_fences(code, stats)).strip("\n")
    try:
        tree = ast.parse(code)
    except SyntaxError:
        stats.failed["syntax_error"] += 1
        return None
    if not defines_function(tree):
        stats.failed["no_function"] += 1
        return None
    stats.parsed += 1
    return code.rstrip() + "\n"


def defines_function(tree: ast.Module) -> bool:
    """Whether code defines a function at its top level (what the tests call)."""
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in tree.body)
