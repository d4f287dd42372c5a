"""The contamination firewall, re-verified from the files on disk.

The export code already keeps rejected and unreviewed work out; these functions check the
written datasets against the scored runs independently, so a bug in an export (or a file edited
by hand) is caught by a blocking asset check before anything downstream uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.digests import DigestTable, digest
from distill_assets.lib.evidence import normalized_bytes
from distill_assets.lib.exports import ExportSettings, _category_reason, scored_files


@dataclass
class FirewallReport:
    rows: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    sample_limit: int = 20

    def add(self, row: int, rule: str, **details: Any) -> None:
        self.count += 1
        if len(self.violations) < self.sample_limit:
            self.violations.append({"row": row, "rule": rule, **details})

    @property
    def passed(self) -> bool:
        return self.count == 0


class Known(NamedTuple):
    """What the firewall knows of a scored run: its quality, its task's digest, its score."""

    quality: str
    task: bytes
    score: float

    def same_task(self, task_id: Any) -> bool:
        return isinstance(task_id, str) and digest(task_id) == self.task


class ScoredLookup:
    """run id -> Known for every scored run on disk (the last file wins for a repeated id).

    Keeps digests, quality codes and scores in arrays, not the runs' ids or texts; built once
    per process for a given set of scored files and shared by the three firewall checks.
    """

    def __init__(self, out_root: Path) -> None:
        runs: list[bytes] = []
        tasks: list[bytes] = []
        qualities: list[int] = []
        scores: list[float] = []
        codes = {quality: code for code, quality in enumerate(C.QUALITIES)}
        for relpath in scored_files(out_root):
            with open(out_root / relpath, "rb") as fh:
                for raw in fh:
                    row = orjson.loads(raw)
                    runs.append(digest(row["run_id"]))
                    tasks.append(digest(row["task_id"]))
                    # an unknown quality (the schema check fails it) keeps a code of its own
                    qualities.append(codes.setdefault(row["quality_score"], len(codes)))
                    scores.append(row["score"])
        self._table = DigestTable()
        self._table.add(runs)
        self._tasks = np.frombuffer(b"".join(tasks), dtype=np.uint8).reshape(-1, 32)
        self._qualities = np.array(qualities, dtype=np.int32)
        self._scores = np.array(scores, dtype=np.float64)
        self._names = list(codes)

    def __len__(self) -> int:
        return len(self._table)

    def get_many(self, run_ids: list[Any]) -> list[Known | None]:
        """Known runs for ``run_ids`` (None for an id that is not a scored run's)."""
        wanted = [i for i, run_id in enumerate(run_ids) if isinstance(run_id, str) and run_id]
        found: list[Known | None] = [None] * len(run_ids)
        positions = self._table.find([digest(run_ids[i]) for i in wanted])
        for i, at in zip(wanted, positions, strict=True):
            if at >= 0:
                found[i] = Known(
                    self._names[self._qualities[at]],
                    self._tasks[at].tobytes(),
                    float(self._scores[at]),
                )
        return found

    def get(self, run_id: Any) -> Known | None:
        return self.get_many([run_id])[0]


_CACHE: dict[Path, tuple[tuple[tuple[str, int, int], ...], ScoredLookup]] = {}


def scored_lookup(out_root: Path) -> ScoredLookup:
    """The lookup of the scored files now on disk, reused while they stay the same."""
    fingerprint = tuple(
        (relpath, stat.st_size, stat.st_mtime_ns)
        for relpath in scored_files(out_root)
        for stat in [(out_root / relpath).stat()]
    )
    cached = _CACHE.get(out_root)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    _CACHE.clear()
    lookup = ScoredLookup(out_root)
    _CACHE[out_root] = (fingerprint, lookup)
    return lookup


def _rows(path: Path, batch: int = 4096) -> Iterator[list[tuple[int, Any]]]:
    """Rows of an export file, numbered from 1, in batches (so lookups are vectorized)."""
    if not path.exists():
        return
    chunk: list[tuple[int, Any]] = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if raw.strip():
                chunk.append((number, orjson.loads(raw)))
                if len(chunk) >= batch:
                    yield chunk
                    chunk = []
    if chunk:
        yield chunk


