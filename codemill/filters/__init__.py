"""Cleaning stages between near dedup and the mixes: code heuristics (`rules`),
PII scrubbing (`pii`), benchmark decontamination (`decontam`) and fastText
language / quality filters (`langid`)."""
