"""The pure library: everything distill does, as typed functions and no Dagster, by domain
(docs/architecture.md)."""
