"""Pandera models (polars backend) of every table distill writes, a strict vectorized JSONL
reader, and lazy validation of what it read.

Each model is strict, says what every column holds, and checks its values with polars
expressions only (the list and struct namespaces for nested columns, never a Python function
per cell). ``read_jsonl`` parses a file once with pyarrow's JSON reader against the model's
explicit types: an unexpected key, a value of the wrong JSON type or a line that is not an
object makes the native read fail, and only then is the file read again row by row, so every
misfit becomes a failure case instead of an exception. Each row keeps its file, its row number
in the file and its line number. ``validate_frame`` runs the model on a frame read that way
(uniqueness holds within each file); ``validate_jsonl`` reads and validates in one call.

Length: one strict model per published table with every field described (more than half the
module), and the vectorized JSONL reader they share.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
import pandera.polars as pa
import polars as pl
import pyarrow as arrow
from pandera.api.polars.types import PolarsData
from pyarrow import json as arrow_json

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.evidence.format import WHITESPACE

HEX64 = r"^[0-9a-f]{64}$"
TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
TRAINABLE = [C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL]
ROLES = ["user", "assistant", "tool", "function"]

_CLASS = "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE)
_NOT_SPACE = "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE if c != " ")
# runs that are not a single space: what " ".join(text.split()) replaces
_FOLD = f"[{_CLASS}]{{2,}}|[{_NOT_SPACE}]"

# bookkeeping columns read_jsonl adds to the model's columns
FILE = "_file"  # index of the row's file in the list read
ROW = "_row"  # row number within its file, from 0, blank lines not counted
LINE = "_line"  # line number from 1, counted on across the files read (holdout after train)
PROBLEMS = "_problems"  # null, or why the row (or its file) does not fit the model
PROBLEM = pl.Struct(
    {"column": pl.String, "check": pl.String, "failure_case": pl.String, "whole_file": pl.Boolean}
)
BOOKKEEPING = (FILE, ROW, LINE, PROBLEMS)


# --- nested column types -------------------------------------------------------------------


# structs whose other keys are allowed (and not read): a chat message may carry any
_OPEN: set[pl.DataType] = set()


def _struct(fields: dict[str, Any], open_: bool = False) -> pl.Struct:
    dtype = pl.Struct(fields)
    if open_:
        _OPEN.add(dtype)
    return dtype


def _fields(dtype: pl.Struct) -> dict[str, Any]:
    return {f.name: f.dtype for f in dtype.fields}


STEP = _struct(
    {
        "n": pl.Int64,
        "tool": pl.String,
        "arguments": pl.String,
        "result": pl.String,
        "error": pl.Boolean,
    }
)
DIVERGENCE = _struct(
    {
        "run_id": pl.String,
        "kind": pl.String,
        "step": pl.Int64,
        "expected": STEP,
        "actual": STEP,
        "answer": pl.String,
    }
)
TAGS = _struct({"category": pl.String, "agents": pl.List(pl.String), "tools": pl.List(pl.String)})
SOURCE = _struct(
    {"run_id": pl.String, "quality": pl.String, "score": pl.Float64, "agent": pl.String}
)
TURN = _struct({"role": pl.String, "content": pl.String})
# TRL's conversational message; any other key a chat may carry is allowed (and not read)
MESSAGE = _struct(
    {
        "role": pl.String,
        "content": pl.String,
        "tool_calls": pl.List(
            pl.Struct(
                {
                    "id": pl.String,
                    "type": pl.String,
                    "function": pl.Struct({"name": pl.String, "arguments": pl.String}),
                }
            )
        ),
        "tool_call_id": pl.String,
        "name": pl.String,
    },
    open_=True,
)


# --- vectorized predicates -----------------------------------------------------------------


def _all(items: pl.Expr, predicate: pl.Expr) -> pl.Expr:
    """Every element of a list column satisfies ``predicate`` (over ``pl.element()``); an
    element for which it is null fails."""
    return items.list.eval(predicate.fill_null(False)).list.all()


def _unless_null(value: pl.Expr, ok: pl.Expr) -> pl.Expr:
    """``ok``, false where it is null, and null where ``value`` is (nullability is its own
    check, so a null is not counted twice)."""
    return pl.when(value.is_null()).then(None).otherwise(ok.fill_null(False))


def _distinct_ids(ids: pl.Expr, minimum: int) -> pl.Expr:
    """At least ``minimum`` ids, each a non-empty string, none twice."""
    return _unless_null(
        ids,
        (ids.list.len() >= minimum)
        & _all(ids, pl.element().str.len_chars() > 0)
        & (ids.list.n_unique() == ids.list.len()),
    )


def _valid_tags(tags: pl.Expr) -> pl.Expr:
    """``{category, agents, tools}``: agents and tools are lists of strings."""
    parts = [tags.struct.field(name) for name in ("agents", "tools")]
    ok = pl.lit(True)
    for part in parts:
        ok = ok & part.is_not_null() & _all(part, pl.element().is_not_null())
    return _unless_null(tags, ok)


def _step_fields(step: pl.Expr) -> pl.Expr:
    """A step's fields have values (``result`` may be null): n, a tool name, arguments, error."""
    get = step.struct.field
    return (
        step.is_not_null()
        & get("n").is_not_null()
        & (get("tool").str.len_chars() > 0)
        & get("arguments").is_not_null()
        & get("error").is_not_null()
    )


def _valid_step(step: pl.Expr, number: pl.Expr) -> pl.Expr:
    return _step_fields(step) & (step.struct.field("n") == number)


def _valid_divergence(item: pl.Expr) -> pl.Expr:
    """A known kind, the failed run and its answer; ``same_steps`` has no step, any other kind
    the step (from 1) with the expected and/or actual call at that step."""
    get = item.struct.field
    kind, step, expected, actual = get("kind"), get("step"), get("expected"), get("actual")
    common = (
        item.is_not_null()
        & kind.is_in(list(C.DIVERGENCE_KINDS))
        & get("run_id").is_not_null()
        & get("answer").is_not_null()
    )
    same = step.is_null() & expected.is_null() & actual.is_null()
    diverged = (
        (step >= 1)
        & (expected.is_null() | _valid_step(expected, step))
        & (actual.is_null() | _valid_step(actual, step))
        & (expected.is_not_null() | actual.is_not_null())
    )
    return common & pl.when(kind == C.DIVERGED_NONE).then(same).otherwise(diverged)


