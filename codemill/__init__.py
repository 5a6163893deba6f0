"""codemill: build Code Llama-style training data at cluster scale.

Stages are plain functions over Spark DataFrames (`codemill.ingest`,
`codemill.dedup`, ...); Luigi tasks in `codemill.pipelines` wire them into
DAGs; `codemill.train_hooks` hands the resulting shards to a trainer.
"""

__version__ = "0.1.0"
