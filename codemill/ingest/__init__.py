"""Ingest: turn directory trees, JSONL, Parquet and saved Hugging Face datasets into the document table."""
