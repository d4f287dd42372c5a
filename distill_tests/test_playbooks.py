"""Playbook extraction as pure functions: tool calls from three chat shapes, argument summaries,
where a failed run diverged, and the Markdown a retriever returns."""

from __future__ import annotations

import json

import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.playbooks.playbook import (
    Call,
    PlaybookSettings,
    clip,
    divergence,
    render_text,
    steps_of,
    summarize_arguments,
    tags_of,
    title_of,
    tool_calls,
)

SETTINGS = PlaybookSettings()


def openai_call(call_id: str | None, name: str, arguments: dict | str) -> dict:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": raw}}


def test_openai_tool_calls_pair_results_by_id_in_order():
    messages = [
        {"role": "system", "content": "policy"},
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [openai_call("a", "first", {"x": 1}), openai_call("b", "second", {})],
        },
        # answered out of order: results follow their ids, not their position
        {"role": "tool", "tool_call_id": "b", "content": "two"},
        {"role": "tool", "tool_call_id": "a", "content": "one"},
        {"role": "assistant", "content": "done"},
    ]
    calls = tool_calls(messages)
    assert [(c.tool, c.arguments, c.result) for c in calls] == [
        ("first", {"x": 1}, "one"),
        ("second", {}, "two"),
    ]


def test_reused_call_ids_pair_with_the_pending_call():
    # τ-bench reuses call ids across turns: each result answers the call still waiting
    messages = [
        {"role": "assistant", "tool_calls": [openai_call("same", "search", {"q": 1})]},
        {"role": "tool", "tool_call_id": "same", "content": "r1"},
        {"role": "assistant", "tool_calls": [openai_call("same", "search", {"q": 2})]},
        {"role": "tool", "tool_call_id": "same", "content": "r2"},
    ]
    assert [(c.arguments["q"], c.result) for c in tool_calls(messages)] == [(1, "r1"), (2, "r2")]


def test_legacy_function_call_and_anthropic_blocks():
    messages = [
        {"role": "assistant", "function_call": {"name": "lookup", "arguments": '{"id": 7}'}},
        {"role": "function", "name": "lookup", "content": "found"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "let me merge"},
                {"type": "tool_use", "id": "tu1", "name": "merge", "input": {"into": "T-1"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "tu1",
                    "content": [{"type": "text", "text": "Error: locked"}],
                    "is_error": True,
                }
            ],
        },
    ]
    calls = tool_calls(messages)
    assert [(c.tool, c.arguments, c.result, c.error) for c in calls] == [
        ("lookup", {"id": 7}, "found", False),
        ("merge", {"into": "T-1"}, "Error: locked", True),
    ]


def test_odd_calls_are_not_steps_and_unanswered_calls_have_no_result():
    messages = [
        "not a message",
        {"role": "assistant", "tool_calls": ["junk", {"function": {"name": ""}}]},
        {"role": "assistant", "tool_calls": [openai_call("z", "wait", "not json {")]},
        {"role": "tool", "tool_call_id": "nobody", "content": {"status": "ok"}},
        {"role": "assistant", "tool_calls": [openai_call("y", "never_answered", {})]},
    ]
    calls = tool_calls(messages)
    assert [(c.tool, c.arguments, c.result) for c in calls] == [
        ("wait", "not json {", '{"status":"ok"}'),  # unmatched id: the oldest pending call
        ("never_answered", {}, None),
    ]
    assert tool_calls(None) == [] and tool_calls("text") == []


def test_argument_summaries_are_clipped():
    settings = PlaybookSettings(value_chars=10, argument_chars=40)
    summary = summarize_arguments(
        {"sql": "SELECT count(*) FROM events WHERE day = 1", "n": [1, 2]}, settings
    )
    assert summary == "sql=SELECT co…, n=[1,2]"
    assert len(summarize_arguments({f"k{i}": i for i in range(30)}, settings)) == 40
    assert summarize_arguments("plain   text", settings) == "plain text"
    assert summarize_arguments(None, settings) == ""


def test_steps_are_numbered_capped_and_results_truncated():
    calls = [Call(f"t{i}", {"i": i}, "r" * 500, False) for i in range(5)]
    steps = steps_of(calls, PlaybookSettings(max_steps=3, result_chars=20))
    assert [s["n"] for s in steps] == [1, 2, 3]
    assert steps[0]["result"] == "r" * 19 + "…"


PLAYBOOK = [Call("a", {"x": 1}, "ok", False), Call("b", {"y": 2}, "ok", False)]


