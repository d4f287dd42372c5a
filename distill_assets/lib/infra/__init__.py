"""Plumbing every stage uses: JSONL I/O, output storage, locking, worker processes, progress, the
output layout, digests and run-config helpers."""
