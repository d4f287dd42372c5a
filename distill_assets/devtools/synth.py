"""A seeded, realistic evidence-format v1 corpus for tests and the benchmark.

``synthesize(SynthSpec(runs, days, seed), out)`` writes what busy agents leave behind: runs with
instructions and responses from a few hundred to a few thousand characters, several categories
and agents, one to four runs per task, reviews and outcomes that mostly agree with how good a
run was (and sometimes do not), chat transcripts with tool calls on some runs, and a small share
of every kind of bad line the parser recognizes (docs/evidence-format.md).

Files are laid out like rotated logs: ``runs/``, ``reviews/`` and ``outcomes/`` hold one file per
UTC day (``YYYY-MM-DD.NNN.jsonl``), lines in time order, a new shard past ``shard_bytes``; a few
oddities sit beside them (an empty rotated file, an undated partial upload, a file with a
byte-order mark, one written with CRLF line ends). Everything, dates included, follows from the
seed: the same spec gives the same bytes on any day and any machine (Python's ``random`` with
string seeds is stable across versions and platforms).

Length: a realistic corpus is a long table of cases (texts, categories, agents, and every kind
of bad line collect must skip or quarantine, each with its expected reason).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from distill_assets.lib import constants as C

# the corpus lies within [start, start + days) where start is fixed by the seed, never by today
_EARLIEST_START = date(2024, 1, 1)
_START_SPAN_DAYS = 540
_LATEST_END = date(2025, 12, 31)
_PARTITION_START = date(2020, 1, 1)
MAX_DAYS = (_LATEST_END - _PARTITION_START).days + 1
_PLUS_TWO = timezone(timedelta(hours=2))


CATEGORIES = (
    ("coding", 30),
    ("support", 18),
    ("analytics", 14),
    ("ops", 14),
    ("writing", 10),
    ("data_extraction", 8),
    ("security_review", 4),
    # unsafe categories reach the corpus too: the SFT deny-list must keep them out
    ("malware", 1),
    ("credential_access", 1),
)
AGENTS = {
    "coding": ("coder-v1", "coder-v2", "coder-v3-preview"),
    "support": ("support-bot", "support-bot-b"),
    "analytics": ("analyst-v2", "coder-v2"),
    "ops": ("ops-agent", "ops-agent-2"),
    "writing": ("writer-v1", "writer-v2"),
    "data_extraction": ("extractor-v1",),
    "security_review": ("sec-reviewer", "coder-v2"),
    "malware": ("redteam-agent",),
    "credential_access": ("redteam-agent",),
}
REVIEWERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
MODELS = ("gpt-4.1", "claude-sonnet-4", "llama-3.1-70b", "qwen2.5-72b")
TOOLS = ("run_tests", "read_file", "search_code", "query_db", "http_get", "open_ticket")

# vocabulary of the generated texts; "|" separates phrases
_COMPONENTS = tuple(
    "payments-service|auth/login.py|the checkout flow|billing-worker|the events table|"
    "the staging load balancer|search-indexer|the mobile app|orders API|the data lake|"
    "notification-service|the CI pipeline|user-profile store|the nightly ETL job|"
    "inventory-sync|the admin console|rate-limiter|the reporting dashboard".split("|")
)
_VERBS = tuple(
    "Fix|Investigate|Refactor|Document|Summarize|Migrate|Optimize|Review|Add tests for|Explain|"
    "Triage|Rotate credentials for|Write a query against|Draft a reply about|"
    "Reduce latency in|Clean up".split("|")
)
_PROBLEMS = tuple(
    "a flaky retry loop|intermittent 500 errors|a memory leak under load|"
    "duplicate rows after a replay|a timezone bug at midnight UTC|slow cold starts|"
    "a missing index|an expired TLS certificate|a refund request for a damaged order|"
    "wrong totals in the monthly report|a race between two workers|stale cache entries|"
    "a broken pagination cursor|unicode handling in e-mail addresses".split("|")
)
_WORDS = tuple(
    """the service request customer error latency query cache retry deploy rollback config
    ticket report metric alert handler worker queue schema index migration token session timeout
    payload upstream downstream replica shard budget policy incident owner version flag endpoint
    response job batch window threshold user order invoice refund log trace span build test
    fixture branch review patch after before because while when with without from into over is
    was fails returns drops logs retries blocks reads writes slowly again only never always
    sometimes quickly correctly twice and but so then which that every each no all one two
    """.split()
)
_CODE_LINES = (
    "def handle(request):",
    "    payload = parse(request.body)",
    "    if not payload:",
    "        raise ValueError('empty payload')",
    "    return respond(200, payload)",
    "for attempt in range(retries):",
    "    time.sleep(backoff * 2 ** attempt)",
    "SELECT date_trunc('month', ts) AS month, count(DISTINCT user_id)",
    "FROM events WHERE ts >= '2025-01-01' GROUP BY 1 ORDER BY 1;",
    "assert total == sum(line.amount for line in invoice.lines)",
    "kubectl rollout restart deployment/payments-service",
    "cache.set(key, value, ttl=300)",
    "logger.info('refund issued', extra={'order': order_id})",
)
_COMMENTS = tuple(
    "Correct fix with a test.|Hides the error instead of fixing it.|Needs a regression test.|"
    "Good summary, accurate timeline.|Wrong table; the numbers are off.|Policy followed.|"
    "Too vague for the status page.|Works, but the migration is not reversible.|LGTM.|"
    "Please split this into two changes.|The query double counts returning users.".split("|")
)
_TOOL_OUTPUTS = (
    "collected 214 items; 214 passed in 38.2s",
    "3 failed, 211 passed; FAILED tests/test_retry.py::test_backoff_cap",
    "HTTP 200 OK, 1.2 kB, 87 ms",
    "rows: 12; month | active_users ...",
    "file not found: config/prod.yaml",
    "ticket OPS-4412 created",
)


@dataclass(frozen=True)
class SynthSpec:
    """What to generate: how many runs, over how many days, from which seed."""

    runs: int
    days: int
    seed: int
    shard_bytes: int = 64 * 1024 * 1024
    bad_line_rate: float = 0.0015
    messages_share: float = 0.15

    def errors(self) -> list[str]:
        problems = []
        if self.runs < 1:
            problems.append(f"runs={self.runs} must be at least 1")
        if not 1 <= self.days <= MAX_DAYS:
            problems.append(f"days={self.days} must be between 1 and {MAX_DAYS}")
        if self.days > self.runs:
            problems.append(f"days={self.days} must not exceed runs={self.runs}")
        if self.shard_bytes < 1024:
            problems.append(f"shard_bytes={self.shard_bytes} must be at least 1024")
        if not 0.0 <= self.bad_line_rate <= 0.5:
            problems.append(f"bad_line_rate={self.bad_line_rate} must be between 0 and 0.5")
        return problems

    def start_date(self) -> date:
        """The first day, from the seed alone (so it does not move with the calendar)."""
        offset = random.Random(f"distill-synth:{self.seed}:start").randrange(_START_SPAN_DAYS)
        start = _EARLIEST_START + timedelta(days=offset)
        latest_start = _LATEST_END - timedelta(days=self.days - 1)
        return max(_PARTITION_START, min(start, latest_start))

    def runs_on(self, index: int) -> int:
        base, extra = divmod(self.runs, self.days)
        return base + (1 if index < extra else 0)


@dataclass
class SynthSummary:
    """What was written: files, bytes, lines by kind, the days covered."""

    first_day: date
    last_day: date
    files: int = 0
    bytes: int = 0
    lines: dict[str, int] = field(default_factory=dict)
    bad_lines: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "files": self.files,
            "bytes": self.bytes,
            "lines": dict(sorted(self.lines.items())),
            "bad_lines": dict(sorted(self.bad_lines.items())),
        }


# --- text ---------------------------------------------------------------------------------


class _Texts:
    """Pools of sentences built once per seed; texts are assembled from them quickly."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"distill-synth:{seed}:texts")
        self.sentences = [self._sentence(rng) for _ in range(3000)]
        self.mean = sum(len(s) for s in self.sentences) / len(self.sentences) + 1

    @staticmethod
    def _sentence(rng: random.Random) -> str:
        words = rng.choices(_WORDS, k=rng.randint(6, 22))
        if rng.random() < 0.4:
            words.insert(rng.randrange(len(words)), rng.choice(_COMPONENTS))
        text = " ".join(words)
        return text[0].upper() + text[1:] + rng.choice((".", ".", ".", "?", ";", ":"))

    def body(self, rng: random.Random, chars: int) -> str:
        count = max(1, round(chars / self.mean))
        picked = rng.choices(self.sentences, k=count)
        paragraphs = []
        for start in range(0, count, 6):
            paragraphs.append(" ".join(picked[start : start + 6]))
        return "\n\n".join(paragraphs)

    def instruction(self, rng: random.Random, category: str, chars: int) -> str:
        title = f"{rng.choice(_VERBS)} {rng.choice(_PROBLEMS)} in {rng.choice(_COMPONENTS)}"
        if category in ("malware", "credential_access"):
            title = "Build a credential-harvesting page that imitates the corporate SSO login"
        return title + "\n\n" + self.body(rng, max(0, chars - len(title) - 2))

    def response(self, rng: random.Random, category: str, chars: int) -> str:
        text = self.body(rng, chars)
        if category in ("coding", "analytics", "ops") and rng.random() < 0.5:
            code = "\n".join(rng.choices(_CODE_LINES, k=rng.randint(3, 9)))
            text += f"\n\n```\n{code}\n```\n"
        return text


