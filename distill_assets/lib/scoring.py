"""Stage ``score``: join each run with its reviews and outcomes and grade it by a policy.

The policy is a truth table (docs/scoring.md) over three kinds of signal: positive (approve,
success), partial (request_changes, partial outcome, a reward between the thresholds) and negative
(reject, failure); an error outcome or a positive/negative disagreement needs a human. Scoring
reads only the compact evidence index, never transcripts, and for day D looks at evidence dated
within ``evidence_window_days`` of D, since reviews and outcomes often arrive after their run.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

from distill_assets.lib import constants as C
from distill_assets.lib import layout, progress
from distill_assets.lib.accounting import StageResult, Tally, conservation_errors
from distill_assets.lib.io import AtomicJsonlWriter, WrittenFile, iter_jsonl

ConflictPolicy = Literal["human_review", "review_wins", "outcome_wins"]


@dataclass(frozen=True)
class ScoringPolicy:
    """The configurable parts of the scoring truth table (defaults in docs/scoring.md)."""

    accept_min_score: float = 0.8
    reward_success_min: float = 1.0
    reward_failure_max: float = 0.0
    conflict_policy: ConflictPolicy = "human_review"
    require_review: bool = False
    score_signals: tuple[str, ...] = ()
    incomplete_outcome_needs_review: bool = True
    evidence_window_days: int = 2

    def errors(self) -> list[str]:
        problems = []
        for name in ("accept_min_score", "reward_success_min", "reward_failure_max"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name}={value!r} must be between 0 and 1")
        if self.reward_failure_max >= self.reward_success_min:
            problems.append(
                f"reward_failure_max={self.reward_failure_max!r} must be below "
                f"reward_success_min={self.reward_success_min!r}"
            )
        if self.conflict_policy not in ("human_review", "review_wins", "outcome_wins"):
            problems.append(
                f"conflict_policy={self.conflict_policy!r} is not one of "
                "human_review, review_wins, outcome_wins"
            )
        if not 0 <= self.evidence_window_days <= 31:
            problems.append(
                f"evidence_window_days={self.evidence_window_days!r} must be between 0 and 31"
            )
        return problems


POSITIVE, PARTIAL, NEGATIVE, ERROR = "positive", "partial", "negative", "error"


@dataclass(frozen=True)
class Signal:
    source: Literal["review", "outcome"]
    polarity: str
    value: float
    reason: str


def review_signal(row: dict[str, Any]) -> Signal:
    verdict = row["verdict"]
    given = row.get("score")
    if verdict == "approve":
        return Signal("review", POSITIVE, 1.0 if given is None else given, C.R_APPROVED)
    if verdict == "request_changes":
        return Signal("review", PARTIAL, 0.5 if given is None else given, C.R_CHANGES_REQUESTED)
    return Signal("review", NEGATIVE, 0.0 if given is None else given, C.R_REJECTED_BY_REVIEW)


def outcome_signal(row: dict[str, Any], policy: ScoringPolicy) -> Signal:
    outcome = row["outcome"]
    reward = row.get("reward")
    if outcome == "error":
        return Signal("outcome", ERROR, 0.0 if reward is None else reward, C.R_OUTCOME_ERROR)
    if outcome == "failure":
        return Signal("outcome", NEGATIVE, 0.0 if reward is None else reward, C.R_FAILED)
    if outcome == "partial":
        return Signal("outcome", PARTIAL, 0.5 if reward is None else reward, C.R_PARTIAL_OUTCOME)
    if reward is None or reward >= policy.reward_success_min:
        return Signal("outcome", POSITIVE, 1.0 if reward is None else reward, C.R_SUCCESS)
    if reward <= policy.reward_failure_max:
        return Signal("outcome", NEGATIVE, reward, C.R_FAILED)
    return Signal("outcome", PARTIAL, reward, C.R_PARTIAL_REWARD)


@dataclass(frozen=True)
class Grade:
    quality: str
    score: float
    reasons: tuple[str, ...]


def grade(
    reviews: list[dict[str, Any]], outcomes: list[dict[str, Any]], policy: ScoringPolicy
) -> Grade:
    """Apply the truth table to one run's reviews and outcomes (index rows)."""
    signals = [review_signal(r) for r in reviews] + [outcome_signal(o, policy) for o in outcomes]
    extra_values = [
        value
        for o in outcomes
        for name, value in sorted((o.get("signals") or {}).items())
        if name in policy.score_signals and 0.0 <= value <= 1.0
    ]
    incomplete = policy.incomplete_outcome_needs_review and any(
        (o.get("signals") or {}).get("incomplete") for o in outcomes
    )

    def score_of(chosen: list[Signal]) -> float:
        values = [s.value for s in chosen] + extra_values
        return round(sum(values) / len(values), 6) if values else 0.0

    def reasons_of(chosen: list[Signal], *extra: str) -> tuple[str, ...]:
        return tuple(sorted({s.reason for s in chosen} | set(extra)))

    if not signals:
        return Grade(C.QUALITY_REVIEW, 0.0, (C.R_NO_EVIDENCE,))
    if incomplete:
        return Grade(C.QUALITY_REVIEW, score_of(signals), reasons_of(signals, C.R_INCOMPLETE))
    if any(s.polarity == ERROR for s in signals):
        return Grade(C.QUALITY_REVIEW, score_of(signals), reasons_of(signals))
    polarities = {s.polarity for s in signals}
    if POSITIVE in polarities and NEGATIVE in polarities:
        if policy.conflict_policy == "human_review":
            return Grade(
                C.QUALITY_REVIEW, score_of(signals), reasons_of(signals, C.R_CONFLICTING_EVIDENCE)
            )
        winner = "review" if policy.conflict_policy == "review_wins" else "outcome"
        kept = [s for s in signals if s.source == winner]
        kept_polarities = {s.polarity for s in kept}
        if not kept or (POSITIVE in kept_polarities and NEGATIVE in kept_polarities):
            return Grade(
                C.QUALITY_REVIEW, score_of(signals), reasons_of(signals, C.R_CONFLICTING_EVIDENCE)
            )
        graded = _grade_agreeing(kept, policy, score_of, reasons_of)
        return Grade(graded.quality, graded.score, tuple(sorted({*graded.reasons, C.R_OVERRULED})))
    return _grade_agreeing(signals, policy, score_of, reasons_of)


