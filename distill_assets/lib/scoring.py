"""Stage ``score``: join each run with its reviews and outcomes and grade it by a policy.

The policy is a truth table (docs/scoring.md) over three kinds of signal: positive (approve,
success), partial (request_changes, partial outcome, a reward between the thresholds) and negative
(reject, failure); an error outcome or a positive/negative disagreement needs a human. Scoring
reads only the compact evidence index, never transcripts, and for day D looks at evidence dated
within ``evidence_window_days`` of D, since reviews and outcomes often arrive after their run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib import layout, progress
from distill_assets.lib.accounting import StageResult, Tally, conservation_errors
from distill_assets.lib.io import AtomicJsonlWriter, SealedFile, WrittenFile
from distill_assets.lib.parallel import process_pool

ConflictPolicy = Literal["human_review", "review_wins", "outcome_wins"]
# below this many bytes of evidence index a worker pool is not worth starting
POOL_MIN_BYTES = 16 * 1024 * 1024


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


class Signal(NamedTuple):
    source: Literal["review", "outcome"]
    polarity: str
    value: float
    reason: str


def review_signal(row: dict[str, Any]) -> Signal:
    return _review_signal(row["verdict"], row.get("score"))


def _review_signal(verdict: str, given: float | None) -> Signal:
    if verdict == "approve":
        return Signal("review", POSITIVE, 1.0 if given is None else given, C.R_APPROVED)
    if verdict == "request_changes":
        return Signal("review", PARTIAL, 0.5 if given is None else given, C.R_CHANGES_REQUESTED)
    return Signal("review", NEGATIVE, 0.0 if given is None else given, C.R_REJECTED_BY_REVIEW)


def outcome_signal(row: dict[str, Any], policy: ScoringPolicy) -> Signal:
    return _outcome_signal(row["outcome"], row.get("reward"), policy)


def _outcome_signal(outcome: str, reward: float | None, policy: ScoringPolicy) -> Signal:
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


class Grade(NamedTuple):
    quality: str
    score: float
    reasons: tuple[str, ...]


def grade(
    reviews: list[dict[str, Any]], outcomes: list[dict[str, Any]], policy: ScoringPolicy
) -> Grade:
    """Apply the truth table to one run's reviews and outcomes (index rows)."""
    signals = [review_signal(r) for r in reviews] + [outcome_signal(o, policy) for o in outcomes]
    return _grade(signals, [o.get("signals") for o in outcomes], policy)


def _grade(
    signals: list[Signal], signal_maps: list[dict[str, float] | None], policy: ScoringPolicy
) -> Grade:
    """The truth table over a run's signals; ``signal_maps`` are its outcomes' named signals."""
    extra_values = [
        value
        for named in signal_maps
        if named
        for name, value in sorted(named.items())
        if name in policy.score_signals and 0.0 <= value <= 1.0
    ]
    incomplete = policy.incomplete_outcome_needs_review and any(
        (named or {}).get("incomplete") for named in signal_maps
    )

    if not signals:
        return Grade(C.QUALITY_REVIEW, 0.0, (C.R_NO_EVIDENCE,))
    if incomplete:
        return Grade(
            C.QUALITY_REVIEW, _score_of(signals, extra_values), _reasons_of(signals, C.R_INCOMPLETE)
        )
    if any(s.polarity == ERROR for s in signals):
        return Grade(C.QUALITY_REVIEW, _score_of(signals, extra_values), _reasons_of(signals))
    polarities = {s.polarity for s in signals}
    if POSITIVE in polarities and NEGATIVE in polarities:
        if policy.conflict_policy == "human_review":
            return Grade(
                C.QUALITY_REVIEW,
                _score_of(signals, extra_values),
                _reasons_of(signals, C.R_CONFLICTING_EVIDENCE),
            )
        winner = "review" if policy.conflict_policy == "review_wins" else "outcome"
        kept = [s for s in signals if s.source == winner]
        kept_polarities = {s.polarity for s in kept}
        if not kept or (POSITIVE in kept_polarities and NEGATIVE in kept_polarities):
            return Grade(
                C.QUALITY_REVIEW,
                _score_of(signals, extra_values),
                _reasons_of(signals, C.R_CONFLICTING_EVIDENCE),
            )
        graded = _grade_agreeing(kept, policy, extra_values)
        return Grade(graded.quality, graded.score, tuple(sorted({*graded.reasons, C.R_OVERRULED})))
    return _grade_agreeing(signals, policy, extra_values)


