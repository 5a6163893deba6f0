"""A synthetic code corpus at scale, in The Stack's JSONL schema, for `make bench-scale`.

Documents are slices of this machine's real text — the standard library's Python
sources, C headers (the interpreter's include folder, then /usr/include), Markdown
and reST documentation, license and copyright texts — cut at line boundaries, with
their most frequent identifiers (words, in prose) permuted among themselves so that
two slices of the same region are different documents. Sizes follow The Stack's
shape: a log-normal body (median about 2 KB) and a Pareto tail up to 1 MB.
About 5% of documents are exact copies of another (under another repository) and
5% near copies (one to three small line edits).

Everything is decided up front by one seeded numpy generator (`plan`), so document
`i` is a pure function of the plan and the text pools: the same seed on the same
machine writes the same bytes, and a copy regenerates its original instead of
keeping it in memory. Files are written by parallel processes.

    python -m benchmarks.scale_corpus --docs 100000 --out bench-out/scale
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import keyword
import multiprocessing
import os
import random
import re
import sysconfig
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1
MANIFEST = "corpus.json"
DATA = "data"  # the JSONL files: the folder a jsonl source reads
BLOCK_CHARS = 4096  # identifiers to permute are chosen per block of a pool
NAMES_PER_DOC = 10
MIN_NEAR_SOURCE_BYTES = 1024  # near copies of tiny documents would not stay near


@dataclass(frozen=True)
class DocType:
    """One kind of document: which pool it is cut from and how it is named."""

    pool: str
    lang: str  # as The Stack writes it; codemill normalises it
    extensions: tuple[str, ...]
    comment: str  # a near copy's inserted line; {} is replaced by a phrase
    share: float  # of documents
    names: tuple[str, ...] = ()  # file names some documents of this type get


DOC_TYPES: dict[str, DocType] = {
    "python": DocType("python", "Python", (".py",), "# {}", 0.56),
    "c": DocType("c", "C", (".h", ".h", ".c"), "/* {} */", 0.26),
    "markdown": DocType("markdown", "Markdown", (".md",), "> {}", 0.06, ("README.md", "CHANGELOG.md")),
    "rst": DocType("rst", "reStructuredText", (".rst",), ".. {}", 0.04, ("README.rst",)),
    # Plain text is what codemill's kind classifier decides; license names settle it.
    "text": DocType("text", "Text", (".txt",), "{}", 0.08, ("LICENSE", "COPYING", "NOTICE", "AUTHORS")),
}

LICENSES = (["MIT"], ["Apache-2.0"], ["BSD-3-Clause"], ["BSD-2-Clause"], ["GPL-3.0-only"],
            ["GPL-2.0-or-later"], ["LGPL-2.1"], ["MPL-2.0"], ["ISC"], ["Unlicense"], [])
LICENSE_WEIGHTS = (0.30, 0.15, 0.08, 0.04, 0.10, 0.05, 0.03, 0.03, 0.02, 0.02, 0.18)
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "zen", "qu", "bar", "dex", "fin", "gal",
             "hop", "jet", "kin", "lum", "mor", "nix", "pol")
DIRECTORIES = ("src", "lib", "include", "docs", "tests", "pkg/core", "tools", "examples", "app", "")
PHRASES = ("TODO: check this", "see the note above", "kept for compatibility", "fixed upstream",
           "added in the fork", "local change", "do not edit", "from the vendored copy")
STOPWORDS = frozenset("this that with from have will your which their there been were when what "
                      "they them than then also into only more some such each must does other "
                      "these those shall under without".split())
# Never permuted: swapping keywords would stop code from reading as code.
RESERVED = frozenset(keyword.kwlist + keyword.softkwlist + [
    "self", "cls", "auto", "break", "case", "char", "const", "continue", "default", "double", "else",
    "enum", "extern", "float", "goto", "inline", "long", "register", "restrict", "return", "short",
    "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
    "volatile", "while", "define", "ifdef", "ifndef", "endif", "include", "undef", "pragma", "NULL"])
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{3,}")
PLACEHOLDERS = "\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x10\x11"[:NAMES_PER_DOC]
_CONTROLS = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f]")


@dataclass(frozen=True)
class CorpusSpec:
    docs: int
    files: int = 20
    seed: int = 0
    exact_copy_share: float = 0.05
    near_copy_share: float = 0.05
    median_bytes: int = 2_000
    sigma: float = 0.8  # of the log-normal body
    tail_share: float = 0.01  # documents drawn from the Pareto tail
    tail_min_bytes: int = 16_000
    tail_alpha: float = 1.1
    min_bytes: int = 40
    max_bytes: int = 1_000_000  # ingest.max_file_bytes, as The Stack
    pool_bytes: int = 64 << 20  # text read per pool, at most
    shares: dict[str, float] = field(default_factory=lambda: {k: t.share for k, t in DOC_TYPES.items()})

    def key(self) -> str:
        """The settings and the generator's version (the pools are this machine's files;
        their digests are in the manifest)."""
        text = json.dumps([asdict(self), GENERATOR_VERSION], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- text pools -------------------------------------------------------------------------

@dataclass
class Pool:
    """One kind's text, and for each block of it the identifiers documents permute."""

    text: str
    block_names: list[tuple[str, ...]]
    digest: str


