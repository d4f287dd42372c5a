"""Stage ``export-sft``: accepted runs in allowed categories, with an answer, as TRL rows.

A run's chat becomes TRL conversational messages (``sft_messages``: its own turns without the
system turns, up to its final answer) or a prompt/completion row, as the format setting says;
its user turns are what decontamination compares (``user_texts``), and all of its text what the
near-duplicate filter compares (``conversation_text``). Every run left out gets a quarantine
row saying why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import (
    ExportSettings,
    TrainingExporter,
    category_reason,
    stable_id,
)
from distill_assets.lib.datasets.formats import sft_columns
from distill_assets.lib.datasets.runs import RunKey
from distill_assets.lib.hygiene.decontam import EvalSet
from distill_assets.lib.records.accounting import StageResult


def sft_messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    """TRL conversational messages: the run's own chat without system turns, or user/assistant."""
    messages = record.get("messages")
    if not messages:
        return [
            {"role": "user", "content": record["instruction"]},
            {"role": "assistant", "content": record["response"]},
        ]
    kept: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") in ("system", "developer"):
            continue
        clean: dict[str, Any] = {"role": message["role"], "content": message.get("content")}
        for name in ("tool_calls", "tool_call_id", "name"):
            if message.get(name) is not None:
                clean[name] = message[name]
        kept.append(clean)
    final = _last_answer(kept)
    if final is None:
        kept.append({"role": "assistant", "content": record["response"]})
    else:
        del kept[final + 1 :]  # turns after the final answer (e.g. a user's goodbye) teach nothing
    if kept[0]["role"] != "user":
        kept.insert(0, {"role": "user", "content": record["instruction"]})
    return kept


def _last_answer(messages: list[dict[str, Any]]) -> int | None:
    """Index of the last assistant message that answers in text (no tool call)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message["role"] == "assistant" and not message.get("tool_calls"):
            content = message.get("content")
            if (
                isinstance(content, str)
                and content.strip()
                or isinstance(content, list)
                and content
            ):
                return index
    return None


def _texts_of(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
    return []


def user_texts(messages: list[dict[str, Any]]) -> list[str]:
    """The user turns of a conversation: its prompts, for decontamination."""
    return [t for m in messages if m.get("role") == "user" for t in _texts_of(m.get("content"))]


def conversation_text(messages: list[dict[str, Any]]) -> str:
    """Every turn's text and tool-call arguments, one per line: what near-duplicates compare."""
    parts: list[str] = []
    for message in messages:
        parts.extend(_texts_of(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                parts.append(f"{function.get('name', '')} {function.get('arguments', '')}")
    return "\n".join(parts)


def _common_reasons(key: RunKey) -> list[str] | None:
    if key.quality == C.QUALITY_REVIEW:
        return [C.R_NEEDS_HUMAN_REVIEW]
    if key.quality == C.QUALITY_REJECTED:
        return [C.R_QUALITY_REJECTED]
    return None


class SftExporter(TrainingExporter):
    """``export-sft``: accepted runs in allowed categories, with an answer, as TRL rows."""

    stage = C.STAGE_EXPORT_SFT
    dataset_path = C.SFT_PATH

    @staticmethod
    def format_of(settings: ExportSettings) -> str:
        return settings.formats.sft_format

    def task(self, task_id: str, runs: list[RunKey], repeated: frozenset[str]) -> None:
        tally = self.tally
        for key in self.admit(runs, repeated):
            tally.records_in += 1
            reasons = _common_reasons(key) or []
            if key.quality == C.QUALITY_PARTIAL:
                reasons.append(C.R_PARTIALLY_ACCEPTED)
            unsafe = category_reason(key.category, self.settings)
            if unsafe:
                reasons.append(unsafe)
            if key.response_empty:
                reasons.append(C.R_EMPTY_RESPONSE)
            if not key.sft_eligible:
                reasons.append(C.R_NOT_SFT_ELIGIBLE)
            if reasons:
                self.leave_out(key, reasons)
                continue
            found = self.fetch(key)
            if found is None:
                self.leave_out(key, [C.R_MISSING_SOURCE_RUN_ID])
                continue
            record = found.record
            messages = sft_messages(record)
            composed: list[str] = []
            screened = self.curation.screen(
                {
                    **sft_columns(messages, record, self.fmt, composed),
                    "id": stable_id("sft", key.run_id),
                    "source_run_id": key.run_id,
                    "task_id": key.task_id,
                    "category": key.category,
                },
                key.task_id,
                user_texts(messages),
                trusted=found.clean,
                composed=composed,
            )
            if screened.reasons:
                self.leave_out(key, screened.reasons, **screened.details)
                continue
            if "messages" in screened.row:
                text = conversation_text(screened.row["messages"])
            else:
                text = f"{screened.row['prompt']}\n{screened.row['completion']}"
            self.curation.keep(screened.row, (key,), text, pair=False)
            tally.records_out += 1
            tally.accepted += 1


# --- the export alone (the library API the tests and the benchmark call) --------------------------


def export_sft(
    out_root: Path,
    settings: ExportSettings,
    write_root: Path | None = None,
    eval_set: EvalSet | None = None,
) -> StageResult:
    """Write the dataset and its quarantine under ``write_root`` (default: ``out_root``)."""
    from distill_assets.lib.datasets.export_pass import ExportPlan, run_exports

    plan = ExportPlan(write_root=write_root or out_root, sft=(settings, eval_set))
    return run_exports(out_root, plan)[C.STAGE_EXPORT_SFT]