def verify_sft(
    out_root: Path, settings: ExportSettings, lookup: ScoredLookup | None = None
) -> FirewallReport:
    lookup = scored_lookup(out_root) if lookup is None else lookup
    report = FirewallReport()
    for batch in _rows(out_root / C.SFT_PATH):
        knowns = lookup.get_many([row.get("source_run_id") for _, row in batch])
        for (number, row), known in zip(batch, knowns, strict=True):
            report.rows += 1
            run_id = row.get("source_run_id")
            if known is None:
                report.add(number, "source_run_unknown", run_id=run_id)
                continue
            if known.quality != C.QUALITY_ACCEPTED:
                report.add(number, "not_accepted_in_sft", run_id=run_id, quality=known.quality)
            if not known.same_task(row.get("task_id")):
                report.add(number, "task_mismatch", run_id=run_id)
            reason = _category_reason(row.get("category"), settings)
            if reason:
                report.add(number, reason, run_id=run_id)
    return report


def verify_rag(out_root: Path, lookup: ScoredLookup | None = None) -> FirewallReport:
    lookup = scored_lookup(out_root) if lookup is None else lookup
    report = FirewallReport()
    for batch in _rows(out_root / C.RAG_PATH):
        ids = [row.get("source_run_ids") or [] for _, row in batch]
        knowns = lookup.get_many([run_id for group in ids for run_id in group])
        at = 0
        for (number, row), group in zip(batch, ids, strict=True):
            report.rows += 1
            for run_id in group:
                known = knowns[at]
                at += 1
                if known is None:
                    report.add(number, "source_run_unknown", run_id=run_id)
                elif known.quality not in (C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL):
                    report.add(number, "untrusted_run_in_rag", run_id=run_id, quality=known.quality)
                elif not known.same_task(row.get("task_id")):
                    report.add(number, "task_mismatch", run_id=run_id)
    return report


def verify_preference(
    out_root: Path, settings: ExportSettings, lookup: ScoredLookup | None = None
) -> FirewallReport:
    """Firewall and pair rules: trusted chosen side, no unreviewed run, distinct runs and texts,
    one task, chosen strictly better, margin at least the configured minimum."""
    lookup = scored_lookup(out_root) if lookup is None else lookup
    report = FirewallReport()
    for batch in _rows(out_root / C.PREFERENCE_PATH):
        pairs = [(row.get("chosen_run_id"), row.get("rejected_run_id")) for _, row in batch]
        knowns = lookup.get_many([run_id for pair in pairs for run_id in pair])
        for i, ((number, row), (chosen_id, rejected_id)) in enumerate(
            zip(batch, pairs, strict=True)
        ):
            report.rows += 1
            chosen, rejected = knowns[2 * i], knowns[2 * i + 1]
            if chosen is None or rejected is None:
                report.add(number, "source_run_unknown", chosen=chosen_id, rejected=rejected_id)
                continue
            if chosen_id == rejected_id:
                report.add(number, C.R_SELF_PAIR, run_id=chosen_id)
            if chosen.quality not in (C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL):
                report.add(number, "untrusted_chosen", run_id=chosen_id, quality=chosen.quality)
            if C.QUALITY_REVIEW in (chosen.quality, rejected.quality):
                report.add(number, "unreviewed_in_pair", chosen=chosen_id, rejected=rejected_id)
            if chosen.task != rejected.task or not chosen.same_task(row.get("task_id")):
                report.add(number, "cross_task_pair", chosen=chosen_id, rejected=rejected_id)
            rank_c = C.QUALITY_RANK.get(chosen.quality, -1)
            rank_r = C.QUALITY_RANK.get(rejected.quality, -1)
            if (rank_c, chosen.score) <= (rank_r, rejected.score):
                report.add(number, "chosen_not_better", chosen=chosen_id, rejected=rejected_id)
            if chosen.score - rejected.score < settings.min_margin - 1e-9:
                report.add(number, C.R_BELOW_MARGIN, chosen=chosen_id, rejected=rejected_id)
            if normalized_bytes(str(row.get("chosen", ""))) == normalized_bytes(
                str(row.get("rejected", ""))
            ):
                report.add(number, C.R_IDENTICAL_TEXT, chosen=chosen_id, rejected=rejected_id)
    return report
