"""Evidence format v1: every reason code, timestamps, line ends, canonical ids."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime

import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.format import (
    ParseSettings,
    Record,
    Rejected,
    parse_line,
    parse_timestamp,
    strip_line,
)

SETTINGS = ParseSettings(now=datetime(2026, 3, 10, tzinfo=UTC))
RUN = {
    "kind": "run",
    "run_id": "r1",
    "task_id": "t1",
    "instruction": "do it",
    "response": "done",
    "created_at": "2026-03-01T10:00:00Z",
}


def line(obj) -> bytes:
    return orjson.dumps(obj)


def test_valid_run_gets_canonical_evidence_id():
    parsed = parse_line(line(RUN), SETTINGS)
    assert isinstance(parsed, Record)
    canonical = orjson.dumps(RUN, option=orjson.OPT_SORT_KEYS)
    assert parsed.evidence_id == hashlib.sha256(canonical).hexdigest()
    assert parsed.day == date(2026, 3, 1)
    assert parsed.created_at == "2026-03-01T10:00:00Z"
    reordered = (
        b'{"response":"done","kind":"run","task_id":"t1","instruction":"do it",'
        b'"run_id":"r1","created_at":"2026-03-01T10:00:00Z"}'
    )
    assert parse_line(reordered, SETTINGS).evidence_id == parsed.evidence_id


@pytest.mark.parametrize(
    ("raw", "disposition", "reasons"),
    [
        (b"", C.DISPOSITION_SKIPPED, [C.R_EMPTY_LINE]),
        (b"   \t", C.DISPOSITION_SKIPPED, [C.R_EMPTY_LINE]),
        (b'{"kind": "run", "run_id": ', C.DISPOSITION_SKIPPED, [C.R_INVALID_JSON]),
        (b'{"kind": "run", "x": "\xff\xfe"}', C.DISPOSITION_SKIPPED, [C.R_INVALID_UTF8]),
        (b"[1, 2]", C.DISPOSITION_SKIPPED, [C.R_NOT_AN_OBJECT]),
        (b'"text"', C.DISPOSITION_SKIPPED, [C.R_NOT_AN_OBJECT]),
        (b"[" * 2000 + b"]" * 2000, C.DISPOSITION_SKIPPED, [C.R_JSON_TOO_DEEP]),
    ],
)
def test_unusable_lines_are_skipped(raw, disposition, reasons):
    parsed = parse_line(raw, SETTINGS)
    assert isinstance(parsed, Rejected)
    assert parsed.disposition == disposition
    assert list(parsed.reasons) == reasons


def test_line_over_the_limit_is_skipped_without_parsing():
    settings = ParseSettings(max_line_bytes=100, now=SETTINGS.now)
    parsed = parse_line(line({**RUN, "response": "x" * 200}), settings)
    assert isinstance(parsed, Rejected) and parsed.reasons == (C.R_LINE_TOO_LONG,)


@pytest.mark.parametrize(
    ("change", "reasons"),
    [
        ({"kind": None}, [C.missing_field("kind")]),
        ({"kind": "comment"}, [C.R_UNKNOWN_KIND]),
        ({"kind": 7}, [C.R_UNKNOWN_KIND]),
        ({"task_id": None}, [C.invalid_type("task_id")]),
        ({"task_id": 42}, [C.invalid_type("task_id")]),
        ({"run_id": ""}, [C.empty_field("run_id")]),
        ({"instruction": "  "}, [C.empty_field("instruction")]),
        ({"created_at": "yesterday"}, [C.R_BAD_TIMESTAMP]),
        ({"created_at": 1700000000}, [C.invalid_type("created_at")]),
        ({"created_at": "2019-12-31T23:00:00Z"}, [C.R_TIMESTAMP_OUT_OF_RANGE]),
        ({"created_at": "2027-01-01T00:00:00Z"}, [C.R_FUTURE_TIMESTAMP]),
        ({"category": 3}, [C.invalid_type("category")]),
        ({"meta": "x"}, [C.invalid_type("meta")]),
        ({"messages": "hi"}, [C.invalid_type("messages")]),
        ({"messages": [{"role": "wizard", "content": "x"}]}, [C.invalid_value("messages")]),
        ({"messages": [{"role": "user", "content": 5}]}, [C.invalid_value("messages")]),
    ],
)
def test_bad_runs_are_quarantined_with_their_reason(change, reasons):
    obj = {**RUN, **change}
    obj = {k: v for k, v in obj.items() if not (k == "kind" and v is None)}
    parsed = parse_line(line(obj), SETTINGS)
    assert isinstance(parsed, Rejected)
    assert parsed.disposition == C.DISPOSITION_QUARANTINED
    assert list(parsed.reasons) == reasons


def test_missing_fields_are_each_named():
    parsed = parse_line(line({"kind": "run", "run_id": "r"}), SETTINGS)
    assert isinstance(parsed, Rejected)
    assert set(parsed.reasons) == {
        C.missing_field(f) for f in ("task_id", "instruction", "response", "created_at")
    }


@pytest.mark.parametrize(
    ("obj", "reasons"),
    [
        (
            {
                "kind": "review",
                "run_id": "r",
                "created_at": "2026-03-01T00:00:00Z",
                "verdict": "maybe",
            },
            [C.invalid_value("verdict")],
        ),
        (
            {
                "kind": "review",
                "run_id": "r",
                "created_at": "2026-03-01T00:00:00Z",
                "verdict": "approve",
                "score": 1.5,
            },
            [C.invalid_value("score")],
        ),
        (
            {
                "kind": "review",
                "run_id": "r",
                "created_at": "2026-03-01T00:00:00Z",
                "verdict": "approve",
                "score": True,
            },
            [C.invalid_value("score")],
        ),
        (
            {
                "kind": "outcome",
                "run_id": "r",
                "created_at": "2026-03-01T00:00:00Z",
                "outcome": "won",
            },
            [C.invalid_value("outcome")],
        ),
        (
            {
                "kind": "outcome",
                "run_id": "r",
                "created_at": "2026-03-01T00:00:00Z",
                "outcome": "success",
                "reward": -0.1,
            },
            [C.invalid_value("reward")],
        ),
        ({"kind": "outcome", "run_id": "r", "outcome": "success"}, [C.missing_field("created_at")]),
    ],
)
def test_bad_reviews_and_outcomes(obj, reasons):
    parsed = parse_line(line(obj), SETTINGS)
    assert isinstance(parsed, Rejected) and list(parsed.reasons) == reasons


def test_messages_depth_and_count_limits():
    settings = ParseSettings(max_messages=2, max_messages_depth=4, now=SETTINGS.now)
    many = [{"role": "user", "content": "x"}] * 3
    deep = [{"role": "user", "content": "x", "meta": {"a": {"b": {"c": {"d": 1}}}}}]
    assert parse_line(line({**RUN, "messages": many}), settings).reasons == (
        C.R_MESSAGES_TOO_LARGE,
    )
    assert parse_line(line({**RUN, "messages": deep}), settings).reasons == (C.R_MESSAGES_TOO_DEEP,)


def test_quarantined_record_keeps_its_day_when_the_timestamp_reads():
    parsed = parse_line(line({**RUN, "task_id": 1}), SETTINGS)
    assert isinstance(parsed, Rejected) and parsed.day == date(2026, 3, 1)
    assert parsed.run_id == "r1" and parsed.kind == "run"


def test_unknown_fields_and_empty_response_are_fine():
    parsed = parse_line(line({**RUN, "response": "", "extra": {"x": [1]}}), SETTINGS)
    assert isinstance(parsed, Record)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T10:00:00Z", "2026-03-01T10:00:00+00:00"),
        ("2026-03-01T10:00:00", "2026-03-01T10:00:00+00:00"),
        ("2026-03-02T01:00:00+02:00", "2026-03-01T23:00:00+00:00"),
        ("2026-03-01T10:00:00.250-05:00", "2026-03-01T15:00:00.250000+00:00"),
        ("2026-03-01", "2026-03-01T00:00:00+00:00"),
    ],
)
def test_timestamps_are_normalized_to_utc(text, expected):
    assert parse_timestamp(text).isoformat() == expected


@pytest.mark.parametrize("text", ["", "soon", "2026-13-01T00:00:00Z", "1.5"])
def test_unreadable_timestamps(text):
    assert parse_timestamp(text) is None


def test_bom_and_crlf_are_stripped():
    assert strip_line(b"\xef\xbb\xbf{}\r\n", first=True) == b"{}"
    assert strip_line(b"\xef\xbb\xbf{}\n", first=False) == b"\xef\xbb\xbf{}"
    assert strip_line(b"{}", first=False) == b"{}"