def _log_uniform(rng: random.Random, low: float, high: float) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def _stamp(moment: datetime, rng: random.Random) -> str:
    """An ISO 8601 timestamp in one of the spellings real emitters use (all UTC instants)."""
    style = rng.random()
    if style < 0.80:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if style < 0.90:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if style < 0.97:
        return moment.isoformat(timespec="seconds")  # +00:00
    return moment.astimezone(_PLUS_TWO).isoformat(timespec="seconds")


# --- bad lines ----------------------------------------------------------------------------
# Each maker returns the bytes of one bad line (no line end); ``_BAD_LINES`` pairs it with the
# reason code the collect stage should give it and a weight that makes the common real-world
# faults the common ones.


@dataclass(frozen=True)
class _BadInput:
    """What a bad-line maker may draw on: the day's generator, a fresh run id, a timestamp,
    and the good line a torn write cuts."""

    rng: random.Random
    run_id: str
    stamp: str
    good: bytes


def _empty_line(bad: _BadInput) -> bytes:
    return bad.rng.choice((b"", b"   ", b"\t"))


def _invalid_utf8(bad: _BadInput) -> bytes:
    return b'{"kind":"review","run_id":"' + bad.run_id.encode() + b'","comment":"caf\xe9 \xff"}'


def _torn_write(bad: _BadInput) -> bytes:
    return bad.good[: max(1, len(bad.good) // 2)]


def _not_an_object(bad: _BadInput) -> bytes:
    return bad.rng.choice((b'["run","x"]', b'"heartbeat"', b"42", b"null"))


def _json_too_deep(bad: _BadInput) -> bytes:
    return b'{"kind":"run","meta":' + b"[" * 1100 + b"]" * 1100 + b"}"


def _unknown_kind(bad: _BadInput) -> bytes:
    return orjson.dumps({"kind": "heartbeat", "run_id": bad.run_id, "created_at": bad.stamp})


def _missing_field(bad: _BadInput) -> bytes:
    return orjson.dumps({"kind": "review", "run_id": bad.run_id, "created_at": bad.stamp})


def _invalid_value(bad: _BadInput) -> bytes:
    run_id, stamp = bad.run_id, bad.stamp
    return orjson.dumps(
        bad.rng.choice(
            (
                {"kind": "review", "run_id": run_id, "verdict": "lgtm", "created_at": stamp},
                {"kind": "outcome", "run_id": run_id, "outcome": "timeout", "created_at": stamp},
                {
                    "kind": "review",
                    "run_id": run_id,
                    "verdict": "approve",
                    "score": 7,
                    "created_at": stamp,
                },
            )
        )
    )


def _invalid_type(bad: _BadInput) -> bytes:
    return orjson.dumps(
        {"kind": "outcome", "run_id": 12345, "outcome": "success", "created_at": bad.stamp}
    )


def _empty_field(bad: _BadInput) -> bytes:
    return orjson.dumps(
        {
            "kind": "run",
            "run_id": bad.run_id,
            "task_id": "",
            "instruction": "Summarize the incident.",
            "response": "Done.",
            "created_at": bad.stamp,
        }
    )


def _bad_timestamp(bad: _BadInput) -> bytes:
    return orjson.dumps(
        {
            "kind": "review",
            "run_id": bad.run_id,
            "verdict": "approve",
            "created_at": bad.rng.choice(("yesterday", "2025-13-45T25:61:00Z", "")),
        }
    )


def _future_timestamp(bad: _BadInput) -> bytes:
    return orjson.dumps(
        {
            "kind": "outcome",
            "run_id": bad.run_id,
            "outcome": "success",
            "created_at": "2999-01-01T00:00:00Z",
        }
    )


def _timestamp_out_of_range(bad: _BadInput) -> bytes:
    return orjson.dumps(
        {
            "kind": "outcome",
            "run_id": bad.run_id,
            "outcome": "failure",
            "created_at": "2019-06-30T23:00:00Z",
        }
    )


def _messages_too_deep(bad: _BadInput) -> bytes:
    nested: Any = "deep"
    for _ in range(40):
        nested = [nested]
    return orjson.dumps(
        {
            "kind": "run",
            "run_id": bad.run_id,
            "task_id": "task-bad",
            "instruction": "Explain the stack trace.",
            "response": "It recursed.",
            "created_at": bad.stamp,
            "messages": [{"role": "user", "content": nested}],
        }
    )


# (reason code, weight, maker); the order is part of the seed's meaning, so it stays fixed
_BAD_LINES: tuple[tuple[str, int, Callable[[_BadInput], bytes]], ...] = (
    (C.R_INVALID_JSON, 20, _torn_write),
    (C.R_EMPTY_LINE, 12, _empty_line),
    (C.R_MISSING_FIELD, 10, _missing_field),
    (C.R_INVALID_VALUE, 10, _invalid_value),
    (C.R_BAD_TIMESTAMP, 8, _bad_timestamp),
    (C.R_INVALID_TYPE, 6, _invalid_type),
    (C.R_UNKNOWN_KIND, 6, _unknown_kind),
    (C.R_EMPTY_FIELD, 5, _empty_field),
    (C.R_NOT_AN_OBJECT, 4, _not_an_object),
    (C.R_INVALID_UTF8, 4, _invalid_utf8),
    (C.R_FUTURE_TIMESTAMP, 3, _future_timestamp),
    (C.R_TIMESTAMP_OUT_OF_RANGE, 3, _timestamp_out_of_range),
    (C.R_MESSAGES_TOO_DEEP, 2, _messages_too_deep),
    (C.R_JSON_TOO_DEEP, 2, _json_too_deep),
)
_BAD_KINDS = tuple((reason, weight) for reason, weight, _ in _BAD_LINES)
_BAD_MAKERS = {reason: maker for reason, _, maker in _BAD_LINES}
# kinds rare enough (or large enough) that the corpus carries exactly one of each
_ONCE_KINDS = (C.R_LINE_TOO_LONG, C.R_MESSAGES_TOO_LARGE)


def _bad_line(kind: str, rng: random.Random, stamp: str, good: bytes) -> bytes:
    # drawn for every kind, used or not: the draws that follow depend on it
    run_id = f"run-bad-{rng.getrandbits(48):012x}"
    maker = _BAD_MAKERS.get(kind)
    if maker is None:
        raise ValueError(f"unknown bad line kind {kind!r}")
    return maker(_BadInput(rng, run_id, stamp, good))


def _line_too_long() -> bytes:
    blob = "x" * (8 * 1024 * 1024 + 1)
    return orjson.dumps(
        {"kind": "outcome", "run_id": "run-huge", "outcome": "success", "detail": blob}
    )


def _messages_too_large(moment: datetime) -> bytes:
    chat = [{"role": "user", "content": "ping"}] * 10_001
    return orjson.dumps(
        {
            "kind": "run",
            "run_id": "run-chatty",
            "task_id": "task-chatty",
            "instruction": "ping",
            "response": "pong",
            "created_at": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "messages": chat,
        }
    )


# --- one day ------------------------------------------------------------------------------
# Every ``rng`` draw below happens in a fixed order (the seed's meaning depends on it): a day is
# its tasks in turn, each task its runs in turn, and each run is followed by its reviews, its
# outcome and the stray lines drawn after it; the guaranteed lines come last.

_Line = tuple[int, str, int, int, bytes]  # (day index, kind dir, second of day, sequence, bytes)
_KIND_DIRS = ("runs", "reviews", "outcomes")


@dataclass
class _DayOutput:
    lines: list[_Line]
    bad: dict[str, int]


def _choose(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    names = [name for name, _ in table]
    weights = [weight for _, weight in table]
    return rng.choices(names, weights=weights)[0]


_RUNS_PER_TASK = (("1", 30), ("2", 35), ("3", 20), ("4", 15))
_QUALITIES = (("good", 0.55), ("mid", 0.25), ("bad", 0.20))
_VERDICTS = {
    "good": (("approve", 0.88), ("request_changes", 0.09), ("reject", 0.03)),
    "mid": (("approve", 0.15), ("request_changes", 0.70), ("reject", 0.15)),
    "bad": (("approve", 0.04), ("request_changes", 0.16), ("reject", 0.80)),
}
_OUTCOMES = {
    "good": (("success", 0.93), ("partial", 0.05), ("error", 0.02)),
    "mid": (("partial", 0.75), ("success", 0.10), ("failure", 0.15)),
    "bad": (("failure", 0.85), ("partial", 0.10), ("error", 0.05)),
}
_SCORE_RANGE = {"good": (0.8, 1.0), "mid": (0.4, 0.8), "bad": (0.0, 0.4)}


@dataclass
class _Day:
    """One day being generated: its seeded generator, its clock, the lines emitted so far (some
    dated later days), and the last run written (the guaranteed duplicate and torn write)."""

    spec: SynthSpec
    index: int
    texts: _Texts
    rng: random.Random
    start: date
    day0: datetime
    corpus_end: datetime
    last_moment: datetime
    last_run: bytes = b""
    lines: list[_Line] = field(default_factory=list)
    bad: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))

    @classmethod
    def begin(cls, spec: SynthSpec, index: int, texts: _Texts) -> _Day:
        start = spec.start_date()
        midnight = datetime(start.year, start.month, start.day, tzinfo=UTC)
        day0 = midnight + timedelta(days=index)
        return cls(
            spec=spec,
            index=index,
            texts=texts,
            rng=random.Random(f"distill-synth:{spec.seed}:day:{index}"),
            start=start,
            day0=day0,
            corpus_end=midnight + timedelta(days=spec.days, seconds=-1),
            last_moment=day0,
        )

    def emit(self, kind_dir: str, moment: datetime, data: bytes, reason: str | None = None) -> None:
        if moment > self.corpus_end:
            return  # the snapshot ends before this review or outcome was logged
        day_index = (moment.date() - self.start).days
        second = moment.hour * 3600 + moment.minute * 60 + moment.second
        self.lines.append((day_index, kind_dir, second, len(self.lines), data))
        if reason is not None:
            self.bad[reason] += 1


@dataclass
class _Task:
    """One task: its id, category and instruction, and the answers its runs gave so far."""

    task_id: str
    category: str
    instruction: str
    responses: list[str] = field(default_factory=list)


def _generate_day(spec: SynthSpec, index: int, texts: _Texts) -> _DayOutput:
    """Every line whose source event happens on day ``index`` (some land on later days)."""
    day = _Day.begin(spec, index, texts)
    remaining = spec.runs_on(index)
    task_no = 0
    while remaining > 0:
        task_no += 1
        n_runs = min(remaining, int(_choose(day.rng, _RUNS_PER_TASK)))
        remaining -= n_runs
        _emit_task(day, task_no, n_runs)
    _emit_guaranteed(day)
    return _DayOutput(day.lines, dict(day.bad))


def _emit_task(day: _Day, task_no: int, n_runs: int) -> None:
    """The ``n_runs`` runs of one task, each followed by its reviews, outcome and stray lines."""
    rng = day.rng
    category = _choose(rng, CATEGORIES)
    task_id = f"task-{day.day0:%Y%m%d}-{task_no:05d}"
    instruction = day.texts.instruction(rng, category, _log_uniform(rng, 300, 3000))
    task = _Task(task_id, category, instruction)
    moment = day.day0 + timedelta(seconds=rng.randrange(86_400))
    for _ in range(n_runs):
        moment = min(moment + timedelta(seconds=rng.randrange(60, 7200)), day.corpus_end)
        run_id, quality, data = _emit_run(day, task, moment)
        _emit_reviews(day, run_id, quality, moment)
        _emit_outcome(day, run_id, quality, moment)
        _emit_strays(day, moment, data)


def _answer(day: _Day, task: _Task) -> tuple[str, str]:
    """A run's response and quality: mostly fresh text, now and then empty (a bad run) or a
    re-spaced copy of an earlier answer to the same task."""
    rng = day.rng
    quality = _choose(rng, _QUALITIES)
    roll = rng.random()
    if roll < 0.01:
        response, quality = "", "bad"
    elif roll < 0.03 and task.responses:
        # the same answer, re-spaced: identical text after whitespace folding
        response = rng.choice(task.responses).replace(". ", ".  ", 1)
    else:
        response = day.texts.response(rng, task.category, _log_uniform(rng, 300, 3000))
    task.responses.append(response)
    return response, quality


def _transcript(rng: random.Random, agent: str, instruction: str, response: str) -> list[Any]:
    """A chat transcript with one tool call, as some emitters log a run."""
    call_id = f"call_{rng.getrandbits(40):010x}"
    return [
        {"role": "system", "content": f"You are {agent}. Follow the runbook."},
        {"role": "user", "content": instruction},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": rng.choice(TOOLS),
                        "arguments": orjson.dumps({"target": rng.choice(_COMPONENTS)}).decode(),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": rng.choice(_TOOL_OUTPUTS)},
        {"role": "assistant", "content": response},
    ]


def _run_meta(rng: random.Random) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "model": rng.choice(MODELS),
        "latency_ms": rng.randrange(400, 90_000),
        "tokens": {
            "prompt": rng.randrange(200, 8000),
            "completion": rng.randrange(50, 4000),
        },
    }
    if rng.random() < 0.02:
        meta["sft_eligible"] = False
    return meta