def _valid_messages(messages: pl.Expr) -> pl.Expr:
    """At least two messages with known roles, the first from the user, the last the assistant's."""
    roles = messages.list.eval(pl.element().struct.field("role"))
    return _unless_null(
        messages,
        (messages.list.len() >= 2)
        & _all(messages, pl.element().struct.field("role").is_in(ROLES))
        & (roles.list.first() == "user")
        & (roles.list.last() == "assistant"),
    )


def _valid_turns(turns: pl.Expr, role: str) -> pl.Expr:
    """A non-empty list of ``{role, content}`` turns of ``role``, each with its text."""
    turn = pl.element().struct.field
    return _unless_null(
        turns,
        (turns.list.len() > 0)
        & _all(turns, (turn("role") == role) & turn("content").is_not_null()),
    )


def fold_whitespace(text: pl.Expr) -> pl.Expr:
    """``" ".join(text.split())`` as a polars expression (Python's whitespace, exactly)."""
    return text.str.replace_all(_FOLD, " ").str.strip_chars(" ")


def plain_text(column: str, dtype: pl.DataType) -> pl.Expr:
    """The text of a standard (string) or conversational (list of turns) column, the turns'
    contents joined by newlines; a missing value reads as ""."""
    value = pl.col(column)
    if isinstance(dtype, pl.List):
        value = value.list.eval(pl.element().struct.field("content")).list.drop_nulls()
        value = value.list.join("\n")
    elif dtype != pl.String:
        value = value.cast(pl.String)
    return value.fill_null("")


def texts_identical(frame: pl.DataFrame, left: str, right: str) -> pl.Series:
    """Per row: the texts of two columns (``plain_text``) are equal after whitespace folding.
    Only rows whose first words agree (a necessary condition, found by an anchored match) are
    folded, so texts that differ early cost next to nothing."""
    texts = frame.select(
        plain_text(left, frame.schema[left]).alias("a"),
        plain_text(right, frame.schema[right]).alias("b"),
    )
    first = pl.col("a").str.extract(_FIRST_WORD, 1) == pl.col("b").str.extract(_FIRST_WORD, 1)
    rows = texts.select(first.fill_null(False)).to_series().arg_true()
    folded = texts[rows].select(fold_whitespace(pl.col("a")) == fold_whitespace(pl.col("b")))
    return pl.Series("identical", [False] * frame.height, pl.Boolean).scatter(
        rows, folded.to_series()
    )


_FIRST_WORD = f"^[{_CLASS}]*([^{_CLASS}]*)"


def _select(data: PolarsData, expr: pl.Expr) -> pl.LazyFrame:
    return data.lazyframe.select(expr)


def _texts_differ(data: PolarsData) -> pl.LazyFrame:
    identical = texts_identical(data.lazyframe.collect(), "chosen", "rejected")
    return pl.LazyFrame({"distinct": ~identical})


# --- models --------------------------------------------------------------------------------


class EvidenceIndexSchema(pa.DataFrameModel):
    """One row per usable evidence record (evidence/YYYY/MM/DD/index.jsonl)."""

    evidence_id: str = pa.Field(
        str_matches=HEX64, unique=True, description="sha256 of the record's canonical JSON"
    )
    kind: str = pa.Field(isin=list(C.KINDS), description="run, review or outcome")
    run_id: str = pa.Field(str_length={"min_value": 1}, description="the run it is about")
    created_at: str = pa.Field(str_matches=TIMESTAMP, description="UTC, ISO 8601")
    offset: int = pa.Field(ge=0, description="byte offset of the record in records.jsonl")
    task_id: str = pa.Field(nullable=True, description="runs only")
    category: str = pa.Field(nullable=True, description="runs only, optional")
    agent: str = pa.Field(nullable=True, description="runs only, optional")
    instruction_hash: str = pa.Field(nullable=True, description="normalized text sha256")
    response_hash: str = pa.Field(nullable=True, description="normalized text sha256")
    response_empty: bool = pa.Field(nullable=True, description="runs only")
    has_messages: bool = pa.Field(nullable=True, description="runs only")
    sft_eligible: bool = pa.Field(nullable=True, description="runs only")
    verdict: str = pa.Field(nullable=True, isin=list(C.VERDICTS), description="reviews only")
    score: float = pa.Field(nullable=True, ge=0, le=1, description="reviews, optional")
    outcome: str = pa.Field(nullable=True, isin=list(C.OUTCOMES), description="outcomes only")
    reward: float = pa.Field(nullable=True, ge=0, le=1, description="outcomes, optional")
    signals: str = pa.Field(
        nullable=True,
        description="named partial signals (outcomes, optional), as JSON text",
        metadata={"json_text": True},
    )

    class Config:
        strict = True

    @pa.check("task_id", name="runs_complete", description="runs carry a task_id and text hashes")
    def runs_complete(cls, data: PolarsData) -> pl.LazyFrame:
        is_run = pl.col("kind") == C.KIND_RUN
        complete = pl.col("task_id").is_not_null() & pl.col("response_hash").is_not_null()
        return _select(data, (~is_run | complete).fill_null(True))


