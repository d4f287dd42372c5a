"""Playbooks as pure functions: the steps a run took, where a failed run diverged, the Markdown.

A step is one tool call read from a run's ``messages``, in order, with its arguments summarized
and its result truncated. Three chat shapes are understood: OpenAI ``tool_calls`` (and the
older ``function_call``) answered by ``tool``/``function`` messages, and Anthropic-style
``tool_use``/``tool_result`` content blocks. Nothing here reads files or calls a model: the
same messages and settings always give the same steps, divergences and text (docs/rag.md).
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.importers.base import text_of
from distill_assets.lib.infra.io import canonical_json


@dataclass(frozen=True)
class PlaybookSettings:
    """How much of a run a playbook quotes (defaults documented in docs/rag.md)."""

    max_steps: int = 40
    argument_chars: int = 160
    value_chars: int = 60
    result_chars: int = 240
    answer_chars: int = 400
    max_divergences: int = 5
    title_chars: int = 80
    # runs of these categories are neither a playbook's source nor its contrast (the
    # exports' deny-list, applied to the extraction; docs/datasets.md)
    deny_categories: tuple[str, ...] = C.DEFAULT_UNSAFE_SFT_CATEGORIES

    def errors(self) -> list[str]:
        problems = []
        for name in ("max_steps", "max_divergences"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)!r} must not be negative")
        for name in ("argument_chars", "value_chars", "result_chars", "answer_chars"):
            if getattr(self, name) < 8:
                problems.append(f"{name}={getattr(self, name)!r} must be at least 8")
        if self.title_chars < 8:
            problems.append(f"title_chars={self.title_chars!r} must be at least 8")
        return problems


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call as the run made it: name, arguments (parsed when JSON), result text."""

    tool: str
    arguments: Any
    result: str | None
    error: bool

    def signature(self) -> str:
        """What two calls must share to count as the same step: tool and exact arguments."""
        body = self.tool.encode("utf-8") + b"\x1f" + canonical_json(self.arguments)
        return hashlib.sha256(body).hexdigest()[:16]


def clip(text: str, limit: int) -> str:
    """Whitespace collapsed, cut to ``limit`` characters with a trailing ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def result_text(content: Any) -> str:
    """A tool result's text: plain or block content as text, any other JSON value as JSON."""
    if isinstance(content, str | list):
        return text_of(content)
    if content is None:
        return ""
    return orjson.dumps(content).decode("utf-8")


def _parse_arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    return raw


def _is_error(text: str, flagged: Any) -> bool:
    return flagged is True or text.lstrip().lower().startswith("error")


