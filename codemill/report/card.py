"""The dataset card of a run's shards: `<out>/shards/README.md`, with the tokenizer beside
it (`tokenizer.model` and its Hugging Face files), written by the report stage.

Its YAML front matter names one `datasets` config per mix, whose data files are the
mix's committed shard files, so that the shards folder reads like a Hub dataset:

    datasets.load_dataset("<out>/shards", "<mix>", split="train")
    transformers.AutoTokenizer.from_pretrained("<out>/shards")

The committed attempt's folder is named by a wildcard (`attempt-*`): its name holds the
run's id and start time, and the card holds no time, so the same inputs give the same
bytes. The text comes from the run's report and the mixes' manifests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from codemill.report.svg import share_of
from codemill.storage import display
from codemill.storage.commit import ATTEMPT_PREFIX
from codemill.storage.folder import Folder
from codemill.tokenize.hf_tokenizer import write_hf_tokenizer
from codemill.tokenize.shard_format import MANIFEST, TOKENIZER_FILE, ShardError
from codemill.tokenize.tokenizer import load_tokenizer

CARD = "README.md"
SHARD_FILES = "shard-*.arrow"
# the run-config sections that decide what the shards hold (not where or how fast)
BUILD_SECTIONS = ("seed", "ingest", "exact_dedup", "near_dedup", "filters", "langid", "quality", "decontam",
                  "pii", "kinds", "tokenizer", "mix", "fim", "pack")


def write_dataset_card(root: Folder, report: Mapping[str, Any], shard_dirs: Mapping[str, Folder]) -> str:
    """Write the card and the tokenizer files into `root` (the folder above the mixes'
    shard folders), each file atomically; returns the card's text."""
    if not shard_dirs:
        raise ShardError(f"{display(root.uri)}: no mix to describe")
    manifests = {name: json.loads(d.read_text(MANIFEST)) for name, d in shard_dirs.items()}
    patterns = {name: data_files_pattern(root, d, manifests[name]) for name, d in shard_dirs.items()}
    model = _tokenizer_model(shard_dirs, manifests)
    tok = load_tokenizer(model)
    card = render_card(report, manifests, patterns, infilling_special=tok.infilling_is_control())
    root.fs.upload(model, root.join(TOKENIZER_FILE))
    write_hf_tokenizer(root, tok)
    root.write_text(CARD, card)
    return card


def _tokenizer_model(shard_dirs: Mapping[str, Folder], manifests: Mapping[str, Any]) -> Path:
    """A local copy of the one tokenizer model the mixes share."""
    digests = {name: m["tokenizer"]["sha256"] for name, m in manifests.items()}
    if len(set(digests.values())) > 1:
        raise ShardError(f"the mixes were tokenized with different tokenizers ({digests}): one card cannot "
                         "describe them")
    name, first = next(iter(shard_dirs.items()))
    return first.fetch(manifests[name]["tokenizer"]["file"])


def data_files_pattern(root: Folder, shard_dir: Folder, manifest: Mapping[str, Any]) -> str:
    """The glob, relative to `root`, of a mix's shard files (`<mix>/<fingerprint>/attempt-*/
    shard-*.arrow`); raises when it would match any file but the manifest's."""
    prefix = root.uri.rstrip("/") + "/"
    if not shard_dir.uri.startswith(prefix):
        raise ShardError(f"{display(shard_dir.uri)} is not inside {display(root.uri)}")
    output, attempt = shard_dir.uri[len(prefix):].rsplit("/", 1)
    if not attempt.startswith(ATTEMPT_PREFIX):
        raise ShardError(f"{display(shard_dir.uri)} is not a committed attempt folder")
    wanted = [f"{ATTEMPT_PREFIX}*", SHARD_FILES]
    found = sorted(rel for rel in _files_below(root, output) if _matches(rel, wanted))
    expected = sorted(f"{attempt}/{s['file']}" for s in manifest["shards"])
    pattern = "/".join(wanted)
    if strays := sorted(set(found) - set(expected)):
        raise ShardError(f"{display(root.join(output))}: {pattern} would match {strays[:3]} besides the "
                         "manifest's shards (`codemill clean --yes` removes attempts that are not the committed one)")
    if missing := sorted(set(expected) - set(found)):
        raise ShardError(f"{display(root.join(output))}: {missing[:3]} listed in the manifest are missing")
    return f"{output}/{pattern}"