def _score_of(chosen: list[Signal], extra_values: list[float]) -> float:
    values = [s.value for s in chosen] + extra_values
    return round(sum(values) / len(values), 6) if values else 0.0


def _reasons_of(chosen: list[Signal], *extra: str) -> tuple[str, ...]:
    return tuple(sorted({s.reason for s in chosen} | set(extra)))


def _grade_agreeing(
    signals: list[Signal], policy: ScoringPolicy, extra_values: list[float]
) -> Grade:
    polarities = {s.polarity for s in signals}
    score = _score_of(signals, extra_values)
    if NEGATIVE in polarities:
        return Grade(C.QUALITY_REJECTED, score, _reasons_of(signals))
    if PARTIAL in polarities:
        return Grade(C.QUALITY_PARTIAL, score, _reasons_of(signals))
    if policy.require_review and not any(s.source == "review" for s in signals):
        return Grade(C.QUALITY_REVIEW, score, _reasons_of(signals, C.R_OUTCOME_ONLY))
    if score < policy.accept_min_score:
        return Grade(C.QUALITY_PARTIAL, score, _reasons_of(signals, C.R_BELOW_ACCEPT_SCORE))
    return Grade(C.QUALITY_ACCEPTED, score, _reasons_of(signals))


class _Run(NamedTuple):
    """What scoring keeps of a run's index row."""

    run_id: str
    task_id: str
    evidence_id: str
    created_at: str
    category: str | None
    agent: str | None
    offset: int
    instruction_hash: str
    response_hash: str
    response_empty: bool
    has_messages: bool
    sft_eligible: bool


class _Evidence(NamedTuple):
    """What scoring keeps of a review or outcome index row (sorts by time, then id)."""

    created_at: str
    evidence_id: str
    kind: str
    run_id: str
    verdict: str | None
    score: float | None
    outcome: str | None
    reward: float | None
    signals: dict[str, float] | None
    offset: int  # of the record in ``records``
    records: str  # the records file of its day


_TIME_AND_ID = itemgetter(0, 1)


_new = tuple.__new__  # builds a named tuple from a tuple without the keyword-argument path


def _slim(row: dict[str, Any], records: str) -> _Run | _Evidence:
    get = row.get
    if row["kind"] == C.KIND_RUN:
        return _new(
            _Run,
            (
                row["run_id"],
                row["task_id"],
                row["evidence_id"],
                row["created_at"],
                get("category"),
                get("agent"),
                row["offset"],
                row["instruction_hash"],
                row["response_hash"],
                bool(get("response_empty")),
                bool(get("has_messages")),
                get("sft_eligible") is not False,
            ),
        )
    return _new(
        _Evidence,
        (
            row["created_at"],
            row["evidence_id"],
            row["kind"],
            row["run_id"],
            get("verdict"),
            get("score"),
            get("outcome"),
            get("reward"),
            get("signals"),
            row["offset"],
            records,
        ),
    )


