"""Tokenization: from document text to training shards (docs/architecture.md: data contracts, Code Llama's recipe).

* `tokenizer` — train a sentencepiece BPE model with Llama's settings and the four
  infilling tokens, or load a Llama / Code Llama `tokenizer.model`; enc and enc'.
* `fim` — fill-in-the-middle (PSM / SPM) with per-document draws from (seed, id).
* `pack` — BOS/EOS-delimited documents packed into fixed-length rows with
  document start offsets.
* `shard_format` — the row schemas (sequence and instruction rows), manifest name and
  format, reading and verifying a shard directory (pyarrow only).
* `shards` — Arrow IPC stream shards, manifest with checksums, verify and inspect.

The modules import no Spark: executors run them inside Arrow batch functions.
"""
