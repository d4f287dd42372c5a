"""The quick tests for clean evidence agree with the full checks on every object; text hashes
computed in batches match the one-text definition."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime

import orjson
import pytest

from distill_assets.devtools.synth import SynthSpec, synthesize
from distill_assets.lib.evidence.format import (
    ParseSettings,
    QuickCheck,
    Record,
    parse_line,
    text_hash,
    text_hashes,
    validate_object,
)

SETTINGS = ParseSettings(now=datetime(2026, 1, 1, tzinfo=UTC))
ODD_VALUES = [None, "", "  ", 0, 1, 1.5, -0.1, 0.5, True, [], {}, ["x"], {"a": 1}, "x", "approve",
              "success", "2024-05-01T10:00:00Z", "2031-01-01T00:00:00Z", float("nan")]  # fmt: skip
FIELDS = ["kind", "run_id", "task_id", "instruction", "response", "created_at", "agent",
          "category", "messages", "meta", "verdict", "score", "reviewer", "comment", "outcome",
          "reward"]  # fmt: skip


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    root = tmp_path_factory.mktemp("fast") / "evidence"
    synthesize(SynthSpec(runs=400, days=2, seed=8), root)
    found = []
    for path in sorted(root.rglob("*.jsonl")):
        for raw in path.read_bytes().splitlines():
            try:
                obj = orjson.loads(raw.removeprefix(b"\xef\xbb\xbf"))
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                found.append(obj)
    return found


def _same(obj: dict) -> None:
    quick = validate_object(copy.deepcopy(obj), SETTINGS)
    full = validate_object(copy.deepcopy(obj), SETTINGS, check_all=True)
    assert quick == full, obj


def test_agrees_on_a_synthetic_corpus(objects: list[dict]) -> None:
    for obj in objects:
        _same(obj)


def test_agrees_on_every_field_set_to_odd_values(objects: list[dict]) -> None:
    rng = random.Random(3)
    samples = rng.sample(objects, 20)
    for obj in samples:
        for name in FIELDS:
            for value in ODD_VALUES:
                changed = dict(obj)
                changed[name] = value
                _same(changed)
            removed = dict(obj)
            removed.pop(name, None)
            _same(removed)


def test_agrees_on_odd_messages() -> None:
    base = {"kind": "run", "run_id": "r", "task_id": "t", "instruction": "i", "response": "",
            "created_at": "2024-05-01T10:00:00Z"}  # fmt: skip
    deep: object = "x"
    for _ in range(40):
        deep = [deep]
    odd = [
        [],
        [{"role": "user", "content": "hi"}],
        [{"role": "robot"}],
        ["x"],
        5,
        [{"role": "user", "content": deep}],
        [{"role": "tool", "tool_calls": 1}],
    ]
    for messages in odd:
        _same({**base, "messages": messages})
    assert parse_line(orjson.dumps(base), SETTINGS).__class__.__name__ == "Record"


STAMPS = [
    "2024-05-01T10:00:00Z", "2024-05-01T10:00:00+00:00", "2024-05-01T10:00:00-00:00",
    "2024-05-01T10:00:00.000Z", "2024-05-01T10:00:00.000000+00:00", "2024-05-01T10:00:00.5Z",
    "2024-05-01T10:00:00+02:00", "2024-05-01T10:00:00", "2024-05-01 10:00:00Z", "2024-05-01",
    " 2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z ", "2024-05-01T24:00:00Z",
    "2024-02-30T10:00:00Z", "2024-05-01T10:00:60Z", "2024-05-01T10:00:00ZZ",
    "2024-05-01T1:00:00Z", "2019-12-31T23:59:59Z", "2020-01-01T00:00:00Z",
    "2025-12-31T23:00:00Z", "2026-01-01T23:59:59Z", "2026-01-02T00:00:00Z",
    "2026-01-02T00:00:01Z", "2030-01-01T00:00:00Z", "2024-05-01T10:00:00+00:00 ",
    "+2024-05-01T10:00:00Z", "2024-W18-3T10:00:00Z", "2024-05-01T10:00:00.000",
    "2024-05-01T10:00:00+0000", "2024-05-01T10:00:00,000Z", "2024-05-01T10:00:00.000-00:00",
    "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00",
]  # fmt: skip


def _quick_agrees(check: QuickCheck, obj: dict) -> None:
    """QuickCheck keeps exactly what validate_object keeps, with the same day and timestamp."""
    found = check.check(copy.deepcopy(obj))
    full = validate_object(copy.deepcopy(obj), SETTINGS, check_all=True)
    if found is not None:
        assert isinstance(full, Record), obj
        assert found == (full.day, full.created_at), obj


def test_quick_check_agrees_on_a_synthetic_corpus(objects: list[dict]) -> None:
    check = QuickCheck(SETTINGS)
    kept = sum(check.check(obj) is not None for obj in objects)
    for obj in objects:
        _quick_agrees(check, obj)
    assert kept > 0.9 * len(objects)  # the quick way is the usual one


def test_quick_check_agrees_on_odd_values_and_timestamps(objects: list[dict]) -> None:
    check = QuickCheck(SETTINGS)
    for obj in random.Random(4).sample(objects, 20):
        for name in FIELDS:
            for value in ODD_VALUES:
                _quick_agrees(check, {**obj, name: value})
        for stamp in STAMPS:
            _quick_agrees(check, {**obj, "created_at": stamp})


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 1


def test_messages_depth_limit_is_exact() -> None:
    rng = random.Random(5)

    def nested(level: int) -> object:
        if level > 7 or rng.random() < 0.3:
            return rng.choice(["x", 1, None, [], {}])
        if rng.random() < 0.5:
            return [nested(level + 1) for _ in range(rng.randint(0, 3))]
        return {str(k): nested(level + 1) for k in range(rng.randint(0, 3))}

    base = {"kind": "run", "run_id": "r", "task_id": "t", "instruction": "i", "response": "",
            "created_at": "2024-05-01T10:00:00Z"}  # fmt: skip
    for _ in range(300):
        messages = [{"role": "user", "content": "x", "meta": nested(0)}]
        for limit in range(1, 10):
            settings = ParseSettings(now=SETTINGS.now, max_messages_depth=limit)
            parsed = validate_object({**base, "messages": messages}, settings)
            assert isinstance(parsed, Record) == (_depth(messages) <= limit)


def test_text_hashes_match_text_hash() -> None:
    rng = random.Random(6)
    alphabet = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "a", "b", "é", "\u00a0",
                "\u2003", "\u3000", "\x85", "\x00", "[", "{"]  # fmt: skip
    for _ in range(300):
        texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 14))) for _ in range(40)]
        texts += ["  a   long\\n\\n text " * rng.randint(0, 3000)]
        assert text_hashes(texts) == [text_hash(text).encode() for text in texts]