class ScoredRunSchema(pa.DataFrameModel):
    """One row per scored run (scored-runs/YYYY/MM/DD/scored_runs.jsonl)."""

    run_id: str = pa.Field(str_length={"min_value": 1}, unique=True, description="the run")
    task_id: str = pa.Field(str_length={"min_value": 1}, description="its task")
    quality_score: str = pa.Field(isin=list(C.QUALITIES), description="the verdict")
    score: float = pa.Field(ge=0, le=1, description="0 to 1")
    reasons: Annotated[pl.List, pl.String] = pa.Field(description="reason codes")
    evidence_ids: Annotated[pl.List, pl.String] = pa.Field(
        description="run record first, then its evidence"
    )
    created_at: str = pa.Field(str_matches=TIMESTAMP, description="UTC, ISO 8601")
    category: str = pa.Field(nullable=True, description="optional")
    agent: str = pa.Field(nullable=True, description="optional")
    run_file: str = pa.Field(str_startswith=f"{C.EVIDENCE_DIR}/", description="records file")
    run_offset: int = pa.Field(ge=0, description="byte offset of the run record")
    instruction_hash: str = pa.Field(str_matches=HEX64, description="normalized text sha256")
    response_hash: str = pa.Field(str_matches=HEX64, description="normalized text sha256")
    response_empty: bool = pa.Field(description="the answer is blank")
    has_messages: bool = pa.Field(description="the run carries a chat")
    sft_eligible: bool = pa.Field(description="false: meta.sft_eligible was false")
    n_reviews: int = pa.Field(ge=0, description="reviews attached")
    n_outcomes: int = pa.Field(ge=0, description="outcomes attached")

    class Config:
        strict = True

    @pa.check("evidence_ids", name="evidence_ids_are_hashes")
    def evidence_ids_are_hashes(cls, data: PolarsData) -> pl.LazyFrame:
        ids = pl.col(data.key)
        ok = (ids.list.len() >= 1) & _all(ids, pl.element().str.len_chars() == 64)
        return _select(data, _unless_null(ids, ok))

    @pa.check("reasons", name="reasons_are_codes")
    def reasons_are_codes(cls, data: PolarsData) -> pl.LazyFrame:
        codes = pl.col(data.key)
        ok = (codes.list.len() >= 1) & _all(codes, pl.element().str.len_chars() > 0)
        return _select(data, _unless_null(codes, ok))


class RagPlaybookSchema(pa.DataFrameModel):
    """One playbook per task (exports/rag/playbooks.jsonl)."""

    id: str = pa.Field(unique=True, str_startswith="pb-", description="stable id of the task")
    task_id: str = pa.Field(unique=True, str_length={"min_value": 1}, description="the task")
    title: str = pa.Field(str_length={"min_value": 1}, description="short title")
    text: str = pa.Field(str_length={"min_value": 1}, description="the playbook, Markdown")
    source_run_ids: Annotated[pl.List, pl.String] = pa.Field(description="verified runs")
    quality: str = pa.Field(isin=TRAINABLE, description="quality of the best source")
    score: float = pa.Field(ge=0, le=1, description="score of the best source")
    failed_run_ids: Annotated[pl.List, pl.String] = pa.Field(
        description="rejected runs of the task"
    )
    tags: Annotated[pl.Struct, _fields(TAGS)] = pa.Field(description="{category, agents, tools}")

    class Config:
        strict = True

    @pa.check("source_run_ids", name="source_run_ids_nonempty")
    def source_run_ids_nonempty(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, _distinct_ids(pl.col(data.key), 1))

    @pa.check("failed_run_ids", name="failed_run_ids_list")
    def failed_run_ids_list(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, _distinct_ids(pl.col(data.key), 0))

    @pa.check("tags", name="tags_shape")
    def tags_shape(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, _valid_tags(pl.col(data.key)))


class ExtractedPlaybookSchema(pa.DataFrameModel):
    """One structured playbook per task (exports/rag/extracted_playbooks.jsonl)."""

    id: str = pa.Field(unique=True, str_startswith="pb-", description="stable id of the task")
    task_id: str = pa.Field(unique=True, str_length={"min_value": 1}, description="the task")
    title: str = pa.Field(str_length={"min_value": 1}, description="short title")
    problem: str = pa.Field(str_length={"min_value": 1}, description="the instruction")
    steps: Annotated[pl.List, STEP] = pa.Field(description="tool calls of the best run, in order")
    steps_total: int = pa.Field(ge=0, description="tool calls the best run made")
    final_answer: str = pa.Field(str_length={"min_value": 1}, description="the best answer")
    failed_run_ids: Annotated[pl.List, pl.String] = pa.Field(
        description="rejected runs of the task"
    )
    divergences: Annotated[pl.List, DIVERGENCE] = pa.Field(
        description="where failed runs left the playbook"
    )
    tags: Annotated[pl.Struct, _fields(TAGS)] = pa.Field(description="{category, agents, tools}")
    quality: str = pa.Field(isin=TRAINABLE, description="quality of the best source")
    score: float = pa.Field(ge=0, le=1, description="score of the best source")
    source_run_ids: Annotated[pl.List, pl.String] = pa.Field(
        description="verified runs, best first"
    )
    sources: Annotated[pl.List, SOURCE] = pa.Field(
        description="{run_id, quality, score, agent} per source"
    )

    class Config:
        strict = True

    @pa.check("steps", name="steps_numbered")
    def steps_numbered(cls, data: PolarsData) -> pl.LazyFrame:
        steps = pl.col(data.key)
        numbers = steps.list.eval(pl.element().struct.field("n").fill_null(-1))
        ok = (numbers == pl.int_ranges(1, steps.list.len() + 1)) & _all(
            steps, _step_fields(pl.element())
        )
        return _select(data, _unless_null(steps, ok))

    @pa.check("divergences", name="divergences_shape")
    def divergences_shape(cls, data: PolarsData) -> pl.LazyFrame:
        items = pl.col(data.key)
        return _select(data, _unless_null(items, _all(items, _valid_divergence(pl.element()))))

    @pa.check("tags", name="tags_shape")
    def tags_shape(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, _valid_tags(pl.col(data.key)))

    @pa.check("failed_run_ids", name="failed_run_ids_list")
    def failed_run_ids_list(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, _distinct_ids(pl.col(data.key), 0))

    @pa.check("source_run_ids", name="source_run_ids_nonempty")
    def source_run_ids_nonempty(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, _distinct_ids(pl.col(data.key), 1))

    @pa.check("sources", name="sources_match", description="the source runs, in order")
    def sources_match(cls, data: PolarsData) -> pl.LazyFrame:
        sources = pl.col("sources")
        run_ids = sources.list.eval(pl.element().struct.field("run_id").fill_null(""))
        trusted = _all(sources, pl.element().struct.field("quality").is_in(TRAINABLE))
        return _select(data, _unless_null(sources, (run_ids == pl.col("source_run_ids")) & trusted))

    @pa.check("steps_total", name="steps_within_total", description="no fewer than shown")
    def steps_within_total(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, pl.col("steps").list.len() <= pl.col("steps_total"))


