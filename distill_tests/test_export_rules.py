"""Export rules as pure functions: chat shaping, category rules, candidate pairs."""

from __future__ import annotations

import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import ExportSettings, category_reason
from distill_assets.lib.datasets.preference import candidate_pairs
from distill_assets.lib.datasets.runs import RunKey
from distill_assets.lib.datasets.sft import sft_messages


def key(run_id, quality, score, response_hash=None, **fields):
    """A run key of task ``t`` with an answer and a real instruction; ``fields`` overrides any
    other RunKey field (``sft_eligible``, ``response_empty``, ``task_id``...)."""
    return RunKey(
        run_id,
        "t",
        quality,
        score,
        "2026-03-01T00:00:00Z",
        None,
        "f",
        0,
        "e" * 64,
        response_hash or run_id,
        False,
        True,
    )._replace(**fields)


def test_sft_messages_default_pair():
    record = {"instruction": "q", "response": "a"}
    assert sft_messages(record) == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]


def test_sft_messages_cut_after_the_final_answer_and_drop_system():
    record = {
        "instruction": "q",
        "response": "done",
        "messages": [
            {"role": "system", "content": "policy"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            {"role": "tool", "tool_call_id": "1", "content": "{}"},
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": "thanks ###STOP###"},
        ],
    }
    messages = sft_messages(record)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[-1]["content"] == "done" and messages[1]["tool_calls"] == [{"id": "1"}]


def test_sft_messages_append_the_response_when_the_chat_has_no_answer():
    record = {
        "instruction": "q",
        "response": "final",
        "messages": [
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
        ],
    }
    messages = sft_messages(record)
    assert messages[0] == {"role": "user", "content": "q"}
    assert messages[-1] == {"role": "assistant", "content": "final"}


@pytest.mark.parametrize(
    ("category", "settings", "reason"),
    [
        (None, ExportSettings(), None),
        ("ops", ExportSettings(), None),
        ("Malware", ExportSettings(), C.R_UNSAFE_SFT_CATEGORY),
        ("ops", ExportSettings(sft_allow_categories=("coding",)), C.R_CATEGORY_DISALLOWED),
        (None, ExportSettings(sft_allow_categories=("coding",)), C.R_CATEGORY_DISALLOWED),
        ("coding", ExportSettings(sft_allow_categories=("coding",)), None),
        ("ops", ExportSettings(sft_deny_categories=("ops",)), C.R_UNSAFE_SFT_CATEGORY),
    ],
)
def test_category_rules(category, settings, reason):
    assert category_reason(category, settings) == reason


def test_candidate_pairs_rules():
    runs = sorted(
        [
            key("a", C.QUALITY_ACCEPTED, 1.0, "h1"),
            key("b", C.QUALITY_ACCEPTED, 0.95, "h2"),
            key("c", C.QUALITY_PARTIAL, 0.5, "h1"),
            key("d", C.QUALITY_REJECTED, 0.0, "h4"),
            key("e", C.QUALITY_REJECTED, 0.0, "h5"),
        ],
        key=RunKey.order,
    )
    pairs = {
        (c.run_id, r.run_id): reasons for c, r, reasons in candidate_pairs(runs, ExportSettings())
    }
    assert pairs[("a", "b")] == [C.R_BELOW_MARGIN]
    assert pairs[("a", "c")] == [C.R_IDENTICAL_TEXT]
    assert pairs[("a", "d")] == [] and pairs[("c", "d")] == []
    assert ("d", "e") not in pairs and ("e", "d") not in pairs  # rejected is never chosen
    assert all(c != r for c, r in pairs)


def test_pairs_need_a_real_instruction_on_one_side():
    runs = [
        key("a", C.QUALITY_ACCEPTED, 1.0, sft_eligible=False),
        key("d", C.QUALITY_REJECTED, 0.0, sft_eligible=False),
    ]
    [(_, _, reasons)] = list(candidate_pairs(runs, ExportSettings()))
    assert C.R_INSTRUCTION_UNAVAILABLE in reasons