class _Pairing:
    """Tool calls as they open, each answered by the first result that names it (else the
    oldest pending one)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.pending: deque[int] = deque()

    def open(self, name: Any, arguments: Any, call_id: Any) -> None:
        if not isinstance(name, str) or not name.strip():
            return
        self.calls.append(
            {"tool": name.strip(), "arguments": _parse_arguments(arguments), "id": call_id}
        )
        self.pending.append(len(self.calls) - 1)

    def open_all(self, message: dict[str, Any], content: Any) -> None:
        """The calls an assistant message makes: OpenAI ``tool_calls`` and ``function_call``,
        Anthropic ``tool_use`` blocks."""
        for call in message.get("tool_calls") or []:
            if not isinstance(call, dict):
                continue
            function = call.get("function") if isinstance(call.get("function"), dict) else call
            self.open(function.get("name"), function.get("arguments"), call.get("id"))
        legacy = message.get("function_call")
        if isinstance(legacy, dict):
            self.open(legacy.get("name"), legacy.get("arguments"), None)
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    self.open(block.get("name"), block.get("input"), block.get("id"))

    def answer(self, call_id: Any, content: Any, flagged: Any = None) -> None:
        target = None
        if call_id is not None:
            target = next((i for i in self.pending if self.calls[i]["id"] == call_id), None)
        if target is None and self.pending:
            target = self.pending[0]
        if target is None:
            return
        self.pending.remove(target)
        text = result_text(content)
        self.calls[target]["result"] = text
        self.calls[target]["error"] = _is_error(text, flagged)


def tool_calls(messages: Any) -> list[Call]:
    """Every tool call in ``messages``, in order, each paired with the result that answered it.

    A result is matched to the pending call with its id (``tool_call_id`` / ``tool_use_id``),
    else to the oldest pending call; a call nobody answered has no result. Calls without a
    tool name are not steps.
    """
    if not isinstance(messages, list):
        return []
    pairing = _Pairing()
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        content = message.get("content")
        if role == "assistant":
            pairing.open_all(message, content)
        elif role in ("tool", "function"):
            pairing.answer(message.get("tool_call_id"), content, message.get("is_error"))
        elif role == "user" and isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    pairing.answer(
                        block.get("tool_use_id"), block.get("content"), block.get("is_error")
                    )
    return [
        Call(c["tool"], c["arguments"], c.get("result"), bool(c.get("error", False)))
        for c in pairing.calls
    ]


def summarize_arguments(arguments: Any, settings: PlaybookSettings) -> str:
    """``key=value, …`` for an object (values clipped), else the value itself, clipped."""
    if isinstance(arguments, dict):
        parts = []
        for key, value in arguments.items():
            shown = value if isinstance(value, str) else orjson.dumps(value).decode("utf-8")
            parts.append(f"{key}={clip(shown, settings.value_chars)}")
        return clip(", ".join(parts), settings.argument_chars)
    if arguments is None:
        return ""
    shown = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode("utf-8")
    return clip(shown, settings.argument_chars)


def step_row(number: int, call: Call, settings: PlaybookSettings) -> dict[str, Any]:
    return {
        "n": number,
        "tool": call.tool,
        "arguments": summarize_arguments(call.arguments, settings),
        "result": None if call.result is None else clip(call.result, settings.result_chars),
        "error": call.error,
    }


def steps_of(calls: list[Call], settings: PlaybookSettings) -> list[dict[str, Any]]:
    return [step_row(i, call, settings) for i, call in enumerate(calls[: settings.max_steps], 1)]


def divergence(
    playbook: list[Call], failed: list[Call], answer: str, settings: PlaybookSettings
) -> dict[str, Any]:
    """The first step where a failed run's tool calls differ from the playbook's.

    ``kind`` is one of ``DIVERGENCE_KINDS``; ``step`` is 1-based (null for ``same_steps``);
    ``expected`` is the playbook's step there and ``actual`` the failed run's (either may be
    null), and ``answer`` is the failed run's final answer, clipped.
    """
    expected = actual = None
    kind, step = C.DIVERGED_NONE, None
    for index in range(max(len(playbook), len(failed))):
        mine = playbook[index] if index < len(playbook) else None
        theirs = failed[index] if index < len(failed) else None
        if mine is not None and theirs is not None and mine.signature() == theirs.signature():
            continue
        step = index + 1
        if theirs is None:
            kind = C.DIVERGED_STOPPED
        elif mine is None:
            kind = C.DIVERGED_EXTRA
        elif mine.tool != theirs.tool:
            kind = C.DIVERGED_TOOL
        else:
            kind = C.DIVERGED_ARGUMENTS
        expected = None if mine is None else step_row(step, mine, settings)
        actual = None if theirs is None else step_row(step, theirs, settings)
        break
    return {
        "kind": kind,
        "step": step,
        "expected": expected,
        "actual": actual,
        "answer": clip(answer, settings.answer_chars),
    }


def title_of(instruction: str, limit: int) -> str:
    """First non-blank line of the instruction, whitespace collapsed, clipped to ``limit``."""
    first = next((line.strip() for line in instruction.splitlines() if line.strip()), "")
    return clip(first, limit)


def tags_of(category: str | None, agents: list[str | None], steps: list[Call]) -> dict[str, Any]:
    return {
        "category": category,
        "agents": sorted({a for a in agents if isinstance(a, str) and a}),
        "tools": sorted({call.tool for call in steps}),
    }


def tags_of_sources(tags: dict[str, Any], sources: list[dict[str, Any]]) -> dict[str, Any]:
    """The tags again, with the agents of the given sources only."""
    agents = sorted({s["agent"] for s in sources if isinstance(s.get("agent"), str) and s["agent"]})
    return {**tags, "agents": agents}


# --- Markdown ---------------------------------------------------------------------------------


def _call_text(step: dict[str, Any]) -> str:
    return f"`{step['tool']}`({step['arguments']})"


def _divergence_line(item: dict[str, Any], with_steps: bool) -> str:
    run = f"`{item['run_id']}`"
    kind, step = item["kind"], item["step"]
    expected, actual = item["expected"], item["actual"]
    if kind == C.DIVERGED_NONE:
        same = "same tool calls, but answered" if with_steps else "answered"
        return f"- {run}: {same}: {item['answer'] or '(nothing)'}"
    if kind == C.DIVERGED_STOPPED:
        return f"- {run}: stopped before step {step} ({_call_text(expected)})"
    head = f"- {run}: at step {step} called {_call_text(actual)}"
    if kind == C.DIVERGED_EXTRA:
        head = f"- {run}: after the playbook's steps also called {_call_text(actual)}"
    elif expected is not None:
        head += f" instead of {_call_text(expected)}"
    if actual is not None and actual["result"] is not None:
        head += f" → {actual['result']}"
    return head


def render_text(playbook: dict[str, Any]) -> str:
    """The playbook as Markdown: the document a retriever returns (docs/rag.md)."""
    lines = [f"# {playbook['title']}", "", "## Problem", playbook["problem"].strip(), ""]
    steps = playbook["steps"]
    if steps:
        lines.append("## Steps taken")
        for step in steps:
            line = f"{step['n']}. {_call_text(step)}"
            if step["result"] is not None:
                line += f" → {'error: ' if step['error'] else ''}{step['result']}"
            lines.append(line)
        hidden = playbook["steps_total"] - len(steps)
        if hidden > 0:
            lines.append(f"({hidden} more step(s) not shown)")
        lines.append("")
    lines += [
        f"## Verified solution ({playbook['quality']}, score {playbook['score']:g})",
        playbook["final_answer"].strip(),
        "",
    ]
    divergences = playbook["divergences"]
    if divergences:
        lines.append("## What failed runs did differently")
        with_steps = playbook["steps_total"] > 0
        lines += [_divergence_line(item, with_steps) for item in divergences]
        hidden = len(playbook["failed_run_ids"]) - len(divergences)
        if hidden > 0:
            lines.append(f"- ({hidden} more failed run(s) not shown)")
        lines.append("")
    tags = playbook["tags"]
    tag_parts = [f"category {tags['category']}"] if tags["category"] else []
    if tags["agents"]:
        tag_parts.append("agents " + ", ".join(tags["agents"]))
    if tags["tools"]:
        tag_parts.append("tools " + ", ".join(tags["tools"]))
    if tag_parts:
        lines.append("Tags: " + "; ".join(tag_parts))
    return "\n".join(lines).rstrip() + "\n"


def tags_text(tags: dict[str, Any]) -> str:
    """The tags as words for the full-text index."""
    words = [tags.get("category") or ""] + list(tags.get("agents") or [])
    words += list(tags.get("tools") or [])
    return " ".join(w for w in words if w)
