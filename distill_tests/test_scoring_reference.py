"""The score stage writes, byte for byte, what a plain row-by-row scorer writes.

``lib/scoring.score`` grades a day at a time over columns (polars, numpy) and writes its lines
with polars. The reference here reads the same index with orjson and builds every row in Python
from the readable definitions: ``grade`` (the truth table of docs/scoring.md), ``task_entry`` and
the row layouts of docs/scoring.md, as the stage did before it went columnar. Both must write
the same bytes and count the same, on a synthetic corpus (orphans, conflicting duplicates) and on
a hand-made index with the awkward cases (strings JSON escapes, ties, unknown kinds, integer and
negative-zero values, many signals, missing days and fields), under every policy below.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from distill_assets.devtools.synth import SynthSpec, synthesize
from distill_assets.lib import constants as C
from distill_assets.lib import scoring
from distill_assets.lib.evidence.collect import collect, list_source_files
from distill_assets.lib.evidence.format import ParseSettings
from distill_assets.lib.infra import layout
from distill_assets.lib.scoring import ScoringPolicy, grade, score, task_entry

POLICIES = {
    "default": ScoringPolicy(),
    "review_wins": ScoringPolicy(conflict_policy="review_wins"),
    "outcome_wins": ScoringPolicy(conflict_policy="outcome_wins"),
    "require_review": ScoringPolicy(require_review=True),
    "r_actions": ScoringPolicy(score_signals=("r_actions",)),
    "window_0": ScoringPolicy(evidence_window_days=0),
    "window_5": ScoringPolicy(evidence_window_days=5),
    "mixed": ScoringPolicy(
        conflict_policy="outcome_wins",
        require_review=True,
        score_signals=("r_format", "r_actions", "incomplete", "z_last"),
        incomplete_outcome_needs_review=False,
        accept_min_score=0.9,
        reward_success_min=0.8,
        reward_failure_max=0.3,
        evidence_window_days=1,
    ),
    "lenient": ScoringPolicy(
        conflict_policy="review_wins",
        score_signals=("a_first", "r_actions"),
        accept_min_score=0.5,
        reward_success_min=0.5,
        reward_failure_max=0.2,
    ),
}


# --- the reference: the stage row by row ------------------------------------------------------


class _Index:
    """The evidence index read row by row with orjson, a day at a time on first use."""

    def __init__(self, out_root: Path) -> None:
        self.out_root = out_root
        self.index: dict[date, list[dict[str, Any]]] = {}
        self.named: dict[date, dict[str, list[dict[str, Any]]]] = {}  # evidence by run id

    def rows_of(self, day: date) -> list[dict[str, Any]]:
        if day not in self.index:
            path = self.out_root / layout.evidence_index(day)
            lines = path.read_bytes().splitlines() if path.exists() else []
            self.index[day] = [orjson.loads(raw) for raw in lines if raw.strip()]
            self.named[day] = {}
            for row in self.index[day]:
                if row["kind"] != "run":
                    self.named[day].setdefault(row["run_id"], []).append(row)
        return self.index[day]

    def evidence_of(self, day: date, run_id: str) -> list[dict[str, Any]]:
        self.rows_of(day)
        return self.named[day].get(run_id, [])


def _reference(out_root: Path, days: list[date], policy: ScoringPolicy) -> dict[str, Any]:
    """Every file the stage writes (path -> bytes) and its accounting, computed row by row."""
    read = _Index(out_root)
    rows_of, evidence_of = read.rows_of, read.evidence_of
    files: dict[str, bytes] = {}
    totals: dict[str, Any] = {"reasons": Counter(), "quality": Counter(), "per_partition": {}}
    inputs = set()
    for day in sorted(set(days)):
        span = range(-policy.evidence_window_days, policy.evidence_window_days + 1)
        around = [day + timedelta(days=offset) for offset in span]
        for other in around:
            if (out_root / layout.evidence_index(other)).exists():
                inputs.add((layout.evidence_index(other), len(rows_of(other))))
        copies = Counter(
            row["run_id"] for other in around for row in rows_of(other) if row["kind"] == "run"
        )
        run_file = layout.evidence_records(day)
        scored, entries, quarantine = [], [], []
        counts = {"records_in": 0, "records_out": 0, "quarantined": 0, "skipped": 0}
        for row in rows_of(day):
            counts["records_in"] += 1
            count = copies.get(row["run_id"], 0)
            if row["kind"] == "run" and count == 1:
                scored_row, places = _scored(row, around, evidence_of, policy, run_file)
                scored.append(scored_row)
                entries.append(task_entry(scored_row, places))
                totals["quality"][scored_row["quality_score"]] += 1
            if count == 1:
                counts["records_out"] += 1
                continue
            reason = C.R_CONFLICTING_DUPLICATE if count > 1 else C.R_ORPHAN_EVIDENCE
            counts["quarantined"] += 1
            totals["reasons"][reason] += 1
            quarantine.append(
                {
                    "stage": C.STAGE_SCORE,
                    "disposition": C.DISPOSITION_QUARANTINED,
                    "reasons": [reason],
                    "evidence_id": row["evidence_id"],
                    "kind": row["kind"],
                    "run_id": row["run_id"],
                    "evidence_day": day.isoformat(),
                }
            )
        entries.sort()
        for relpath, rows in (
            (layout.scored_runs(day), scored),
            (layout.scored_by_task(day), entries),
            (layout.scored_quarantine(day), quarantine),
        ):
            files[relpath] = b"".join(orjson.dumps(row) + b"\n" for row in rows)
        totals["per_partition"][day.isoformat()] = counts
    totals["inputs"] = sorted(inputs)
    totals["files"] = files
    return totals


def _scored(
    run: dict[str, Any], around: list[date], evidence_of: Any, policy: ScoringPolicy, run_file: str
) -> tuple[dict[str, Any], list[list[Any]]]:
    """A scored row of docs/scoring.md, and where its reviews and outcomes are kept."""
    attached = [
        (row["created_at"], row["evidence_id"], layout.evidence_records(other), row)
        for other in around
        for row in evidence_of(other, run["run_id"])
    ]
    attached.sort(key=lambda item: (item[0], item[1]))  # stable: window order breaks ties
    evidence = [item[3] for item in attached]
    reviews = [e for e in evidence if e["kind"] == C.KIND_REVIEW]
    outcomes = [e for e in evidence if e["kind"] == C.KIND_OUTCOME]
    graded = grade(reviews, outcomes, policy)
    row = {
        "run_id": run["run_id"],
        "task_id": run["task_id"],
        "quality_score": graded.quality,
        "score": graded.score,
        "reasons": list(graded.reasons),
        "evidence_ids": [run["evidence_id"]] + [e["evidence_id"] for e in evidence],
        "created_at": run["created_at"],
        "category": run.get("category"),
        "agent": run.get("agent"),
        "run_file": run_file,
        "run_offset": run["offset"],
        "instruction_hash": run["instruction_hash"],
        "response_hash": run["response_hash"],
        "response_empty": bool(run.get("response_empty")),
        "has_messages": bool(run.get("has_messages")),
        "sft_eligible": run.get("sft_eligible") is not False,
        "n_reviews": len(reviews),
        "n_outcomes": len(evidence) - len(reviews),
    }
    return row, [[item[2], item[3]["offset"]] for item in attached]


def _assert_same(out_root: Path, days: list[date], policy: ScoringPolicy, workers: int) -> None:
    expected = _reference(out_root, days, policy)
    result = score(out_root, days, policy, workers=workers, pool_min_bytes=0)
    for relpath, data in expected["files"].items():
        written = (out_root / relpath).read_bytes()
        assert written == data, relpath
    assert sorted(f.path for f in result.outputs) == sorted(expected["files"])
    assert result.extra["per_partition"] == expected["per_partition"]
    assert result.extra["quality"] == {q: expected["quality"][q] for q in C.QUALITIES}
    assert list(result.tally.reasons.items()) == list(expected["reasons"].items())
    assert [(f.path, f.record_count) for f in result.inputs] == expected["inputs"]
    assert result.tally.records_in == sum(
        counts["records_in"] for counts in expected["per_partition"].values()
    )
    assert not result.errors


# --- the corpora -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[date]]:
    base = tmp_path_factory.mktemp("synthetic")
    synthesize(SynthSpec(runs=1500, days=6, seed=11), base / "src")
    out = base / "out"
    result = collect(list_source_files(base / "src"), out, None, ParseSettings())
    days = sorted(
        layout.day_from_key(key) for key in result.extra["per_partition"] if key[0] != "u"
    )
    return out / "evidence", days


def _run(run_id: str, created_at: str, offset: int, **fields: Any) -> dict[str, Any]:
    row = {
        "evidence_id": hashlib.sha256(f"run {run_id} {offset}".encode()).hexdigest(),
        "kind": "run",
        "run_id": run_id,
        "created_at": created_at,
        "offset": offset,
        "task_id": "t-" + run_id[:3],
        "category": "ops",
        "agent": "a1",
        "instruction_hash": "1" * 64,
        "response_hash": "2" * 64,
        "response_empty": False,
        "has_messages": True,
        "sft_eligible": True,
    }
    row.update(fields)
    return {key: value for key, value in row.items() if value is not _DROP}


def _evidence(kind: str, run_id: str, created_at: str, offset: int, **fields: Any) -> dict:
    row = {
        "evidence_id": hashlib.sha256(f"{kind} {run_id} {offset} {fields}".encode()).hexdigest(),
        "kind": kind,
        "run_id": run_id,
        "created_at": created_at,
        "offset": offset,
    }
    row.update(fields)
    return row


_DROP = object()  # a field left out of the row altogether

REVIEWS = [
    {"verdict": verdict, "score": given}
    for verdict in ("approve", "request_changes", "reject", "meh")
    for given in (None, 0.0, 0.3, 0.85, 1, -0.0)
]
OUTCOMES = [
    {"outcome": outcome, "reward": reward, "signals": signals}
    for outcome in ("success", "partial", "failure", "error", "won")
    for reward in (None, 0.0, 0.25, 0.5, 0.85, 1.0)
    for signals in (
        None,
        {},
        {"incomplete": 1},
        {"incomplete": 0},
        {"r_actions": 0.4, "r_format": 1.5, "a_first": 0.1},
        {"z_last": 0.3, "r_actions": 0.7, "incomplete": 0.0, "r_format": 0.2},
    )
]


_STAMP = "2026-03-0{}T{:02d}:{:02d}:00Z".format


def _handmade(root: Path) -> list[date]:
    """An index over six days (the third missing, the sixth empty) with the awkward cases."""
    first = date(2026, 3, 1)
    days: dict[int, list[dict[str, Any]]] = {0: [], 1: [], 3: [], 4: [], 5: []}
    _every_grade(days)
    _sums_and_rounding(days)
    _escapes_and_missing_fields(days)
    _duplicates_and_crowds(days)

    for offset, rows in days.items():
        path = root / layout.evidence_index(first + timedelta(days=offset))
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [orjson.dumps(row) for row in rows]
        lines.insert(len(lines) // 2, b"   ")  # a blank line is skipped
        path.write_bytes(b"\n".join(lines) + b"\n" if rows else b"")
    return [first + timedelta(days=offset) for offset in range(6)]


def _every_grade(days: dict[int, list[dict[str, Any]]]) -> None:
    """Every single review, every single outcome, and many random combinations of them."""
    stamp = _STAMP
    shuffle = random.Random(7)
    for i in range(len(REVIEWS) + len(OUTCOMES) + 1200):
        run_id = f"r{i:05d}"
        days[0].append(_run(run_id, stamp(1, i % 24, i % 60), 100 * i))
        if i < len(REVIEWS):
            chosen = [("review", REVIEWS[i])]
        elif i < len(REVIEWS) + len(OUTCOMES):
            chosen = [("outcome", OUTCOMES[i - len(REVIEWS)])]
        else:
            chosen = [("review", shuffle.choice(REVIEWS)) for _ in range(shuffle.randint(0, 3))]
            chosen += [("outcome", shuffle.choice(OUTCOMES)) for _ in range(shuffle.randint(0, 4))]
            shuffle.shuffle(chosen)
        for j, (kind, fields) in enumerate(chosen):
            day = shuffle.choice([0, 0, 1, 3])
            # few distinct times, so (created_at, evidence_id) often decides the order
            row = _evidence(kind, run_id, stamp(day + 1, j % 2, 0), 7 * i + j, **fields)
            days[day].append(row)


def _sums_and_rounding(days: dict[int, list[dict[str, Any]]]) -> None:
    """Many signals summed in order, means that round differently, signals in name order."""
    stamp = _STAMP
    # many signals on one run: the sum follows their order to the last bit
    days[1].append(_run("many", stamp(2, 1, 0), 1))
    many = [0.1, 0.7, 0.2, 0.3, 0.9, 0.15, 0.35, 0.05, 0.6, 0.45, 0.333, 0.1]
    for j, given in enumerate(many):
        row = _evidence("review", "many", stamp(2, 2, j), 10 + j, verdict="approve", score=given)
        days[1].append(row)
    signals = {"r_actions": 0.1, "a_first": 0.2, "z_last": 0.3}
    days[1].append(_evidence("outcome", "many", stamp(2, 3, 0), 99, outcome="won", signals=signals))

    # means that Python's round and numpy's round to 6 places differently, and lists of
    # values whose mean rounds differently when added in another order
    for n, given in enumerate([0.2330845, 0.2857985, 0.2004075, 0.4967275]):
        days[1].append(_run(f"round-{n}", stamp(2, 6, n), 20 + n))
        days[1].append(_evidence("review", f"round-{n}", stamp(2, 6, n), 30 + n, score=given,
                                 verdict="approve"))  # fmt: skip
    for n, values in enumerate(
        [
            [0.2323573, 0.4347194, 0.4645851, 0.5368202],
            [0.8033382, 0.3775915, 0.6916342, 0.5653108, 0.9402076, 0.4678007],
        ]
    ):
        days[1].append(_run(f"order-{n}", stamp(2, 7, n), 40 + n))
        for j, given in enumerate(values):
            row = _evidence("review", f"order-{n}", stamp(2, 7, j), 50 + 10 * n + j,
                            verdict="approve", score=given)  # fmt: skip
            days[1].append(row)

    # named signals added in name order, not as the outcome lists them ("mixed" policy)
    days[1].append(_run("names", stamp(2, 8, 0), 60))
    signals = {"z_last": 0.382426, "r_format": 0.6237657, "r_actions": 0.189928}
    signals["incomplete"] = 0.2631528
    days[1].append(
        _evidence("outcome", "names", stamp(2, 8, 1), 61, outcome="won", signals=signals)
    )


def _escapes_and_missing_fields(days: dict[int, list[dict[str, Any]]]) -> None:
    """Strings JSON escapes, missing optional fields, nulls, unknown kinds."""
    stamp = _STAMP
    # strings JSON escapes: day 1's file has backslashes; day 2's has none, but non-ASCII text
    days[1].append(_run("ünïcode-😀", stamp(2, 4, 0), 2, task_id="t-é", agent="ågent"))
    days[1].append(_evidence("review", "ünïcode-😀", stamp(2, 5, 0), 3, verdict="reject"))
    for n, text in enumerate(['q"uote', "back\\slash", "ctl\x01\x1f\t\n", "del\x7f/\u2028"]):
        run_id = f"esc-{n}-{text}"
        row = _run(run_id, stamp(1, 5, n), 5000 + n, task_id=text, agent=text, category=text)
        days[0].append(row)
        days[0].append(_evidence("review", run_id, stamp(1, 6, n), 6000 + n, verdict="approve"))

    # missing optional fields, nulls, unknown kinds, a run whose only evidence is of one
    days[0].append(
        _run("bare", stamp(1, 7, 0), 7000, category=_DROP, agent=_DROP, response_empty=_DROP,
             has_messages=_DROP, sft_eligible=_DROP)
    )  # fmt: skip
    days[0].append(
        _run("nulls", stamp(1, 7, 1), 7001, category=None, agent=None, response_empty=None,
             has_messages=None, sft_eligible=None)
    )  # fmt: skip
    days[0].append(_run("falsy", stamp(1, 7, 2), 7002, response_empty=True, sft_eligible=False))
    days[0].append(_evidence("note", "nulls", stamp(1, 8, 0), 7003))
    days[0].append(_evidence("note", "nobody", stamp(1, 8, 1), 7004))


def _duplicates_and_crowds(days: dict[int, list[dict[str, Any]]]) -> None:
    """Conflicting duplicates, an orphan, crowds, the same evidence row on two days."""
    stamp = _STAMP
    # conflicting duplicates: twice in one day; three days apart (each alone in its own
    # window), with evidence in between that sees both; an orphan
    days[0].append(_run("dup", stamp(1, 9, 0), 8000))
    days[0].append(_run("dup", stamp(1, 9, 1), 8001, task_id="t-other"))
    days[0].append(_evidence("outcome", "dup", stamp(1, 9, 2), 8002, outcome="success"))
    days[0].append(_run("far", stamp(1, 10, 0), 8100))
    days[3].append(_run("far", stamp(4, 10, 0), 8101, task_id="t-other"))
    days[1].append(_evidence("review", "far", stamp(2, 10, 0), 8102, verdict="approve"))
    days[4].append(_evidence("outcome", "far", stamp(5, 10, 1), 8201, outcome="failure"))
    days[4].append(_evidence("review", "orphan", stamp(5, 10, 0), 8200, verdict="approve"))
    # crowds: thousands of runs sharing one id, a thousand reviews of one run
    for n in range(2000):
        days[4].append(_run("crowd", stamp(5, n % 24, n % 60), 20000 + n))
    days[4].append(_evidence("outcome", "crowd", stamp(5, 0, 0), 19999, outcome="success"))
    days[4].append(_run("busy", stamp(5, 1, 0), 30000))
    for n in range(1000):
        verdict = ("approve", "request_changes")[n % 2]
        days[4].append(_evidence("review", "busy", stamp(5, 2, n % 60), 30001 + n, verdict=verdict))

    # the same evidence row on two days: the order of the window's days breaks the tie, which
    # shows in where the review queue finds them
    days[1].append(_run("tie", stamp(2, 11, 0), 9000))
    days[1].append(_evidence("outcome", "tie", stamp(2, 11, 1), 9001, outcome="error"))
    twin = _evidence("review", "tie", stamp(2, 11, 2), 9002, verdict="request_changes")
    days[1].append(twin)
    days[3].append({**twin, "offset": 9003})


# --- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_synthetic_corpus_is_scored_as_row_by_row(name, synthetic, tmp_path) -> None:
    evidence, days = synthetic
    (tmp_path / "evidence").symlink_to(evidence)
    _assert_same(tmp_path, days, POLICIES[name], workers=1)


@pytest.mark.parametrize(("workers", "block_bytes"), [(1, None), (2, 1)])
@pytest.mark.parametrize("name", sorted(POLICIES))
def test_awkward_index_is_scored_as_row_by_row(
    name, workers, block_bytes, tmp_path, monkeypatch
) -> None:
    """In one block of days, and a day at a time in two worker threads."""
    if block_bytes is not None:
        monkeypatch.setattr(scoring, "BLOCK_BYTES", block_bytes)
    days = _handmade(tmp_path)
    _assert_same(tmp_path, days, POLICIES[name], workers)


def test_the_awkward_index_has_its_awkward_cases(tmp_path) -> None:
    days = _handmade(tmp_path)
    result = score(tmp_path, days, ScoringPolicy())
    assert result.tally.reasons[C.R_CONFLICTING_DUPLICATE] >= 3
    assert result.tally.reasons[C.R_ORPHAN_EVIDENCE] >= 2
    assert all(result.extra["quality"].values())
    assert [f.path for f in result.inputs] == [
        layout.evidence_index(day) for day in days if day != days[2]
    ]
    first = (tmp_path / layout.evidence_index(days[0])).read_bytes()
    assert b"\\" in first and b"\\" not in (tmp_path / layout.evidence_index(days[1])).read_bytes()


def test_strings_are_escaped_as_orjson_escapes_them() -> None:
    code_points = [*range(0x800), *range(0x800, 0x110000, 97), 0x2028, 0x2029, 0xFEFF, 0x10FFFF]
    texts = ["a" + chr(c) + "b" for c in code_points if not 0xD800 <= c <= 0xDFFF]
    frame = pl.DataFrame({"s": [*texts, None]})
    written = frame.select(scoring._json_text("s", plain=False))[:, 0].to_list()
    assert written == [orjson.dumps(text).decode() for text in [*texts, None]]


def test_every_score_is_printed_as_orjson_prints_it() -> None:
    """Every score a row can carry (6 places in 0..1) and its negation (in the entries)."""
    scores = [round(k / 1e6, 6) for k in range(1_000_001)]
    odd = random.Random(3)
    values = [*scores, *(-s for s in scores), *(odd.random() for _ in range(10_000))]
    values += [1e-7, 5e-324, 1 / 3]
    frame = pl.DataFrame({"v": values}, schema={"v": pl.Float64})
    written = frame.select(scoring._number_text(pl.col("v")))[:, 0].to_list()
    assert written == [orjson.dumps(value).decode() for value in values]