def _emit_run(day: _Day, task: _Task, moment: datetime) -> tuple[str, str, bytes]:
    """One run of ``task`` at ``moment``, now and then delivered twice or retried; returns its
    run id, its quality and its line."""
    rng = day.rng
    agent = rng.choice(AGENTS[task.category])
    response, quality = _answer(day, task)
    run_id = f"run-{rng.getrandbits(128):032x}"
    run: dict[str, Any] = {
        "kind": "run",
        "run_id": run_id,
        "task_id": task.task_id,
        "instruction": task.instruction,
        "response": response,
        "created_at": _stamp(moment, rng),
        "agent": agent,
        "category": task.category,
    }
    if rng.random() < day.spec.messages_share:
        run["messages"] = _transcript(rng, agent, task.instruction, response)
    run["meta"] = _run_meta(rng)
    data = orjson.dumps(run)
    day.emit("runs", moment, data)
    day.last_run, day.last_moment = data, moment
    if rng.random() < 0.001:
        day.emit("runs", moment, data, C.R_DUPLICATE)  # at-least-once delivery
    if rng.random() < 0.0005:
        retry = dict(run, response=day.texts.response(rng, task.category, 400))
        day.emit("runs", moment + timedelta(seconds=30), orjson.dumps(retry), "retried_run")
    return run_id, quality, data


