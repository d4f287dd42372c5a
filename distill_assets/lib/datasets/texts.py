"""The runs' texts: each run's record fetched from the evidence index by byte offset.

The exports keep only keys in memory (lib/datasets/runs.py) and read a run's record when they
write its row: ``TextStore`` reads it at its offset, checks that it is the record its key names,
and keeps it for the task at hand, so the exports of a pass read and parse each record once
between them. ``Fetched`` carries the record with collect's secret verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.runs import RunKey
from distill_assets.lib.hygiene.neardup import BandCache
from distill_assets.lib.infra import layout


class TextStore:
    """Fetches run records from the evidence index by (file, offset), checking their identity.

    The export pass shares one store between its exports and keeps the records of the current
    task, so each run's record is read and parsed once per run whatever number of exports use
    it. A record is ``clean`` when collect found no secret in it (its records line carries no
    ``secrets`` field) under the secret rules this code applies, which the store checks per
    records file against the collect receipt that wrote it (``trusted_file``)."""

    def __init__(self, out_root: Path) -> None:
        self.out_root = out_root
        self._handles: dict[str, Any] = {}
        self.files_read: set[str] = set()
        self._task: dict[tuple[str, int], Fetched | None] = {}
        self._trusted: dict[str, bool] = {}
        self._ledger: dict[str, dict[str, Any]] | None = None
        # the exports of a pass also share the near-duplicate band hashes of recent texts
        self.band_cache = BandCache()

    def is_open(self, run_file: str) -> bool:
        return run_file in self._handles

    def fetch(self, key: RunKey) -> dict[str, Any] | None:
        found = self.fetch_line(key.run_file, key.run_offset, key.evidence_id, key.run_id)
        return None if found is None else found.record

    def fetch_line(
        self, run_file: str, offset: int, evidence_id: str, run_id: str | None
    ) -> Fetched | None:
        """The record at ``offset`` of ``run_file`` if it is the one named, with its verdict;
        kept until ``next_task``."""
        slot = (run_file, offset)
        if slot in self._task:
            found = self._task[slot]
            if found is None or found.evidence_id != evidence_id:
                return None
            return found
        handle = self._handles.get(run_file)
        if handle is None:
            try:
                handle = open(layout.inside(self.out_root, run_file), "rb")
            except (OSError, ValueError):
                return None
            self._handles[run_file] = handle
            self.files_read.add(run_file)
        try:
            handle.seek(offset)
            row = orjson.loads(handle.readline())
        except (OSError, orjson.JSONDecodeError):
            self._task[slot] = None
            return None
        if row.get("evidence_id") != evidence_id or (
            run_id is not None and row.get("run_id") != run_id
        ):
            return None
        found = Fetched(
            row["record"], evidence_id, "secrets" not in row and self.trusted_file(run_file)
        )
        self._task[slot] = found
        return found

    def next_task(self) -> None:
        """Forget the records of the task just done (memory holds one task's records)."""
        self._task.clear()

    def trusted_file(self, run_file: str) -> bool:
        """Whether the records of ``run_file`` were scanned for secrets by this code's rules:
        its producer's collect receipt names the same rules version."""
        known = self._trusted.get(run_file)
        if known is None:
            known = self._trusted[run_file] = self._rules_of(run_file) == C.SECRET_RULES_VERSION
        return known

    def _rules_of(self, run_file: str) -> int | None:
        if self._ledger is None:
            from distill_assets.lib.records.receipts import read_ledger

            self._ledger = read_ledger(self.out_root)
        entry = self._ledger.get(run_file)
        if entry is None or entry.get("stage") != C.STAGE_COLLECT:
            return None
        path = self.out_root / C.REPORTS_DIR / entry["run_id"] / f"{C.STAGE_COLLECT}.json"
        try:
            receipt = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        rules = (receipt.get("extra") or {}).get("secret_rules")
        return rules if isinstance(rules, int) else None

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._task.clear()


class Fetched(NamedTuple):
    """A run's (or a review's, an outcome's) evidence record and collect's secret verdict."""

    record: dict[str, Any]
    evidence_id: str
    clean: bool