class SftExampleSchema(pa.DataFrameModel):
    """One conversation per accepted run (exports/sft/instruction_response.jsonl)."""

    messages: Annotated[pl.List, MESSAGE] = pa.Field(description="TRL conversational messages")
    id: str = pa.Field(unique=True, str_startswith="sft-", description="stable id of the run")
    source_run_id: str = pa.Field(unique=True, str_length={"min_value": 1}, description="the run")
    task_id: str = pa.Field(str_length={"min_value": 1}, description="its task")
    category: str = pa.Field(nullable=True, description="the run's category")

    class Config:
        strict = True

    @pa.check("messages", name="messages_user_to_assistant")
    def messages_shape(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, _valid_messages(pl.col(data.key)))


class PreferencePairSchema(pa.DataFrameModel):
    """One chosen/rejected pair within a task (exports/preference/chosen_rejected.jsonl)."""

    id: str = pa.Field(unique=True, str_startswith="pair-", description="stable id of the pair")
    prompt: str = pa.Field(str_length={"min_value": 1}, description="the instruction")
    chosen: str = pa.Field(str_length={"min_value": 1}, description="the better answer")
    rejected: str = pa.Field(description="the worse answer")
    chosen_run_id: str = pa.Field(str_length={"min_value": 1}, description="its run")
    rejected_run_id: str = pa.Field(str_length={"min_value": 1}, description="its run")
    task_id: str = pa.Field(str_length={"min_value": 1}, description="the task of both")
    margin: float = pa.Field(ge=0, le=1, description="score difference")
    chosen_quality: str = pa.Field(isin=TRAINABLE, description="quality of the chosen run")
    rejected_quality: str = pa.Field(
        isin=[*TRAINABLE, C.QUALITY_REJECTED], description="quality of the rejected run"
    )

    class Config:
        strict = True

    @pa.check("rejected_run_id", name="distinct_runs", description="never the chosen run")
    def distinct_runs(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, pl.col("chosen_run_id") != pl.col("rejected_run_id"))

    @pa.check("rejected", name="distinct_texts", description="differs from chosen, spaces folded")
    def distinct_texts(cls, data: PolarsData) -> pl.LazyFrame:
        return _texts_differ(data)


class SftPromptCompletionSchema(pa.DataFrameModel):
    """One accepted run as an instruction and its final answer (sft_format prompt_completion)."""

    prompt: str = pa.Field(str_length={"min_value": 1}, description="the instruction")
    completion: str = pa.Field(str_length={"min_value": 1}, description="the answer")
    id: str = pa.Field(unique=True, str_startswith="sft-", description="stable id of the run")
    source_run_id: str = pa.Field(unique=True, str_length={"min_value": 1}, description="the run")
    task_id: str = pa.Field(str_length={"min_value": 1}, description="its task")
    category: str = pa.Field(nullable=True, description="the run's category")

    class Config:
        strict = True


class PreferenceConversationalSchema(PreferencePairSchema):
    """A preference pair with one-turn conversations (preference_format conversational)."""

    prompt: Annotated[pl.List, TURN] = pa.Field(description="[{role: user, content}]")
    chosen: Annotated[pl.List, TURN] = pa.Field(description="[{role: assistant, content}]")
    rejected: Annotated[pl.List, TURN] = pa.Field(description="[{role: assistant, content}]")

    @pa.check("prompt", name="turns", description="user turns")
    def user_turns(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, _valid_turns(pl.col(data.key), "user"))

    @pa.check("chosen", "rejected", name="turns", description="assistant turns")
    def assistant_turns(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, _valid_turns(pl.col(data.key), "assistant"))


class KtoExampleSchema(pa.DataFrameModel):
    """One accepted (label true) or rejected (label false) run (exports/kto/...jsonl). The label
    is typed boolean: "true" or 1 is refused when the file is read."""

    prompt: str = pa.Field(str_length={"min_value": 1}, description="the instruction")
    completion: str = pa.Field(str_length={"min_value": 1}, description="the answer")
    label: bool = pa.Field(description="true: desirable (accepted run)")
    id: str = pa.Field(unique=True, str_startswith="kto-", description="stable id of the run")
    source_run_id: str = pa.Field(unique=True, str_length={"min_value": 1}, description="the run")
    task_id: str = pa.Field(str_length={"min_value": 1}, description="its task")
    quality: str = pa.Field(
        isin=[C.QUALITY_ACCEPTED, C.QUALITY_REJECTED], description="the run's quality"
    )
    score: float = pa.Field(ge=0, le=1, description="the run's score")
    category: str = pa.Field(nullable=True, description="the run's category")

    class Config:
        strict = True

    @pa.check("label", name="label_matches_quality", description="true exactly when accepted")
    def label_matches_quality(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, pl.col("label") == (pl.col("quality") == C.QUALITY_ACCEPTED))


class KtoConversationalSchema(KtoExampleSchema):
    """An unpaired row with one-turn conversations (preference_format conversational)."""

    prompt: Annotated[pl.List, TURN] = pa.Field(description="[{role: user, content}]")
    completion: Annotated[pl.List, TURN] = pa.Field(description="[{role: assistant, content}]")

    @pa.check("prompt", name="turns", description="user turns")
    def user_turns(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, _valid_turns(pl.col(data.key), "user"))

    @pa.check("completion", name="turns", description="assistant turns")
    def assistant_turns(cls, data: PolarsData) -> pl.LazyFrame:
        return _select(data, _valid_turns(pl.col(data.key), "assistant"))


# each asset's model, named by its stage's spec (lib/stages.py)
SCHEMAS: dict[str, type[pa.DataFrameModel]] = {
    spec.asset: globals()[spec.schema] for spec in S.SPECS if spec.schema is not None
}
# the models of the other row formats (ExportConfig.sft_format / preference_format)
FORMAT_SCHEMAS: dict[tuple[str, str], type[pa.DataFrameModel]] = {
    (C.ASSET_SFT_DATASET, C.SFT_FORMAT_PROMPT_COMPLETION): SftPromptCompletionSchema,
    (C.ASSET_PREFERENCE_PAIRS, C.PREFERENCE_FORMAT_CONVERSATIONAL): PreferenceConversationalSchema,
    (C.ASSET_KTO_DATASET, C.PREFERENCE_FORMAT_CONVERSATIONAL): KtoConversationalSchema,
}


def schema_of(asset: str, fmt: str = "") -> type[pa.DataFrameModel]:
    """The model of an asset's rows in the format its receipt records (default format: "")."""
    return FORMAT_SCHEMAS.get((asset, fmt), SCHEMAS[asset])