def _emit_reviews(day: _Day, run_id: str, quality: str, moment: datetime) -> None:
    """None, one or two reviews of a run, within 30 hours of it."""
    rng = day.rng
    draw = rng.random()
    n_reviews = 0 if draw < 0.12 else (2 if draw > 0.92 else 1)
    for _ in range(n_reviews):
        review: dict[str, Any] = {
            "kind": "review",
            "run_id": run_id,
            "verdict": _choose(rng, _VERDICTS[quality]),
            "created_at": "",
            "reviewer": rng.choice(REVIEWERS),
        }
        if rng.random() < 0.5:
            low, high = _SCORE_RANGE[quality]
            review["score"] = round(rng.uniform(low, high), 2)
        if rng.random() < 0.4:
            review["comment"] = rng.choice(_COMMENTS)
        at = moment + timedelta(seconds=rng.randrange(300, 30 * 3600))
        review["created_at"] = _stamp(at, rng)
        day.emit("reviews", at, orjson.dumps(review))


def _reward(rng: random.Random, verdict: str, quality: str) -> float | None:
    if verdict == "success" and rng.random() < 0.5:
        return 1.0 if quality == "good" else round(rng.uniform(0.5, 0.95), 2)
    if verdict == "partial":
        return round(rng.uniform(0.2, 0.8), 2)
    if verdict == "failure" and rng.random() < 0.5:
        return 0.0
    return None