def _files_below(root: Folder, output: str) -> list[str]:
    """The files under `root/output`, relative to it (Hadoop may qualify the URIs it lists)."""
    return [f.uri.split(f"/{output}/", 1)[1] for f in root.fs.list_files(root.join(output))]


def _matches(relative: str, pattern: list[str]) -> bool:
    """A glob match part by part: `*` stays inside one folder, as in `datasets`."""
    parts = relative.split("/")
    return len(parts) == len(pattern) and all(fnmatchcase(p, g) for p, g in zip(parts, pattern))


def render_card(report: Mapping[str, Any], manifests: Mapping[str, Any], patterns: Mapping[str, str],
                infilling_special: bool = True) -> str:
    """The card's text. `infilling_special`: the infilling tokens are control pieces (codemill's
    own tokenizers), hence special tokens in transformers."""
    front = {
        "configs": [{"config_name": name, "data_files": [{"split": "train", "path": patterns[name]}],
                     **({"default": True} if i == 0 else {})} for i, name in enumerate(manifests)],
        "tags": ["code", "codemill"],
    }
    parts = [
        "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---",
        _intro(report, manifests),
        _usage(next(iter(manifests)), next(iter(manifests.values()))["tokenizer"]["dummy_prefix"],
               infilling_special),
        _features(manifests),
        *(_mix(name, m, patterns[name]) for name, m in manifests.items()),
        _tokenizer(next(iter(manifests.values()))),
        _sources(report["config"].get("sources", [])),
        _dedup_and_filters(report["stages"]),
        _how_built(report, manifests),
    ]
    return "\n\n".join(parts) + "\n"


def _intro(report: Mapping[str, Any], manifests: Mapping[str, Any]) -> str:
    m = next(iter(manifests.values()))
    return (f"# codemill shards\n\nTraining data for a code language model, built by codemill "
            f"{report['codemill_version']} the way Code Llama was (arXiv 2308.12950): {len(manifests)} "
            f"mix(es) ({', '.join(manifests)}) of packed {m['seq_len']:,}-token sequences, tokenized with a "
            f"{m['tokenizer']['vocab_size']:,}-token sentencepiece BPE model. The run wrote this card from its "
            "report and the mixes' manifests (`manifest.json` beside each mix's shards).")


def _usage(first_mix: str, dummy_prefix: bool, infilling_special: bool) -> str:
    space = "the leading space this model adds" if dummy_prefix else "no prefix space"
    markers = ("Text that spells `<s>` or `<PRE>` stays text (`split_special_tokens`); the infilling tokens are "
               "special tokens, so a prompt is built from their ids (`tok.convert_tokens_to_ids(\"<PRE>\")`)."
               if infilling_special else
               "Text that spells `<s>` stays text (`split_special_tokens`); this model's infilling pieces are "
               "user-defined, not special tokens: build a prompt from their ids (below).")
    return f"""## Use

```python
from datasets import load_dataset
from transformers import AutoTokenizer

rows = load_dataset("path/to/this/folder", "{first_mix}", split="train")
tok = AutoTokenizer.from_pretrained("path/to/this/folder")
```

A document in a row is `tok(text).input_ids + [tok.eos_token_id]` (the tokenizer adds BOS and
{space}, never EOS); a fill-in-the-middle one is `<s> <PRE> prefix <SUF> suffix <MID>
middle <EOT> </s>` (PSM) or `<s> <PRE> <SUF> suffix <MID> prefix+middle <EOT> </s>` (SPM), each
part encoded alone. {markers} `skip_special_tokens=True` decodes as codemill does."""


def _features(manifests: Mapping[str, Any]) -> str:
    lengths = sorted({m["seq_len"] for m in manifests.values()})
    return ("## Features\n\n| column | type | meaning |\n|---|---|---|\n"
            f"| `input_ids` | int32 × {' or '.join(f'{n:,}' for n in lengths)} | token ids; past `num_tokens`, "
            "padding (the EOS id) |\n"
            "| `doc_starts` | list of int32 | offsets of the documents' BOS tokens in the row; a row whose "
            "offset 0 is not listed opens with the continuation of a document |\n"
            "| `num_tokens` | int32 | real tokens in the row |")


