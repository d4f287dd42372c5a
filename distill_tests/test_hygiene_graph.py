"""Hygiene through the real graph: decontamination against an evaluation file, the review queue's
shape, and verdicts coming back as review evidence that takes a run out of the queue."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from distill_assets.cli import main as cli_main
from distill_assets.lib import constants as C
from distill_assets.lib.infra.runconfig import run_config_of
from distill_assets.lib.records.receipts import load_receipt
from distill_tests.conftest import copy_fixtures, materialize_graph

REFUND_PROMPT = (
    "A customer asks for a refund of order #8841, delivered damaged. Resolve it following the "
    "refund policy."
)


def _rows(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _receipt(out: Path, result, stage: str):
    return load_receipt(out / C.REPORTS_DIR / result.run_id / f"{stage}.json")


def test_eval_set_quarantines_contaminated_rows(tmp_path, project_defs, instance):
    source = copy_fixtures(tmp_path / "source")
    evals = tmp_path / "evals.jsonl"
    evals.write_bytes(
        orjson.dumps({"task_id": "T-login"}) + b"\n" + orjson.dumps(REFUND_PROMPT.upper()) + b"\n"
    )
    config = {"eval_set_path": str(evals)}
    run_config = run_config_of(
        {
            asset: config
            for asset in (
                C.ASSET_EXTRACTED_PLAYBOOKS,
                C.ASSET_RAG_PLAYBOOKS,
                C.ASSET_SFT_DATASET,
                C.ASSET_PREFERENCE_PAIRS,
                C.ASSET_KTO_DATASET,
            )
        }
    )
    out = tmp_path / "out"
    result = materialize_graph(project_defs, instance, source, out, run_config=run_config)
    assert result.success
    # SFT: run-001 (T-login, listed task) and run-004 (T-refund, same prompt) were in SFT
    sft = _receipt(out, result, C.STAGE_EXPORT_SFT)
    assert sft.stats.reasons[C.R_CONTAMINATED_EVAL] == 2
    assert sft.extra["contamination"] == {"exact": 1, "task_id": 1}
    quarantined = {
        r["run_id"]: r
        for r in _rows(out / C.quarantine_path(C.STAGE_EXPORT_SFT))
        if C.R_CONTAMINATED_EVAL in r["reasons"]
    }
    assert set(quarantined) == {"run-001", "run-004"}
    assert quarantined["run-004"]["contamination"] == "exact"
    for path in (C.SFT_PATH, C.SFT_HOLDOUT_PATH, C.RAG_PATH, C.PREFERENCE_PATH):
        assert not {r["task_id"] for r in _rows(out / path)} & {"T-login", "T-refund"}
    # playbooks: both tasks' extracted playbooks are quarantined at extraction (their 4 trusted
    # runs and 2 failed runs: T-login 001, 003 and 002; T-refund 004, 006 and 005), so neither
    # reaches the extracted file, the RAG playbooks or the index
    extracted = _receipt(out, result, C.STAGE_EXTRACT_PLAYBOOKS)
    assert extracted.stats.reasons[C.R_CONTAMINATED_EVAL] == 6
    for path in (C.EXTRACTED_PATH, C.EXTRACTED_HOLDOUT_PATH, C.RAG_HOLDOUT_PATH):
        assert not {r["task_id"] for r in _rows(out / path)} & {"T-login", "T-refund"}
    pref = _receipt(out, result, C.STAGE_EXPORT_PREFERENCE)
    assert pref.stats.reasons[C.R_CONTAMINATED_EVAL] > 0
    assert pref.extra["eval_set"]["task_ids"] == 1 and pref.extra["eval_set"]["prompts"] == 1


@pytest.mark.parametrize("how", ["dotdot", "symlink"])
def test_eval_path_escaping_the_source_is_refused(tmp_path, project_defs, instance, how):
    """The escape guard is the only reason this run can fail: the file the path leads to exists
    and is a valid evaluation set (without the guard, the run succeeds and decontaminates)."""
    source = copy_fixtures(tmp_path / "source")
    outside = tmp_path / "evals.jsonl"  # beside the source directory, not in it
    outside.write_bytes(orjson.dumps({"task_id": "T-login"}) + b"\n")
    if how == "dotdot":
        raw = "../evals.jsonl"
    else:  # a link inside the source that resolves out of it
        (source / "evals-link.jsonl").symlink_to(outside)
        raw = "evals-link.jsonl"
    assert (source / raw).resolve().is_file()
    run_config = run_config_of(
        {
            asset: {"eval_set_path": raw}
            for asset in (
                C.ASSET_EXTRACTED_PLAYBOOKS,
                C.ASSET_RAG_PLAYBOOKS,
                C.ASSET_SFT_DATASET,
                C.ASSET_PREFERENCE_PAIRS,
                C.ASSET_KTO_DATASET,
            )
        }
    )
    out = tmp_path / "out"
    result = materialize_graph(project_defs, instance, source, out, run_config=run_config)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.to_string()
    assert f"invalid setting eval_set_path='{raw}'" in message
    expected = "must not contain '..'" if how == "dotdot" else "leads out of"
    assert expected in message
    assert not (out / "evidence").exists()  # refused before collect wrote anything


def test_review_queue_and_verdicts_round_trip(tmp_path, project_defs, instance, capsys):
    source = copy_fixtures(tmp_path / "source")
    out = tmp_path / "out"
    first = materialize_graph(project_defs, instance, source, out)
    assert first.success
    queue = {r["run_id"]: r for r in _rows(out / C.REVIEW_QUEUE_PATH)}
    assert set(queue) == {"run-007", "run-008", "run-010"}
    row = queue["run-007"]
    assert row["id"] == "run-007" and row["quality_score"] == C.QUALITY_REVIEW
    assert C.R_CONFLICTING_EVIDENCE in row["reasons"]
    assert {e["kind"] for e in row["evidence"]} == {C.KIND_REVIEW, C.KIND_OUTCOME}
    assert row["question"] == {"name": "verdict", "options": list(C.VERDICTS)}
    assert row["instruction"] and row["response"]
    assert queue["run-010"]["evidence"] == []  # flagged for having no evidence at all
    checks = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in first.get_asset_check_evaluations()
    }
    assert checks[(C.ASSET_REVIEW_QUEUE, C.CHECK_NO_SECRETS)]
    assert checks[(C.ASSET_SFT_DATASET, C.CHECK_HOLDOUT_DISJOINT)]

    verdicts = tmp_path / "verdicts.jsonl"
    verdicts.write_bytes(
        orjson.dumps(
            {
                "id": "run-010",
                "verdict": "approve",
                "reviewer": "ana",
                "created_at": queue["run-010"]["created_at"],
            }
        )
        + b"\n"
        + orjson.dumps({"name": "verdict", "traceId": "run-008", "stringValue": "maybe"})
        + b"\n"
    )
    code = cli_main(["review", "import", str(verdicts), "--out", str(source / "reviews")])
    assert code == 1  # the second verdict is not one of approve/request_changes/reject
    assert "item 2 is not a usable verdict" in capsys.readouterr().err
    imported = _rows(source / "reviews" / "review-verdicts.jsonl")
    assert imported == [
        {
            "created_at": queue["run-010"]["created_at"],
            "kind": "review",
            "reviewer": "ana",
            "run_id": "run-010",
            "verdict": "approve",
        }
    ]
    second = materialize_graph(project_defs, instance, source, out)
    assert second.success
    assert {r["run_id"] for r in _rows(out / C.REVIEW_QUEUE_PATH)} == {"run-007", "run-008"}
    scored = {
        r["run_id"]: r["quality_score"]
        for path in sorted((out / C.SCORED_DIR).rglob(C.SCORED_FILE))
        for r in _rows(path)
    }
    assert scored["run-010"] == C.QUALITY_ACCEPTED


def test_hygiene_settings_must_agree_across_the_run(tmp_path, project_defs, instance):
    source = copy_fixtures(tmp_path / "source")
    run_config = run_config_of({C.ASSET_SFT_DATASET: {"holdout_fraction": 0.3}})
    out = tmp_path / "out"
    result = materialize_graph(project_defs, instance, source, out, run_config=run_config)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.to_string()
    assert "invalid setting holdout_fraction=" in message and "sft_dataset" in message
    assert not (out / "evidence").exists()  # refused before collect wrote anything