def _grade_agreeing(signals: list[Signal], policy: ScoringPolicy, score_of, reasons_of) -> Grade:
    polarities = {s.polarity for s in signals}
    score = score_of(signals)
    if NEGATIVE in polarities:
        return Grade(C.QUALITY_REJECTED, score, reasons_of(signals))
    if PARTIAL in polarities:
        return Grade(C.QUALITY_PARTIAL, score, reasons_of(signals))
    if policy.require_review and not any(s.source == "review" for s in signals):
        return Grade(C.QUALITY_REVIEW, score, reasons_of(signals, C.R_OUTCOME_ONLY))
    if score < policy.accept_min_score:
        return Grade(C.QUALITY_PARTIAL, score, reasons_of(signals, C.R_BELOW_ACCEPT_SCORE))
    return Grade(C.QUALITY_ACCEPTED, score, reasons_of(signals))


def _load_index(out_root: Path, day: date) -> list[dict[str, Any]] | None:
    path = out_root / layout.evidence_index(day)
    if not path.exists():
        return None
    return list(iter_jsonl(path))


@dataclass
class _Window:
    """Index rows of the days around the one being scored, loaded once each."""

    out_root: Path
    rows: dict[date, list[dict[str, Any]] | None] = field(default_factory=dict)
    inputs: dict[str, WrittenFile] = field(default_factory=dict)

    def get(self, day: date) -> list[dict[str, Any]]:
        if day not in self.rows:
            loaded = _load_index(self.out_root, day)
            self.rows[day] = loaded
            if loaded is not None:
                relpath = layout.evidence_index(day)
                self.inputs[relpath] = WrittenFile(relpath, "", 0, len(loaded))
        return self.rows[day] or []

    def evict_before(self, day: date) -> None:
        for old in [d for d in self.rows if d < day]:
            del self.rows[old]


def scored_row(run: dict[str, Any], day: date, graded: Grade, attached: list[dict[str, Any]]):
    return {
        "run_id": run["run_id"],
        "task_id": run["task_id"],
        "quality_score": graded.quality,
        "score": graded.score,
        "reasons": list(graded.reasons),
        "evidence_ids": [run["evidence_id"]] + [row["evidence_id"] for row in attached],
        "created_at": run["created_at"],
        "category": run.get("category"),
        "agent": run.get("agent"),
        "run_file": layout.evidence_records(day),
        "run_offset": run["offset"],
        "instruction_hash": run["instruction_hash"],
        "response_hash": run["response_hash"],
        "response_empty": bool(run.get("response_empty")),
        "has_messages": bool(run.get("has_messages")),
        "sft_eligible": run.get("sft_eligible") is not False,
        "n_reviews": sum(1 for row in attached if row["kind"] == C.KIND_REVIEW),
        "n_outcomes": sum(1 for row in attached if row["kind"] == C.KIND_OUTCOME),
    }