def _readable_text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
        return None if b"\0" in data else data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _frequent_names(text: str, prose: bool) -> tuple[str, ...]:
    """The block's most frequent identifiers (words of 4+ letters in prose), up to
    NAMES_PER_DOC, longest first so that no replacement lands inside a later one."""
    skip = STOPWORDS if prose else RESERVED
    counts = Counter(_IDENTIFIER.findall(text))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    names = [w for w, _ in ranked if (w.lower() if prose else w) not in skip][:NAMES_PER_DOC]
    return tuple(sorted(names, key=lambda n: (-len(n), n)))


def build_pool(paths: Iterable[Path], max_chars: int, prose: bool, extra: tuple[str, ...] = ()) -> Pool:
    """The readable files among `paths` (in order) and `extra` texts, joined, up to max_chars."""
    parts, total, digest = [], 0, hashlib.sha256()
    for text in (*extra, *(t for t in map(_readable_text, paths) if t)):
        if not text.strip():
            continue
        parts.append(text if text.endswith("\n") else text + "\n")
        total += len(parts[-1])
        digest.update(parts[-1].encode("utf-8", "surrogatepass"))
        if total >= max_chars:
            break
    joined = _CONTROLS.sub("", "".join(parts)[:max_chars])
    names = [_frequent_names(joined[b:b + BLOCK_CHARS], prose) for b in range(0, len(joined), BLOCK_CHARS)]
    return Pool(joined, names, digest.hexdigest())


def _files(roots: list[Path], patterns: tuple[str, ...], skip: tuple[str, ...] = ()) -> Iterator[Path]:
    """Files matching any pattern under each root in turn, in sorted order, lazily (a pool
    stops reading at its size, long before the walk of a large site-packages would end)."""
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in skip)
            for name in sorted(files):
                if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                    yield Path(folder, name)


def _pydoc_topics() -> tuple[str, ...]:
    """Python's own reference text (reST-like prose about code): present wherever Python is."""
    from pydoc_data.topics import topics

    return tuple(topics[k] for k in sorted(topics))


def load_pools(max_chars: int) -> dict[str, Pool]:
    paths = sysconfig.get_paths()
    stdlib, include = Path(paths["stdlib"]), Path(paths["include"])
    site = Path(paths["purelib"])
    docs = [site, stdlib, Path("/usr/share/doc")]
    licenses = chain([stdlib / "LICENSE.txt"], _files([Path("/usr/share/common-licenses")], ("*",)),
                     _files([Path("/usr/share/doc")], ("copyright",)))
    return {
        "python": build_pool(chain(_files([stdlib], ("*.py",), ("site-packages",)), _files([site], ("*.py",))),
                             max_chars, prose=False),
        "c": build_pool(_files([include, Path("/usr/include")], ("*.h",)), max_chars, prose=False),
        "markdown": build_pool(_files(docs, ("*.md", "METADATA")), max_chars, prose=True),
        "rst": build_pool(_files(docs, ("*.rst",)), max_chars, prose=True, extra=_pydoc_topics()),
        "text": build_pool(licenses, max_chars, prose=True),
    }


# --- the plan: every random draw, vectorised -----------------------------------------------

ORIGINAL, EXACT_COPY, NEAR_COPY = 0, 1, 2


@dataclass
class Plan:
    doc_type: np.ndarray  # index into DOC_TYPES
    size: np.ndarray  # target bytes of an original
    offset: np.ndarray  # where in its pool, as a fraction
    seed: np.ndarray  # the document's own draws (permutation, edits, names)
    role: np.ndarray  # ORIGINAL, EXACT_COPY, NEAR_COPY
    source: np.ndarray  # a copy's original; -1 for originals
    repo: np.ndarray
    license: np.ndarray
    stars: np.ndarray  # -1: unknown