def sniff_schema(asset: str, paths: Sequence[Path]) -> type[pa.DataFrameModel]:
    """The model of an asset whose format is not known: the first of its models that the first
    row of the first non-empty file fits (the default model if none does)."""
    first = _first_row(paths)
    candidates = [SCHEMAS[asset], *(m for (a, _), m in FORMAT_SCHEMAS.items() if a == asset)]
    if isinstance(first, dict):
        for model in candidates:
            spec = _spec(model)
            if set(first) == set(spec.columns) and all(
                _fit(first.get(name), dtype, False)[1]
                for name, dtype in spec.columns.items()
                if name not in spec.json_columns
            ):
                return model
    return candidates[0]


def _first_row(paths: Sequence[Path]) -> Any:
    for path in paths:
        if not path.exists():
            continue
        with open(path, "rb") as fh:
            for raw in fh:
                if raw.strip():
                    try:
                        return orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        return None
    return None


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """How a model's rows are read: its columns' polars types, the columns kept as JSON text,
    its nullable and unique columns, the explicit Arrow schema and the validation schema."""

    columns: dict[str, pl.DataType]
    json_columns: frozenset[str]
    nullable: tuple[str, ...]
    unique: tuple[str, ...]
    arrow_schema: arrow.Schema
    validation: Any = field(repr=False)


def _arrow_type(dtype: pl.DataType) -> arrow.DataType:
    if isinstance(dtype, pl.List):
        return arrow.list_(_arrow_type(dtype.inner))
    if isinstance(dtype, pl.Struct):
        return arrow.struct([(f.name, _arrow_type(f.dtype)) for f in dtype.fields])
    simple = {
        pl.String: arrow.string(),
        pl.Int64: arrow.int64(),
        pl.Float64: arrow.float64(),
        pl.Boolean: arrow.bool_(),
    }
    return simple[dtype.base_type()]


@functools.cache
def _spec(model: type[pa.DataFrameModel]) -> _Spec:
    schema = model.to_schema()
    columns = {name: column.dtype.type for name, column in schema.columns.items()}
    json_columns = frozenset(
        name for name, column in schema.columns.items() if (column.metadata or {}).get("json_text")
    )
    unique = tuple(name for name, column in schema.columns.items() if column.unique)
    arrow_schema = arrow.schema(
        [(name, _arrow_type(dtype)) for name, dtype in columns.items() if name not in json_columns]
    )
    return _Spec(
        columns=columns,
        json_columns=json_columns,
        nullable=tuple(name for name, column in schema.columns.items() if column.nullable),
        unique=unique,
        arrow_schema=arrow_schema,
        # uniqueness is checked per file by validate_frame, not across the frame
        validation=schema.update_columns({name: {"unique": False} for name in unique}),
    )


# files are read in pieces of about this many bytes (whole lines) when read piece by piece:
# memory holds one piece (its bytes, Arrow table and frame), whatever the file's size
PIECE_BYTES = 16 * 1024 * 1024


def iter_jsonl(
    model: type[pa.DataFrameModel],
    sources: Sequence[Path | bytes],
    *,
    piece_bytes: int | None = PIECE_BYTES,
    missing_ok: bool = False,
    threads: bool = False,
) -> Iterator[pl.DataFrame]:
    """Read JSONL files (paths or their bytes) as frames of ``model``'s columns, typed as the
    model declares, plus ``_file`` (index in ``sources``), ``_row`` (in its file), ``_line``
    and ``_problems``: one frame per piece of about ``piece_bytes`` of whole lines (None: per
    file); pieces without rows are skipped.

    A piece is parsed natively (pyarrow, ``threads`` to use more than one core); only a piece
    that does not fit the model is read again row by row, each misfit (invalid JSON, not an
    object, an unexpected key, a value of the wrong type or shape) becoming a problem of its
    row, whose misfit values read as null. Line numbers count
    on across the files, so a holdout file's rows are numbered after its train file's.
    """
    spec = _spec(model)
    lines_before = 0
    for index, source in enumerate(sources):
        if not isinstance(source, bytes) and missing_ok and not source.exists():
            continue
        rows_before = 0
        present: set[str] = set()
        pending: pl.DataFrame | None = None
        for data in _chunks(source, piece_bytes):
            count, numbers = _lines(data)
            frame = _read_fast(spec, data, count, numbers, threads)
            if frame is None:
                frame = _read_slow(spec, data)
            present |= _present(spec, frame, data)
            frame = frame.with_columns(
                pl.lit(index, pl.UInt32).alias(FILE),
                pl.col(ROW) + rows_before,
                pl.col(LINE) + lines_before,
            ).select(*spec.columns, *BOOKKEEPING)
            rows_before += frame.height
            lines_before += count
            if frame.height:
                if pending is not None:
                    yield pending
                pending = frame
        if pending is not None:
            yield _note_absent([n for n in spec.nullable if n not in present], pending)


def batched(
    pieces: Iterable[pl.DataFrame], batch_bytes: int = PIECE_BYTES
) -> Iterator[pl.DataFrame]:
    """Consecutive pieces joined into frames of about ``batch_bytes`` (in memory), so that small
    files (a day's index, a holdout) cost one call of the checks, not one each."""
    batch: list[pl.DataFrame] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += piece.estimated_size()
        if size >= batch_bytes:
            yield pl.concat(batch, how="vertical") if len(batch) > 1 else batch[0]
            batch, size = [], 0
    if batch:
        yield pl.concat(batch, how="vertical") if len(batch) > 1 else batch[0]


def read_jsonl(
    model: type[pa.DataFrameModel],
    sources: Sequence[Path | bytes],
    *,
    missing_ok: bool = False,
    threads: bool = False,
) -> pl.DataFrame:
    """``iter_jsonl`` file by file, as one frame (memory: the whole files)."""
    frames = list(
        iter_jsonl(model, sources, piece_bytes=None, missing_ok=missing_ok, threads=threads)
    )
    return pl.concat(frames, how="vertical") if frames else _empty(_spec(model))


def _chunks(source: Path | bytes, piece_bytes: int | None) -> Iterator[bytes]:
    """The bytes of a file (or of bytes given) in pieces of whole lines."""
    if isinstance(source, bytes):
        start = 0
        while start < len(source):
            end = len(source) if piece_bytes is None else source.find(b"\n", start + piece_bytes)
            end = len(source) if end < 0 else end + 1
            yield source[start:end]
            start = end
        return
    with open(source, "rb") as fh:
        while block := fh.read(-1 if piece_bytes is None else piece_bytes):
            yield block if block.endswith(b"\n") else block + fh.readline()