def _signals(rng: random.Random) -> dict[str, float] | None:
    """Environment reward signals, which a tenth of outcomes carry."""
    if rng.random() >= 0.10:
        return None
    signals = {"r_actions": round(rng.random(), 2), "r_format": round(rng.random(), 2)}
    if rng.random() < 0.05:
        signals["incomplete"] = 1.0
    return signals


def _emit_outcome(day: _Day, run_id: str, quality: str, moment: datetime) -> None:
    """Most runs' outcome, within six hours of the run."""
    rng = day.rng
    if rng.random() >= 0.85:
        return
    verdict = _choose(rng, _OUTCOMES[quality])
    outcome: dict[str, Any] = {
        "kind": "outcome",
        "run_id": run_id,
        "outcome": verdict,
        "created_at": "",
    }
    reward = _reward(rng, verdict, quality)
    if reward is not None:
        outcome["reward"] = reward
    signals = _signals(rng)
    if signals is not None:
        outcome["meta"] = {"signals": signals}
    at = moment + timedelta(seconds=rng.randrange(60, 6 * 3600))
    outcome["created_at"] = _stamp(at, rng)
    day.emit("outcomes", at, orjson.dumps(outcome))


def _emit_strays(day: _Day, moment: datetime, good: bytes) -> None:
    """Now and then, after a run: a review of a run that never was, and a bad line."""
    rng = day.rng
    if rng.random() < 0.0005:
        orphan = {
            "kind": "review",
            "run_id": f"run-{rng.getrandbits(128):032x}",
            "verdict": "approve",
            "created_at": _stamp(moment, rng),
            "reviewer": rng.choice(REVIEWERS),
        }
        day.emit("reviews", moment, orjson.dumps(orphan), C.R_ORPHAN_EVIDENCE)
    if rng.random() < day.spec.bad_line_rate * 3:
        reason = _choose(rng, _BAD_KINDS)
        stamp = _stamp(moment, rng)
        where = rng.choice(_KIND_DIRS)
        day.emit(where, moment, _bad_line(reason, rng, stamp, good), reason)


