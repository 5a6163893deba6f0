"""Run reports: per-stage statistics gathered into a summary and report files."""
