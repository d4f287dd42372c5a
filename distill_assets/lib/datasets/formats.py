"""The shapes of the published rows: TRL's dataset formats, their Arrow types and Parquet.

TRL reads conversational rows as OpenAI-style chat messages and standard rows as strings
(docs/datasets.md). ``trl_messages`` normalizes a run's chat to that shape: roles user,
assistant and tool only, ``content`` a string or null, tool calls as
``{"id", "type": "function", "function": {"name", "arguments"}}`` with ``arguments`` a JSON
string, and a key only where the OpenAI shape has one, so ``datasets`` loads every file without
a mixed-type column. ``arrow_schema`` gives each table an explicit Arrow schema that types its
Parquet copy (same rows, same order as the JSONL). A chat message is stored as Arrow's canonical
JSON type, which ``datasets`` decodes back to the exact dict (``datasets.Json``), whatever keys
each message has.

Length: TRL's message normalization and the Arrow type of every published format, which must
agree column by column.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.infra.io import AtomicFile, WrittenFile, iter_jsonl

PARQUET_BATCH_ROWS = 10_000
PREVIEW_ROWS = 3
PREVIEW_CHARS = 120


@dataclass(frozen=True)
class FormatSettings:
    """How the datasets are shaped and packaged (docs/datasets.md): TRL row formats, a Parquet
    copy beside each JSONL file, and the license the dataset cards declare."""

    sft_format: str = C.SFT_FORMAT_MESSAGES
    preference_format: str = C.PREFERENCE_FORMAT_STANDARD
    parquet: bool = False
    license: str = C.DEFAULT_LICENSE

    def errors(self) -> list[str]:
        problems = []
        if self.sft_format not in C.SFT_FORMATS:
            problems.append(
                f"sft_format={self.sft_format!r} is not one of {', '.join(C.SFT_FORMATS)}"
            )
        if self.preference_format not in C.PREFERENCE_FORMATS:
            problems.append(
                f"preference_format={self.preference_format!r} is not one of "
                + ", ".join(C.PREFERENCE_FORMATS)
            )
        if not self.license.strip() or any(c in self.license for c in "\n:# "):
            problems.append(f"license={self.license!r} must be a license id such as mit")
        if self.parquet:
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                problems.append("parquet=true needs pyarrow: pip install 'distill[parquet]'")
        return problems

    def format_of(self, stage: str) -> str:
        """The row format a stage writes ("" for the one-format tables)."""
        if stage == C.STAGE_EXPORT_SFT:
            return self.sft_format
        if stage in (C.STAGE_EXPORT_PREFERENCE, C.STAGE_EXPORT_KTO):
            return self.preference_format
        return ""


# --- TRL rows -----------------------------------------------------------------------------------


def _text(content: Any) -> str | None:
    """A message's content as one string: text parts of a multi-part content joined by blank
    lines; None stays None (an assistant turn that only calls tools)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return "\n\n".join(parts)
    return orjson.dumps(content).decode()


def _arguments(raw: Any) -> str:
    """Tool-call arguments as the JSON string the OpenAI shape has (objects are encoded)."""
    if isinstance(raw, str):
        return raw
    if raw is None:
        return "{}"
    return orjson.dumps(raw, option=orjson.OPT_SORT_KEYS).decode()