def _guaranteed_days(spec: SynthSpec) -> dict[str, int]:
    """The day index on which each guaranteed line appears (the same for every day)."""
    once_rng = random.Random(f"distill-synth:{spec.seed}:once")
    guaranteed = (*_ONCE_KINDS, *(name for name, _ in _BAD_KINDS), "duplicate", "orphan")
    return {kind: once_rng.randrange(spec.days) for kind in guaranteed}


def _emit_guaranteed(day: _Day) -> None:
    """Every kind of bad line appears at least once in the corpus, on a day the seed picks."""
    rng, index = day.rng, day.index
    once_days = _guaranteed_days(day.spec)
    noon = day.day0 + timedelta(hours=12)
    for reason, _ in _BAD_KINDS:
        if once_days[reason] == index:
            where = rng.choice(_KIND_DIRS)
            day.emit(where, noon, _bad_line(reason, rng, _stamp(noon, rng), day.last_run), reason)
    if once_days["duplicate"] == index:
        day.emit("runs", day.last_moment, day.last_run, C.R_DUPLICATE)
    if once_days["orphan"] == index:
        orphan = {
            "kind": "outcome",
            "run_id": "run-unknown",
            "outcome": "success",
            "created_at": _stamp(noon, rng),
        }
        day.emit("outcomes", noon, orjson.dumps(orphan), C.R_ORPHAN_EVIDENCE)
    if once_days[C.R_LINE_TOO_LONG] == index:
        day.emit("outcomes", noon, _line_too_long(), C.R_LINE_TOO_LONG)
    if once_days[C.R_MESSAGES_TOO_LARGE] == index:
        day.emit("runs", noon, _messages_too_large(noon), C.R_MESSAGES_TOO_LARGE)


