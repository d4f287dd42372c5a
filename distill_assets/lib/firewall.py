"""The contamination firewall and the pair rules, re-verified from the files on disk.

The export code already keeps rejected and unreviewed work out; these functions check the
written datasets against the scored runs independently, so a bug in an export (or a file edited
by hand) is caught by a blocking asset check before anything downstream uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.evidence import normalize_text
from distill_assets.lib.exports import ExportSettings, _category_reason, scored_files
from distill_assets.lib.formats import plain_text

TRUSTED = (C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL)


class Scored(NamedTuple):
    quality: str
    task_id: str
    score: float
    response_empty: bool
    sft_eligible: bool


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


_CACHE: dict[Path, tuple[tuple[tuple[str, int, int], ...], dict[str, Scored]]] = {}


def scored_lookup(out_root: Path) -> dict[str, Scored]:
    """run_id -> what the firewall needs to know of every scored run on disk; built once per
    process while the scored files stay the same, and shared by the checks that use it."""
    fingerprint = tuple(
        (relpath, stat.st_size, stat.st_mtime_ns)
        for relpath in scored_files(out_root)
        for stat in [(out_root / relpath).stat()]
    )
    cached = _CACHE.get(out_root)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    _CACHE.clear()
    lookup = _build_lookup(out_root)
    _CACHE[out_root] = (fingerprint, lookup)
    return lookup


def _build_lookup(out_root: Path) -> dict[str, Scored]:
    lookup: dict[str, Scored] = {}
    for relpath in scored_files(out_root):
        with open(out_root / relpath, "rb") as fh:
            for raw in fh:
                row = orjson.loads(raw)
                lookup[row["run_id"]] = Scored(
                    row["quality_score"],
                    row["task_id"],
                    row["score"],
                    bool(row.get("response_empty")),
                    row.get("sft_eligible") is not False,
                )
    return lookup


def _rows(path: Path):
    """(row number, row) of a dataset's train file and then its holdout file (numbered on)."""
    number = 0
    for part in (path, path.with_name("holdout.jsonl")):
        if not part.exists():
            continue
        with open(part, "rb") as fh:
            for raw in fh:
                number += 1
                if raw.strip():
                    yield number, orjson.loads(raw)


def verify_sft(
    out_root: Path,
    settings: ExportSettings,
    root: Path | None = None,
    lookup: dict[str, Scored] | None = None,
) -> FirewallReport:
    """Only accepted, SFT-eligible runs with an answer, in allowed categories, of their task.

    ``root`` holds the written exports (a run's version directory; default ``out_root``).
    """
    lookup = scored_lookup(out_root) if lookup is None else lookup
    report = FirewallReport()
    for number, row in _rows((root or out_root) / C.SFT_PATH):
        report.rows += 1
        run_id = row.get("source_run_id")
        known = lookup.get(run_id) if run_id else None
        if known is None:
            report.add(number, "source_run_unknown", run_id=run_id)
            continue
        if known.quality != C.QUALITY_ACCEPTED:
            report.add(number, "not_accepted_in_sft", run_id=run_id, quality=known.quality)
        if known.task_id != row.get("task_id"):
            report.add(number, "task_mismatch", run_id=run_id)
        if known.response_empty:
            report.add(number, C.R_EMPTY_RESPONSE, run_id=run_id)
        if not known.sft_eligible:
            report.add(number, C.R_NOT_SFT_ELIGIBLE, run_id=run_id)
        reason = _category_reason(row.get("category"), settings)
        if reason:
            report.add(number, reason, run_id=run_id)
    return report


def verify_rag(
    out_root: Path,
    settings: ExportSettings,
    root: Path | None = None,
    lookup: dict[str, Scored] | None = None,
) -> FirewallReport:
    """Only accepted (or, when allowed, partially accepted) runs with an answer, of the task."""
    lookup = scored_lookup(out_root) if lookup is None else lookup
    allowed = TRUSTED if settings.rag_include_partial else (C.QUALITY_ACCEPTED,)
    report = FirewallReport()
    for number, row in _rows((root or out_root) / C.RAG_PATH):
        report.rows += 1
        for run_id in row.get("source_run_ids") or []:
            known = lookup.get(run_id)
            if known is None:
                report.add(number, "source_run_unknown", run_id=run_id)
            elif known.quality not in allowed:
                report.add(number, "untrusted_run_in_rag", run_id=run_id, quality=known.quality)
            elif known.task_id != row.get("task_id"):
                report.add(number, "task_mismatch", run_id=run_id)
            elif known.response_empty:
                report.add(number, C.R_EMPTY_RESPONSE, run_id=run_id)
    return report


