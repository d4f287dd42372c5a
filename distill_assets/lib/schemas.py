"""Pandera models of every table distill writes, and lazy, chunked validation of JSONL files.

Each model is strict: a column that is missing or unexpected fails, as does a value outside its
domain. ``validate_jsonl`` reads a file in bounded chunks, validates each lazily and returns the
number of failures with a capped sample of failure cases, ready for an asset check's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from distill_assets.lib import constants as C
from distill_assets.lib.evidence import normalized_bytes
from distill_assets.lib.parallel import process_pool

HEX64 = r"^[0-9a-f]{64}$"
TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
TRAINABLE = [C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL]


class EvidenceIndexSchema(pa.DataFrameModel):
    """One row per usable evidence record (evidence/YYYY/MM/DD/index.jsonl)."""

    evidence_id: Series[str] = pa.Field(
        str_matches=HEX64, unique=True, description="sha256 of the record's canonical JSON"
    )
    kind: Series[str] = pa.Field(isin=list(C.KINDS), description="run, review or outcome")
    run_id: Series[str] = pa.Field(str_length={"min_value": 1}, description="the run it is about")
    created_at: Series[str] = pa.Field(str_matches=TIMESTAMP, description="UTC, ISO 8601")
    offset: Series[int] = pa.Field(ge=0, description="byte offset of the record in records.jsonl")
    task_id: Series[object] = pa.Field(nullable=True, description="runs only")
    category: Series[object] = pa.Field(nullable=True, description="runs only, optional")
    agent: Series[object] = pa.Field(nullable=True, description="runs only, optional")
    instruction_hash: Series[object] = pa.Field(nullable=True, description="normalized text sha256")
    response_hash: Series[object] = pa.Field(nullable=True, description="normalized text sha256")
    response_empty: Series[object] = pa.Field(nullable=True, description="runs only")
    has_messages: Series[object] = pa.Field(nullable=True, description="runs only")
    sft_eligible: Series[object] = pa.Field(nullable=True, description="runs only")
    verdict: Series[object] = pa.Field(
        nullable=True, isin=list(C.VERDICTS), description="reviews only"
    )
    score: Series[float] = pa.Field(nullable=True, ge=0, le=1, description="reviews, optional")
    outcome: Series[object] = pa.Field(
        nullable=True, isin=list(C.OUTCOMES), description="outcomes only"
    )
    reward: Series[float] = pa.Field(nullable=True, ge=0, le=1, description="outcomes, optional")
    signals: Series[object] = pa.Field(nullable=True, description="named partial signals")

    class Config:
        strict = True
        coerce = True

    @pa.dataframe_check(description="runs carry a task_id and text hashes")
    def runs_complete(cls, df: pd.DataFrame) -> Series[bool]:
        is_run = df["kind"] == C.KIND_RUN
        return ~is_run | (df["task_id"].notna() & df["response_hash"].notna())


class ScoredRunSchema(pa.DataFrameModel):
    """One row per scored run (scored-runs/YYYY/MM/DD/scored_runs.jsonl)."""

    run_id: Series[str] = pa.Field(str_length={"min_value": 1}, unique=True)
    task_id: Series[str] = pa.Field(str_length={"min_value": 1})
    quality_score: Series[str] = pa.Field(isin=list(C.QUALITIES))
    score: Series[float] = pa.Field(ge=0, le=1)
    reasons: Series[object] = pa.Field(description="reason codes (list)")
    evidence_ids: Series[object] = pa.Field(description="run record first, then its evidence")
    created_at: Series[str] = pa.Field(str_matches=TIMESTAMP)
    category: Series[object] = pa.Field(nullable=True)
    agent: Series[object] = pa.Field(nullable=True)
    run_file: Series[str] = pa.Field(str_startswith=f"{C.EVIDENCE_DIR}/")
    run_offset: Series[int] = pa.Field(ge=0)
    instruction_hash: Series[str] = pa.Field(str_matches=HEX64)
    response_hash: Series[str] = pa.Field(str_matches=HEX64)
    response_empty: Series[bool]
    has_messages: Series[bool]
    sft_eligible: Series[bool]
    n_reviews: Series[int] = pa.Field(ge=0)
    n_outcomes: Series[int] = pa.Field(ge=0)

    class Config:
        strict = True
        coerce = True

    @pa.check("evidence_ids", name="evidence_ids_are_hashes")
    def evidence_ids_are_hashes(cls, s: Series[object]) -> Series[bool]:
        return s.map(
            lambda ids: (
                isinstance(ids, list)
                and len(ids) >= 1
                and all(isinstance(i, str) and len(i) == 64 for i in ids)
            )
        )

    @pa.check("reasons", name="reasons_are_codes")
    def reasons_are_codes(cls, s: Series[object]) -> Series[bool]:
        return s.map(
            lambda rs: (
                isinstance(rs, list) and len(rs) >= 1 and all(isinstance(r, str) and r for r in rs)
            )
        )


class RagPlaybookSchema(pa.DataFrameModel):
    """One playbook per task (exports/rag/playbooks.jsonl)."""

    id: Series[str] = pa.Field(unique=True, str_startswith="pb-")
    task_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    title: Series[str] = pa.Field(str_length={"min_value": 1})
    text: Series[str] = pa.Field(str_length={"min_value": 1})
    source_run_ids: Series[object]
    quality: Series[str] = pa.Field(isin=TRAINABLE)
    score: Series[float] = pa.Field(ge=0, le=1)
    failed_run_ids: Series[object] = pa.Field(description="rejected runs of the task (list)")
    tags: Series[object] = pa.Field(description="{category, agents, tools}")

    class Config:
        strict = True
        coerce = True

    @pa.check("source_run_ids", name="source_run_ids_nonempty")
    def source_run_ids_nonempty(cls, s: Series[object]) -> Series[bool]:
        return s.map(_distinct_ids)

    @pa.check("failed_run_ids", name="failed_run_ids_list")
    def failed_run_ids_list(cls, s: Series[object]) -> Series[bool]:
        return s.map(lambda ids: _distinct_ids(ids, minimum=0))

    @pa.check("tags", name="tags_shape")
    def tags_shape(cls, s: Series[object]) -> Series[bool]:
        return s.map(_valid_tags)


def _distinct_ids(ids: Any, minimum: int = 1) -> bool:
    return (
        isinstance(ids, list)
        and len(ids) >= minimum
        and all(isinstance(i, str) and i for i in ids)
        and len(set(ids)) == len(ids)
    )


def _valid_tags(tags: Any) -> bool:
    if not isinstance(tags, dict) or set(tags) != {"category", "agents", "tools"}:
        return False
    category = tags["category"]
    return (
        (category is None or isinstance(category, str))
        and isinstance(tags["agents"], list)
        and all(isinstance(a, str) for a in tags["agents"])
        and isinstance(tags["tools"], list)
        and all(isinstance(t, str) for t in tags["tools"])
    )


_STEP_KEYS = {"n", "tool", "arguments", "result", "error"}


def _valid_step(step: Any, number: int | None = None) -> bool:
    return (
        isinstance(step, dict)
        and set(step) == _STEP_KEYS
        and isinstance(step["n"], int)
        and (number is None or step["n"] == number)
        and isinstance(step["tool"], str)
        and bool(step["tool"])
        and isinstance(step["arguments"], str)
        and (step["result"] is None or isinstance(step["result"], str))
        and isinstance(step["error"], bool)
    )


def _valid_divergence(item: Any) -> bool:
    if not isinstance(item, dict) or item.get("kind") not in C.DIVERGENCE_KINDS:
        return False
    if not isinstance(item.get("run_id"), str) or not isinstance(item.get("answer"), str):
        return False
    expected, actual, step = item.get("expected"), item.get("actual"), item.get("step")
    if item["kind"] == C.DIVERGED_NONE:
        return step is None and expected is None and actual is None
    return (
        isinstance(step, int)
        and step >= 1
        and (expected is None or _valid_step(expected, step))
        and (actual is None or _valid_step(actual, step))
        and (expected is not None or actual is not None)
    )


class ExtractedPlaybookSchema(pa.DataFrameModel):
    """One structured playbook per task (exports/rag/extracted_playbooks.jsonl)."""

    id: Series[str] = pa.Field(unique=True, str_startswith="pb-")
    task_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    title: Series[str] = pa.Field(str_length={"min_value": 1})
    problem: Series[str] = pa.Field(str_length={"min_value": 1}, description="the instruction")
    steps: Series[object] = pa.Field(description="tool calls of the best run, in order")
    steps_total: Series[int] = pa.Field(ge=0, description="tool calls the best run made")
    final_answer: Series[str] = pa.Field(str_length={"min_value": 1})
    failed_run_ids: Series[object] = pa.Field(description="rejected runs of the task")
    divergences: Series[object] = pa.Field(description="where failed runs left the playbook")
    tags: Series[object] = pa.Field(description="{category, agents, tools}")
    quality: Series[str] = pa.Field(isin=TRAINABLE)
    score: Series[float] = pa.Field(ge=0, le=1)
    source_run_ids: Series[object] = pa.Field(description="verified runs, best first")
    sources: Series[object] = pa.Field(description="{run_id, quality, score, agent} per source")

    class Config:
        strict = True
        coerce = True

    @pa.check("steps", name="steps_numbered")
    def steps_numbered(cls, s: Series[object]) -> Series[bool]:
        return s.map(
            lambda steps: (
                isinstance(steps, list)
                and all(_valid_step(step, n) for n, step in enumerate(steps, 1))
            )
        )

    @pa.check("divergences", name="divergences_shape")
    def divergences_shape(cls, s: Series[object]) -> Series[bool]:
        return s.map(lambda items: isinstance(items, list) and all(map(_valid_divergence, items)))

    @pa.check("tags", name="tags_shape")
    def tags_shape(cls, s: Series[object]) -> Series[bool]:
        return s.map(_valid_tags)

    @pa.check("failed_run_ids", name="failed_run_ids_list")
    def failed_run_ids_list(cls, s: Series[object]) -> Series[bool]:
        return s.map(lambda ids: _distinct_ids(ids, minimum=0))

    @pa.check("source_run_ids", name="source_run_ids_nonempty")
    def source_run_ids_nonempty(cls, s: Series[object]) -> Series[bool]:
        return s.map(_distinct_ids)

    @pa.dataframe_check(description="sources list the source runs, in order")
    def sources_match(cls, df: pd.DataFrame) -> Series[bool]:
        return pd.Series(
            [
                isinstance(sources, list)
                and [s.get("run_id") if isinstance(s, dict) else None for s in sources] == ids
                and all(s.get("quality") in TRAINABLE for s in sources)
                for sources, ids in zip(df["sources"], df["source_run_ids"], strict=True)
            ],
            index=df.index,
        )

    @pa.dataframe_check(description="the steps shown never exceed the steps taken")
    def steps_within_total(cls, df: pd.DataFrame) -> Series[bool]:
        return df["steps"].map(len) <= df["steps_total"]


_ROLES = {"user", "assistant", "tool", "function"}


def _valid_messages(messages: Any) -> bool:
    if not isinstance(messages, list) or len(messages) < 2:
        return False
    if not all(isinstance(m, dict) and m.get("role") in _ROLES for m in messages):
        return False
    return messages[0]["role"] == "user" and messages[-1]["role"] == "assistant"


class SftExampleSchema(pa.DataFrameModel):
    """One conversation per accepted run (exports/sft/instruction_response.jsonl)."""

    messages: Series[object] = pa.Field(description="TRL conversational messages")
    id: Series[str] = pa.Field(unique=True, str_startswith="sft-")
    source_run_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    task_id: Series[str] = pa.Field(str_length={"min_value": 1})
    category: Series[object] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True

    @pa.check("messages", name="messages_user_to_assistant")
    def messages_shape(cls, s: Series[object]) -> Series[bool]:
        return s.map(_valid_messages)


class PreferencePairSchema(pa.DataFrameModel):
    """One chosen/rejected pair within a task (exports/preference/chosen_rejected.jsonl)."""

    id: Series[str] = pa.Field(unique=True, str_startswith="pair-")
    prompt: Series[str] = pa.Field(str_length={"min_value": 1})
    chosen: Series[str] = pa.Field(str_length={"min_value": 1})
    rejected: Series[str]
    chosen_run_id: Series[str] = pa.Field(str_length={"min_value": 1})
    rejected_run_id: Series[str] = pa.Field(str_length={"min_value": 1})
    task_id: Series[str] = pa.Field(str_length={"min_value": 1})
    margin: Series[float] = pa.Field(ge=0, le=1)
    chosen_quality: Series[str] = pa.Field(isin=TRAINABLE)
    rejected_quality: Series[str] = pa.Field(isin=[*TRAINABLE, C.QUALITY_REJECTED])

    class Config:
        strict = True
        coerce = True

    @pa.dataframe_check(description="never a run paired with itself")
    def distinct_runs(cls, df: pd.DataFrame) -> Series[bool]:
        return df["chosen_run_id"] != df["rejected_run_id"]

    @pa.dataframe_check(description="chosen and rejected texts differ after whitespace folding")
    def distinct_texts(cls, df: pd.DataFrame) -> Series[bool]:
        fold = lambda s: s.map(lambda t: normalized_bytes(str(t)))  # noqa: E731
        return fold(df["chosen"]) != fold(df["rejected"])


def _valid_turns(value: Any, role: str) -> bool:
    """A conversational column: a non-empty list of ``{role, content}`` turns of ``role``."""
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(
            isinstance(t, dict)
            and set(t) == {"role", "content"}
            and t["role"] == role
            and isinstance(t["content"], str)
            for t in value
        )
    )


class SftPromptCompletionSchema(pa.DataFrameModel):
    """One accepted run as an instruction and its final answer (sft_format prompt_completion)."""

    prompt: Series[str] = pa.Field(str_length={"min_value": 1}, description="the instruction")
    completion: Series[str] = pa.Field(str_length={"min_value": 1}, description="the answer")
    id: Series[str] = pa.Field(unique=True, str_startswith="sft-")
    source_run_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    task_id: Series[str] = pa.Field(str_length={"min_value": 1})
    category: Series[object] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True


class PreferenceConversationalSchema(PreferencePairSchema):
    """A preference pair with one-turn conversations (preference_format conversational)."""

    prompt: Series[object] = pa.Field(description="[{role: user, content}]")
    chosen: Series[object] = pa.Field(description="[{role: assistant, content}]")
    rejected: Series[object] = pa.Field(description="[{role: assistant, content}]")

    @pa.dataframe_check(description="prompt is a user turn, chosen and rejected assistant turns")
    def turns(cls, df: pd.DataFrame) -> Series[bool]:
        return (
            df["prompt"].map(lambda v: _valid_turns(v, "user"))
            & df["chosen"].map(lambda v: _valid_turns(v, "assistant"))
            & df["rejected"].map(lambda v: _valid_turns(v, "assistant"))
        )


class KtoExampleSchema(pa.DataFrameModel):
    """One accepted (label true) or rejected (label false) run (exports/kto/...jsonl)."""

    prompt: Series[str] = pa.Field(str_length={"min_value": 1}, description="the instruction")
    completion: Series[str] = pa.Field(str_length={"min_value": 1}, description="the answer")
    label: Series[object] = pa.Field(description="true: desirable (accepted run)")
    id: Series[str] = pa.Field(unique=True, str_startswith="kto-")
    source_run_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    task_id: Series[str] = pa.Field(str_length={"min_value": 1})
    quality: Series[str] = pa.Field(isin=[C.QUALITY_ACCEPTED, C.QUALITY_REJECTED])
    score: Series[float] = pa.Field(ge=0, le=1)
    category: Series[object] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True

    @pa.check("label", name="label_is_boolean")
    def label_is_boolean(cls, s: Series[object]) -> Series[bool]:
        return s.map(lambda v: isinstance(v, bool))  # not "true", not 1

    @pa.dataframe_check(description="label is true exactly for accepted runs")
    def label_matches_quality(cls, df: pd.DataFrame) -> Series[bool]:
        return df["label"].map(lambda v: v is True) == (df["quality"] == C.QUALITY_ACCEPTED)


class KtoConversationalSchema(KtoExampleSchema):
    """An unpaired row with one-turn conversations (preference_format conversational)."""

    prompt: Series[object] = pa.Field(description="[{role: user, content}]")
    completion: Series[object] = pa.Field(description="[{role: assistant, content}]")

    @pa.dataframe_check(description="prompt is a user turn, completion an assistant turn")
    def turns(cls, df: pd.DataFrame) -> Series[bool]:
        return df["prompt"].map(lambda v: _valid_turns(v, "user")) & df["completion"].map(
            lambda v: _valid_turns(v, "assistant")
        )


SCHEMAS: dict[str, type[pa.DataFrameModel]] = {
    C.ASSET_EVIDENCE_INDEX: EvidenceIndexSchema,
    C.ASSET_SCORED_RUNS: ScoredRunSchema,
    C.ASSET_EXTRACTED_PLAYBOOKS: ExtractedPlaybookSchema,
    C.ASSET_RAG_PLAYBOOKS: RagPlaybookSchema,
    C.ASSET_SFT_DATASET: SftExampleSchema,
    C.ASSET_PREFERENCE_PAIRS: PreferencePairSchema,
    C.ASSET_KTO_DATASET: KtoExampleSchema,
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


@dataclass
class ValidationOutcome:
    rows: int = 0
    num_failures: int = 0
    failure_cases: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.num_failures == 0


# files are validated in pieces of about this many bytes (whole lines), each by one Pandera
# call: about 50,000 index rows, the chunk size validation always used; memory per piece
# stays a few hundred MiB
CHUNK_BYTES = 24 * 1024 * 1024
# below this many bytes in all, pieces are validated in this process
POOL_MIN_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class _Piece:
    path: Path
    start: int
    end: int


@dataclass
class _PieceOutcome:
    rows: int
    num_failures: int
    cases: list[dict[str, Any]]  # "row" counts from the piece's first row


def _pieces(path: Path, chunk_bytes: int) -> list[_Piece]:
    """``path`` cut at line starts into pieces of about ``chunk_bytes``."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as fh:
        while cuts[-1] + chunk_bytes < size:
            fh.seek(cuts[-1] + chunk_bytes)
            fh.readline()
            position = fh.tell()
            if position >= size:
                break
            cuts.append(position)
    cuts.append(size)
    return [_Piece(path, a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def _validate_piece(
    schema: type[pa.DataFrameModel], piece: _Piece, sample: int, drop_columns: tuple[str, ...]
) -> _PieceOutcome:
    with open(piece.path, "rb") as fh:
        fh.seek(piece.start)
        data = fh.read(piece.end - piece.start)
    loads = orjson.loads
    rows = [loads(raw) for raw in data.split(b"\n") if raw.strip()]
    del data
    if not rows:
        return _PieceOutcome(0, 0, [])
    frame = pd.DataFrame.from_records(rows)
    del rows
    if drop_columns:
        frame = frame.drop(columns=[c for c in drop_columns if c in frame.columns])
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        sampled = []
        for case in cases.head(sample).to_dict(orient="records"):
            index = case.get("index")
            sampled.append(
                {
                    "file": piece.path.name,
                    "row": None if index is None or pd.isna(index) else int(index),
                    "column": case.get("column"),
                    "check": str(case.get("check")),
                    "failure_case": _short(case.get("failure_case")),
                }
            )
        return _PieceOutcome(len(frame), len(cases), sampled)
    return _PieceOutcome(len(frame), 0, [])


def validate_jsonl(
    schema: type[pa.DataFrameModel],
    paths: list[Path],
    chunk_bytes: int = CHUNK_BYTES,
    sample: int = 20,
    drop_columns: tuple[str, ...] = (),
    workers: int = 1,
    pool_min_bytes: int = POOL_MIN_BYTES,
) -> ValidationOutcome:
    """Validate JSONL files against ``schema`` lazily, piece by piece.

    ``unique`` constraints hold within a piece (a file, or a part of about ``chunk_bytes``). With
    ``workers`` > 1 and at least ``pool_min_bytes`` in all, pieces are validated in worker
    processes; the outcome is the same either way.
    """
    outcome = ValidationOutcome()
    pieces = [piece for path in paths for piece in _pieces(path, chunk_bytes)]
    total = sum(piece.end - piece.start for piece in pieces)
    if workers > 1 and len(pieces) > 1 and total >= pool_min_bytes:
        with process_pool(min(workers, len(pieces))) as pool:
            done = list(
                pool.map(
                    _validate_piece,
                    [schema] * len(pieces),
                    pieces,
                    [sample] * len(pieces),
                    [drop_columns] * len(pieces),
                )
            )
    else:
        done = [_validate_piece(schema, piece, sample, drop_columns) for piece in pieces]
    rows_before: dict[Path, int] = {}
    for path in paths:
        outcome.files.append(str(path))
    for piece, result in zip(pieces, done, strict=True):
        offset = rows_before.get(piece.path, 0)
        rows_before[piece.path] = offset + result.rows
        outcome.rows += result.rows
        outcome.num_failures += result.num_failures
        for case in result.cases:
            if len(outcome.failure_cases) >= sample:
                break
            if case["row"] is not None:
                case = {**case, "row": case["row"] + offset}
            outcome.failure_cases.append(case)
    return outcome


def _short(value: Any, limit: int = 120) -> str:
    """A failing value as check metadata shows it: secrets redacted first, then cut."""
    from distill_assets.lib.hygiene.secrets import redact_text

    text, _ = redact_text(repr(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"
