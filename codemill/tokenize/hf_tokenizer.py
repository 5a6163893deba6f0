"""The shards' tokenizer for Hugging Face `transformers`.

`hf_tokenizer_files(tok)` builds `tokenizer.json`, `tokenizer_config.json` and
`special_tokens_map.json` from a sentencepiece model, so that
`AutoTokenizer.from_pretrained(dir)` on a shard directory gives exactly the ids and the
text codemill's `Tokenizer` gives:

* a BPE model over the sentencepiece vocabulary, ids unchanged, whose merges rebuild
  each normal piece from two normal pieces, ranked by the merged piece's score (the
  order sentencepiece merges in); byte fallback as sentencepiece's;
* spaces become "▁", and a leading "▁" is added only when the model adds a dummy
  prefix (codemill's own models do not: no prefix space);
* control pieces (<unk>, <s>, </s> and codemill's infilling tokens) are special tokens
  that text cannot produce (`split_special_tokens`), as sentencepiece never produces a
  control id from text: a literal "<PRE>" or "<s>" in code is text;
* BOS in front of each text (codemill frames a document `<s> text </s>`; the EOS is
  left to the caller, as for Llama, so that a prompt does not end the text).

One difference remains, and only for models codemill did not train: where a model's
infilling pieces are user-defined rather than control pieces (Code Llama's "▁<PRE>"),
sentencepiece encodes text that spells one (" <PRE>") to the marker; here it stays text.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tokenizers import AddedToken, decoders, normalizers, processors
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers.models import BPE

from codemill.storage.folder import Folder
from codemill.tokenize.tokenizer import PieceType, Tokenizer, TokenizerError, piece_types

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
HF_TOKENIZER_FILES = (TOKENIZER_JSON, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)
SPACE = "▁"  # sentencepiece's escaped space


def write_hf_tokenizer(out: Folder, tok: Tokenizer) -> dict[str, str]:
    """Write the three files into `out`, each atomically; returns their sha256 by name."""
    digests = {}
    for name, text in hf_tokenizer_files(tok).items():
        out.write_text(name, text)
        digests[name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return digests


def hf_tokenizer_files(tok: Tokenizer) -> dict[str, str]:
    """The three files' text by name; the same model gives the same bytes."""
    types = _piece_types(tok)
    pieces = {name: tok.id_to_piece(i) for name, i in tok.special_ids.items()}
    control = {tok.id_to_piece(i) for i, t in enumerate(types) if t == PieceType.CONTROL}
    infilling = [pieces[name] for name in ("pre", "suf", "mid", "eot")]
    special = {
        "bos_token": pieces["bos"],
        "eos_token": pieces["eos"],
        "unk_token": pieces["unk"],
        "pad_token": pieces["eos"],  # codemill pads rows with EOS (the manifest's pad_id)
        # user-defined infilling pieces (Code Llama's) stay ordinary pieces, as in sentencepiece
        "additional_special_tokens": [p for p in infilling if p in control],
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "split_special_tokens": True,  # literal "<s>" or "<PRE>" in code stays text
        "clean_up_tokenization_spaces": False,
    }
    return {
        TOKENIZER_JSON: _backend(tok, types).to_str(pretty=True) + "\n",
        TOKENIZER_CONFIG: _json(config),
        SPECIAL_TOKENS_MAP: _json(special),
    }


def _backend(tok: Tokenizer, types: list[PieceType]) -> BackendTokenizer:
    """The `tokenizers` tokenizer that encodes and decodes as `tok` does."""
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    model = BPE(vocab=vocab, merges=_merges(tok, pieces, types), unk_token=pieces[tok.unk_id],
                fuse_unk=True, byte_fallback=True)
    backend = BackendTokenizer(model)
    space = normalizers.Replace(" ", SPACE)
    # sentencepiece prepends "▁" to every text, even one that starts with a space
    backend.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), space]) if tok.dummy_prefix else space
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    # sentencepiece drops the dummy prefix's space again when decoding
    backend.decoder = decoders.Sequence(steps + [decoders.Strip(" ", 1, 0)] if tok.dummy_prefix else steps)
    bos = pieces[tok.bos_id]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, tok.bos_id)])
    backend.add_special_tokens([AddedToken(pieces[i], special=True, normalized=False)
                                for i, t in enumerate(types) if t in (PieceType.CONTROL, PieceType.UNKNOWN)])
    return backend


def _piece_types(tok: Tokenizer) -> list[PieceType]:
    proto = Path(tok.path).read_bytes()
    if hashlib.sha256(proto).hexdigest() != tok.sha256:
        raise TokenizerError(f"{tok.path} changed since it was loaded")
    types = piece_types(proto)
    if len(types) != tok.vocab_size:
        raise TokenizerError(f"{tok.path}: {len(types)} pieces in the model, {tok.vocab_size} in the vocabulary")
    return types


def _merges(tok: Tokenizer, pieces: list[str], types: list[PieceType]) -> list[tuple[str, str]]:
    """Every split of a normal piece into two normal pieces, highest merged score first
    (ties by id): sentencepiece's BPE merges the adjacent pair whose union scores best."""
    normal = {p for p, t in zip(pieces, types) if t == PieceType.NORMAL}
    ranked = []
    for i, piece in enumerate(pieces):
        if piece not in normal:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-tok.score(i), i, cut, (left, right)))
    return [pair for *_, pair in sorted(ranked)]


def _json(value: dict) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