@dataclass
class _DayIndex:
    """One day of the evidence index, slimmed: its rows in order, its run ids, and its review
    and outcome evidence grouped by run id."""

    rows: list[_Run | _Evidence]
    run_ids: list[str]
    evidence: dict[str, list[_Evidence]]

    @classmethod
    def load(cls, path: Path, records: str) -> _DayIndex:
        rows: list[_Run | _Evidence] = []
        run_ids: list[str] = []
        evidence: dict[str, list[_Evidence]] = {}
        loads = orjson.loads
        with open(path, "rb") as fh:
            data = fh.read()
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            row = _slim(loads(raw), records)
            rows.append(row)
            if type(row) is _Run:
                run_ids.append(row.run_id)
            else:
                found = evidence.get(row.run_id)
                if found is None:
                    evidence[row.run_id] = [row]
                else:
                    found.append(row)
        return cls(rows, run_ids, evidence)


_NO_DAY = _DayIndex([], [], {})


@dataclass
class _Window:
    """The index days around the ones being scored, each loaded once and dropped once passed."""

    out_root: Path
    days: dict[date, _DayIndex] = field(default_factory=dict)
    inputs: dict[str, WrittenFile] = field(default_factory=dict)

    def get(self, day: date) -> _DayIndex:
        found = self.days.get(day)
        if found is None:
            relpath = layout.evidence_index(day)
            path = self.out_root / relpath
            found = self.days[day] = (
                _DayIndex.load(path, layout.evidence_records(day)) if path.exists() else _NO_DAY
            )
            if found is not _NO_DAY:
                self.inputs[relpath] = WrittenFile(relpath, "", 0, len(found.rows))
        return found

    def evict_before(self, day: date) -> None:
        for old in [d for d in self.days if d < day]:
            del self.days[old]


def scored_row(
    run: _Run, graded: Grade, evidence: list[_Evidence], run_file: str
) -> dict[str, Any]:
    n_reviews = sum(1 for item in evidence if item.kind == C.KIND_REVIEW)
    return {
        "run_id": run.run_id,
        "task_id": run.task_id,
        "quality_score": graded.quality,
        "score": graded.score,
        "reasons": list(graded.reasons),
        "evidence_ids": [run.evidence_id] + [item.evidence_id for item in evidence],
        "created_at": run.created_at,
        "category": run.category,
        "agent": run.agent,
        "run_file": run_file,
        "run_offset": run.offset,
        "instruction_hash": run.instruction_hash,
        "response_hash": run.response_hash,
        "response_empty": run.response_empty,
        "has_messages": run.has_messages,
        "sft_eligible": run.sft_eligible,
        "n_reviews": n_reviews,
        "n_outcomes": len(evidence) - n_reviews,
    }


def _quarantine_row(row: _Run | _Evidence, reasons: list[str], day: date) -> dict[str, Any]:
    return {
        "stage": C.STAGE_SCORE,
        "disposition": C.DISPOSITION_QUARANTINED,
        "reasons": reasons,
        "evidence_id": row.evidence_id,
        "kind": C.KIND_RUN if type(row) is _Run else row.kind,
        "run_id": row.run_id,
        "evidence_day": day.isoformat(),
    }


def task_entry(row: dict[str, Any], evidence: list[_Evidence] | None = None) -> list[Any]:
    """A scored row as the exports sort and merge it: task and place within the task first,
    so plain list comparison orders runs by task, then best first (quality, score, age, id);
    (run_file, run_offset) make every entry unique. Fields: task_id, -rank, -score,
    created_at, run_id, run_file, run_offset, quality, category, evidence_id (the run's),
    response_hash, response_empty, sft_eligible; a run to review has one more, what its queue
    row needs: [agent, reasons, the ids of its reviews and outcomes, where each is kept
    ([records file, offset]; null when ``evidence`` is not given)]."""
    quality = row["quality_score"]
    entry = [
        row["task_id"],
        -C.QUALITY_RANK.get(quality, -1),
        -row["score"],
        row["created_at"],
        row["run_id"],
        row["run_file"],
        row["run_offset"],
        quality,
        row.get("category"),
        row["evidence_ids"][0],
        row["response_hash"],
        row.get("response_empty", False),
        row.get("sft_eligible", True),
    ]
    if quality == C.QUALITY_REVIEW:
        places = None if evidence is None else [[e.records, e.offset] for e in evidence]
        entry.append([row.get("agent"), row["reasons"], row["evidence_ids"][1:], places])
    return entry