def _empty(spec: _Spec) -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            **spec.columns,
            FILE: pl.UInt32,
            ROW: pl.UInt32,
            LINE: pl.UInt32,
            PROBLEMS: pl.List(PROBLEM),
        }
    )


def _lines(data: bytes) -> tuple[int, list[int] | None]:
    """The number of lines, and the numbers (from 1) of the non-blank ones, or None when no
    line is blank (the common case, found without a loop over lines)."""
    if not data:
        return 0, None
    raw = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(raw == 10)
    count = len(ends) + (data[-1] != 10)
    starts = np.concatenate(([0], ends[:-1] + 1)) if data[-1] == 10 else np.append(0, ends + 1)
    if not np.isin(raw[starts], _BLANK_STARTS).any():
        return count, None
    return count, [number for number, line in enumerate(data.split(b"\n"), 1) if line.strip()]


_BLANK_STARTS = np.frombuffer(b"\n\r \t\x0b\x0c", np.uint8)


def _arrow_read(spec: _Spec, data: bytes, threads: bool) -> arrow.Table | None:
    parse = arrow_json.ParseOptions(
        explicit_schema=spec.arrow_schema, unexpected_field_behavior="infer"
    )
    block = 1 << 20
    while True:
        read = arrow_json.ReadOptions(use_threads=threads, block_size=block)
        try:
            return arrow_json.read_json(
                arrow.BufferReader(data), read_options=read, parse_options=parse
            )
        except arrow.ArrowInvalid as exc:
            if "straddl" in str(exc) and block < len(data):
                block = min(block * 4, len(data) + 1)
                continue
            return None
        except (arrow.ArrowException, ValueError, TypeError):
            return None  # UnicodeDecodeError is a ValueError


def _read_fast(
    spec: _Spec, data: bytes, count: int, numbers: list[int] | None, threads: bool
) -> pl.DataFrame | None:
    """The file read natively (``count`` lines, ``numbers`` the non-blank ones, None if all),
    or None when it does not fit the model (read it row by row)."""
    if not data or data.isspace():
        return _bookkept(_empty(spec).select(*spec.columns), [])
    if not data.isascii():
        try:  # pyarrow does not validate UTF-8
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    table = _arrow_read(spec, data, threads)
    if table is None or not set(table.column_names) <= set(spec.columns):
        return None
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    exprs = _typed(spec, frame.schema)
    if exprs is None:
        return None
    frame = frame.select(exprs)
    if frame.height != (count if numbers is None else len(numbers)):
        return None  # two objects on one line, or a line pyarrow reads differently
    return _bookkept(frame, numbers)


def _typed(spec: _Spec, schema: pl.Schema) -> list[pl.Expr] | None:
    """The model's columns out of a frame pyarrow read (of ``schema``), as the model types
    them; None when one of them does not fit."""
    exprs = []
    for name, dtype in spec.columns.items():
        actual = schema.get(name, pl.Null)
        if name in spec.json_columns:
            if isinstance(actual, pl.Struct):
                exprs.append(pl.col(name).struct.json_encode())
            elif actual == pl.Null:
                exprs.append(pl.lit(None, pl.String).alias(name))
            else:
                return None  # a scalar or a list: written as JSON text row by row
        elif actual == dtype:
            exprs.append(pl.col(name))
        elif _is_open(dtype):
            exprs.append(_project(pl.col(name), actual, dtype).alias(name))
        else:
            return None
    return exprs