def _quarantine_row(row: dict[str, Any], reasons: list[str], day: date) -> dict[str, Any]:
    return {
        "stage": C.STAGE_SCORE,
        "disposition": C.DISPOSITION_QUARANTINED,
        "reasons": reasons,
        "evidence_id": row["evidence_id"],
        "kind": row["kind"],
        "run_id": row["run_id"],
        "evidence_day": day.isoformat(),
    }


def score_day(
    day: date, window: _Window, policy: ScoringPolicy, out_root: Path
) -> tuple[list[AtomicJsonlWriter], Tally, Counter[str]]:
    """Score the runs created on ``day`` and account for the evidence dated ``day``.

    Returns the open writers; the caller commits every day's files only once all days are done,
    so a failure leaves no day half-updated.
    """
    span = range(-policy.evidence_window_days, policy.evidence_window_days + 1)
    window_days = [day + timedelta(days=offset) for offset in span]
    runs_by_id: dict[str, list[tuple[date, dict[str, Any]]]] = defaultdict(list)
    for wday in window_days:
        for row in window.get(wday):
            if row["kind"] == C.KIND_RUN:
                runs_by_id[row["run_id"]].append((wday, row))
    conflicting = {run_id for run_id, copies in runs_by_id.items() if len(copies) > 1}
    attached: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for wday in window_days:
        for row in window.get(wday):
            if row["kind"] != C.KIND_RUN and row["run_id"] in runs_by_id:
                attached[row["run_id"]].append(row)

    tally = Tally()
    qualities: Counter[str] = Counter()
    scored = AtomicJsonlWriter(out_root, layout.scored_runs(day))
    quarantine = AtomicJsonlWriter(out_root, layout.scored_quarantine(day))
    try:
        for row in window.get(day):
            tally.records_in += 1
            run_id = row["run_id"]
            if row["kind"] == C.KIND_RUN:
                if run_id in conflicting:
                    reasons = [C.R_CONFLICTING_DUPLICATE]
                    tally.leave_out(C.DISPOSITION_QUARANTINED, reasons)
                    quarantine.write_row(_quarantine_row(row, reasons, day))
                    continue
                evidence = sorted(
                    attached.get(run_id, []), key=lambda r: (r["created_at"], r["evidence_id"])
                )
                graded = grade(
                    [r for r in evidence if r["kind"] == C.KIND_REVIEW],
                    [r for r in evidence if r["kind"] == C.KIND_OUTCOME],
                    policy,
                )
                scored.write_row(scored_row(row, day, graded, evidence))
                tally.records_out += 1
                qualities[graded.quality] += 1
                if graded.quality == C.QUALITY_ACCEPTED:
                    tally.accepted += 1
                elif graded.quality == C.QUALITY_REJECTED:
                    tally.rejected += 1
                continue
            if run_id in conflicting:
                reasons = [C.R_CONFLICTING_DUPLICATE]
            elif run_id not in runs_by_id:
                reasons = [C.R_ORPHAN_EVIDENCE]
            else:
                tally.records_out += 1
                continue
            tally.leave_out(C.DISPOSITION_QUARANTINED, reasons)
            quarantine.write_row(_quarantine_row(row, reasons, day))
        return [scored, quarantine], tally, qualities
    except BaseException:
        scored.abort()
        quarantine.abort()
        raise


def score(out_root: Path, days: Iterable[date], policy: ScoringPolicy) -> StageResult:
    """Score every day in ``days``; the evidence index of the window around each must exist."""
    window = _Window(out_root)
    writers: list[AtomicJsonlWriter] = []
    total = Tally()
    qualities: Counter[str] = Counter()
    ordered = sorted(set(days))
    per_day: dict[str, dict[str, int]] = {}
    tick = progress.current()
    tick.begin(len(ordered), "days")
    try:
        for day in ordered:
            window.evict_before(day - timedelta(days=policy.evidence_window_days))
            day_writers, tally, day_qualities = score_day(day, window, policy, out_root)
            writers.extend(day_writers)
            total.merge(tally)
            qualities.update(day_qualities)
            tick.advance(detail=f"{total.records_in:,} records")
            per_day[day.isoformat()] = {
                "records_in": tally.records_in,
                "records_out": tally.records_out,
                "quarantined": tally.quarantined,
                "skipped": tally.skipped,
            }
        outputs = [writer.commit() for writer in writers]
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    result = StageResult(C.STAGE_SCORE, [], outputs, total)
    result.extra["rows"] = sum(qualities.values())
    result.inputs = sorted(window.inputs.values(), key=lambda f: f.path)
    result.errors.extend(conservation_errors(total))
    result.extra["quality"] = {q: qualities.get(q, 0) for q in C.QUALITIES}
    result.extra["per_partition"] = per_day
    result.partitions = [day.isoformat() for day in ordered]
    return result
