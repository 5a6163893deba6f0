"""Deduplication stages: exact (content hash) and near (MinHash LSH), with one shared keep rule."""