def _is_open(dtype: pl.DataType) -> bool:
    if isinstance(dtype, pl.List):
        return _is_open(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return dtype in _OPEN or any(_is_open(f.dtype) for f in dtype.fields)
    return False


def _project(expr: pl.Expr, actual: pl.DataType, wanted: pl.DataType) -> pl.Expr:
    """``expr`` (of type ``actual``) reduced to ``wanted``'s fields: an open struct may carry
    keys the model does not read."""
    if actual == wanted:
        return expr
    if isinstance(wanted, pl.List) and isinstance(actual, pl.List):
        return expr.list.eval(_project(pl.element(), actual.inner, wanted.inner))
    if isinstance(wanted, pl.Struct) and isinstance(actual, pl.Struct):
        have = _fields(actual)
        parts = [
            _project(expr.struct.field(f.name), have[f.name], f.dtype).alias(f.name)
            if f.name in have
            else pl.lit(None, f.dtype).alias(f.name)
            for f in wanted.fields
        ]
        return pl.when(expr.is_null()).then(None).otherwise(pl.struct(parts))
    return expr.cast(wanted)


def _bookkept(frame: pl.DataFrame, numbers: list[int] | None) -> pl.DataFrame:
    """``frame`` with its row numbers, line numbers (``numbers``, or one line per row) and no
    problems."""
    rows = pl.int_range(pl.len(), dtype=pl.UInt32)
    line = (rows + 1).alias(LINE) if numbers is None else pl.Series(LINE, numbers, pl.UInt32)
    return frame.with_columns(rows.alias(ROW), line, pl.lit(None, pl.List(PROBLEM)).alias(PROBLEMS))


def _present(spec: _Spec, frame: pl.DataFrame, data: bytes) -> set[str]:
    """The nullable columns a piece carries: a value, or at least the key (null)."""
    return {
        name
        for name in spec.nullable
        if frame.get_column(name).null_count() < frame.height
        or re.search(b'"' + re.escape(name.encode()) + rb'"\s*:', data)
    }


def _note_absent(missing: list[str], frame: pl.DataFrame) -> pl.DataFrame:
    """A nullable column whose key no row of the file carries is missing (pandera's
    ``column_in_dataframe``): noted on the first row of the file's last piece, as a problem of
    the whole file (the row is still checked)."""
    if not missing:
        return frame
    noted = frame.get_column(PROBLEMS).to_list()  # rare: a file without one of the keys
    noted[0] = [
        *(noted[0] or []),
        *(_problem(name, "column_in_dataframe", name, whole_file=True) for name in missing),
    ]
    return frame.with_columns(pl.Series(PROBLEMS, noted, pl.List(PROBLEM)))


def _problem(column: str | None, check: str, value: Any, whole_file: bool = False) -> dict:
    return {
        "column": column,
        "check": check,
        "failure_case": _short(value),
        "whole_file": whole_file,
    }


def _fit(value: Any, dtype: pl.DataType, open_: bool) -> tuple[Any, bool]:
    """``value`` as the frame holds it and whether its JSON type fits ``dtype`` (null always
    fits: nullability is a check of its own). Within an open struct nothing misfits: unknown
    keys are dropped and a value of another type reads as null."""
    if value is None:
        return None, True
    if isinstance(dtype, pl.Struct):
        open_ = open_ or dtype in _OPEN
        if not isinstance(value, dict):
            return None, open_
        out, ok = {}, True
        for f in dtype.fields:
            item, fits = _fit(value.get(f.name), f.dtype, open_)
            out[f.name] = item if fits else None
            ok = ok and fits
        return out, ok and (open_ or set(value) <= set(out))
    if isinstance(dtype, pl.List):
        if not isinstance(value, list):
            return None, open_
        items = [_fit(item, dtype.inner, open_) for item in value]
        return [item if fits else None for item, fits in items], all(fits for _, fits in items)
    if dtype == pl.String:
        fits = isinstance(value, str)
    elif dtype == pl.Boolean:
        fits = isinstance(value, bool)
    elif dtype == pl.Int64:
        fits = isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    elif dtype == pl.Float64:
        fits = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        raise TypeError(f"no reader for {dtype}")
    return (value if fits else None), fits or open_


def _read_slow(spec: _Spec, data: bytes) -> pl.DataFrame:
    """The diagnostic path for a file that does not fit: row by row, each misfit a problem."""
    rows: list[dict[str, Any]] = []
    problems: list[list[dict] | None] = []
    numbers: list[int] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        numbers.append(number)
        row: dict[str, Any] = dict.fromkeys(spec.columns)
        found: list[dict] = []
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            obj = None
            found.append(_problem(None, "valid_json", raw.decode("utf-8", "replace")))
        else:
            if not isinstance(obj, dict):
                found.append(_problem(None, "json_object", obj))
        if isinstance(obj, dict):
            for key in obj:
                if key not in spec.columns:
                    found.append(_problem(key, "column_in_schema", key))
            for name, dtype in spec.columns.items():
                value = obj.get(name)
                if name in spec.json_columns:
                    row[name] = None if value is None else orjson.dumps(value).decode()
                    continue
                fitted, ok = _fit(value, dtype, False)
                if ok:
                    row[name] = fitted
                else:
                    found.append(_problem(name, f"dtype('{dtype}')", value))
        rows.append(row)
        problems.append(found or None)
    frame = (
        pl.DataFrame(rows, schema=spec.columns, strict=False)
        if rows
        else _empty(spec).select(*spec.columns)
    )
    return frame.with_columns(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias(ROW),
        pl.Series(LINE, numbers, pl.UInt32),
        pl.Series(PROBLEMS, problems, pl.List(PROBLEM)),
    )


COLUMN_PIECE_BYTES = 8 * 1024 * 1024


def read_columns(sources: Sequence[Path], columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """Only ``columns`` of JSONL files (missing files skipped), read natively by polars, plus
    ``_file``; lenient (a scalar reads as text in a string column, a misfit as null, other keys
    are ignored). For lookups whose rows another check validates."""
    frames = []
    for index, path in enumerate(sources):
        if not path.exists():
            continue
        # in pieces: the reader's buffers are a few times the bytes it is given
        for data in _chunks(path, COLUMN_PIECE_BYTES):
            try:
                frame = (
                    pl.read_ndjson(data, schema=columns) if data and not data.isspace() else None
                )
            except pl.exceptions.PolarsError:
                frame = _read_loose(data, columns)
            if frame is not None:
                frames.append(frame.with_columns(pl.lit(index, pl.UInt32).alias(FILE)))
    if not frames:
        return pl.DataFrame(schema={**columns, FILE: pl.UInt32})
    return pl.concat(frames, how="vertical")


def _read_loose(data: bytes, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    rows = []
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            obj = None
        obj = obj if isinstance(obj, dict) else {}
        row = {}
        for name, dtype in columns.items():
            value, ok = _fit(obj.get(name), dtype, True)
            row[name] = value if ok else None
        rows.append(row)
    return (
        pl.DataFrame(rows, schema=columns, strict=False) if rows else pl.DataFrame(schema=columns)
    )


# --- validation ----------------------------------------------------------------------------


@dataclass
class ValidationOutcome:
    rows: int = 0
    num_failures: int = 0
    failure_cases: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.num_failures == 0


class Validation:
    """Lazy validation of frames ``iter_jsonl`` read (or any frames of the model's columns):
    ``add`` each piece, then ``outcome()``. Per piece: the rows that did not fit when read,
    then every check of the model on the others; uniqueness holds within each file, across its
    pieces (by two 64-bit hashes of each value; the values of repeated keys are kept)."""

    def __init__(
        self,
        model: type[pa.DataFrameModel],
        files: Sequence[str | Path] = (),
        sample: int = 20,
        batch_bytes: int = PIECE_BYTES,
    ) -> None:
        self.spec = _spec(model)
        # small pieces (a day's file) are checked together: Pandera costs ~10 ms a call
        self.batch_bytes = batch_bytes
        self.batch: list[pl.DataFrame] = []
        self.batched = 0
        self.names = [Path(f).name for f in files]
        self.sample = sample
        self.result = ValidationOutcome(files=[str(f) for f in files])
        self.seen = {name: pl.DataFrame(schema=_SEEN) for name in self.spec.unique}
        self.repeated: dict[str, dict[tuple[int, int, int], Any]] = {
            n: {} for n in self.spec.unique
        }

    def add(self, frame: pl.DataFrame) -> Validation:
        """Check one piece (when the pieces waiting reach ``batch_bytes``, or at the end)."""
        if FILE not in frame.columns:
            frame = _bookkept(frame, None).with_columns(pl.lit(0, pl.UInt32).alias(FILE))
        self.batch.append(frame)
        self.batched += frame.estimated_size()
        if self.batched >= self.batch_bytes:
            self._flush()
        return self

    def _flush(self) -> None:
        if self.batch:
            frame = pl.concat(self.batch, how="vertical") if len(self.batch) > 1 else self.batch[0]
            self.batch, self.batched = [], 0
            self._check(frame)

    def _check(self, frame: pl.DataFrame) -> None:
        self.result.rows += frame.height
        self._take(_read_problems(frame), _SHOWN)
        broken = (
            pl.col(PROBLEMS)
            .list.eval(pl.element().struct.field("whole_file").not_())
            .list.any()
            .fill_null(False)
        )
        good = frame.filter(~broken)
        checked = good.select([c for c in good.columns if c not in BOOKKEEPING])
        try:
            self.spec.validation.validate(checked, lazy=True)
        except pa.errors.SchemaErrors as exc:
            where = good.select(FILE, ROW).with_row_index("index")
            strings = [name for name, dtype in checked.schema.items() if dtype == pl.String]
            cases = exc.failure_cases.select(
                pl.col("index").cast(pl.UInt32),
                "column",
                "check",
                pl.col("failure_case").cast(pl.String),
                pl.when(pl.col("column").is_in(strings)).then(_REPR).otherwise(_TEXT).alias("show"),
            )
            self._take(
                cases.join(where, on="index", how="left", maintain_order="left").select(
                    FILE, ROW, "column", "check", "failure_case", "show"
                )
            )
        for name in self.spec.unique:
            if name in good.columns:
                self._remember(name, good)

    def _remember(self, name: str, good: pl.DataFrame) -> None:
        """Keep the hashes of a unique column's values, and the values seen again."""
        keys = good.filter(pl.col(name).is_not_null()).select(
            FILE, ROW, *hash_key(pl.col(name), _HASHES), pl.col(name).alias("value")
        )
        group = [FILE, *_HASHES]
        again = pl.concat(
            [
                keys.join(self.seen[name], on=group, how="semi"),
                keys.filter(pl.struct(group).is_duplicated()),
            ]
        )
        for row in again.unique(group).iter_rows():
            self.repeated[name][row[0], row[2], row[3]] = row[4]
        self.seen[name] = pl.concat([self.seen[name], keys.select(*_SEEN)])

    def outcome(self) -> ValidationOutcome:
        """Every failure found, with uniqueness over each file's pieces."""
        self._flush()
        for name in self.spec.unique:
            group = [FILE, *_HASHES]
            found = self.seen[name].filter(pl.struct(group).is_duplicated()).sort(FILE, ROW)
            values = self.repeated[name]
            self._take(
                found.select(
                    FILE,
                    ROW,
                    pl.lit(name).alias("column"),
                    pl.lit("field_uniqueness").alias("check"),
                    pl.Series(
                        "failure_case",
                        [values.get(key) for key in found.select(group).iter_rows()],
                        pl.String,
                    ),
                    pl.lit(_REPR).alias("show"),
                )
            )
        self.seen = {name: pl.DataFrame(schema=_SEEN) for name in self.spec.unique}
        return self.result

    def _take(self, part: pl.DataFrame, show: int | None = None) -> None:
        """Count a part's failure cases and keep the first ones (``show``: how to show all)."""
        self.result.num_failures += part.height
        room = max(0, self.sample - len(self.result.failure_cases))
        for case in part.head(room).iter_rows(named=True):
            index = case[FILE]
            self.result.failure_cases.append(
                {
                    "file": self.names[index]
                    if index is not None and index < len(self.names)
                    else index,
                    "row": case[ROW],
                    "column": case["column"],
                    "check": case["check"],
                    "failure_case": _SHOW[case["show"] if show is None else show](
                        case["failure_case"]
                    ),
                }
            )


_HASHES = ("_k1", "_k2")
_SEEN = {FILE: pl.UInt32, ROW: pl.UInt32, "_k1": pl.UInt64, "_k2": pl.UInt64}
_SEEDS = (0x243F6A8885A308D3, 0x13198A2E03707344)


def hash_key(value: pl.Expr, names: Sequence[str]) -> list[pl.Expr]:
    """Two independent 64-bit hashes of a value (null for null), named ``names``: a key whose
    false match needs both to collide (about 2**-128 a pair). Stable within a process only."""
    return [
        pl.when(value.is_not_null()).then(value.hash(seed)).alias(name)
        for seed, name in zip(_SEEDS, names, strict=True)
    ]


def validate_frame(
    model: type[pa.DataFrameModel],
    frame: pl.DataFrame,
    files: Sequence[str | Path] = (),
    sample: int = 20,
) -> ValidationOutcome:
    """Validate one frame (``read_jsonl``'s, or any frame of the model's columns) lazily:
    ``Validation`` with one piece. ``files`` are the sources read, in order."""
    return Validation(model, files, sample).add(frame).outcome()


_SHOWN, _REPR, _TEXT = 0, 1, 2


def _read_problems(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per problem found when reading (already shortened)."""
    return (
        frame.filter(pl.col(PROBLEMS).is_not_null())
        .select(FILE, ROW, PROBLEMS)
        .explode(PROBLEMS)
        .unnest(PROBLEMS)
        .select(
            FILE,
            pl.when(pl.col("whole_file")).then(None).otherwise(pl.col(ROW)).alias(ROW),
            "column",
            "check",
            "failure_case",
        )
    )


def validate_jsonl(
    schema: type[pa.DataFrameModel],
    paths: list[Path],
    chunk_bytes: int = PIECE_BYTES,
    sample: int = 20,
    workers: int = 1,
) -> ValidationOutcome:
    """Read JSONL files piece by piece (``chunk_bytes``) with ``iter_jsonl`` and validate them
    with ``Validation``. ``workers`` > 1 lets the native reader use more than one thread."""
    validation = Validation(schema, paths, sample)
    for piece in iter_jsonl(schema, paths, piece_bytes=chunk_bytes, threads=workers > 1):
        validation.add(piece)
    return validation.outcome()


def _short(value: Any, limit: int = 120) -> str:
    """A failing value as check metadata shows it: secrets redacted first, then cut."""
    return _cut(repr(value), limit)


def _cut(text: str, limit: int = 120) -> str:
    """Text (a value polars wrote out) redacted, then cut."""
    from distill_assets.lib.hygiene.secrets import redact_text

    text, _ = redact_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_SHOW = {_SHOWN: lambda value: value, _REPR: _short, _TEXT: lambda value: _cut(str(value))}