def _mix(name: str, m: Mapping[str, Any], pattern: str) -> str:
    counts, mix, fim = m["counts"], m["mix"], m["fim"]
    rows = [f"| {cat} | {share:.1%} | {mix['realised'].get(cat, 0):.1%} | "
            f"{mix['realised_tokens'].get(cat, 0):,} | {mix['epochs'][cat]:.3g} |"
            for cat, share in mix.get("requested", {}).items()]  # shards written outside a mix have none
    eligible = counts["docs_packed"] - counts["docs_long"]
    transformed = counts["docs_psm"] + counts["docs_spm"]
    slots = counts["sequences"] * m["seq_len"]
    return "\n".join([
        f"## Mix `{name}`",
        "",
        f"{counts['sequences']:,} sequences of {m['seq_len']:,} tokens in {len(m['shards'])} shard file(s) "
        f"(`{pattern}`): {counts['tokens']:,} tokens and {counts['pad_tokens']:,} padding "
        f"({share_of(counts['pad_tokens'], slots)}).",
        "",
        "| category | requested share | realised share | tokens | epochs |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Fill-in-the-middle (rate {fim['rate']}, SPM share {fim['spm_rate']}, seed {fim['seed']}): "
        f"{counts['docs_psm']:,} PSM + {counts['docs_spm']:,} SPM = {transformed:,} of {eligible:,} eligible "
        f"documents ({share_of(transformed, eligible)}; eligible: fit in one row, of {counts['docs_packed']:,} "
        f"packed), {counts.get('fim_tokens', 0):,} of {counts['tokens']:,} tokens. A FIM document never "
        "crosses a row boundary.",
        "",
        f"Packing ({m['packing']['packing']}): {counts.get('docs_cut', 0):,} of {counts['docs_packed']:,} "
        f"documents cut across rows ({counts['docs_long']:,} longer than a row); {counts['docs_empty']:,} "
        "empty documents skipped.",
    ])


def _tokenizer(m: Mapping[str, Any]) -> str:
    tok = m["tokenizer"]
    ids = ", ".join(f"{name} {i}" for name, i in tok["special_ids"].items())
    return (f"## Tokenizer\n\n`{TOKENIZER_FILE}` (sentencepiece BPE, {tok['vocab_size']:,} tokens, sha256 "
            f"`{tok['sha256']}`) and its Hugging Face files `tokenizer.json`, `tokenizer_config.json`, "
            f"`special_tokens_map.json`, which give the same ids. Special ids: {ids}; rows are padded with id "
            f"{tok['pad_id']}.")


def _sources(sources: list[Mapping[str, Any]]) -> str:
    rows = [f"| {s['name']} | {s['type']} | {_license(s)} |" for s in sources]
    return "\n".join(["## Sources", "", "| source | type | license |", "|---|---|---|", *rows])


def _license(source: Mapping[str, Any]) -> str:
    if source["type"] == "dir":
        return source.get("license") or "not given"
    return f"per record (column `{source.get('columns', {}).get('license', 'license')}`)"


def _dedup_and_filters(stages: list[Mapping[str, Any]]) -> str:
    rows = []
    for s in stages:
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1]))
        rows.append(f"| {s['stage']} | {s['docs_in']:,} | {s['docs_out']:,} | "
                    f"{sum(s['dropped'].values()):,} | {reasons or '–'} |")
    return "\n".join(["## Deduplication and filtering", "",
                      "| stage | documents in | kept | dropped | dropped by reason |", "|---|---|---|---|---|",
                      *rows])


def _how_built(report: Mapping[str, Any], manifests: Mapping[str, Any]) -> str:
    config = report["config"]
    given = config.get("tokenizer", {}).get("model")
    tokenizer = (f"The tokenizer `{given}`, given by the config," if given else
                 "A sentencepiece BPE tokenizer, trained on a stable sample of the cleaned documents,")
    chain = " → ".join(s["stage"] for s in report["stages"])
    settings = {k: config[k] for k in BUILD_SECTIONS if k in config}
    return "\n".join([
        "## How this was built",
        "",
        f"1. Documents went through {chain} (counts above); stages the config disables are absent.",
        f"2. {tokenizer} tokenized them.",
        f"3. Each mix ({', '.join(manifests)}) took each category's documents for as many epochs as its "
        "token shares need, tokenized them, drew fill-in-the-middle per document from a hash of (seed, "
        "document id), and packed them into rows.",
        "",
        f"The settings that decide the data (codemill {report['codemill_version']}):",
        "",
        "```json",
        json.dumps(settings, indent=2, sort_keys=True, ensure_ascii=False),
        "```",
    ])
