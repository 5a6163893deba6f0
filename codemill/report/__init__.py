"""Run reports: per-stage statistics gathered into a summary and report files."""

# The version of report.json (reports before it had none: version 1). 2: codemill_version,
# run and report times, the resolved config, token-length histograms and FIM eligibility
# per mix; report.html beside it. Part of the report stage's fingerprint, so a new format
# rewrites the report of a finished run (cheap) without touching any other stage.
SCHEMA_VERSION = 2

# The version of the shards folder's dataset card (codemill.report.card), part of the
# report stage's fingerprint for the same reason: a new card rewrites a finished run's.
CARD_VERSION = 1
