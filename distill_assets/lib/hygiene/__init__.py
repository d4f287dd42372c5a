"""Hygiene of what is exported: secrets found and scrubbed, the native prefilter, near-duplicates,
the task holdout, decontamination against an eval set, the review queue and its verdicts."""