def _pairs(out_root: Path, root: Path | None, lookup: dict[str, Scored]):
    for number, row in _rows((root or out_root) / C.PREFERENCE_PATH):
        yield (
            number,
            row,
            lookup.get(row.get("chosen_run_id")),
            lookup.get(row.get("rejected_run_id")),
        )


def verify_preference(
    out_root: Path,
    settings: ExportSettings,
    root: Path | None = None,
    lookup: dict[str, Scored] | None = None,
) -> FirewallReport:
    """The firewall for pairs: a trusted chosen side with an answer, nothing unreviewed."""
    lookup = scored_lookup(out_root) if lookup is None else lookup
    report = FirewallReport()
    for number, row, chosen, rejected in _pairs(out_root, root, lookup):
        report.rows += 1
        ids = {"chosen": row.get("chosen_run_id"), "rejected": row.get("rejected_run_id")}
        if chosen is None or rejected is None:
            report.add(number, "source_run_unknown", **ids)
            continue
        if chosen.quality not in TRUSTED:
            report.add(number, "untrusted_chosen", quality=chosen.quality, **ids)
        if C.QUALITY_REVIEW in (chosen.quality, rejected.quality):
            report.add(number, "unreviewed_in_pair", **ids)
        if chosen.response_empty:
            report.add(number, C.R_EMPTY_RESPONSE, **ids)
    return report


def verify_pair_rules(
    out_root: Path,
    settings: ExportSettings,
    root: Path | None = None,
    lookup: dict[str, Scored] | None = None,
) -> FirewallReport:
    """Pair rules: two distinct runs of one task, chosen strictly better by at least the
    configured margin, texts that differ after whitespace folding."""
    lookup = scored_lookup(out_root) if lookup is None else lookup
    report = FirewallReport()
    for number, row, chosen, rejected in _pairs(out_root, root, lookup):
        report.rows += 1
        ids = {"chosen": row.get("chosen_run_id"), "rejected": row.get("rejected_run_id")}
        if ids["chosen"] == ids["rejected"]:
            report.add(number, C.R_SELF_PAIR, **ids)
        if chosen is None or rejected is None:
            report.add(number, "source_run_unknown", **ids)
            continue
        if chosen.task_id != rejected.task_id or chosen.task_id != row.get("task_id"):
            report.add(number, "cross_task_pair", **ids)
        rank_c = C.QUALITY_RANK.get(chosen.quality, -1)
        rank_r = C.QUALITY_RANK.get(rejected.quality, -1)
        if (rank_c, chosen.score) <= (rank_r, rejected.score):
            report.add(number, "chosen_not_better", **ids)
        if round(chosen.score - rejected.score, 6) < settings.min_margin:
            report.add(number, C.R_BELOW_MARGIN, **ids)
        if normalize_text(plain_text(row.get("chosen", ""))) == normalize_text(
            plain_text(row.get("rejected", ""))
        ):
            report.add(number, C.R_IDENTICAL_TEXT, **ids)
    return report


def verify_kto(
    out_root: Path,
    settings: ExportSettings,
    root: Path | None = None,
    lookup: dict[str, Scored] | None = None,
) -> FirewallReport:
    """The firewall for unpaired rows: label true only for accepted, SFT-eligible runs with an
    answer in an allowed category; label false only for rejected runs; never a run to review
    or a partially accepted one; the row's task is its run's."""
    lookup = scored_lookup(out_root) if lookup is None else lookup
    report = FirewallReport()
    for number, row in _rows((root or out_root) / C.KTO_PATH):
        report.rows += 1
        run_id = row.get("source_run_id")
        known = lookup.get(run_id) if run_id else None
        if known is None:
            report.add(number, "source_run_unknown", run_id=run_id)
            continue
        label = row.get("label")
        if label is True:
            if known.quality != C.QUALITY_ACCEPTED:
                report.add(number, "desirable_not_accepted", run_id=run_id, quality=known.quality)
            if not known.sft_eligible:
                report.add(number, C.R_NOT_SFT_ELIGIBLE, run_id=run_id)
            reason = _category_reason(row.get("category"), settings)
            if reason:
                report.add(number, reason, run_id=run_id)
        elif label is False:
            if known.quality != C.QUALITY_REJECTED:
                report.add(number, "undesirable_not_rejected", run_id=run_id, quality=known.quality)
        else:
            report.add(number, "label_not_boolean", run_id=run_id)
        if known.task_id != row.get("task_id"):
            report.add(number, "task_mismatch", run_id=run_id)
        if known.response_empty:
            report.add(number, C.R_EMPTY_RESPONSE, run_id=run_id)
    return report