@pytest.mark.parametrize(
    ("failed", "kind", "step"),
    [
        (
            [Call("a", {"x": 1}, "other", False), Call("b", {"y": 2}, "x", False)],
            "same_steps",
            None,
        ),
        (
            [Call("a", {"x": 1}, "ok", False), Call("b", {"y": 3}, "ok", False)],
            "different_arguments",
            2,
        ),
        ([Call("c", {"x": 1}, "ok", False)], "different_tool", 1),
        ([Call("a", {"x": 1}, "ok", False)], "stopped_early", 2),
        ([*PLAYBOOK, Call("c", {}, "ok", False)], "extra_step", 3),
        ([], "stopped_early", 1),
    ],
)
def test_divergence_kinds(failed, kind, step):
    found = divergence(PLAYBOOK, failed, "  their   answer ", SETTINGS)
    assert (found["kind"], found["step"]) == (kind, step)
    assert found["kind"] in C.DIVERGENCE_KINDS
    assert found["answer"] == "their answer"
    if kind == "stopped_early":
        assert found["actual"] is None and found["expected"]["n"] == step
    if kind == "extra_step":
        assert found["expected"] is None and found["actual"]["tool"] == "c"


def test_results_do_not_count_in_the_comparison():
    # the same call with a different result is the same step: what the agent did matters
    failed = [Call("a", {"x": 1}, "different", True), Call("b", {"y": 2}, "ok", False)]
    assert divergence(PLAYBOOK, failed, "", SETTINGS)["kind"] == "same_steps"


def test_title_tags_and_clip():
    assert title_of("\n  Fix   the bug\nmore", 80) == "Fix the bug"
    assert len(title_of("x" * 200, 80)) == 80 and title_of("x" * 200, 80).endswith("…")
    assert clip("a  b", 10) == "a b"
    assert tags_of("ops", ["b", None, "a", "b"], PLAYBOOK) == {
        "category": "ops",
        "agents": ["a", "b"],
        "tools": ["a", "b"],
    }


def playbook(**changes):
    base = {
        "title": "Rotate certs",
        "problem": "Rotate the certs.",
        "steps": steps_of(PLAYBOOK, SETTINGS),
        "steps_total": 2,
        "final_answer": "Rotated.",
        "quality": C.QUALITY_ACCEPTED,
        "score": 1.0,
        "failed_run_ids": ["r-bad"],
        "divergences": [
            {"run_id": "r-bad", **divergence(PLAYBOOK, PLAYBOOK[:1], "gave up", SETTINGS)}
        ],
        "tags": {"category": "ops", "agents": ["agent-1"], "tools": ["a", "b"]},
    }
    return {**base, **changes}


def test_render_text_sections():
    text = render_text(playbook())
    assert text.startswith("# Rotate certs\n\n## Problem\nRotate the certs.\n")
    assert "## Steps taken\n1. `a`(x=1) → ok\n2. `b`(y=2) → ok\n" in text
    assert "## Verified solution (accepted, score 1)\nRotated.\n" in text
    assert "- `r-bad`: stopped before step 2 (`b`(y=2))" in text
    assert text.endswith("Tags: category ops; agents agent-1; tools a, b\n")


def test_render_text_without_steps_or_failures():
    text = render_text(
        playbook(
            steps=[], steps_total=0, failed_run_ids=[], divergences=[], tags=tags_of(None, [], [])
        )
    )
    assert "## Steps taken" not in text and "failed runs" not in text and "Tags" not in text
    hidden = render_text(playbook(steps_total=9, failed_run_ids=["r-bad", "r2", "r3"]))
    assert "(7 more step(s) not shown)" in hidden
    assert "(2 more failed run(s) not shown)" in hidden


def test_settings_errors():
    assert PlaybookSettings().errors() == []
    problems = PlaybookSettings(max_steps=-1, result_chars=2, title_chars=3).errors()
    assert problems == [
        "max_steps=-1 must not be negative",
        "result_chars=2 must be at least 8",
        "title_chars=3 must be at least 8",
    ]
    for name in ("max_divergences", "argument_chars", "value_chars", "answer_chars"):
        value = -1 if name == "max_divergences" else 7
        (problem,) = PlaybookSettings(**{name: value}).errors()
        assert problem.startswith(f"{name}={value} ")
    # the smallest accepted values are accepted
    smallest = PlaybookSettings(max_steps=0, max_divergences=0, result_chars=8, title_chars=8)
    assert smallest.errors() == []