def _grade_evidence(evidence: list[_Evidence], policy: ScoringPolicy) -> Grade:
    signals = [_review_signal(e.verdict, e.score) for e in evidence if e.kind == C.KIND_REVIEW]
    outcomes = [e for e in evidence if e.kind == C.KIND_OUTCOME]
    signals += [_outcome_signal(e.outcome, e.reward, policy) for e in outcomes]
    return _grade(signals, [e.signals for e in outcomes], policy)


def score_day(
    day: date, window: _Window, policy: ScoringPolicy, out_root: Path
) -> tuple[list[SealedFile], Tally, Counter[str]]:
    """Score the runs created on ``day`` and account for the evidence dated ``day``.

    Returns the day's files written but not yet in place; the caller puts every day's files in
    place only once all days are done, so a failure leaves no day half-updated. A run id seen
    more than once among the runs of the window (``day`` give or take
    ``evidence_window_days``) is a conflicting duplicate; review and outcome rows attach to the
    run with their run id anywhere in the window, in (created_at, evidence_id) order.
    """
    span = range(-policy.evidence_window_days, policy.evidence_window_days + 1)
    around = [window.get(day + timedelta(days=offset)) for offset in span]
    copies = Counter(chain.from_iterable(index.run_ids for index in around))
    evidence_maps = [index.evidence for index in around if index.evidence]
    run_file = layout.evidence_records(day)

    tally = Tally()
    qualities: Counter[str] = Counter()
    scored = AtomicJsonlWriter(out_root, layout.scored_runs(day))
    by_task = AtomicJsonlWriter(out_root, layout.scored_by_task(day))
    entries: list[list[Any]] = []
    quarantine = AtomicJsonlWriter(out_root, layout.scored_quarantine(day))
    try:
        for row in window.get(day).rows:
            tally.records_in += 1
            run_id = row.run_id
            count = copies.get(run_id, 0)
            if type(row) is _Run:
                if count > 1:
                    reasons = [C.R_CONFLICTING_DUPLICATE]
                    tally.leave_out(C.DISPOSITION_QUARANTINED, reasons)
                    quarantine.write_row(_quarantine_row(row, reasons, day))
                    continue
                evidence = [e for found in evidence_maps for e in found.get(run_id, ())]
                if len(evidence) > 1:
                    evidence.sort(key=_TIME_AND_ID)
                graded = _grade_evidence(evidence, policy)
                written = scored_row(row, graded, evidence, run_file)
                scored.write_row(written)
                entries.append(task_entry(written, evidence))
                tally.records_out += 1
                qualities[graded.quality] += 1
                if graded.quality == C.QUALITY_ACCEPTED:
                    tally.accepted += 1
                elif graded.quality == C.QUALITY_REJECTED:
                    tally.rejected += 1
                continue
            if count > 1:
                reasons = [C.R_CONFLICTING_DUPLICATE]
            elif count == 0:
                reasons = [C.R_ORPHAN_EVIDENCE]
            else:
                tally.records_out += 1
                continue
            tally.leave_out(C.DISPOSITION_QUARANTINED, reasons)
            quarantine.write_row(_quarantine_row(row, reasons, day))
        entries.sort()
        by_task.write_block(
            b"".join(orjson.dumps(entry) + b"\n" for entry in entries), len(entries)
        )
        return [scored.seal(), by_task.seal(), quarantine.seal()], tally, qualities
    except BaseException:
        scored.abort()
        by_task.abort()
        quarantine.abort()
        raise


@dataclass
class _Scored:
    """What scoring a run of consecutive days wrote (not yet in place) and counted."""

    sealed: list[SealedFile] = field(default_factory=list)
    tallies: dict[date, Tally] = field(default_factory=dict)
    qualities: Counter[str] = field(default_factory=Counter)
    inputs: dict[str, WrittenFile] = field(default_factory=dict)


