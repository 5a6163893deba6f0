"""Tokenization (not built yet): a sentencepiece BPE tokenizer with Llama's settings
and the four infilling tokens, fill-in-the-middle transforms (PSM / SPM) and packing
into fixed-length sequences written as Arrow shards with a manifest."""
