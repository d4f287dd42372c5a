"""The contamination firewall, re-verified from the files on disk.

The export code already keeps rejected and unreviewed work out; these functions check the
written datasets against the scored runs independently, so a bug in an export (or a file edited
by hand) is caught by a blocking asset check before anything downstream uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.evidence import normalize_text
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


def scored_lookup(out_root: Path) -> dict[str, tuple[str, str, float]]:
    """run_id -> (quality, task_id, score) for every scored run on disk."""
    lookup: dict[str, tuple[str, str, float]] = {}
    for relpath in scored_files(out_root):
        with open(out_root / relpath, "rb") as fh:
            for raw in fh:
                row = orjson.loads(raw)
                lookup[row["run_id"]] = (row["quality_score"], row["task_id"], row["score"])
    return lookup


def _rows(path: Path):
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if raw.strip():
                yield number, orjson.loads(raw)


def verify_sft(
    out_root: Path,
    settings: ExportSettings,
    lookup: dict[str, tuple[str, str, float]] | None = None,
) -> FirewallReport:
    lookup = scored_lookup(out_root) if lookup is None else lookup
    report = FirewallReport()
    for number, row in _rows(out_root / C.SFT_PATH):
        report.rows += 1
        run_id = row.get("source_run_id")
        known = lookup.get(run_id) if run_id else None
        if known is None:
            report.add(number, "source_run_unknown", run_id=run_id)
            continue
        quality, task_id, _score = known
        if quality != C.QUALITY_ACCEPTED:
            report.add(number, "not_accepted_in_sft", run_id=run_id, quality=quality)
        if task_id != row.get("task_id"):
            report.add(number, "task_mismatch", run_id=run_id)
        reason = _category_reason(row.get("category"), settings)
        if reason:
            report.add(number, reason, run_id=run_id)
    return report


def verify_rag(
    out_root: Path, lookup: dict[str, tuple[str, str, float]] | None = None
) -> FirewallReport:
    lookup = scored_lookup(out_root) if lookup is None else lookup
    report = FirewallReport()
    for number, row in _rows(out_root / C.RAG_PATH):
        report.rows += 1
        for run_id in row.get("source_run_ids") or []:
            known = lookup.get(run_id)
            if known is None:
                report.add(number, "source_run_unknown", run_id=run_id)
            elif known[0] not in (C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL):
                report.add(number, "untrusted_run_in_rag", run_id=run_id, quality=known[0])
            elif known[1] != row.get("task_id"):
                report.add(number, "task_mismatch", run_id=run_id)
    return report


def verify_preference(
    out_root: Path,
    settings: ExportSettings,
    lookup: dict[str, tuple[str, str, float]] | None = None,
) -> FirewallReport:
    """Firewall and pair rules: trusted chosen side, no unreviewed run, distinct runs and texts,
    one task, chosen strictly better, margin at least the configured minimum."""
    lookup = scored_lookup(out_root) if lookup is None else lookup
    report = FirewallReport()
    for number, row in _rows(out_root / C.PREFERENCE_PATH):
        report.rows += 1
        chosen_id, rejected_id = row.get("chosen_run_id"), row.get("rejected_run_id")
        chosen, rejected = lookup.get(chosen_id), lookup.get(rejected_id)
        if chosen is None or rejected is None:
            report.add(number, "source_run_unknown", chosen=chosen_id, rejected=rejected_id)
            continue
        if chosen_id == rejected_id:
            report.add(number, C.R_SELF_PAIR, run_id=chosen_id)
        if chosen[0] not in (C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL):
            report.add(number, "untrusted_chosen", run_id=chosen_id, quality=chosen[0])
        if C.QUALITY_REVIEW in (chosen[0], rejected[0]):
            report.add(number, "unreviewed_in_pair", chosen=chosen_id, rejected=rejected_id)
        if chosen[1] != rejected[1] or chosen[1] != row.get("task_id"):
            report.add(number, "cross_task_pair", chosen=chosen_id, rejected=rejected_id)
        rank_c, rank_r = C.QUALITY_RANK.get(chosen[0], -1), C.QUALITY_RANK.get(rejected[0], -1)
        if (rank_c, chosen[2]) <= (rank_r, rejected[2]):
            report.add(number, "chosen_not_better", chosen=chosen_id, rejected=rejected_id)
        if chosen[2] - rejected[2] < settings.min_margin - 1e-9:
            report.add(number, C.R_BELOW_MARGIN, chosen=chosen_id, rejected=rejected_id)
        if normalize_text(str(row.get("chosen", ""))) == normalize_text(
            str(row.get("rejected", ""))
        ):
            report.add(number, C.R_IDENTICAL_TEXT, chosen=chosen_id, rejected=rejected_id)
    return report