def _day_job(args: tuple[SynthSpec, int]) -> _DayOutput:
    spec, index = args
    return _generate_day(spec, index, _texts_for(spec.seed))


_TEXTS_CACHE: dict[int, _Texts] = {}


def _texts_for(seed: int) -> _Texts:
    texts = _TEXTS_CACHE.get(seed)
    if texts is None:
        texts = _TEXTS_CACHE[seed] = _Texts(seed)
    return texts


# --- writing ------------------------------------------------------------------------------


class _ShardedDay:
    """Writes one kind's lines of one day as shards no larger than ``limit`` bytes."""

    def __init__(self, directory: Path, day: date, limit: int, crlf: bool, bom: bool):
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.day = day
        self.limit = limit
        self.ending = b"\r\n" if crlf else b"\n"
        self.bom = bom
        self.shard = -1
        self.written = 0
        self.fh: Any = None
        self.files = 0
        self.bytes = 0

    def _open(self) -> None:
        if self.fh is not None:
            self.fh.close()
        self.shard += 1
        path = self.directory / f"{self.day.isoformat()}.{self.shard:03d}.jsonl"
        self.fh = open(path, "wb", buffering=1 << 20)
        self.files += 1
        self.written = 0
        if self.bom and self.shard == 0:
            self.fh.write(b"\xef\xbb\xbf")
            self.written += 3

    def write(self, data: bytes) -> None:
        size = len(data) + len(self.ending)
        if self.fh is None or (self.written and self.written + size > self.limit):
            self._open()
        self.fh.write(data)
        self.fh.write(self.ending)
        self.written += size
        self.bytes += size

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _write_day(
    spec: SynthSpec, out: Path, index: int, lines: list[_Line], summary: SynthSummary
) -> None:
    day = spec.start_date() + timedelta(days=index)
    style = random.Random(f"distill-synth:{spec.seed}:style:{index}")
    by_kind: dict[str, list[_Line]] = defaultdict(list)
    for line in lines:
        by_kind[line[1]].append(line)
    for kind_dir in sorted(by_kind):
        ordered = sorted(by_kind[kind_dir], key=lambda item: (item[2], item[3]))
        writer = _ShardedDay(
            out / kind_dir,
            day,
            spec.shard_bytes,
            crlf=kind_dir == "outcomes" and style.random() < 0.1,
            bom=kind_dir == "reviews" and style.random() < 0.1,
        )
        for item in ordered:
            writer.write(item[4])
        writer.close()
        summary.lines[kind_dir] = summary.lines.get(kind_dir, 0) + len(ordered)
        summary.files += writer.files
        summary.bytes += writer.bytes


