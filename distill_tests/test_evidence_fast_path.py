"""The quick test for clean evidence agrees with the full checks on every object."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime

import orjson
import pytest

from distill_assets.lib.evidence import ParseSettings, parse_line, validate_object
from distill_assets.lib.synth import SynthSpec, synthesize

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
