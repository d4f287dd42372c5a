"""The vectorized checks on files copied from the fixture run: every check of every model
catches one violation planted in a valid file, at the row it was planted in and nothing else;
the untouched files pass; a file that does not fit a model at all gives failure cases instead of
an exception; and the firewall, the pair rules and the holdout check find every violation
planted for them."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import ExportSettings
from distill_assets.lib.hygiene.holdout import (
    verify_disjoint,
    verify_disjoint_frame,
    verify_disjoint_frames,
)
from distill_assets.lib.playbooks.extraction import verify_extracted
from distill_assets.lib.verify import schemas as S
from distill_assets.lib.verify.firewall import (
    FirewallReport,
    ScoredTable,
    firewall_columns,
    read_dataset,
    verify_extracted_frame,
    verify_kto,
    verify_kto_frame,
    verify_pair_rules,
    verify_pair_rules_frame,
    verify_preference,
    verify_preference_frame,
    verify_rag,
    verify_sft,
    verify_sft_frame,
)

Rows = list[dict[str, Any]]


def _read(path: Path) -> Rows:
    return [orjson.loads(raw) for raw in path.read_bytes().splitlines() if raw.strip()]


def _write(path: Path, rows: Rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def _user_turn(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant_turn(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _largest(out: Path, pattern: str) -> Path:
    return max(out.glob(pattern), key=lambda p: len(_read(p)))


@pytest.fixture(scope="module")
def valid(fixture_run) -> dict[str, Rows]:
    """Valid rows of every model: the fixture run's files, a diverged playbook and named
    signals added, the other row formats derived from the default ones."""
    _, out, _ = fixture_run
    index = _read(_largest(out, "evidence/*/*/*/index.jsonl"))
    outcome = next(i for i, row in enumerate(index) if row["kind"] == C.KIND_OUTCOME)
    index[outcome]["signals"] = {"r_actions": 0.5, "r_format": 1.0}
    extracted = _read(out / C.EXTRACTED_PATH)
    stepped = next(row for row in extracted if row["steps"])
    step = stepped["steps"][0]
    stepped["divergences"] = [
        {
            "run_id": "run-failed",
            "kind": C.DIVERGED_TOOL,
            "step": 1,
            "expected": step,
            "actual": {**step, "tool": "other_tool", "result": None},
            "answer": "gave up",
        }
    ]
    stepped["failed_run_ids"] = ["run-failed"]
    sft = _read(out / C.SFT_PATH)
    pairs = _read(out / C.PREFERENCE_PATH)
    kto = _read(out / C.KTO_PATH)
    return {
        "index": index,
        "scored": _read(_largest(out, "scored-runs/*/*/*/scored_runs.jsonl")),
        "extracted": extracted,
        "rag": _read(out / C.RAG_PATH),
        "sft": sft,
        "sft_pc": [
            {
                "prompt": row["messages"][0]["content"],
                "completion": row["messages"][-1]["content"],
                **{k: row[k] for k in ("id", "source_run_id", "task_id", "category")},
            }
            for row in sft
        ],
        "pref": pairs,
        "pref_conv": [
            {
                **row,
                "prompt": _user_turn(row["prompt"]),
                "chosen": _assistant_turn(row["chosen"]),
                "rejected": _assistant_turn(row["rejected"]),
            }
            for row in pairs
        ],
        "kto": kto,
        "kto_conv": [
            {
                **row,
                "prompt": _user_turn(row["prompt"]),
                "completion": _assistant_turn(row["completion"]),
            }
            for row in kto
        ],
    }


MODELS = {
    "index": S.EvidenceIndexSchema,
    "scored": S.ScoredRunSchema,
    "extracted": S.ExtractedPlaybookSchema,
    "rag": S.RagPlaybookSchema,
    "sft": S.SftExampleSchema,
    "sft_pc": S.SftPromptCompletionSchema,
    "pref": S.PreferencePairSchema,
    "pref_conv": S.PreferenceConversationalSchema,
    "kto": S.KtoExampleSchema,
    "kto_conv": S.KtoConversationalSchema,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_untouched_files_pass(valid, name, tmp_path):
    path = _write(tmp_path / "rows.jsonl", valid[name])
    outcome = S.validate_jsonl(MODELS[name], [path])
    assert outcome.passed, outcome.failure_cases
    assert outcome.rows == len(valid[name]) > 0
    frame = S.read_jsonl(MODELS[name], [path])
    assert frame.get_column(S.PROBLEMS).null_count() == frame.height  # read natively


# --- one violation of each check ---------------------------------------------------------


def _at(predicate: Callable[[dict], bool]) -> Callable[[Rows], int]:
    return lambda rows: next(i for i, row in enumerate(rows) if predicate(row))


def _first(rows: Rows) -> int:
    return 0


def _kind(kind: str) -> Callable[[Rows], int]:
    return _at(lambda row: row["kind"] == kind)


def _set(column: str, value: Any, where: Callable[[Rows], int] = _first):
    """Set ``column`` of one row to ``value``; that row fails."""

    def plant(rows: Rows) -> list[int]:
        i = where(rows)
        rows[i][column] = value(rows[i][column]) if callable(value) else value
        return [i]

    return plant


def _duplicate(column: str, where: Callable[[Rows], int] = _first):
    """Give the last row the value of one before it: both rows fail."""

    def plant(rows: Rows) -> list[int]:
        i = where(rows)
        rows[-1][column] = rows[i][column]
        return [i, len(rows) - 1]

    return plant


def _edit(change: Callable[[dict], None], where: Callable[[Rows], int] = _first):
    def plant(rows: Rows) -> list[int]:
        i = where(rows)
        change(rows[i])
        return [i]

    return plant


def _step(**changes):
    def change(row: dict) -> None:
        row["steps"] = [{**row["steps"][0], **changes}]

    return _edit(change, _at(lambda row: row["steps"]))


def _divergence(**changes):
    def change(row: dict) -> None:
        row["divergences"] = [{**row["divergences"][0], **changes}]

    return _edit(change, _DIVERGED)


def _message(index: int, **changes):
    def change(row: dict) -> None:
        row["messages"] = [*row["messages"]]
        row["messages"][index] = {**row["messages"][index], **changes}

    return _edit(change)


_DIVERGED = _at(lambda row: any(d["kind"] != C.DIVERGED_NONE for d in row["divergences"]))
_ACCEPTED = _at(lambda row: row.get("quality") == C.QUALITY_ACCEPTED)
_REJECTED = _at(lambda row: row.get("quality") == C.QUALITY_REJECTED)
_TWO_SOURCES = _at(lambda row: len(row["sources"]) > 1)
_NO_STEPS = _at(lambda row: not row["steps"])

# (model, planting, the check(s) the failure cases name, the column they name or None)
CASES: dict[str, tuple[str, Callable[[Rows], list[int]], str | tuple[str, ...], str | None]] = {
    "index-evidence_id-hash": ("index", _set("evidence_id", "abc"), "str_matches", "evidence_id"),
    "index-evidence_id-unique": (
        "index",
        _duplicate("evidence_id"),
        "field_uniqueness",
        "evidence_id",
    ),
    "index-kind": ("index", _set("kind", "heartbeat", _kind("outcome")), "isin", "kind"),
    "index-kind-null": ("index", _set("kind", None, _kind("outcome")), "not_nullable", "kind"),
    "index-run_id": ("index", _set("run_id", ""), "str_length", "run_id"),
    "index-created_at": ("index", _set("created_at", "yesterday"), "str_matches", "created_at"),
    "index-offset": ("index", _set("offset", -1), "greater_than_or_equal_to", "offset"),
    "index-verdict": ("index", _set("verdict", "maybe", _kind("review")), "isin", "verdict"),
    "index-score": ("index", _set("score", 1.5, _kind("review")), "less_than_or_equal_to", "score"),
    "index-outcome": ("index", _set("outcome", "meh", _kind("outcome")), "isin", "outcome"),
    "index-reward": (
        "index",
        _set("reward", -0.1, _kind("outcome")),
        "greater_than_or_equal_to",
        "reward",
    ),
    "index-runs_complete": ("index", _set("task_id", None, _kind("run")), "runs_complete", None),
    "scored-run_id-unique": ("scored", _duplicate("run_id"), "field_uniqueness", "run_id"),
    "scored-run_id": ("scored", _set("run_id", ""), "str_length", "run_id"),
    "scored-task_id": ("scored", _set("task_id", ""), "str_length", "task_id"),
    "scored-quality": ("scored", _set("quality_score", "great"), "isin", "quality_score"),
    "scored-score": ("scored", _set("score", 7.0), "less_than_or_equal_to", "score"),
    "scored-reasons-empty": ("scored", _set("reasons", []), "reasons_are_codes", "reasons"),
    "scored-reasons-blank": ("scored", _set("reasons", [""]), "reasons_are_codes", "reasons"),
    "scored-evidence_ids": (
        "scored",
        _set("evidence_ids", ["abc"]),
        "evidence_ids_are_hashes",
        "evidence_ids",
    ),
    "scored-evidence_ids-empty": (
        "scored",
        _set("evidence_ids", []),
        "evidence_ids_are_hashes",
        "evidence_ids",
    ),
    "scored-created_at": ("scored", _set("created_at", "2026-03-01"), "str_matches", "created_at"),
    "scored-run_file": ("scored", _set("run_file", "records.jsonl"), "str_startswith", "run_file"),
    "scored-run_offset": ("scored", _set("run_offset", -5), "greater_than_or_equal_to", None),
    "scored-instruction_hash": (
        "scored",
        _set("instruction_hash", "x"),
        "str_matches",
        "instruction_hash",
    ),
    "scored-response_hash": ("scored", _set("response_hash", "A" * 64), "str_matches", None),
    "scored-response_empty": ("scored", _set("response_empty", None), "not_nullable", None),
    "scored-n_reviews": ("scored", _set("n_reviews", -1), "greater_than_or_equal_to", None),
    "scored-n_outcomes": ("scored", _set("n_outcomes", -1), "greater_than_or_equal_to", None),
    "rag-id": ("rag", _set("id", "x-1"), "str_startswith", "id"),
    "rag-id-unique": ("rag", _duplicate("id"), "field_uniqueness", "id"),
    "rag-task_id-unique": ("rag", _duplicate("task_id"), "field_uniqueness", "task_id"),
    "rag-title": ("rag", _set("title", ""), "str_length", "title"),
    "rag-text": ("rag", _set("text", ""), "str_length", "text"),
    "rag-sources-empty": ("rag", _set("source_run_ids", []), "source_run_ids_nonempty", None),
    "rag-sources-twice": (
        "rag",
        _set("source_run_ids", ["run-001", "run-001"]),
        "source_run_ids_nonempty",
        None,
    ),
    "rag-sources-blank": ("rag", _set("source_run_ids", [""]), "source_run_ids_nonempty", None),
    "rag-quality": ("rag", _set("quality", C.QUALITY_REJECTED), "isin", "quality"),
    "rag-score": ("rag", _set("score", -0.5), "greater_than_or_equal_to", "score"),
    "rag-failed-twice": ("rag", _set("failed_run_ids", ["r", "r"]), "failed_run_ids_list", None),
    "rag-tags-agents": ("rag", _set("tags", lambda t: {**t, "agents": None}), "tags_shape", None),
    "rag-tags-tools": ("rag", _set("tags", lambda t: {**t, "tools": [None]}), "tags_shape", None),
    "extracted-id": ("extracted", _set("id", "playbook-1"), "str_startswith", "id"),
    "extracted-task_id-unique": ("extracted", _duplicate("task_id"), "field_uniqueness", None),
    "extracted-problem": ("extracted", _set("problem", ""), "str_length", "problem"),
    "extracted-final_answer": ("extracted", _set("final_answer", ""), "str_length", None),
    "extracted-quality": ("extracted", _set("quality", C.QUALITY_REVIEW), "isin", "quality"),
    "extracted-score": ("extracted", _set("score", 1.01), "less_than_or_equal_to", "score"),
    "extracted-steps-number": ("extracted", _step(n=2), "steps_numbered", "steps"),
    "extracted-steps-tool": ("extracted", _step(tool=""), "steps_numbered", "steps"),
    "extracted-steps-arguments": ("extracted", _step(arguments=None), "steps_numbered", "steps"),
    "extracted-steps-error": ("extracted", _step(error=None), "steps_numbered", "steps"),
    "extracted-steps_total": (
        "extracted",
        _set("steps_total", 0, _at(lambda row: row["steps"])),
        "steps_within_total",
        None,
    ),
    "extracted-steps_total-negative": (  # fewer than none shown, too
        "extracted",
        _set("steps_total", -1, _NO_STEPS),
        ("greater_than_or_equal_to", "steps_within_total"),
        None,
    ),
    "extracted-divergence-kind": (
        "extracted",
        _divergence(kind="lost"),
        "divergences_shape",
        "divergences",
    ),
    "extracted-divergence-same-with-step": (
        "extracted",
        _divergence(kind=C.DIVERGED_NONE),
        "divergences_shape",
        "divergences",
    ),
    "extracted-divergence-step-zero": (
        "extracted",
        _divergence(step=0),
        "divergences_shape",
        "divergences",
    ),
    "extracted-divergence-expected-elsewhere": (
        "extracted",
        _divergence(step=2),
        "divergences_shape",
        "divergences",
    ),
    "extracted-divergence-no-calls": (
        "extracted",
        _divergence(expected=None, actual=None),
        "divergences_shape",
        "divergences",
    ),
    "extracted-divergence-answer": (
        "extracted",
        _divergence(answer=None),
        "divergences_shape",
        "divergences",
    ),
    "extracted-tags": (
        "extracted",
        _set("tags", lambda t: {**t, "tools": None}),
        "tags_shape",
        "tags",
    ),
    "extracted-failed-twice": (
        "extracted",
        _set("failed_run_ids", ["r", "r"], _NO_STEPS),
        "failed_run_ids_list",
        None,
    ),
    "extracted-sources-empty": (
        "extracted",
        _edit(lambda row: row.update(source_run_ids=[], sources=[])),
        "source_run_ids_nonempty",
        "source_run_ids",
    ),
    "extracted-sources-order": (
        "extracted",
        _edit(lambda row: row.update(sources=row["sources"][::-1]), _TWO_SOURCES),
        "sources_match",
        None,
    ),
    "extracted-sources-quality": (
        "extracted",
        _edit(lambda row: row["sources"][0].update(quality=C.QUALITY_REJECTED)),
        "sources_match",
        None,
    ),
    "sft-first-turn": ("sft", _message(0, role="assistant"), "messages_user_to_assistant", None),
    "sft-last-turn": ("sft", _message(-1, role="user"), "messages_user_to_assistant", None),
    "sft-unknown-role": ("sft", _message(-1, role="robot"), "messages_user_to_assistant", None),
    "sft-one-turn": (
        "sft",
        _set("messages", lambda m: m[:1]),
        "messages_user_to_assistant",
        "messages",
    ),
    "sft-turn-not-object": (
        "sft",
        _set("messages", lambda m: ["hello", *m]),
        "messages_user_to_assistant",
        "messages",
    ),
    "sft-id": ("sft", _set("id", "kto-1"), "str_startswith", "id"),
    "sft-id-unique": ("sft", _duplicate("id"), "field_uniqueness", "id"),
    "sft-source-unique": ("sft", _duplicate("source_run_id"), "field_uniqueness", None),
    "sft-task_id": ("sft", _set("task_id", ""), "str_length", "task_id"),
    "sft_pc-prompt": ("sft_pc", _set("prompt", ""), "str_length", "prompt"),
    "sft_pc-completion": ("sft_pc", _set("completion", ""), "str_length", "completion"),
    "sft_pc-id": ("sft_pc", _set("id", "pair-1"), "str_startswith", "id"),
    "pref-id": ("pref", _set("id", "sft-1"), "str_startswith", "id"),
    "pref-id-unique": ("pref", _duplicate("id"), "field_uniqueness", "id"),
    "pref-prompt": ("pref", _set("prompt", ""), "str_length", "prompt"),
    "pref-chosen": ("pref", _set("chosen", ""), "str_length", "chosen"),
    "pref-chosen_run_id": ("pref", _set("chosen_run_id", ""), "str_length", "chosen_run_id"),
    "pref-rejected_run_id": ("pref", _set("rejected_run_id", ""), "str_length", None),
    "pref-task_id": ("pref", _set("task_id", ""), "str_length", "task_id"),
    "pref-margin": ("pref", _set("margin", 1.5), "less_than_or_equal_to", "margin"),
    "pref-chosen_quality": ("pref", _set("chosen_quality", C.QUALITY_REJECTED), "isin", None),
    "pref-rejected_quality": ("pref", _set("rejected_quality", C.QUALITY_REVIEW), "isin", None),
    "pref-self": (
        "pref",
        _edit(lambda row: row.update(rejected_run_id=row["chosen_run_id"])),
        "distinct_runs",
        None,
    ),
    "pref-folded-texts": (
        "pref",
        _edit(lambda row: row.update(rejected="\u3000" + " \t\n ".join(row["chosen"].split()))),
        "distinct_texts",
        None,
    ),
    "pref_conv-prompt-role": (
        "pref_conv",
        _set("prompt", lambda t: _assistant_turn(t[0]["content"])),
        "turns",
        None,
    ),
    "pref_conv-no-content": (
        "pref_conv",
        _set("chosen", [{"role": "assistant", "content": None}]),
        "turns",
        None,
    ),
    "pref_conv-empty": ("pref_conv", _set("rejected", []), "turns", None),
    "pref_conv-folded-texts": (
        "pref_conv",
        _edit(lambda row: row.update(rejected=_assistant_turn(row["chosen"][0]["content"] + " "))),
        "distinct_texts",
        None,
    ),
    "kto-label": ("kto", _set("label", False, _ACCEPTED), "label_matches_quality", "label"),
    "kto-quality": ("kto", _set("quality", C.QUALITY_REVIEW, _REJECTED), "isin", "quality"),
    "kto-id": ("kto", _set("id", "sft-1"), "str_startswith", "id"),
    "kto-source-unique": ("kto", _duplicate("source_run_id"), "field_uniqueness", None),
    "kto-prompt": ("kto", _set("prompt", ""), "str_length", "prompt"),
    "kto-completion": ("kto", _set("completion", ""), "str_length", "completion"),
    "kto-score": ("kto", _set("score", 2), "less_than_or_equal_to", "score"),
    "kto_conv-turns": (
        "kto_conv",
        _set("completion", lambda t: _user_turn(t[0]["content"])),
        "turns",
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_check_catches_its_violation(valid, case, tmp_path):
    name, plant, check, column = CASES[case]
    rows = [orjson.loads(orjson.dumps(row)) for row in valid[name]]
    planted = plant(rows)
    path = _write(tmp_path / "rows.jsonl", rows)
    outcome = S.validate_jsonl(MODELS[name], [path])
    checks = {check} if isinstance(check, str) else set(check)
    assert not outcome.passed
    assert outcome.num_failures == len(planted) * len(checks), outcome.failure_cases
    assert {c["check"].split("(")[0] for c in outcome.failure_cases} == checks
    assert sorted(c["row"] for c in outcome.failure_cases) == sorted(planted * len(checks))
    assert {c["file"] for c in outcome.failure_cases} == {"rows.jsonl"}
    if column is not None:
        assert {c["column"] for c in outcome.failure_cases} == {column}


# --- files that do not fit the model ----------------------------------------------------

# (change to one row, the check named, the column named)
MISFITS: dict[str, tuple[Callable[[dict], Any], str, str | None]] = {
    "unexpected-key": (lambda row: {**row, "surprise": 1}, "column_in_schema", "surprise"),
    "string-for-number": (lambda row: {**row, "score": "high"}, "dtype", "score"),
    "number-for-string": (lambda row: {**row, "task_id": 7}, "dtype", "task_id"),
    "text-label": (lambda row: {**row, "label": "true"}, "dtype", "label"),
    "number-label": (lambda row: {**row, "label": 1}, "dtype", "label"),
    "float-for-int": (lambda row: {**row, "source_run_id": 1.5}, "dtype", "source_run_id"),
    "list-for-string": (lambda row: {**row, "prompt": ["x"]}, "dtype", "prompt"),
}


@pytest.mark.parametrize("case", list(MISFITS))
def test_a_misfit_row_is_a_failure_case_and_the_rest_is_checked(valid, case, tmp_path):
    change, check, column = MISFITS[case]
    rows = [dict(row) for row in valid["kto"]]
    rows[2] = change(rows[2])
    rows[4]["score"] = 3.0  # an ordinary failure elsewhere in the file is still found
    path = _write(tmp_path / "kto.jsonl", rows)
    outcome = S.validate_jsonl(S.KtoExampleSchema, [path])
    found = {(c["row"], c["column"], c["check"].split("(")[0]) for c in outcome.failure_cases}
    assert found == {(2, column, check), (4, "score", "less_than_or_equal_to")}
    assert outcome.rows == len(rows)


def test_lines_that_are_not_objects_are_failure_cases(valid, tmp_path):
    data = b"".join(orjson.dumps(row) + b"\n" for row in valid["sft"][:3])
    data += b'{"messages": [\n[1, 2]\n"text"\n\n   \n'
    path = tmp_path / "sft.jsonl"
    path.write_bytes(data + orjson.dumps(valid["sft"][3]) + b"\n")
    outcome = S.validate_jsonl(S.SftExampleSchema, [path])
    found = [(c["row"], c["check"]) for c in outcome.failure_cases]
    assert found == [(3, "valid_json"), (4, "json_object"), (5, "json_object")]
    assert outcome.rows == 7  # blank lines are not rows
    frame = S.read_jsonl(S.SftExampleSchema, [path])
    assert frame.get_column(S.LINE).to_list() == [1, 2, 3, 4, 5, 6, 9]


def test_bytes_no_native_reader_should_accept(valid, tmp_path):
    """Invalid UTF-8, and two objects on one line, are failure cases of their rows."""
    first, second = (orjson.dumps(row) for row in valid["kto"][:2])
    path = tmp_path / "kto.jsonl"
    path.write_bytes(first + b"\n" + b'{"prompt": "\xff"}\n' + second + b" " + second + b"\n")
    outcome = S.validate_jsonl(S.KtoExampleSchema, [path])
    assert [(c["row"], c["check"]) for c in outcome.failure_cases] == [
        (1, "valid_json"),
        (2, "valid_json"),
    ]


def test_nested_keys_are_exact(valid, tmp_path):
    rows = [orjson.loads(orjson.dumps(row)) for row in valid["extracted"]]
    i = next(i for i, row in enumerate(rows) if row["steps"])
    rows[i]["steps"][0]["extra"] = True
    rows[0]["tags"]["colour"] = "red"
    outcome = S.validate_jsonl(S.ExtractedPlaybookSchema, [_write(tmp_path / "x.jsonl", rows)])
    found = {(c["row"], c["column"], c["check"].split("(")[0]) for c in outcome.failure_cases}
    assert found == {(i, "steps", "dtype"), (0, "tags", "dtype")}


def test_a_chat_may_carry_other_keys(valid, tmp_path):
    rows = [orjson.loads(orjson.dumps(row)) for row in valid["sft"]]
    rows[0]["messages"][0]["reasoning"] = "because"
    rows[1]["messages"][0]["content"] = [{"type": "text", "text": "parts"}]
    path = _write(tmp_path / "sft.jsonl", rows)
    assert S.validate_jsonl(S.SftExampleSchema, [path]).passed


def test_a_column_no_row_carries_is_missing(valid, tmp_path):
    rows = [{k: v for k, v in row.items() if k != "category"} for row in valid["sft"]]
    outcome = S.validate_jsonl(S.SftExampleSchema, [_write(tmp_path / "sft.jsonl", rows)])
    assert [(c["row"], c["column"], c["check"]) for c in outcome.failure_cases] == [
        (None, "category", "column_in_dataframe")
    ]


def test_uniqueness_holds_within_each_file(valid, tmp_path):
    rows = valid["sft"]
    train = _write(tmp_path / "a" / "train.jsonl", rows[:5])
    holdout = _write(tmp_path / "b" / "holdout.jsonl", rows[3:])  # two rows in both files
    assert S.validate_jsonl(S.SftExampleSchema, [train, holdout]).passed
    both = _write(tmp_path / "c" / "both.jsonl", rows + rows[:1])
    outcome = S.validate_jsonl(S.SftExampleSchema, [both])
    assert {(c["row"], c["column"]) for c in outcome.failure_cases} == {
        (0, "id"),
        (len(rows), "id"),
        (0, "source_run_id"),
        (len(rows), "source_run_id"),
    }


def test_pieces_give_the_whole_files_outcome(valid, tmp_path):
    """Read in pieces of a few rows, a file gives the same failure cases as read whole:
    uniqueness across pieces, line numbers, misfit rows; the firewall reports merge alike."""
    rows = [dict(row) for row in valid["kto"]]
    rows[1]["quality"] = C.QUALITY_REVIEW  # with label true: two checks of row 1
    rows[2] = {**rows[2], "surprise": True}
    rows[-1]["id"] = rows[0]["id"]  # a repeated id, pieces apart
    train = _write(tmp_path / "train.jsonl", rows)
    holdout = _write(tmp_path / "holdout.jsonl", [rows[3], rows[3]])
    frame = S.read_jsonl(S.KtoExampleSchema, [train, holdout])
    whole = S.validate_frame(S.KtoExampleSchema, frame, [train, holdout])
    pieces = S.validate_jsonl(S.KtoExampleSchema, [train, holdout], chunk_bytes=400)
    assert len(list(S.iter_jsonl(S.KtoExampleSchema, [train, holdout], piece_bytes=400))) > 4

    def cases(outcome):
        return sorted((c["file"], c["row"], c["column"], c["check"]) for c in outcome.failure_cases)

    # the unexpected key, row 1's two checks, and ids repeated in each file (two rows each)
    assert pieces.num_failures == whole.num_failures == 1 + 2 + 2 + 2 + 2
    assert cases(pieces) == cases(whole)
    assert "field_uniqueness" in {c["check"] for c in pieces.failure_cases}
    frames = list(S.iter_jsonl(S.KtoExampleSchema, [train, holdout], piece_bytes=400))
    assert pl.concat(frames).equals(frame)
    assert verify_disjoint_frames(frames) == verify_disjoint(train, holdout)


def test_frames_read_once_serve_every_check(valid, tmp_path):
    """Train and holdout read together: rows numbered per file for the schema, lines numbered
    on across both for the firewall, files told apart for the holdout check."""
    rows = valid["sft"]
    train = _write(tmp_path / "train.jsonl", rows[:5])
    holdout = _write(tmp_path / "holdout.jsonl", rows[5:])
    frame = S.read_jsonl(S.SftExampleSchema, [train, holdout])
    assert frame.get_column(S.ROW).to_list() == [*range(5), *range(len(rows) - 5)]
    assert frame.get_column(S.LINE).to_list() == list(range(1, len(rows) + 1))
    assert S.validate_frame(S.SftExampleSchema, frame, [train, holdout]).passed
    assert verify_disjoint_frame(frame).train_rows == 5
    from_bytes = S.read_jsonl(S.SftExampleSchema, [train.read_bytes(), holdout.read_bytes()])
    assert from_bytes.equals(frame)


def test_the_models_describe_every_column():
    for model in MODELS.values():
        columns = model.to_schema().columns
        assert columns and all(column.description for column in columns.values()), model
        assert model.to_schema().strict


def test_whitespace_is_pythons():
    assert S.WHITESPACE == "".join(c for c in map(chr, range(0x110000)) if c.isspace())
    rng = random.Random(3)
    alphabet = [*S.WHITESPACE, "a", "b", "\u200b", "é", "\x00"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(12))) for _ in range(500)]
    folded = pl.Series(texts).to_frame("t").select(S.fold_whitespace(pl.col("t")))
    assert folded.to_series().to_list() == [" ".join(t.split()) for t in texts]


def test_sniffing_picks_the_written_format(valid, tmp_path):
    for name, asset in [
        ("sft_pc", C.ASSET_SFT_DATASET),
        ("pref_conv", C.ASSET_PREFERENCE_PAIRS),
        ("kto_conv", C.ASSET_KTO_DATASET),
        ("kto", C.ASSET_KTO_DATASET),
    ]:
        path = _write(tmp_path / f"{name}.jsonl", valid[name])
        assert S.sniff_schema(asset, [tmp_path / "missing.jsonl", path]) is MODELS[name]


# --- the firewall ----------------------------------------------------------------------


@pytest.fixture
def planted(fixture_run, tmp_path) -> Path:
    """A copy of the fixture run's scored runs and datasets, with three more accepted runs of a
    task T-extra: one with an empty answer, one not SFT-eligible, one fine."""
    _, out, _ = fixture_run
    shutil.copytree(out / C.SCORED_DIR, tmp_path / C.SCORED_DIR)
    shutil.copytree(out / "exports", tmp_path / "exports")
    day = _largest(tmp_path, "scored-runs/*/*/*/scored_runs.jsonl")
    rows = _read(day)
    template = {
        **next(row for row in rows if row["quality_score"] == C.QUALITY_ACCEPTED),
        "task_id": "T-extra",
        "score": 1.0,
        "category": "ops",  # not the template run's: it may be in a denied category
    }
    extra = [
        {**template, "run_id": "run-empty", "response_empty": True},
        {**template, "run_id": "run-ineligible", "sft_eligible": False},
        {**template, "run_id": "run-fine", "score": 0.5},
    ]
    _write(day, rows + extra)
    return tmp_path


def _plant(root: Path, relpath: str, changes: dict[int, dict[str, Any]], more: Rows = ()) -> None:
    rows = _read(root / relpath)
    for i, change in changes.items():
        rows[i].update(change)
    _write(root / relpath, [*rows, *more])


def _found(report) -> list[tuple[int, str]]:
    assert report.count == len(report.violations)
    return [(v["row"], v["rule"]) for v in report.violations]


def test_clean_copies_pass_the_firewall(planted):
    settings = ExportSettings()
    for verify in (verify_sft, verify_rag, verify_preference, verify_pair_rules, verify_kto):
        report = verify(planted, settings)
        assert report.passed and report.rows > 0, report.violations
    assert verify_extracted(planted).passed


def test_firewall_sft(planted):
    extra = {"task_id": "T-extra"}
    _plant(
        planted,
        C.SFT_PATH,
        {
            0: {"source_run_id": "run-002", "task_id": "T-login"},  # rejected
            1: {"source_run_id": "run-that-never-was"},
            2: {"task_id": "another-task"},
            3: {"category": " Malware "},
            4: {"source_run_id": "run-empty", **extra},
            5: {"source_run_id": "run-ineligible", **extra},
            6: {"source_run_id": ""},
        },
    )
    assert _found(verify_sft(planted, ExportSettings())) == [
        (1, "not_accepted_in_sft"),
        (2, "source_run_unknown"),
        (3, "task_mismatch"),
        (4, C.R_UNSAFE_SFT_CATEGORY),
        (5, C.R_EMPTY_RESPONSE),
        (6, C.R_NOT_SFT_ELIGIBLE),
        (7, "source_run_unknown"),
    ]


def test_firewall_sft_allow_list_numbers_holdout_rows_after_train(planted):
    rows = _read(planted / C.SFT_PATH) + _read(planted / C.SFT_HOLDOUT_PATH)
    settings = ExportSettings(sft_allow_categories=("coding",))
    expected = [
        (number, C.R_CATEGORY_DISALLOWED)
        for number, row in enumerate(rows, 1)
        if (row["category"] or "").lower() != "coding"
    ]
    assert expected[-1][0] == len(rows)  # the holdout row
    assert _found(verify_sft(planted, settings)) == expected


def test_firewall_rag(planted):
    rows = _read(planted / C.RAG_PATH)
    _plant(
        planted,
        C.RAG_PATH,
        {
            0: {"source_run_ids": [*rows[0]["source_run_ids"], "run-007"]},  # needs review
            1: {"source_run_ids": ["ghost", *rows[1]["source_run_ids"]]},
            2: {"task_id": "T-extra", "source_run_ids": ["run-fine", "run-empty"]},
            3: {"task_id": "T-extra", "source_run_ids": ["run-fine", "run-001"]},
        },
    )
    assert _found(verify_rag(planted, ExportSettings())) == [
        (1, "untrusted_run_in_rag"),
        (2, "source_run_unknown"),
        (3, C.R_EMPTY_RESPONSE),
        (4, "task_mismatch"),
    ]
    strict = verify_rag(planted, ExportSettings(rag_include_partial=False))
    partial = [
        (number, "untrusted_run_in_rag", run_id)
        for number, row in enumerate(rows, 1)
        for run_id in row["source_run_ids"]
        if number > 4 and run_id in {"run-003", "run-006", "run-011"}
    ]
    assert [(v["row"], v["rule"], v["run_id"]) for v in strict.violations] == [
        (1, "untrusted_run_in_rag", "run-007"),
        (2, "source_run_unknown", "ghost"),
        (2, "untrusted_run_in_rag", "run-021"),
        (3, C.R_EMPTY_RESPONSE, "run-empty"),
        (4, "task_mismatch", "run-001"),
        *partial,
    ]
    assert len(partial) == 3


def test_firewall_preference_and_pair_rules(planted):
    rows = _read(planted / C.PREFERENCE_PATH)
    assert [(r["chosen_run_id"], r["rejected_run_id"]) for r in rows] == [
        ("run-020", "run-021"),
        ("run-017", "run-018"),
        ("run-001", "run-003"),
        ("run-003", "run-002"),
        ("run-004", "run-005"),
        ("run-011", "run-012"),
    ]
    _plant(
        planted,
        C.PREFERENCE_PATH,
        {
            0: {"chosen_run_id": "run-021", "rejected_run_id": "run-020"},  # the worse chosen
            1: {"rejected_run_id": "run-017"},
            2: {"rejected": " " + "\n".join(rows[2]["chosen"].split()) + "\u2003"},
            3: {"chosen_run_id": "run-empty", "rejected_run_id": "run-fine", "task_id": "T-extra"},
            4: {"rejected_run_id": "run-007"},  # needs review, of another task
            5: {"chosen_run_id": "run-012", "rejected_run_id": "run-011"},  # a rejected run chosen
        },
        more=[{**rows[0], "chosen_run_id": "ghost"}],
    )
    settings = ExportSettings()
    assert _found(verify_preference(planted, settings)) == [
        (4, C.R_EMPTY_RESPONSE),
        (5, "unreviewed_in_pair"),
        (6, "untrusted_chosen"),
        (7, "source_run_unknown"),
    ]
    assert _found(verify_pair_rules(planted, settings)) == [
        (1, "chosen_not_better"),
        (1, C.R_BELOW_MARGIN),
        (2, C.R_SELF_PAIR),
        (2, "chosen_not_better"),
        (2, C.R_BELOW_MARGIN),
        (3, C.R_IDENTICAL_TEXT),
        (5, "cross_task_pair"),
        (6, "chosen_not_better"),
        (6, C.R_BELOW_MARGIN),
        (7, "source_run_unknown"),
    ]


def test_firewall_kto(planted):
    rows = _read(planted / C.KTO_PATH)
    labels = [True, True, False, True, True, True, False, True, True, False, False]
    assert [r["label"] for r in rows[:11]] == labels
    extra = {"task_id": "T-extra", "label": True}
    _plant(
        planted,
        C.KTO_PATH,
        {
            0: {"label": False},  # accepted
            2: {"label": True},  # rejected
            3: {"source_run_id": "run-ineligible", **extra},
            4: {"source_run_id": "run-empty", **extra},
            5: {"source_run_id": "run-007", "task_id": "T-certs", "label": False},
            6: {"label": None},
            7: {"source_run_id": "run-fine", **extra, "category": "malware"},
            8: {"task_id": "T-other"},
            9: {"source_run_id": "ghost"},
            10: {"label": "true"},  # not a boolean: the file is read row by row
        },
    )
    assert _found(verify_kto(planted, ExportSettings())) == [
        (1, "undesirable_not_rejected"),
        (3, "desirable_not_accepted"),
        (4, C.R_NOT_SFT_ELIGIBLE),
        (5, C.R_EMPTY_RESPONSE),
        (6, "undesirable_not_rejected"),
        (7, "label_not_boolean"),
        (8, C.R_UNSAFE_SFT_CATEGORY),
        (9, "task_mismatch"),
        (10, "source_run_unknown"),
        (11, "label_not_boolean"),
    ]


def test_frames_judged_in_batches_report_as_the_whole(planted):
    """The check step joins a dataset's rows to the scored runs in batches (each batch looks
    up only the runs it names): merged, the batches' reports are the whole frame's."""
    _plant(
        planted,
        C.KTO_PATH,
        {
            0: {"label": False},
            4: {"source_run_id": "ghost"},
            5: {"source_run_id": "run-empty", "task_id": "T-extra", "label": True},
        },
    )
    _plant(
        planted,
        C.PREFERENCE_PATH,
        {
            0: {"chosen_run_id": "run-021", "rejected_run_id": "run-020"},
            3: {"rejected_run_id": "run-004"},
            5: {"chosen_run_id": "ghost"},
        },
    )
    table = ScoredTable.read(sorted(planted.glob("scored-runs/*/*/*/scored_runs.jsonl")))
    settings = ExportSettings()
    cases = [
        (C.ASSET_KTO_DATASET, C.KTO_PATH, C.KTO_HOLDOUT_PATH, [verify_kto_frame]),
        (
            C.ASSET_PREFERENCE_PAIRS,
            C.PREFERENCE_PATH,
            C.PREFERENCE_HOLDOUT_PATH,
            [verify_preference_frame, verify_pair_rules_frame],
        ),
    ]
    for asset, train, holdout, verifiers in cases:
        rows = read_dataset(asset, planted, train, holdout)
        frame = firewall_columns(asset, rows)
        assert frame.height >= 6
        for verify in verifiers:
            whole = verify(frame, table, settings)
            assert not whole.passed, (asset, verify.__name__)
            for size in (1, 2, 5):
                batched = FirewallReport()
                for start in range(0, frame.height, size):
                    batched.merge(verify(frame.slice(start, size), table, settings))
                assert (batched.rows, batched.count, batched.violations) == (
                    whole.rows,
                    whole.count,
                    whole.violations,
                ), (asset, verify.__name__, size)


def test_firewall_extracted(planted):
    rows = _read(planted / C.EXTRACTED_PATH)
    # T-phish (category malware) is denied by default: no playbook (issue 14)
    assert [r["task_id"] for r in rows[:8]] == [
        "T-backup",
        "T-cache",
        "T-dns",
        "T-incident",
        "T-login",
        "T-onboard",
        "T-refund",
        "T-sql",
    ]
    compared = [{**rows[7]["divergences"][0], "run_id": "run-001"}]
    _plant(
        planted,
        C.EXTRACTED_PATH,
        {
            0: {"source_run_ids": [*rows[0]["source_run_ids"], "run-007"]},  # needs review
            1: {"failed_run_ids": ["run-001"]},  # accepted
            2: {"failed_run_ids": []},  # its divergence still names run-018: checked, fine
            3: {"source_run_ids": ["ghost"], "sources": []},
            5: {"task_id": "T-extra", "source_run_ids": ["run-empty"]},
            6: {"failed_run_ids": ["run-018"]},  # rejected, of T-dns
            7: {"divergences": compared},  # a run compared but not listed as failed
        },
    )
    assert _found(verify_extracted(planted)) == [
        (1, "untrusted_source"),
        (2, "failed_run_not_rejected"),
        (4, "source_run_unknown"),
        (6, C.R_EMPTY_RESPONSE),
        (7, "task_mismatch"),
        (8, "failed_run_not_rejected"),
    ]


def test_frame_entry_points_and_the_scored_table(planted, tmp_path):
    _plant(planted, C.SFT_PATH, {1: {"source_run_id": "run-002", "task_id": "T-login"}})
    later = tmp_path / "later.jsonl"  # a run scored again on a later day: the last row counts
    paths = sorted(planted.glob("scored-runs/*/*/*/scored_runs.jsonl"))
    first = next(row for path in paths for row in _read(path) if row["run_id"] == "run-002")
    _write(later, [{**first, "quality_score": C.QUALITY_ACCEPTED}])
    table = ScoredTable.read(paths)
    assert table["run-002"].quality == C.QUALITY_REJECTED
    assert table.get("run-that-never-was") is None and "run-002" in table
    assert len(table) == sum(len(_read(p)) for p in paths)
    assert table.nbytes < 100 * len(table) + 4096  # about 30 bytes a run, plus task ids
    frame = read_dataset(C.ASSET_SFT_DATASET, planted, C.SFT_PATH)
    assert _found(verify_sft_frame(frame, table, ExportSettings())) == [(2, "not_accepted_in_sft")]
    rescored = ScoredTable.read([*paths, later])
    assert len(rescored) == len(table)
    assert verify_sft_frame(frame, rescored, ExportSettings()).passed
    extracted = read_dataset(
        C.ASSET_EXTRACTED_PLAYBOOKS, planted, C.EXTRACTED_PATH, C.EXTRACTED_HOLDOUT_PATH
    )
    assert verify_extracted_frame(extracted, table).passed


def test_holdout_disjoint(planted):
    train, holdout = planted / C.SFT_PATH, planted / C.SFT_HOLDOUT_PATH
    assert verify_disjoint(train, holdout).passed
    rows = _read(holdout)
    _write(holdout, [*rows, {**rows[0], "task_id": "T-login"}, {**rows[0], "task_id": "T-cache"}])
    report = verify_disjoint(train, holdout)
    assert not report.passed and report.shared_tasks == ["T-cache", "T-login"]
    assert report.count == 2 and report.holdout_rows == len(rows) + 2
    frame = S.read_jsonl(S.SftExampleSchema, [train, holdout])
    assert verify_disjoint_frame(frame) == report