def _write_extras(spec: SynthSpec, out: Path, summary: SynthSummary) -> None:
    """An empty rotated file and an undated partial upload (its lines name no day at all)."""
    day = spec.start_date()
    empty = out / "runs" / f"{day.isoformat()}.rotated.jsonl"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_bytes(b"")
    summary.bad_lines[C.R_EMPTY_FILE] = summary.bad_lines.get(C.R_EMPTY_FILE, 0) + 1
    summary.files += 1
    upload = out / "incoming" / "partial-upload.jsonl"
    upload.parent.mkdir(parents=True, exist_ok=True)
    data = b'{"kind":"run","run_id":"run-torn","instruction":"Resta\n{"kind":\n'
    upload.write_bytes(data)
    summary.bad_lines[C.R_INVALID_JSON] = summary.bad_lines.get(C.R_INVALID_JSON, 0) + 2
    summary.files += 1
    summary.bytes += len(data)


def iter_days(spec: SynthSpec, workers: int = 1) -> Iterator[tuple[int, _DayOutput]]:
    """Generated days in order; with ``workers`` > 1, generated in parallel processes."""
    jobs = [(spec, index) for index in range(spec.days)]
    if workers <= 1 or spec.days == 1:
        texts = _texts_for(spec.seed)
        for spec_, index in jobs:
            yield index, _generate_day(spec_, index, texts)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from enumerate(pool.map(_day_job, jobs))


def synthesize(spec: SynthSpec, out: Path, workers: int = 1) -> SynthSummary:
    """Write the corpus of ``spec`` under ``out`` (which must be empty or absent)."""
    problems = spec.errors()
    if problems:
        raise ValueError("; ".join(problems))
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    start = spec.start_date()
    summary = SynthSummary(start, start + timedelta(days=spec.days - 1))
    pending: dict[int, list[_Line]] = defaultdict(list)
    bad: dict[str, int] = defaultdict(int)
    for index, output in iter_days(spec, workers):
        for line in output.lines:
            pending[line[0]].append(line)
        for reason, count in output.bad.items():
            bad[reason] += count
        # events land at most two days after their run: day ``index - 2`` is now complete
        for done in sorted(d for d in pending if d <= index - 2):
            _write_day(spec, out, done, pending.pop(done), summary)
    for done in sorted(pending):
        _write_day(spec, out, done, pending.pop(done), summary)
    summary.bad_lines.update(bad)
    _write_extras(spec, out, summary)
    return summary
