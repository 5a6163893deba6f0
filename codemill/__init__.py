"""codemill: build Code Llama-style training data at cluster scale.

Kernels are plain functions over Spark DataFrames, Arrow batches and records
(`codemill.ingest`, `codemill.dedup`, ...); each step of a DAG is a stage object
(`codemill.stages`) that one generic Luigi task runs (`codemill.pipelines`);
`codemill.train_hooks` hands the resulting shards to a trainer. The layers are
drawn in docs/architecture.md.
"""

__version__ = "0.1.0"
