"""Training hooks: from codemill's Arrow shards to a trained Llama-style model.

* `shards` — open shard directories (local, or s3://, gs://, hdfs:// ones copied once
  into a local cache, codemill.storage.cache): manifest checks, memory-mapped zero-copy
  rows (maps opened lazily in each process), the instruction-shard schema, and
  `to_hf_dataset` (the same rows as a Hugging Face dataset).
* `dataset` — `ShardDataset` + `ShardLoader`: a deterministic global stream (sample k
  is a function of (seed, k)), weighted mixing exact per global batch, disjoint
  reads for any number of ranks and workers, one-integer resumable state; batches
  with labels, document-restarting position ids and cu_seqlens; a held-out slice the
  stream never reads.
* `model` — the decoder: RMSNorm, SwiGLU, RoPE with base θ, grouped-query
  attention, SDPA attention kept inside documents (one call per document, or a
  dense mask), optional activation checkpointing.
* `checkpoints` — a run's checkpoints: written atomically, the last k kept, an
  unreadable newest named with the one before it.
* `train` — `train(TrainConfig, shard_dirs, out_dir, resume)`: AdamW, cosine
  schedule, clipping, accumulation, bf16 on CUDA, FSDP2 (or DDP) via torchrun,
  torch.compile, exact resume, held-out loss, MFU, loss curve; long-context
  fine-tuning (`lcft_config`) and instruction tuning (`answers_only`).
"""