def score_days(
    out_root: Path, days: list[date], policy: ScoringPolicy, report: bool = False
) -> _Scored:
    """Score ``days`` (sorted) with one sliding window: the unit of work of a worker process.

    ``report``: tick the stage's progress reporter after each day (in the step's process only).
    """
    window = _Window(out_root)
    done = _Scored()
    tick = progress.current() if report else progress.quiet()
    try:
        for day in days:
            window.evict_before(day - timedelta(days=policy.evidence_window_days))
            written, tally, day_qualities = score_day(day, window, policy, out_root)
            done.sealed.extend(written)
            done.tallies[day] = tally
            done.qualities.update(day_qualities)
            tick.advance(detail=f"{day.isoformat()}: {tally.records_in:,} records")
    except BaseException:
        for sealed in done.sealed:
            sealed.abort()
        raise
    done.inputs = window.inputs
    return done


def _chunks(days: list[date], count: int) -> list[list[date]]:
    """``days`` cut into ``count`` runs of consecutive days of nearly equal length."""
    size, extra = divmod(len(days), count)
    chunks, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        chunks.append(days[start:end])
        start = end
    return [chunk for chunk in chunks if chunk]


def score(
    out_root: Path,
    days: Iterable[date],
    policy: ScoringPolicy,
    workers: int = 1,
    pool_min_bytes: int = POOL_MIN_BYTES,
) -> StageResult:
    """Score every day in ``days``; the evidence index of the window around each must exist.

    With ``workers`` > 1 and at least ``pool_min_bytes`` of index, runs of consecutive days are
    scored in worker processes; each day's files are the same either way.
    """
    ordered = sorted(set(days))
    index_bytes = 0
    for day in ordered:
        path = out_root / layout.evidence_index(day)
        index_bytes += path.stat().st_size if path.exists() else 0
    count = min(workers, len(ordered) // max(1, 2 * policy.evidence_window_days + 1))
    parts: list[_Scored] = []
    tick = progress.current()
    tick.begin(len(ordered), "days")
    try:
        if count <= 1 or index_bytes < pool_min_bytes:
            parts.append(score_days(out_root, ordered, policy, report=True))
        else:
            with process_pool(count) as pool:
                futures = [
                    pool.submit(score_days, out_root, chunk, policy)
                    for chunk in _chunks(ordered, count)
                ]
                failure: BaseException | None = None
                for future in futures:
                    try:
                        parts.append(future.result())
                        tick.advance(len(parts[-1].tallies))
                    except BaseException as exc:  # the others' files are removed below
                        failure = failure or exc
                if failure is not None:
                    raise failure
        # every day is written: only now are the files put in place
        outputs = [sealed.commit() for part in parts for sealed in part.sealed]
    except BaseException:
        for part in parts:
            for sealed in part.sealed:
                sealed.abort()
        raise
    total = Tally()
    qualities: Counter[str] = Counter()
    inputs: dict[str, WrittenFile] = {}
    per_day: dict[str, dict[str, int]] = {}
    for part in parts:
        qualities.update(part.qualities)
        inputs.update(part.inputs)
        for day, tally in part.tallies.items():
            total.merge(tally)
            per_day[day.isoformat()] = {
                "records_in": tally.records_in,
                "records_out": tally.records_out,
                "quarantined": tally.quarantined,
                "skipped": tally.skipped,
            }
    result = StageResult(C.STAGE_SCORE, [], outputs, total)
    result.extra["rows"] = sum(qualities.values())
    result.inputs = sorted(inputs.values(), key=lambda f: f.path)
    result.errors.extend(conservation_errors(total))
    result.extra["quality"] = {q: qualities.get(q, 0) for q in C.QUALITIES}
    result.extra["per_partition"] = per_day
    result.partitions = [day.isoformat() for day in ordered]
    return result