def document_sizes(spec: CorpusSpec, rng: np.random.Generator) -> np.ndarray:
    """Log-normal body plus a Pareto tail, clipped to [min_bytes, max_bytes]."""
    body = rng.lognormal(np.log(spec.median_bytes), spec.sigma, spec.docs)
    tail = spec.tail_min_bytes * (1 + rng.pareto(spec.tail_alpha, spec.docs))
    sizes = np.where(rng.random(spec.docs) < spec.tail_share, tail, body)
    return np.clip(sizes, spec.min_bytes, spec.max_bytes).astype(np.int64)


def _copy_sources(role: np.ndarray, size: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each copy's original: any original for an exact copy, one of 1 KB or more for a near one."""
    originals = np.flatnonzero(role == ORIGINAL)
    large = originals[size[originals] >= MIN_NEAR_SOURCE_BYTES]
    pick_any = originals[rng.integers(0, len(originals), len(role))]
    pick_large = large[rng.integers(0, len(large), len(role))] if len(large) else pick_any
    return np.select([role == EXACT_COPY, role == NEAR_COPY], [pick_any, pick_large], -1)


def plan(spec: CorpusSpec) -> Plan:
    rng = np.random.default_rng(spec.seed)
    n = spec.docs
    shares = np.array([spec.shares[k] for k in DOC_TYPES], dtype=np.float64)
    doc_type = rng.choice(len(DOC_TYPES), n, p=shares / shares.sum())
    size = document_sizes(spec, rng)
    offset = rng.random(n)
    seed = rng.integers(0, 2**63, n)
    copies = [1 - spec.exact_copy_share - spec.near_copy_share, spec.exact_copy_share, spec.near_copy_share]
    role = rng.choice(3, n, p=copies) if n > 1 else np.zeros(n, dtype=np.int64)
    if not (role == ORIGINAL).any():
        role[0] = ORIGINAL
    source = _copy_sources(role, size, rng)
    copied = source >= 0
    doc_type[copied] = doc_type[source[copied]]  # a copy has its original's language
    # Repositories: a few big ones, many small (Zipf), several files each.
    repo = rng.zipf(1.4, n) % max(1, n // 8)
    license = rng.choice(len(LICENSES), n, p=LICENSE_WEIGHTS)
    stars = np.where(rng.random(n) < 0.1, -1, np.floor(rng.pareto(0.9, n) * 3)).astype(np.int64)
    return Plan(doc_type, size, offset, seed, role, source, repo, license, stars)


# --- documents ------------------------------------------------------------------------------

TYPE_NAMES = list(DOC_TYPES)


def _slice(pool: Pool, size: int, offset: float) -> tuple[str, int]:
    """About `size` characters of the pool from whole lines, and where they start."""
    text = pool.text
    size = min(size, len(text) // 2)
    start = text.rfind("\n", 0, int(offset * (len(text) - size))) + 1
    end = text.find("\n", start + size)
    return text[start:len(text) if end < 0 else end + 1], start


def _permute(text: str, names: list[str], rnd: random.Random) -> str:
    """Swap the names among themselves everywhere in the text: two passes of str.replace
    through control-character placeholders, which build_pool removed from the pools (an
    ASCII placeholder keeps the string one byte per character, and replace fast)."""
    shuffled = names[:]
    rnd.shuffle(shuffled)
    for name, mark in zip(names, PLACEHOLDERS):
        text = text.replace(name, mark)
    for name, mark in zip(shuffled, PLACEHOLDERS):
        text = text.replace(mark, name)
    return text


def original(i: int, p: Plan, pools: dict[str, Pool]) -> str:
    pool = pools[DOC_TYPES[TYPE_NAMES[p.doc_type[i]]].pool]
    text, start = _slice(pool, int(p.size[i]), float(p.offset[i]))
    first = start // BLOCK_CHARS
    names = list(dict.fromkeys(n for b in pool.block_names[first:first + 2] for n in b))
    names = sorted(names[:NAMES_PER_DOC], key=lambda n: (-len(n), n))
    return _permute(text, names, random.Random(int(p.seed[i])))


def near_copy(text: str, comment: str, rnd: random.Random) -> str:
    """One to three small line edits: a line inserted, a line removed, a line extended."""
    lines = text.split("\n")
    edits = 1 + min(2, len(lines) // 40)
    for kind in rnd.sample(range(3), edits):
        at = rnd.randrange(len(lines))
        phrase = rnd.choice(PHRASES)
        if kind == 0 or len(lines) < 4:
            lines.insert(at, comment.format(phrase))
        elif kind == 1:
            del lines[at]
        else:
            lines[at] = f"{lines[at]} {comment.format(phrase)}"
    edited = "\n".join(lines)
    return edited if edited != text else edited + comment.format(phrase) + "\n"


def content(i: int, p: Plan, pools: dict[str, Pool]) -> str:
    if p.role[i] == ORIGINAL:
        return original(i, p, pools)
    text = original(int(p.source[i]), p, pools)
    if p.role[i] == EXACT_COPY:
        return text
    return near_copy(text, DOC_TYPES[TYPE_NAMES[p.doc_type[i]]].comment, random.Random(int(p.seed[i])))


def _word(n: int) -> str:
    return "".join(SYLLABLES[(n >> (5 * k)) % len(SYLLABLES)] for k in range(2 + n % 2))


def path_of(i: int, p: Plan) -> str:
    """A copy keeps its original's path (vendored code does), under its own repository."""
    j = int(p.source[i]) if p.role[i] != ORIGINAL else i
    doc_type = DOC_TYPES[TYPE_NAMES[p.doc_type[j]]]
    draw = int(p.seed[j]) >> 8
    folder = DIRECTORIES[draw % len(DIRECTORIES)]
    if doc_type.names and draw % 5 == 0:
        name = doc_type.names[(draw >> 4) % len(doc_type.names)]
    else:
        name = f"{_word(draw >> 8)}_{j % 1000}{doc_type.extensions[(draw >> 4) % len(doc_type.extensions)]}"
    return f"{folder}/{name}" if folder else name


def record(i: int, p: Plan, pools: dict[str, Pool]) -> dict:
    """Document i in The Stack's columns."""
    repo = int(p.repo[i])
    stars = int(p.stars[i])
    return {
        "content": content(i, p, pools),
        "path": path_of(i, p),
        "lang": DOC_TYPES[TYPE_NAMES[p.doc_type[i]]].lang,
        "repo_name": f"{_word(repo * 7 + 3)}/{_word(repo)}-{repo}",
        "license": LICENSES[p.license[i]],
        "stars": None if stars < 0 else stars,
    }


# --- writing --------------------------------------------------------------------------------

_shared: dict = {}  # plan and pools, inherited by forked writer processes


def file_range(spec: CorpusSpec, f: int) -> range:
    return range(f * spec.docs // spec.files, (f + 1) * spec.docs // spec.files)


def _write_file(args: tuple[CorpusSpec, int, str]) -> tuple[int, int]:
    spec, f, folder = args
    p, pools = _shared["plan"], _shared["pools"]
    path = Path(folder) / DATA / f"part-{f:03d}.jsonl"
    written = 0
    with open(path, "w", encoding="utf-8", buffering=1 << 22) as out:
        for i in file_range(spec, f):
            line = json.dumps(record(i, p, pools), ensure_ascii=False) + "\n"
            written += len(line)
            out.write(line)
    return f, written


def summary(spec: CorpusSpec, p: Plan) -> dict:
    return {
        "spec": asdict(spec),
        "generator_version": GENERATOR_VERSION,
        "exact_copies": int((p.role == EXACT_COPY).sum()),
        "near_copies": int((p.role == NEAR_COPY).sum()),
        "docs_by_type": {k: int((p.doc_type == n).sum()) for n, k in enumerate(TYPE_NAMES)},
    }


def write_corpus(spec: CorpusSpec, root: Path, processes: int | None = None,
                 pools: dict[str, Pool] | None = None) -> Path:
    """The corpus folder root/docs-<N>-<key>/: the JSONL files in its data/ and the
    manifest beside it (reused when the manifest is there)."""
    folder = root / f"docs-{spec.docs}-{spec.key()}"
    if (folder / MANIFEST).exists():
        return folder
    (folder / DATA).mkdir(parents=True, exist_ok=True)
    pools = pools or load_pools(spec.pool_bytes)
    p = plan(spec)
    _shared.update(plan=p, pools=pools)
    jobs = [(spec, f, str(folder)) for f in range(spec.files)]
    processes = processes or min(spec.files, os.cpu_count() or 1)
    if processes > 1:
        with multiprocessing.get_context("fork").Pool(processes) as workers:
            sizes = dict(workers.map(_write_file, jobs))
    else:
        sizes = dict(map(_write_file, jobs))
    manifest = {**summary(spec, p), "bytes": sum(sizes.values()),
                "pools": {k: {"chars": len(pool.text), "sha256": pool.digest} for k, pool in pools.items()}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: the corpus is whole
    return folder


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, required=True)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench-out/scale")
    args = ap.parse_args(argv)
    folder = write_corpus(CorpusSpec(docs=args.docs, files=args.files, seed=args.seed), Path(args.out))
    print(folder)
    print((folder / MANIFEST).read_text())


if __name__ == "__main__":
    main()
