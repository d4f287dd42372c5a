"""The KTO export's rules: which runs become desirable or undesirable rows, and the firewall and
schema that re-verify the written file catch a row that breaks them."""

from __future__ import annotations

from pathlib import Path

import orjson
import pandera.polars as pa
import polars as pl
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import ExportSettings
from distill_assets.lib.datasets.kto import kto_reasons
from distill_assets.lib.datasets.runs import RunKey
from distill_assets.lib.verify.firewall import verify_kto
from distill_assets.lib.verify.schemas import KtoConversationalSchema, KtoExampleSchema


def key(quality: str, **changes) -> RunKey:
    fields = dict(
        run_id="run-x",
        task_id="T-x",
        quality=quality,
        score=0.5,
        created_at="2026-03-01T00:00:00Z",
        category="ops",
        run_file="evidence/2026/03/01/records.jsonl",
        run_offset=0,
        evidence_id="e" * 64,
        response_hash="h-answer",
        response_empty=False,
        sft_eligible=True,
    )
    return RunKey(**{**fields, **changes})


@pytest.mark.parametrize(
    ("run", "accepted_texts", "reasons"),
    [
        (key(C.QUALITY_ACCEPTED), set(), []),
        (key(C.QUALITY_REJECTED), set(), []),
        (key(C.QUALITY_REVIEW), set(), [C.R_NEEDS_HUMAN_REVIEW]),
        (key(C.QUALITY_PARTIAL), set(), [C.R_PARTIALLY_ACCEPTED]),
        (key(C.QUALITY_ACCEPTED, category="malware"), set(), [C.R_UNSAFE_SFT_CATEGORY]),
        # the deny-list keeps a run out of the negatives too; the allow-list does not
        (key(C.QUALITY_REJECTED, category="malware"), set(), [C.R_DENIED_CATEGORY]),
        (
            key(C.QUALITY_REJECTED, category=" Malware "),
            {"h-answer"},
            [C.R_DENIED_CATEGORY, C.R_IDENTICAL_TEXT],
        ),  # fmt: skip
        (key(C.QUALITY_ACCEPTED, response_empty=True), set(), [C.R_EMPTY_RESPONSE]),
        (key(C.QUALITY_REJECTED, sft_eligible=False), set(), [C.R_NOT_SFT_ELIGIBLE]),
        # a rejected answer that is also an accepted answer of the task: both labels, one text
        (key(C.QUALITY_REJECTED), {"h-answer"}, [C.R_IDENTICAL_TEXT]),
        (key(C.QUALITY_ACCEPTED), {"h-answer"}, []),
    ],
)
def test_kto_reasons(run, accepted_texts, reasons):
    assert kto_reasons(run, ExportSettings(), accepted_texts) == reasons


def _planted(out: Path, tmp_path: Path, change) -> Path:
    """A copy of the fixture run's KTO files with ``change`` applied to every row."""
    root = tmp_path / "root"
    for relpath in (C.KTO_PATH, C.KTO_HOLDOUT_PATH):
        target = root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = [orjson.loads(raw) for raw in (out / relpath).read_bytes().splitlines()]
        target.write_bytes(b"".join(orjson.dumps(change(row)) + b"\n" for row in lines))
    return root


def test_firewall_passes_the_written_file_and_catches_planted_rows(fixture_run, tmp_path):
    _, out, _ = fixture_run
    settings = ExportSettings()
    assert verify_kto(out, settings).passed
    assert verify_kto(out, settings).rows == 13

    def rejected_as_desirable(row):
        return {**row, "label": True} if row["quality"] == C.QUALITY_REJECTED else row

    report = verify_kto(out, settings, _planted(out, tmp_path / "a", rejected_as_desirable))
    assert report.count == 4
    assert {v["rule"] for v in report.violations} == {"desirable_not_accepted"}

    def unreviewed(row):  # run-007 (T-certs) needs human review
        return {**row, "source_run_id": "run-007", "task_id": "T-certs", "label": False}

    report = verify_kto(out, settings, _planted(out, tmp_path / "b", unreviewed))
    assert {v["rule"] for v in report.violations} == {"undesirable_not_rejected"}
    assert report.count == 13

    def text_label(row):
        return {**row, "label": "true"}

    report = verify_kto(out, settings, _planted(out, tmp_path / "c", text_label))
    assert {v["rule"] for v in report.violations} == {"label_not_boolean"}


def _frame(**changes) -> pl.DataFrame:
    row = {
        "prompt": "Restart the cache.",
        "completion": "Restarted it.",
        "label": True,
        "id": "kto-1",
        "source_run_id": "run-1",
        "task_id": "T-1",
        "quality": C.QUALITY_ACCEPTED,
        "score": 0.9,
        "category": None,
    }
    return pl.DataFrame([{**row, **changes}], schema_overrides={"category": pl.String})


@pytest.mark.parametrize(
    "changes",
    [
        {"label": "true"},  # a string, not a boolean
        {"label": 1},
        {"label": False},  # an accepted run labelled undesirable
        {"quality": C.QUALITY_REVIEW},
        {"completion": ""},
    ],
)
def test_schema_refuses_bad_rows(changes):
    KtoExampleSchema.validate(_frame(), lazy=True)
    with pytest.raises(pa.errors.SchemaErrors):
        KtoExampleSchema.validate(_frame(**changes), lazy=True)


def test_conversational_schema_wants_turns():
    turns = {
        "prompt": [{"role": "user", "content": "Restart the cache."}],
        "completion": [{"role": "assistant", "content": "Restarted it."}],
    }
    KtoConversationalSchema.validate(_frame(**turns), lazy=True)
    swapped = {"prompt": turns["completion"], "completion": turns["prompt"]}
    with pytest.raises(pa.errors.SchemaErrors):
        KtoConversationalSchema.validate(_frame(**swapped), lazy=True)
