"""Stage ``score``: join each run with its reviews and outcomes and grade it by a policy.

The policy is a truth table (docs/scoring.md) over three kinds of signal: positive (approve,
success), partial (request_changes, partial outcome, a reward between the thresholds) and negative
(reject, failure); an error outcome or a positive/negative disagreement needs a human. Scoring
reads only the compact evidence index, never transcripts, and for day D looks at evidence dated
within ``evidence_window_days`` of D, since reviews and outcomes often arrive after their run.

``grade`` states the table for one run, as docs/scoring.md writes it. The stage applies the same
table to blocks of days at once, over columns: polars reads the index and joins each run to its
evidence, numpy evaluates the table (``_grade_runs``), and polars assembles the rows as text,
strings and floats written exactly as orjson writes them. No Python object is built per run,
which is what makes the stage cheap (docs/performance.md, "Score");
distill_tests/test_scoring_reference.py checks, byte for byte and under many policies, that the
files are those a row-by-row scorer built on ``grade`` and ``task_entry`` writes.

Length: the policy's truth table, the per-day windows and the vectorized grading of one stage;
split by phase they would pass a window's frames between modules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import orjson
import polars as pl

from distill_assets.lib import constants as C
from distill_assets.lib.infra import layout, progress
from distill_assets.lib.infra.io import AtomicJsonlWriter, SealedFile, WrittenFile
from distill_assets.lib.infra.parallel import process_pool
from distill_assets.lib.publishing.trace import scored_trace, write_scored_trace
from distill_assets.lib.records.accounting import StageResult, Tally, conservation_errors

ConflictPolicy = Literal["human_review", "review_wins", "outcome_wins"]
# below this many bytes of evidence index a second worker is not worth starting
POOL_MIN_BYTES = 16 * 1024 * 1024
# at most this many bytes of evidence index are scored in one pass (see score_block)
BLOCK_BYTES = 16 * 1024 * 1024


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
    """The mean of the values, added one at a time in signal order (then the extra values), and
    rounded to 6 places. Python's ``sum`` adds floats that way up to 3.11 but compensates from
    3.12 on; the explicit loop keeps the score the same on every version."""
    values = [s.value for s in chosen] + extra_values
    if not values:
        return 0.0
    total = 0.0
    for value in values:
        total += value
    return round(total / len(values), 6)


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


def task_entry(row: dict[str, Any], places: list[list[Any]] | None = None) -> list[Any]:
    """A scored row as the exports sort and merge it: task and place within the task first,
    so plain list comparison orders runs by task, then best first (quality, score, age, id);
    (run_file, run_offset) make every entry unique. Fields: task_id, -rank, -score,
    created_at, run_id, run_file, run_offset, quality, category, evidence_id (the run's),
    response_hash, response_empty, sft_eligible; a run to review has one more, what its queue
    row needs: [agent, reasons, the ids of its reviews and outcomes, where each is kept
    (``places``: [records file, offset] each, in the same order; null when not given)].

    The stage writes these entries from columns (``_by_task_lines``); this is their definition,
    and what the exports use on scored files written before ``runs_by_task.jsonl`` existed."""
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
        entry.append([row.get("agent"), row["reasons"], row["evidence_ids"][1:], places])
    return entry


# ---------------------------------------------------------------------------------------------
# The stage, a day at a time over columns.

# the index columns scoring reads, as polars reads them (``signals`` is added per policy)
_INDEX_COLUMNS: dict[str, Any] = {
    "evidence_id": pl.String,
    "kind": pl.String,
    "run_id": pl.String,
    "created_at": pl.String,
    "offset": pl.Int64,
    "task_id": pl.String,
    "category": pl.String,
    "agent": pl.String,
    "instruction_hash": pl.String,
    "response_hash": pl.String,
    "response_empty": pl.Boolean,
    "has_messages": pl.Boolean,
    "sft_eligible": pl.Boolean,
    "verdict": pl.String,
    "score": pl.Float64,
    "outcome": pl.String,
    "reward": pl.Float64,
}
_SIGNAL_KEYS = ["kind", "verdict", "score", "outcome", "reward"]

# a signal's source and polarity as small integers, its reason as one bit of a run's reason set
_SOURCES = {"review": 1, "outcome": 2}
_POLARITY = {POSITIVE: 1, PARTIAL: 2, NEGATIVE: 4, ERROR: 8}
_POS, _PART, _NEG, _ERR = (_POLARITY[p] for p in (POSITIVE, PARTIAL, NEGATIVE, ERROR))
_REASONS = (
    C.R_APPROVED,
    C.R_CHANGES_REQUESTED,
    C.R_REJECTED_BY_REVIEW,
    C.R_SUCCESS,
    C.R_PARTIAL_REWARD,
    C.R_PARTIAL_OUTCOME,
    C.R_FAILED,
    C.R_OUTCOME_ERROR,
    C.R_NO_EVIDENCE,
    C.R_INCOMPLETE,
    C.R_CONFLICTING_EVIDENCE,
    C.R_OVERRULED,
    C.R_OUTCOME_ONLY,
    C.R_BELOW_ACCEPT_SCORE,
)
_BIT = {reason: 1 << i for i, reason in enumerate(_REASONS)}
# a grade's quality as an index into C.QUALITIES
_ACCEPTED, _PARTIAL, _REJECTED, _REVIEW = (
    C.QUALITIES.index(q)
    for q in (C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL, C.QUALITY_REJECTED, C.QUALITY_REVIEW)
)
_RANK = np.array([C.QUALITY_RANK.get(q, -1) for q in C.QUALITIES])
_QUALITY_JSON = pl.Series([orjson.dumps(q).decode() for q in C.QUALITIES])
# lines are joined and written this many at a time: a day's megabytes joined at once would be
# copied into freshly mapped pages, which costs more than joining them
_LINES_PER_WRITE = 512


def _json(expr: pl.Expr) -> pl.Expr:
    """``expr``'s values as JSON text, as orjson writes them: polars' JSON writer escapes
    strings as orjson does (test_scoring_reference.py checks every code point)."""
    encoded = pl.struct(expr.alias("v")).struct.json_encode()
    return encoded.str.strip_prefix('{"v":').str.strip_suffix("}")


def _json_text(column: str, plain: bool) -> pl.Expr:
    """A string column's values as JSON text. ``plain``: the index file they come from has no
    backslash, so none of its strings holds a character JSON escapes (a quote, a backslash, a
    control character) and each one's JSON is itself in quotes, which is much cheaper."""
    if plain:
        return pl.concat_str(pl.lit('"'), pl.col(column), pl.lit('"')).fill_null("null")
    return _json(pl.col(column))


def _number_text(expr: pl.Expr) -> pl.Expr:
    """Numbers and booleans as JSON text: polars prints floats with the shortest digits that
    read back, as orjson does for every score in -1..1 (test_scoring_reference.py checks each
    one; far outside, polars 1.30 writes ``1e16`` where orjson writes ``1e+16``)."""
    return expr.cast(pl.String)


def _members(fields: list[tuple[str, pl.Expr]]) -> list[pl.Expr]:
    """The pieces (for ``pl.concat_str``) of a JSON object's members from the JSON text of their
    values, comma-separated; of an array's elements when the names are empty."""
    parts: list[pl.Expr] = []
    for i, (name, value) in enumerate(fields):
        key = orjson.dumps(name).decode() + ":" if name else ""
        parts += [pl.lit(("," if i else "") + key), value]
    return parts


def _signal_names(policy: ScoringPolicy) -> list[str]:
    """The outcome signals scoring reads: ``incomplete`` and the policy's, in name order."""
    return sorted({"incomplete", *policy.score_signals})


@dataclass
class _DayIndex:
    """One day of the evidence index, read natively: its runs and its other rows (reviews and
    outcomes), each with its line number (``row``); ``plain``: no string in the file needs
    escaping (see ``_json_text``)."""

    rows: int
    plain: bool
    runs: pl.DataFrame
    evidence: pl.DataFrame

    @classmethod
    def load(cls, path: Path | None, policy: ScoringPolicy) -> _DayIndex:
        names = _signal_names(policy)
        schema = {**_INDEX_COLUMNS, "signals": pl.Struct({n: pl.Float64 for n in names})}
        data = path.read_bytes() if path else b""
        plain = b"\\" not in data
        rows = pl.read_ndjson(data, schema=schema).with_row_index("row")
        is_run = pl.col("kind") == C.KIND_RUN
        runs = rows.filter(is_run).select(
            "row", "evidence_id", "kind", "run_id", "created_at", "offset", "task_id",
            "category", "agent", "instruction_hash", "response_hash",
            # what a scored row says: bool(response_empty), bool(has_messages), and
            # sft_eligible unless it is false
            pl.col("response_empty").fill_null(False),
            pl.col("has_messages").fill_null(False),
            pl.col("sft_eligible").fill_null(True),
        )  # fmt: skip
        evidence = rows.filter(~is_run).select(
            "row", "evidence_id", "kind", "run_id", "created_at", "offset", "signals",
            "verdict", "outcome",
            *(pl.col(key) + 0.0 for key in ("score", "reward")),  # -0.0 is 0.0 as a join key
        )  # fmt: skip
        return cls(runs.height + evidence.height, plain, runs, evidence)


def _with_signals(evidence: pl.DataFrame, policy: ScoringPolicy) -> pl.DataFrame:
    """Add each review's and outcome's signal (source, polarity, value, reason bit), whether it
    flags the run incomplete, and its values of the policy's ``score_signals`` (``extra_<i>``,
    null when absent or outside 0..1). The signal comes from ``_review_signal`` and
    ``_outcome_signal`` themselves, called once per distinct (kind, verdict, score, outcome,
    reward) and joined back."""
    keys = evidence.select(_SIGNAL_KEYS).unique()
    table = []
    for kind, verdict, given, outcome, reward in keys.iter_rows():
        if kind == C.KIND_REVIEW:
            signal: Signal | None = _review_signal(verdict, given)
        elif kind == C.KIND_OUTCOME:
            signal = _outcome_signal(outcome, reward, policy)
        else:
            signal = None  # another kind is attached to its run but says nothing about it
        if signal is None:
            table.append((0, 0, 0.0, 0))
        else:
            source, polarity = _SOURCES[signal.source], _POLARITY[signal.polarity]
            table.append((source, polarity, signal.value, _BIT[signal.reason]))
    source, polarity, value, reason = zip(*table, strict=True) if table else ((),) * 4
    signals = keys.with_columns(
        source=pl.Series(source, dtype=pl.Int8),
        polarity=pl.Series(polarity, dtype=pl.Int64),
        value=pl.Series(value, dtype=pl.Float64),
        reason=pl.Series(reason, dtype=pl.Int64),
    )
    named = pl.col("signals").struct.field
    is_outcome = pl.col("kind") == C.KIND_OUTCOME
    flags_incomplete = is_outcome & (named("incomplete").fill_null(0.0) != 0.0)
    extras = {
        f"extra_{i}": pl.when(is_outcome & named(name).is_between(0.0, 1.0)).then(named(name))
        for i, name in enumerate(sorted(set(policy.score_signals)))
    }
    joined = evidence.join(
        signals, on=_SIGNAL_KEYS, how="left", nulls_equal=True, maintain_order="left"
    )
    incomplete = flags_incomplete & pl.lit(policy.incomplete_outcome_needs_review)
    return joined.with_columns(incomplete=incomplete, **extras).drop(
        "signals", "verdict", "score", "outcome", "reward"
    )


@dataclass
class _Window:
    """The index days around the ones being scored, each loaded once and dropped once passed."""

    out_root: Path
    policy: ScoringPolicy
    days: dict[date, _DayIndex] = field(default_factory=dict)
    inputs: dict[str, WrittenFile] = field(default_factory=dict)

    def get(self, day: date) -> _DayIndex:
        found = self.days.get(day)
        if found is None:
            relpath = layout.evidence_index(day)
            path = self.out_root / relpath
            exists = path.exists()
            found = self.days[day] = _DayIndex.load(path if exists else None, self.policy)
            if exists:
                self.inputs[relpath] = WrittenFile(relpath, "", 0, found.rows)
        return found

    def evict_before(self, day: date) -> None:
        for old in [d for d in self.days if d < day]:
            del self.days[old]


class _Graded(NamedTuple):
    """The grades of a block's scored runs, as columns: quality (an index into C.QUALITIES),
    score, and the reason set as a bit mask over _REASONS."""

    quality: np.ndarray
    score: np.ndarray
    reasons: np.ndarray


def _sums_in_order(run: np.ndarray, value: np.ndarray, n_runs: int) -> np.ndarray:
    """Per run, ``total += value`` over its values in the order given (``run`` sorted, each run's
    values in order). numpy's reductions add pairwise, which can differ in the last bit and so,
    after rounding, in the score; adding the k-th value of every run at once is exact."""
    totals = np.zeros(n_runs)
    if not len(run):
        return totals
    counts = np.bincount(run, minlength=n_runs)
    place = np.arange(len(run)) - (np.cumsum(counts) - counts)[run]
    order = np.argsort(place, kind="stable")
    bounds = np.searchsorted(place[order], np.arange(place.max() + 2))
    for k in range(place.max() + 1):
        chosen = order[bounds[k] : bounds[k + 1]]
        totals[run[chosen]] += value[chosen]  # one value per run: an elementwise addition
    return totals


def _rounded_means(totals: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``round(total / count, 6)`` by Python's own ``round`` (correctly rounded, which no numpy
    rounding is), once per distinct mean; 0.0 for no values."""
    means = np.divide(totals, counts, out=np.zeros_like(totals), where=counts > 0)
    distinct, which = np.unique(means, return_inverse=True)
    return np.array([round(mean, 6) for mean in distinct.tolist()])[which].reshape(means.shape)


class _BySource(NamedTuple):
    """Per run and per source ("review", "outcome"): the polarities and reasons of its signals
    (bit masks) and how many it has."""

    polarity: dict[str, np.ndarray]
    reasons: dict[str, np.ndarray]
    count: dict[str, np.ndarray]


def _by_source(n_runs: int, attached: pl.DataFrame) -> _BySource:
    run = attached["ri"].to_numpy()
    source = attached["source"].to_numpy()
    polarity = attached["polarity"].to_numpy()
    reason = attached["reason"].to_numpy()
    found = _BySource({}, {}, {})
    for name, code in _SOURCES.items():
        chosen = source == code
        for bits, into in ((polarity, found.polarity), (reason, found.reasons)):
            out = np.zeros(n_runs, dtype=np.int64)
            np.bitwise_or.at(out, run[chosen], bits[chosen])
            into[name] = out
        found.count[name] = np.bincount(run[chosen], minlength=n_runs)
    return found


class _Terms:
    """The values each score averages, in order: reviews, outcomes, then the outcomes' named
    signals (outcome by outcome, names sorted); ``group`` 0, 1, 2 orders the three."""

    def __init__(self, n_runs: int, attached: pl.DataFrame) -> None:
        run = attached["ri"].to_numpy()
        source = attached["source"].to_numpy()
        value = attached["value"].to_numpy()
        is_review, is_outcome = source == _SOURCES["review"], source == _SOURCES["outcome"]
        rows = np.arange(len(run))
        parts = [
            (rows[is_review], 0, 0, value[is_review]),
            (rows[is_outcome], 1, 0, value[is_outcome]),
        ]
        extras = [c for c in attached.columns if c.startswith("extra_")]
        for i, name in enumerate(extras):
            named = attached[name].to_numpy()
            present = ~np.isnan(named)
            parts.append((rows[present], 2, i, named[present]))
        term_row = np.concatenate([p[0] for p in parts])
        term_group = np.concatenate([np.full(len(p[0]), p[1]) for p in parts])
        term_name = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
        term_value = np.concatenate([p[3] for p in parts])
        term_run = run[term_row]
        order = np.lexsort((term_name, term_row, term_group, term_run))
        self.n_runs = n_runs
        self.run, self.group, self.value = term_run[order], term_group[order], term_value[order]

    def mean_of(self, groups: tuple[int, ...]) -> np.ndarray:
        """Each run's score over the terms of ``groups``."""
        chosen = np.isin(self.group, groups)
        totals = _sums_in_order(self.run[chosen], self.value[chosen], self.n_runs)
        return _rounded_means(totals, np.bincount(self.run[chosen], minlength=self.n_runs))


def _grade_runs(n_runs: int, attached: pl.DataFrame, policy: ScoringPolicy) -> _Graded:
    """``_grade`` for every run of a block at once. ``attached`` holds the runs' reviews and
    outcomes with their signals (``_with_signals``), ordered by run (``ri``) and then as the run
    lists them."""
    polarity_of, reasons_of, count_of = _by_source(n_runs, attached)
    run = attached["ri"].to_numpy()
    incomplete = np.bincount(run[attached["incomplete"].to_numpy()], minlength=n_runs) > 0
    terms = _Terms(n_runs, attached)
    polarity_all = polarity_of["review"] | polarity_of["outcome"]
    reasons_all = reasons_of["review"] | reasons_of["outcome"]
    score_all = terms.mean_of((0, 1, 2))
    conflict = ((polarity_all & _POS) > 0) & ((polarity_all & _NEG) > 0)
    if policy.conflict_policy == "human_review":
        winner = None
        use_kept = np.zeros(n_runs, dtype=bool)
    else:
        winner = "review" if policy.conflict_policy == "review_wins" else "outcome"
        kept_polarity = polarity_of[winner]
        kept_conflict = ((kept_polarity & _POS) > 0) & ((kept_polarity & _NEG) > 0)
        use_kept = conflict & (count_of[winner] > 0) & ~kept_conflict

    # the signals rules 6-10 grade: the winner's when rule 5 settled a conflict, else all
    if winner is None:
        polarity, reasons, score = polarity_all, reasons_all, score_all
        has_review = count_of["review"] > 0
    else:
        polarity = np.where(use_kept, polarity_of[winner], polarity_all)
        reasons = np.where(use_kept, reasons_of[winner], reasons_all)
        score = np.where(use_kept, terms.mean_of((_SOURCES[winner] - 1, 2)), score_all)
        has_review = np.where(use_kept, winner == "review", count_of["review"] > 0)
    negative, partial = (polarity & _NEG) > 0, (polarity & _PART) > 0
    outcome_only = policy.require_review & ~has_review
    below = score < policy.accept_min_score
    agreeing = [negative, partial, outcome_only, below]
    quality = np.select(agreeing, [_REJECTED, _PARTIAL, _REVIEW, _PARTIAL], _ACCEPTED)
    added = np.select(agreeing, [0, 0, _BIT[C.R_OUTCOME_ONLY], _BIT[C.R_BELOW_ACCEPT_SCORE]], 0)
    reasons = reasons | added | np.where(use_kept, _BIT[C.R_OVERRULED], 0)

    # rules 1-5, which come first
    n_signals = count_of["review"] + count_of["outcome"]
    first = [n_signals == 0, incomplete, (polarity_all & _ERR) > 0, conflict & ~use_kept]
    return _Graded(
        np.select(first, [_REVIEW] * 4, quality),
        np.select(first, [0.0, score_all, score_all, score_all], score),
        np.select(
            first,
            [
                _BIT[C.R_NO_EVIDENCE],
                reasons_all | _BIT[C.R_INCOMPLETE],
                reasons_all,
                reasons_all | _BIT[C.R_CONFLICTING_EVIDENCE],
            ],
            reasons,
        ),
    )


def _reasons_json(masks: np.ndarray) -> pl.Series:
    """Each run's reason set (a mask over _REASONS) as the JSON of its sorted list, written by
    orjson once per distinct set."""
    distinct, which = np.unique(masks, return_inverse=True)
    texts = [orjson.dumps(sorted(r for r in _REASONS if int(m) & _BIT[r])) for m in distinct]
    return pl.Series([text.decode() for text in texts]).gather(which.reshape(masks.shape))


def _scored_lines(runs: pl.DataFrame, plain: bool) -> pl.Series:
    """The scored_runs.jsonl lines of ``runs``, in their order."""

    def text(column: str) -> pl.Expr:
        return _json_text(column, plain)

    row = _members(
        [
            ("run_id", text("run_id")),
            ("task_id", text("task_id")),
            ("quality_score", pl.col("quality_json")),
            ("score", _number_text(pl.col("score"))),
            ("reasons", pl.col("reasons_json")),
            ("evidence_ids", pl.concat_str(pl.lit("["), text("evidence_id"), "ids", pl.lit("]"))),
            ("created_at", text("created_at")),
            ("category", text("category")),
            ("agent", text("agent")),
            ("run_file", pl.col("run_file")),
            ("run_offset", _number_text(pl.col("offset"))),
            ("instruction_hash", text("instruction_hash")),
            ("response_hash", text("response_hash")),
            ("response_empty", _number_text(pl.col("response_empty"))),
            ("has_messages", _number_text(pl.col("has_messages"))),
            ("sft_eligible", _number_text(pl.col("sft_eligible"))),
            ("n_reviews", _number_text(pl.col("n_reviews"))),
            ("n_outcomes", _number_text(pl.col("n_outcomes"))),
        ]
    )
    return runs.select(pl.concat_str(pl.lit("{"), *row, pl.lit("}\n")))[:, 0]


def _by_task_lines(runs: pl.DataFrame, plain: bool) -> pl.Series:
    """``task_entry`` of each scored run as a JSON line, sorted by day and then as lists compare:
    by task, then best first. (run_file, run_offset) never decide: run ids are unique among a
    day's scored runs."""

    def text(column: str) -> pl.Expr:
        return _json_text(column, plain)

    entry = _members(
        [
            ("", text("task_id")),
            ("", _number_text(-pl.col("rank"))),
            ("", _number_text(-pl.col("score"))),
            ("", text("created_at")),
            ("", text("run_id")),
            ("", pl.col("run_file")),
            ("", _number_text(pl.col("offset"))),
            ("", pl.col("quality_json")),
            ("", text("category")),
            ("", text("evidence_id")),
            ("", text("response_hash")),
            ("", _number_text(pl.col("response_empty"))),
            ("", _number_text(pl.col("sft_eligible"))),
        ]
    )
    # a run to review carries what its queue row needs (see task_entry)
    to_review = _members(
        [
            ("", text("agent")),
            ("", pl.col("reasons_json")),
            ("", pl.concat_str(pl.lit("["), pl.col("ids").str.slice(1), pl.lit("]"))),
            ("", pl.concat_str(pl.lit("["), pl.col("places").str.slice(1), pl.lit("]"))),
        ]
    )
    keys = ["day", "task_id", "rank", "score", "created_at", "run_id"]
    ordered = runs.sort(keys, descending=[False, False, True, True, False, False])
    review = ordered.filter(pl.col("quality") == _REVIEW).select(
        "ri", review=pl.concat_str(pl.lit(",["), *to_review, pl.lit("]"))
    )
    line = pl.concat_str(pl.lit("["), *entry, pl.col("review").fill_null(""), pl.lit("]\n"))
    joined = ordered.join(review, on="ri", how="left", maintain_order="left")
    return joined.select(line)[:, 0]


def _write_lines(writer: AtomicJsonlWriter, lines: pl.Series) -> None:
    """Write newline-terminated lines, joined _LINES_PER_WRITE at a time."""
    for start in range(0, len(lines), _LINES_PER_WRITE):
        part = lines.slice(start, _LINES_PER_WRITE)
        writer.write_block(part.str.join("").cast(pl.Binary).item(), len(part))


def _quarantine_line(row: tuple[Any, ...], day: date) -> tuple[list[str], bytes]:
    """A quarantined index row ``(row, evidence_id, kind, run_id, copies)`` (``copies``: the runs
    with its run id in its window, none or several): its reasons and its quarantine.jsonl line."""
    _, evidence_id, kind, run_id, copies = row
    reasons = [C.R_CONFLICTING_DUPLICATE if copies > 1 else C.R_ORPHAN_EVIDENCE]
    line = {
        "stage": C.STAGE_SCORE,
        "disposition": C.DISPOSITION_QUARANTINED,
        "reasons": reasons,
        "evidence_id": evidence_id,
        "kind": kind,
        "run_id": run_id,
        "evidence_day": day.isoformat(),
    }
    return reasons, orjson.dumps(line) + b"\n"


def _tagged(day: date, frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(day=pl.lit(day.toordinal(), pl.Int32))


def _is_near(reach: int) -> pl.Expr:
    """Whether a row's day lies within ``reach`` days of its run's (``run_day``)."""
    return (pl.col("day") - pl.col("run_day")).abs() <= reach


def _with_copies(rows: pl.DataFrame, window_runs: pl.DataFrame, reach: int) -> pl.DataFrame:
    """``rows`` and how many runs with their run id lie within their day's window
    (``window_runs``: how many runs each run id has on each day)."""
    found = (
        rows.select("day", "row", "run_id")
        .join(window_runs.rename({"day": "run_day"}), on="run_id")
        .filter(_is_near(reach))
        .group_by("day", "row")
        .agg(copies=pl.col("runs").sum())
    )
    joined = rows.join(found, on=["day", "row"], how="left", maintain_order="left")
    return joined.with_columns(pl.col("copies").fill_null(0))


def _left_out(
    block: list[date], indexes: dict[date, _DayIndex], rows: pl.DataFrame
) -> tuple[dict[date, Tally], dict[date, list[bytes]]]:
    """Each day's tally and quarantine lines, with the ``rows`` left out (sorted by day and
    row) accounted for."""
    tallies = {day: Tally(records_in=indexes[day].rows) for day in block}
    quarantine_lines: dict[date, list[bytes]] = {day: [] for day in block}
    for number, *row in rows.iter_rows():
        day = date.fromordinal(number)
        reasons, line = _quarantine_line(tuple(row), day)
        tallies[day].leave_out(C.DISPOSITION_QUARANTINED, reasons)
        quarantine_lines[day].append(line)
    return tallies, quarantine_lines


def _with_grades(
    runs: pl.DataFrame, attached: pl.DataFrame, graded: _Graded, near: dict[date, _DayIndex]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The scored runs with their grades and what their rows list of the evidence attached to
    them (``near``: the indexes of the block's window), and the attached evidence with its
    ids and places as the JSON the run's rows carry: ",<id>" and ",[<records file>,<offset>]"."""
    near_plain = all(index.plain for index in near.values())
    records = {d.toordinal(): orjson.dumps(layout.evidence_records(d)).decode() for d in near}
    attached = attached.with_columns(
        id_json=pl.concat_str(pl.lit(","), _json_text("evidence_id", near_plain)),
        place_json=pl.concat_str(
            pl.lit(",["), pl.col("day").replace_strict(records), pl.lit(","), "offset", pl.lit("]")
        ),
    )
    by_run = (
        attached.group_by("ri", maintain_order=True)
        .agg("id_json", "place_json", n_reviews=(pl.col("kind") == C.KIND_REVIEW).sum(), n=pl.len())
        .select(
            "ri",
            ids=pl.col("id_json").list.join(""),
            places=pl.col("place_json").list.join(""),
            n_reviews=pl.col("n_reviews").cast(pl.Int64),
            n_outcomes=(pl.col("n") - pl.col("n_reviews")).cast(pl.Int64),
        )
    )
    runs = runs.join(by_run, on="ri", how="left", maintain_order="left").with_columns(
        pl.col("ids", "places").fill_null(""),
        pl.col("n_reviews", "n_outcomes").fill_null(0),
        quality=pl.Series(graded.quality),
        quality_json=_QUALITY_JSON.gather(graded.quality),
        rank=pl.Series(_RANK[graded.quality]),
        score=pl.Series(graded.score),
        reasons_json=_reasons_json(graded.reasons),
    )
    return runs, attached


def score_block(
    block: list[date], window: _Window, policy: ScoringPolicy, out_root: Path
) -> tuple[list[SealedFile], dict[date, Tally], Counter[str], Counter[str]]:
    """Score the runs created on the days of ``block`` and account for the evidence dated on
    them, in one pass over columns: each polars step costs a fixed tenth of a millisecond or so
    beside its rows, which a block of small days shares.

    Returns each day's files written but not yet in place; the caller puts every day's files in
    place only once all days are done, so a failure leaves no day half-updated. A run id seen
    more than once among the runs of a day's window (the day give or take
    ``evidence_window_days``) is a conflicting duplicate; review and outcome rows attach to the
    run with their run id anywhere in its window, in (created_at, evidence_id) order.
    """
    reach = policy.evidence_window_days
    near = sorted({day + timedelta(days=k) for day in block for k in range(-reach, reach + 1)})
    indexes = {day: window.get(day) for day in near}
    # how many runs each run id has on each day (so a join stays as small as its rows even when
    # thousands of runs share an id)
    window_runs = (
        pl.concat([_tagged(d, indexes[d].runs.select("run_id")) for d in near])
        .group_by("run_id", "day")
        .agg(runs=pl.len())
    )
    evidence = pl.concat([_tagged(d, indexes[d].evidence) for d in near]).with_row_index("ei")
    runs = pl.concat(
        _tagged(d, indexes[d].runs).with_columns(
            run_file=pl.lit(orjson.dumps(layout.evidence_records(d)).decode())
        )
        for d in block
    )

    # a run whose id another run of its window shares, a review or outcome naming no run or
    # several: left out, in the order of each day's index
    runs = _with_copies(runs, window_runs, reach)
    in_block = pl.col("day").is_between(block[0].toordinal(), block[-1].toordinal())
    columns = ["day", "row", "evidence_id", "kind", "run_id", "copies"]
    in_window = _with_copies(evidence.filter(in_block), window_runs, reach)
    left_out = pl.concat(
        [
            runs.filter(pl.col("copies") > 1).select(columns),
            in_window.filter(pl.col("copies") != 1).select(columns),
        ]
    ).sort("day", "row")
    tallies, quarantine_lines = _left_out(block, indexes, left_out)

    # every other run is scored with the reviews and outcomes of its window that name it
    runs = runs.filter(pl.col("copies") == 1).with_row_index("ri")
    attached = (
        evidence.join(
            runs.select("run_id", "ri", run_day="day"), on="run_id", maintain_order="left"
        )
        .filter(_is_near(reach))
        .sort(["ri", "created_at", "evidence_id", "ei"])
    )
    graded = _grade_runs(runs.height, _with_signals(attached, policy), policy)
    runs, attached = _with_grades(runs, attached, graded, indexes)

    # each day's runs are a stretch of the scored lines (in index order) and of the entries
    # (by day, then task)
    plain = all(indexes[day].plain for day in block)
    scored_lines, by_task_lines = _scored_lines(runs, plain), _by_task_lines(runs, plain)
    traced = scored_trace(runs, attached)
    day_of_run = runs["day"].to_numpy() - block[0].toordinal()
    per_day = np.zeros((len(block), len(C.QUALITIES)), dtype=np.int64)
    np.add.at(per_day, (day_of_run, graded.quality), 1)
    sealed: list[SealedFile] = []
    writers: list[AtomicJsonlWriter] = []
    try:
        start = 0
        for i, day in enumerate(block):
            stretch = slice(start, start + int(per_day[i].sum()))
            start = stretch.stop
            scored = AtomicJsonlWriter(out_root, layout.scored_runs(day))
            by_task = AtomicJsonlWriter(out_root, layout.scored_by_task(day))
            quarantine = AtomicJsonlWriter(out_root, layout.scored_quarantine(day))
            writers += [scored, by_task, quarantine]
            _write_lines(scored, scored_lines[stretch])
            _write_lines(by_task, by_task_lines[stretch])
            quarantine.write_block(b"".join(quarantine_lines[day]), len(quarantine_lines[day]))
            sealed += [scored.seal(), by_task.seal(), quarantine.seal()]
            sha256 = sealed[-3].written.sha256
            write_scored_trace(out_root, day, traced[stretch], scored_lines[stretch], sha256)
            tally = tallies[day]
            tally.records_out = tally.records_in - tally.quarantined
            tally.accepted = int(per_day[i, _ACCEPTED])
            tally.rejected = int(per_day[i, _REJECTED])
    except BaseException:
        for writer in writers:
            writer.abort()
        for done in sealed:
            done.abort()
        raise
    counts = per_day.sum(axis=0)
    # the category mix of the scored runs (drift judges its swings): one native group-by
    categories = runs.group_by(pl.col("category").fill_null(C.NO_CATEGORY)).len()
    return (
        sealed,
        tallies,
        Counter({q: int(n) for q, n in zip(C.QUALITIES, counts, strict=True) if n}),
        Counter(dict(categories.iter_rows())),
    )


@dataclass
class _Scored:
    """What scoring a run of consecutive days wrote (not yet in place) and counted."""

    sealed: list[SealedFile] = field(default_factory=list)
    tallies: dict[date, Tally] = field(default_factory=dict)
    qualities: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    inputs: dict[str, WrittenFile] = field(default_factory=dict)


def score_days(
    out_root: Path, days: list[date], policy: ScoringPolicy, report: bool = False
) -> _Scored:
    """Score ``days`` (sorted) with one sliding window: the unit of work of a worker.

    ``report``: tick the stage's progress reporter after each day (in the step's thread only).
    """
    window = _Window(out_root, policy)
    done = _Scored()
    tick = progress.current() if report else progress.quiet()
    try:
        for block in _blocks(out_root, days, BLOCK_BYTES):
            window.evict_before(block[0] - timedelta(days=policy.evidence_window_days))
            written, tallies, block_qualities, block_categories = score_block(
                block, window, policy, out_root
            )
            done.sealed.extend(written)
            done.tallies.update(tallies)
            done.qualities.update(block_qualities)
            done.categories.update(block_categories)
            for day, tally in tallies.items():
                tick.advance(detail=f"{day.isoformat()}: {tally.records_in:,} records")
    except BaseException:
        for sealed in done.sealed:
            sealed.abort()
        raise
    done.inputs = window.inputs
    return done


def _blocks(out_root: Path, days: list[date], limit: int) -> list[list[date]]:
    """``days`` (sorted) cut into blocks of at most ``limit`` bytes of index (at least a day)."""
    blocks: list[list[date]] = []
    size = 0
    for day in days:
        path = out_root / layout.evidence_index(day)
        day_bytes = path.stat().st_size if path.exists() else 0
        if blocks and size + day_bytes <= limit:
            blocks[-1].append(day)
            size += day_bytes
        else:
            blocks.append([day])
            size = day_bytes
    return blocks


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
    scored in worker processes (forked from a fork server once this process has polars, whose
    thread pool does not survive a fork), which also take the memory of their windows with
    them when they end. Each day's files are the same either way.
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
    categories: Counter[str] = Counter()
    inputs: dict[str, WrittenFile] = {}
    per_day: dict[str, dict[str, int]] = {}
    for part in parts:
        qualities.update(part.qualities)
        categories.update(part.categories)
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
    result.extra["categories"] = dict(sorted(categories.items()))
    result.extra["per_partition"] = per_day
    result.partitions = [day.isoformat() for day in ordered]
    return result