def _tool_call(
    call: Any, fallback_id: str, composed: list[str] | None = None
) -> dict[str, Any] | None:
    if not isinstance(call, dict):
        return None
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    name = function.get("name")
    if not isinstance(name, str) or not name:
        return None
    call_id = call.get("id")
    raw = function.get("arguments")
    arguments = _arguments(raw)
    if composed is not None and not isinstance(raw, str):
        composed.append(arguments)
    return {
        "id": call_id if isinstance(call_id, str) and call_id else fallback_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def trl_messages(
    messages: list[dict[str, Any]], composed: list[str] | None = None
) -> list[dict[str, Any]]:
    """A chat in TRL's conversational shape (system and developer turns already removed).

    A legacy ``function`` turn becomes a ``tool`` turn and a legacy ``function_call`` a tool
    call, answered by the next tool turn that names no call. ``composed`` collects the strings
    made here rather than copied from the run (joined content parts, encoded arguments): the
    only ones the secret screening must read when the run's record was scanned clean.
    """
    shaped: list[dict[str, Any]] = []
    pending: list[str] = []  # ids of legacy calls not answered yet
    for number, message in enumerate(messages):
        role = "tool" if message.get("role") == "function" else message.get("role")
        content = message.get("content")
        text = _text(content)
        if composed is not None and text is not None and not isinstance(content, str):
            composed.append(text)
        clean: dict[str, Any] = {"role": role, "content": text}
        if role == "assistant":
            raw_calls = message.get("tool_calls")
            if not raw_calls and isinstance(message.get("function_call"), dict):
                raw_calls = [{"id": f"call_{number}", "function": message["function_call"]}]
                pending.append(f"call_{number}")
            calls = [
                call
                for index, raw in enumerate(raw_calls or [])
                if (call := _tool_call(raw, f"call_{number}_{index}", composed)) is not None
            ]
            if calls:
                clean["tool_calls"] = calls
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if isinstance(call_id, str) and call_id:
                clean["tool_call_id"] = call_id
            elif pending:
                clean["tool_call_id"] = pending.pop(0)
        if isinstance(message.get("name"), str) and message["name"]:
            clean["name"] = message["name"]
        shaped.append(clean)
    return shaped


def turn(role: str, content: str) -> list[dict[str, str]]:
    """One turn of a conversational prompt, completion, chosen or rejected column."""
    return [{"role": role, "content": content}]


def sft_columns(
    messages: list[dict[str, Any]],
    record: dict[str, Any],
    fmt: str,
    composed: list[str] | None = None,
) -> dict[str, Any]:
    """The training columns of an SFT row: the conversation, or the instruction as the prompt
    and the final answer as the completion (``composed``: see ``trl_messages``)."""
    if fmt == C.SFT_FORMAT_PROMPT_COMPLETION:
        return {"prompt": record["instruction"], "completion": record["response"]}
    return {"messages": trl_messages(messages, composed)}


def pair_columns(prompt: str, chosen: str, rejected: str, fmt: str) -> dict[str, Any]:
    """prompt/chosen/rejected as strings (standard) or as one-turn conversations."""
    if fmt == C.PREFERENCE_FORMAT_CONVERSATIONAL:
        return {
            "prompt": turn("user", prompt),
            "chosen": turn("assistant", chosen),
            "rejected": turn("assistant", rejected),
        }
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def unpaired_columns(prompt: str, completion: str, label: bool, fmt: str) -> dict[str, Any]:
    """prompt/completion/label of an unpaired (KTO) row, standard or conversational."""
    if fmt == C.PREFERENCE_FORMAT_CONVERSATIONAL:
        return {
            "prompt": turn("user", prompt),
            "completion": turn("assistant", completion),
            "label": label,
        }
    return {"prompt": prompt, "completion": completion, "label": label}


def plain_text(value: Any) -> str:
    """The text of a standard (string) or conversational (list of turns) column."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(
            m["content"] for m in value if isinstance(m, dict) and isinstance(m.get("content"), str)
        )
    return "" if value is None else str(value)


# --- Arrow schemas --------------------------------------------------------------------------------


def _schemas() -> dict[tuple[str, str], Any]:
    import pyarrow as pa

    text, number, flag = pa.string(), pa.float64(), pa.bool_()
    words = pa.list_(text)
    turns = pa.list_(pa.struct([("role", text), ("content", text)]))
    tags = pa.struct([("category", text), ("agents", words), ("tools", words)])
    rag = pa.schema(
        [
            ("id", text),
            ("task_id", text),
            ("title", text),
            ("text", text),
            ("source_run_ids", words),
            ("quality", text),
            ("score", number),
            ("failed_run_ids", words),
            ("tags", tags),
        ]
    )
    sft_tail = [("id", text), ("source_run_id", text), ("task_id", text), ("category", text)]
    pair_tail = [
        ("chosen_run_id", text),
        ("rejected_run_id", text),
        ("task_id", text),
        ("margin", number),
        ("chosen_quality", text),
        ("rejected_quality", text),
    ]
    kto_tail = [
        ("id", text),
        ("source_run_id", text),
        ("task_id", text),
        ("quality", text),
        ("score", number),
        ("category", text),
    ]

    def pair(kind: Any) -> Any:
        return pa.schema(
            [("id", text), ("prompt", kind), ("chosen", kind), ("rejected", kind), *pair_tail]
        )

    def unpaired(kind: Any) -> Any:
        return pa.schema([("prompt", kind), ("completion", kind), ("label", flag), *kto_tail])

    return {
        (C.STAGE_EXPORT_RAG, ""): rag,
        (C.STAGE_EXPORT_SFT, C.SFT_FORMAT_MESSAGES): pa.schema(
            [("messages", pa.list_(pa.json_())), *sft_tail]
        ),
        (C.STAGE_EXPORT_SFT, C.SFT_FORMAT_PROMPT_COMPLETION): pa.schema(
            [("prompt", text), ("completion", text), *sft_tail]
        ),
        (C.STAGE_EXPORT_PREFERENCE, C.PREFERENCE_FORMAT_STANDARD): pair(text),
        (C.STAGE_EXPORT_PREFERENCE, C.PREFERENCE_FORMAT_CONVERSATIONAL): pair(turns),
        (C.STAGE_EXPORT_KTO, C.PREFERENCE_FORMAT_STANDARD): unpaired(text),
        (C.STAGE_EXPORT_KTO, C.PREFERENCE_FORMAT_CONVERSATIONAL): unpaired(turns),
    }


def arrow_schema(stage: str, fmt: str = "") -> Any:
    """The Arrow schema of a stage's rows in a format ("" for the one-format tables)."""
    return _schemas()[(stage, fmt)]


def _is_json(kind: Any) -> bool:
    import pyarrow as pa

    return isinstance(kind, pa.BaseExtensionType) and kind.extension_name == "arrow.json"


# --- Parquet --------------------------------------------------------------------------------------


def _storage_schema(schema: Any) -> Any:
    """``schema`` with each JSON column as its storage (strings), to build arrays from rows."""
    import pyarrow as pa

    def storage(kind: Any) -> Any:
        if _is_json(kind):
            return kind.storage_type
        if pa.types.is_list(kind):
            return pa.list_(storage(kind.value_type))
        return kind

    return pa.schema([(f.name, storage(f.type)) for f in schema])


def _encode_json_columns(rows: list[dict[str, Any]], schema: Any) -> list[dict[str, Any]]:
    import pyarrow as pa

    columns = [f.name for f in schema if pa.types.is_list(f.type) and _is_json(f.type.value_type)]
    if not columns:
        return rows
    for row in rows:
        for name in columns:
            if row.get(name) is not None:
                row[name] = [orjson.dumps(item).decode() for item in row[name]]
    return rows


def _batches(path: Path, size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in iter_jsonl(path):
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_parquet(root: Path, jsonl_relpath: str, schema: Any) -> WrittenFile:
    """Write the Parquet copy of a JSONL dataset beside it: the same rows in the same order,
    typed by ``schema``, written atomically (deterministic bytes for one pyarrow version)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    relpath = C.parquet_path(jsonl_relpath)
    storage = _storage_schema(schema)
    rows = 0
    with AtomicFile(root, relpath) as target:
        writer = pq.ParquetWriter(str(target.path), schema, compression="zstd")
        try:
            for batch in _batches(root / jsonl_relpath, PARQUET_BATCH_ROWS):
                table = pa.Table.from_pylist(_encode_json_columns(batch, schema), schema=storage)
                writer.write_table(table.cast(schema))
                rows += len(batch)
        finally:
            writer.close()
    return target.written(rows)


def parquet_rows(path: Path) -> int:
    """The row count of a Parquet file, from its footer."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def read_parquet_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a Parquet copy as Python objects, JSON columns decoded (for checks, tests)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    json_columns = [
        f.name
        for f in table.schema
        if hasattr(f.type, "value_type") and _is_json(f.type.value_type)
    ]
    rows = table.to_pylist()
    for row in rows:
        for name in json_columns:
            if row[name] is not None:
                row[name] = [orjson.loads(item) for item in row[name]]
    return rows


# --- previews -------------------------------------------------------------------------------------

PREVIEW_COLUMNS = {
    C.STAGE_EXPORT_RAG: ("id", "task_id", "title", "text"),
    C.STAGE_EXPORT_SFT: ("id", "task_id", "messages", "prompt", "completion"),
    C.STAGE_EXPORT_PREFERENCE: ("id", "task_id", "prompt", "chosen", "rejected", "margin"),
    C.STAGE_EXPORT_KTO: ("id", "task_id", "prompt", "completion", "label"),
}


def _cell(value: Any, limit: int) -> str:
    """One preview cell: flattened to text, secrets redacted, cut, safe inside a table."""
    from distill_assets.lib.hygiene.secrets import redact_text

    if isinstance(value, list) and value and isinstance(value[0], dict) and "role" in value[0]:
        text = " / ".join(f"{m.get('role')}: {plain_text([m])}" for m in value)
    elif isinstance(value, str):
        text = value
    else:
        text = orjson.dumps(value).decode()
    text, _ = redact_text(" ".join(text.split()))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def preview_markdown(
    path: Path, stage: str, rows: int = PREVIEW_ROWS, chars: int = PREVIEW_CHARS
) -> str:
    """The first rows of a written dataset file as a Markdown table, texts cut to ``chars``
    (rows were screened for secrets when written; cells are redacted again all the same)."""
    if not path.exists():
        return f"_{path.name} was not written_"
    shown: list[dict[str, Any]] = []
    for row in iter_jsonl(path):
        shown.append(row)
        if len(shown) >= rows:
            break
    if not shown:
        return f"_{path.name} has no rows_"
    columns = [c for c in PREVIEW_COLUMNS.get(stage, tuple(shown[0])) if c in shown[0]]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in shown:
        lines.append("| " + " | ".join(_cell(row.get(c), chars) for c in columns) + " |")
    return "\n".join(lines)
