"""Near-copies of real source files, made the way duplicates arise in code corpora.

An edited copy applies a prefix of a seeded sequence of edits to its parent:
consistent identifier renames, deleted, inserted and swapped lines, rewritten
comments, operator spacing, and a license header. The prefix length is found
by bisection so that the copy's exact Jaccard similarity to its parent (word
5-gram shingles, the tokenisation near dedup uses) lands near a target drawn
uniformly from a range, so every similarity from clearly different to nearly
equal is represented. Exact copies and whitespace-only copies stand beside
them.

Everything here is plain Python (no numpy, no codemill) except `jaccard`, which
imports codemill's shingles when called.
"""

from __future__ import annotations

import builtins
import keyword
import random
import re
from dataclasses import dataclass
from pathlib import Path

IDENTIFIER = re.compile(r"\b[A-Za-z_][A-Za-z_0-9]{2,}\b")
OPERATOR = re.compile(r"\s*(==|!=|<=|>=|\+=|-=|=|\+|-|\*|/|<|>|,)\s*")
EDIT_KINDS = ("rename", "delete", "insert", "swap", "comment", "spacing", "header")
EDIT_WEIGHTS = (2, 6, 5, 4, 3, 3, 0.3)
# Names a rename must leave alone, or the copy would not be code anyone writes.
RESERVED = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | {"self", "cls"}


@dataclass(frozen=True)
class Donors:
    """Real material the edits draw on: code lines, comment texts, identifiers and
    license headers, all from files that are not in the copy's family."""

    lines: tuple[str, ...]
    comments: tuple[str, ...]
    names: tuple[str, ...]
    headers: tuple[str, ...]


def donors_from(texts: list[str], license_files: list[Path], per_text: int = 40) -> Donors:
    rng = random.Random(0)
    lines, comments, names = [], [], set()
    for text in texts:
        code = [line for line in text.splitlines() if line.strip()]
        lines += rng.sample(code, min(per_text, len(code)))
        comments += [line.split("#", 1)[1].strip() for line in code if "#" in line][:per_text]
        names.update(IDENTIFIER.findall(text[:5_000]))
    headers = []
    for path in license_files:
        head = [line.rstrip() for line in path.read_text(errors="replace").splitlines() if line.strip()][:12]
        if len(head) >= 4:
            headers.append("".join(f"# {line}\n" for line in head) + "\n")
    return Donors(tuple(lines), tuple(c for c in comments if c), tuple(sorted(names - RESERVED)),
                  tuple(headers))


def edited(text: str, edits: int, seed: int, donors: Donors) -> str:
    """`text` after the first `edits` edits of the sequence that `seed` draws. The sequence
    does not depend on `edits`, so a longer prefix only adds edits."""
    rng = random.Random(seed)
    lines = text.splitlines()
    names = sorted(set(IDENTIFIER.findall(text)) - RESERVED)
    renames: dict[str, str] = {}
    header = ""
    for _ in range(edits):
        kind = rng.choices(EDIT_KINDS, EDIT_WEIGHTS)[0]
        at = rng.randrange(max(len(lines), 1))
        if kind == "rename" and names:
            old = rng.choice(names)
            renames[old] = f"{rng.choice(donors.names)}_{old[:3]}" if rng.random() < 0.5 else old + "s"
        elif kind == "delete" and len(lines) > 1:
            del lines[at]
        elif kind == "insert":
            lines.insert(at, rng.choice(donors.lines))
        elif kind == "swap" and len(lines) > 1:
            at = min(at, len(lines) - 2)
            lines[at], lines[at + 1] = lines[at + 1], lines[at]
        elif kind == "comment" and lines:
            code = lines[at].split("#", 1)[0].rstrip()
            lines[at] = f"{code}  # {rng.choice(donors.comments)}" if code else f"# {rng.choice(donors.comments)}"
        elif kind == "spacing" and lines:
            lines[at] = OPERATOR.sub(r" \1 " if rng.random() < 0.5 else r"\1", lines[at])
        elif kind == "header" and donors.headers:
            header = rng.choice(donors.headers)
    out = "\n".join(lines) + "\n"
    if renames:  # consistent: every occurrence, applied once at the end
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(renames, key=len, reverse=True))) + r")\b")
        out = pattern.sub(lambda m: renames[m.group(1)], out)
    return header + out


def whitespace_copy(text: str, rng: random.Random) -> str:
    """The same tokens: re-indented, trailing spaces, doubled blank lines."""
    indent = rng.choice(["\t", "  ", "        "])
    out = []
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        out.append(indent * ((len(line) - len(stripped)) // 4) + stripped + " " * rng.randrange(2))
        if not stripped:
            out.append("")
    return "\n".join(out) + "\n"


def jaccard(x: str, y: str, ngram: int = 5) -> float:
    from codemill.dedup.shingles import shingles

    a, b = set(shingles(x, ngram)), set(shingles(y, ngram))
    return len(a & b) / len(a | b) if a | b else 1.0


def copy_near(text: str, target: float, seed: int, donors: Donors, ngram: int = 5,
              steps: int = 7) -> tuple[str, float]:
    """An edited copy whose Jaccard to `text` is as near `target` as `steps` bisections of
    the edit count find, and that Jaccard."""
    low, high = 0, 2 * max(len(text.splitlines()), 1)
    best = (text, 1.0)
    for _ in range(steps):
        mid = (low + high) // 2
        copy = edited(text, mid, seed, donors)
        score = jaccard(text, copy, ngram)
        if abs(score - target) < abs(best[1] - target):
            best = (copy, score)
        if score > target:
            low = mid + 1
        else:
            high = mid
        if low >= high:
            break
    return best
