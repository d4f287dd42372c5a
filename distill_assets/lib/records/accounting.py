"""What a stage did, counted: records in and out, what was left out and why.

Each stage returns a ``StageResult``; ``receipts.build_receipt`` turns it into a receipt and
``conservation_errors`` states the invariant every stage must keep:
records in = out + quarantined + skipped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from distill_assets.lib.infra.io import WrittenFile


@dataclass
class Tally:
    """Counts records as they flow through a stage."""

    records_in: int = 0
    records_out: int = 0
    accepted: int = 0
    rejected: int = 0
    quarantined: int = 0
    skipped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def leave_out(self, disposition: str, reasons: tuple[str, ...] | list[str]) -> None:
        if disposition == "skipped":
            self.skipped += 1
        else:
            self.quarantined += 1
        for reason in reasons:
            self.reasons[reason] += 1

    def merge(self, other: Tally) -> None:
        self.records_in += other.records_in
        self.records_out += other.records_out
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.quarantined += other.quarantined
        self.skipped += other.skipped
        self.reasons.update(other.reasons)


@dataclass
class StageResult:
    """The accounting of one stage execution, before it becomes a receipt."""

    stage: str
    inputs: list[WrittenFile]
    outputs: list[WrittenFile]
    tally: Tally
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    partitions: list[str] | None = None
    # where, under the output directory, the inputs were read and the outputs written: "" for
    # the directory itself, ".versions/<run_id>" for a run's staged exports
    input_root: str = ""
    output_root: str = ""


def conservation_errors(tally: Tally) -> list[str]:
    """Empty when records in = out + quarantined + skipped, else one message saying by how much."""
    accounted = tally.records_out + tally.quarantined + tally.skipped
    if tally.records_in == accounted:
        return []
    return [
        f"conservation broken: {tally.records_in} records in, but {tally.records_out} out + "
        f"{tally.quarantined} quarantined + {tally.skipped} skipped = {accounted}"
    ]


def skipped_share_errors(stage: str, tally: Tally, limit: float | None) -> list[str]:
    """One message when the stage skipped more than ``limit`` (a fraction, 0..1) of the records
    it took in; none when ``limit`` is None (the default: no limit) or nothing came in."""
    if limit is None or tally.records_in == 0:
        return []
    share = tally.skipped / tally.records_in
    if share <= limit:
        return []
    return [
        f"{stage} skipped {tally.skipped} of {tally.records_in} records ({share:.1%}), more "
        f"than max_skipped_share {limit:g} allows; top reasons: {top_reasons(tally)}"
    ]


def top_reasons(tally: Tally, count: int = 3) -> str:
    """The most frequent reason codes of what a stage left out, as ``code N, ...``."""
    ranked = sorted(tally.reasons.items(), key=lambda item: (-item[1], item[0]))[:count]
    return ", ".join(f"{code} {n}" for code, n in ranked) or "none recorded"


def nothing_usable_errors(
    stage: str, tally: Tally, had_sources: bool, usable_elsewhere: bool = False
) -> list[str]:
    """One message when a stage kept no record although it read some (or its sources held no
    file at all) and no other day of the output holds one either: a run with nothing usable
    fails before anything is published. A day of a per-day backfill without records, while
    other days have some, is not a failure."""
    if usable_elsewhere or tally.records_out > 0 or (tally.records_in == 0 and had_sources):
        return []
    if tally.records_in == 0:
        return [f"{stage}: the sources hold no evidence file: nothing to build datasets from"]
    return [
        f"{stage}: no usable record among {tally.records_in} read; top reasons: "
        f"{top_reasons(tally)}"
    ]
