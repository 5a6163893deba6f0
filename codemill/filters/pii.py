"""PII and secrets scrubbing: matches are replaced by placeholders, nothing is dropped.

| kind           | what                                             | placeholder    |
|----------------|--------------------------------------------------|----------------|
| `email`        | user@host.tld                                    | `<EMAIL>`      |
| `ipv4`, `ipv6` | globally routable addresses                      | `<IP_ADDRESS>` |
| `aws_key`      | AWS access key ids (AKIA..., ASIA...)            | `<KEY>`        |
| `github_token` | ghp_/gho_/ghu_/ghs_/ghr_ tokens, github_pat_...  | `<KEY>`        |
| `slack_token`  | xox?- tokens, hooks.slack.com webhook URLs       | `<KEY>`        |
| `private_key`  | the body of a -----BEGIN ... PRIVATE KEY----- block (armour lines kept) | `<KEY>` |
| `secret`       | a high-entropy literal assigned to a secret-like name (`api_key = "..."`) | `<KEY>` |

Kept on purpose, so ordinary code is not rewritten:
* addresses that are not global: 127.0.0.1, 0.0.0.0, private, link-local,
  multicast and documentation ranges (192.0.2.0/24, 2001:db8::/32), and IPv6
  outside 2000::/3 (which also keeps C++ `a::b` and slices like `x[1::2]`);
* dotted quads that are versions or section numbers. Decision: in code these are
  far more common than addresses, so they win: a quad preceded on its line by
  "version", "release", `v`, a comparison operator (`pkg>=1.2.3.4`), "section",
  "§" or "RFC nnnn"; a quad inside a longer dotted run (OIDs like 1.3.6.1.4.1,
  1.0.0.127.in-addr.arpa); and a quad whose four parts are all below 32 (setup.py
  versions like 2.0.1.3, section 4.10.22.7, and textbook examples 1.2.3.4 /
  8.8.8.8, which are not anyone's address). A random host's address has all four
  parts below 32 once in ~4,000, an accepted miss;
* e-mail look-alikes whose top-level domain is neither two letters nor a common
  generic one (`a@b.shape` is a matrix product), reserved domains (example.com,
  *.test, *.invalid, *.localhost, *.example) and `git@host` SSH remotes;
* hex colours, UUIDs, lock-file hashes and git SHAs: no detector looks at bare
  hex; only a literal *assigned to a secret-like name* is a `secret`, and it must
  mix letters and digits, reach the entropy floor and not be an alphabet run
  (names with "public" in them, like publicKeyToken, are not secrets).

Each detector has an RE2 prefilter run vectorised over the Arrow batch; Python's
`re` (for look-arounds and validation) runs only on the documents it selects.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StructField, StructType

from codemill.filters.config import PII_KINDS as KINDS
from codemill.filters.config import PiiConfig
from codemill.filters.rules import byte_chunks
from codemill.observe import step
from codemill.schema import DOC_COLUMNS, DOC_SCHEMA, DOCUMENT_STORAGE, DROPPED_SCHEMA, StageOutput

STAGE = "pii"


# Generic top-level domains accepted besides every two-letter (country) one.
COMMON_TLDS = frozenset(
    "com net org edu gov mil int info biz name pro mobi app dev io ai tech cloud online site "
    "xyz email mail".split())
RESERVED_TLDS = ("example", "test", "invalid", "localhost", "local")

_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
# Text before a dotted quad on its line that makes it a version, not an address.
_VERSION_CONTEXT = re.compile(
    r"(?i)(?:version|release)[\w.-]*[\"']?\s*[:=]?\s*[\"']?\s*$"  # version = "1.2.3.4"
    r"|\bv\.?\s*$"                                                 # v1.2.3.4
    r"|[=<>~!]=\s*[\"']?$"                                          # foo>=1.2.3.4
    r"|(?:section|§|chapter|rfc\s*\d+)\W*$")                        # section 7.2.1.1
# Dotted quads whose parts are all this small are section numbers, versions or textbook
# examples (1.2.3.4, 8.8.8.8); a random host's address almost never looks like that.
SMALL_OCTET = 32


def _entropy(text: str) -> float:
    counts = Counter(text).values()
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts)


def _alphabet_run(text: str, run: int = 4) -> bool:
    """True for 'ABCD' / '0123' runs: character tables, not secrets."""
    steps = [ord(b) - ord(a) == 1 for a, b in zip(text, text[1:])]
    return any(all(steps[i:i + run - 1]) for i in range(len(steps) - run + 2))


def _email(m: re.Match, cfg: PiiConfig) -> str | None:
    domain = m["domain"].lower()
    tld = domain.rsplit(".", 1)[-1]
    if len(tld) != 2 and tld not in COMMON_TLDS:
        return None
    if tld in RESERVED_TLDS or any(domain == d or domain.endswith("." + d) for d in cfg.keep_email_domains):
        return None
    if m["local"] == "git":  # git@github.com:owner/repo is an SSH remote, not a person
        return None
    return cfg.email_placeholder


def _ipv4(m: re.Match, cfg: PiiConfig) -> str | None:
    line_start = m.string.rfind("\n", 0, m.start()) + 1
    if _VERSION_CONTEXT.search(m.string, max(line_start, m.start() - 40), m.start()):
        return None
    address = ipaddress.IPv4Address(m[0])
    if max(address.packed) < SMALL_OCTET:
        return None
    return cfg.ip_placeholder if address.is_global and not address.is_multicast else None


def _ipv6(m: re.Match, cfg: PiiConfig) -> str | None:
    try:
        address = ipaddress.IPv6Address(m[0])
    except ValueError:
        return None
    return cfg.ip_placeholder if address in _GLOBAL_UNICAST_V6 and address.is_global else None


def _key(m: re.Match, cfg: PiiConfig) -> str:
    return cfg.key_placeholder


def _private_key(m: re.Match, cfg: PiiConfig) -> str:
    # keep the separators around the body, be they newlines or "\n" escapes in a literal
    body = m["body"]
    lead = re.match(r"(?:\s|\\[nr])*", body).group()
    trail = re.search(r"(?:\s|\\[nr])*$", body[len(lead):]).group()
    return f"{m['begin']}{lead}{cfg.key_placeholder}{trail}{m['end']}"


def _secret(m: re.Match, cfg: PiiConfig) -> str | None:
    value = m["value"]
    if "public" in m["name"].lower():  # publicKeyToken and friends are published on purpose
        return None
    if (len(value) < cfg.secret_min_chars or not re.search(r"\d", value)
            or not re.search(r"[A-Za-z]", value) or _entropy(value) < cfg.secret_min_entropy
            or _alphabet_run(value)):
        return None
    return m[0][: m.start("value") - m.start()] + cfg.key_placeholder + m[0][m.end("value") - m.start():]


@dataclass(frozen=True)
class Detector:
    kind: str
    prefilter: str  # RE2 (pyarrow.compute): a cheap superset of the matches
    pattern: re.Pattern
    replace: Callable[[re.Match, PiiConfig], str | None]  # None: not PII after all, keep it


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_SECRET_NAME = (r"(?i:[A-Za-z0-9_.-]*(?:secret|passw(?:or)?d|passwd|pwd|token|api[_-]?key|apikey"
                r"|access[_-]?key|auth[_-]?key|private[_-]?key|credentials?)[A-Za-z0-9_]*)")

DETECTORS: dict[str, Detector] = {d.kind: d for d in [
    Detector("private_key", "PRIVATE KEY", re.compile(
        r"(?P<begin>-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----)(?P<body>.*?)"
        r"(?P<end>-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----)", re.S), _private_key),
    Detector("aws_key", "A[SK]IA[0-9A-Z]{16}",
             re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), _key),
    Detector("github_token", "gh[pousr]_|github_pat_", re.compile(
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,255})\b"), _key),
    Detector("slack_token", "xox[abposr]-|hooks\\.slack\\.com", re.compile(
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}|https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"), _key),
    Detector("secret", r"(?i)(?:secret|passw|pwd|token|api.?key|access.?key|auth.?key|private.?key|credential)",
             re.compile(
                 rf"(?<![A-Za-z0-9_])(?P<name>{_SECRET_NAME})[\"']?\]?\s*(?::=|=>|[=:])\s*"
                 r"(?P<q>[\"'])(?:(?i:bearer|token|basic) )?(?P<value>[A-Za-z0-9+/=_.~-]+)(?P=q)"),
             _secret),
    Detector("email", r"@[A-Za-z0-9-]+\.", re.compile(
        r"(?<![\w.%+-])(?P<local>[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*)@"
        r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24})\b(?!\.\w)"),
        _email),
    # global unicast (2000::/3) starts with a full group 2xxx or 3xxx
    Detector("ipv6", "[23][0-9A-Fa-f]{3}:[0-9A-Fa-f]{0,4}:", re.compile(
        r"(?<![\w:.])[23][0-9A-Fa-f]{3}:(?=[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,34}(?![\w:.])"), _ipv6),
    Detector("ipv4", r"\d\.\d{1,3}\.\d{1,3}\.\d", re.compile(
        rf"(?<![\w.]){_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?!\w|[.-]\w)"), _ipv4),
]}


def scrub_text(text: str, kinds: list[str], cfg: PiiConfig) -> tuple[str, Counter]:
    """Replace every match of the given detectors, in table order; count replacements per kind."""
    counts: Counter = Counter()
    for kind in kinds:
        detector = DETECTORS[kind]

        def replace(m: re.Match, detector=detector, kind=kind) -> str:
            new = detector.replace(m, cfg)
            if new is None:
                return m[0]
            counts[kind] += 1
            return new

        text = detector.pattern.sub(replace, text)
    return text, counts


def scrub_batch(content: pa.Array, cfg: PiiConfig) -> tuple[pa.Array, dict[str, np.ndarray]]:
    """New contents (unchanged rows untouched) and per-kind replacement counts per row."""
    kinds = [k for k in DETECTORS if k in cfg.kinds]
    hits = {k: np.asarray(pc.fill_null(pc.match_substring_regex(content, DETECTORS[k].prefilter), False))
            for k in kinds}
    counts = {k: np.zeros(len(content), dtype=np.int32) for k in kinds}
    changed: dict[int, str] = {}
    candidates = np.flatnonzero(np.logical_or.reduce(list(hits.values()))) if kinds else []
    for i in candidates:
        text, found = scrub_text(content[i].as_py(), [k for k in kinds if hits[k][i]], cfg)
        for kind, n in found.items():
            counts[kind][i] = n
        if found:
            changed[i] = text
    if not changed:
        return content, counts
    mask = np.zeros(len(content), dtype=bool)
    mask[list(changed)] = True
    return pc.replace_with_mask(content, pa.array(mask), pa.array(list(changed.values()), pa.string())), counts


def _count_column(kind: str) -> str:
    return f"_pii_{kind}"


def scrub_batches(batches: Iterator[pa.RecordBatch], cfg: PiiConfig) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: contents rewritten (sha256 and size_bytes follow them) plus count columns."""
    for batch in batches:
        for chunk in byte_chunks(batch, "content"):
            content, counts = scrub_batch(chunk.column("content"), cfg)
            changed = np.flatnonzero(np.sum(list(counts.values()), axis=0) > 0) if counts else []
            columns = dict(zip(chunk.schema.names, chunk.columns))
            if len(changed):
                texts = [content[int(i)].as_py().encode("utf-8", "surrogatepass") for i in changed]
                mask = np.zeros(chunk.num_rows, dtype=bool)
                mask[changed] = True
                columns["content"] = content
                columns["sha256"] = pc.replace_with_mask(
                    chunk.column("sha256"), pa.array(mask),
                    pa.array([hashlib.sha256(t).hexdigest() for t in texts], pa.string()))
                columns["size_bytes"] = pc.replace_with_mask(
                    chunk.column("size_bytes"), pa.array(mask), pa.array([len(t) for t in texts], pa.int64()))
            for kind in KINDS:
                columns[_count_column(kind)] = pa.array(counts.get(kind, np.zeros(chunk.num_rows, np.int32)))
            yield pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))


def scrub_pii(spark: SparkSession, docs: DataFrame, cfg: PiiConfig) -> tuple[StageOutput, dict[str, int]]:
    """Replace PII in every document's content; nothing is dropped.

    Returns the stage output and the replacement counts per kind plus `documents`,
    the number of documents changed (one Spark job, over the persisted result)."""
    schema = StructType(DOC_SCHEMA.fields + [
        StructField(_count_column(k), IntegerType(), False) for k in KINDS])
    scrubbed = docs.select(*DOC_COLUMNS).mapInArrow(
        lambda batches: scrub_batches(batches, cfg), schema).persist(DOCUMENT_STORAGE)
    per_doc = sum(F.col(_count_column(k)) for k in KINDS)
    with step("filters and PII scrubbing"):
        totals = scrubbed.agg(
            *[F.sum(_count_column(k)).alias(k) for k in KINDS],
            F.sum(F.when(per_doc > 0, 1).otherwise(0)).alias("documents"),
        ).first()
    counts = {k: int(totals[k] or 0) for k in (*KINDS, "documents")}
    dropped = spark.createDataFrame([], DROPPED_SCHEMA)
    return StageOutput(scrubbed.select(*DOC_COLUMNS), dropped), counts
