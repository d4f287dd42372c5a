"""Bugs injected into a real run: the blocking checks catch them, the steps after them do not
run, and the run summary says which stages did not run and why."""

from __future__ import annotations

import orjson
import polars as pl

import distill_assets.lib.datasets.sft as sft
import distill_assets.lib.scoring as scoring
from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.records.reports import load_summary
from distill_assets.lib.verify.schemas import SftExampleSchema, validate_jsonl
from distill_tests.conftest import FIXTURES, materialize_graph


def _evaluation(result, asset: str, check: str):
    return next(
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == asset and e.check_name == check
    )


def test_rejected_run_pushed_into_sft_is_stopped(project_defs, instance, tmp_path, monkeypatch):
    real = sft._common_reasons

    def buggy(key):  # the bug: rejected runs are no longer kept out
        return None if key.quality == C.QUALITY_REJECTED else real(key)

    monkeypatch.setattr(sft, "_common_reasons", buggy)
    out = tmp_path / "out"
    result = materialize_graph(project_defs, instance, FIXTURES, out)
    assert not result.success
    firewall = _evaluation(result, C.ASSET_SFT_DATASET, C.CHECK_FIREWALL)
    assert not firewall.passed and firewall.severity.value == "ERROR"
    violations = firewall.metadata["violations"].value
    assert {v["rule"] for v in violations} == {"not_accepted_in_sft"}
    assert firewall.metadata["num_failures"].value == 4  # the fixture's four rejected runs
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert C.ASSET_DATASET_MANIFEST not in materialized
    assert not (out / C.MANIFEST_PATH).exists()
    summary = load_summary(out, result.run_id)
    assert not summary.overall_passed
    not_run = {item.stage: item.reason for item in summary.not_run}
    assert "sft_dataset.contamination_firewall" in not_run[C.STAGE_PUBLISH]
    sft_row = next(row for row in summary.stages if row.stage == C.STAGE_EXPORT_SFT)
    assert not sft_row.passed and "sft_dataset.contamination_firewall" in sft_row.failed_checks
    assert "blocked" in (out / C.REPORTS_DIR / result.run_id / "summary.md").read_text()


def test_corrupted_scores_fail_the_schema_check_and_stop_the_exports(
    project_defs, instance, tmp_path, monkeypatch
):
    real = scoring._scored_lines

    def corrupt(line: str) -> str:
        row = orjson.loads(line)
        if row["run_id"] == "run-001":
            row["quality_score"] = "great"
            row["score"] = 7.0
        return orjson.dumps(row).decode() + "\n"

    def buggy(*args):  # the scored rows of a block of days, as lines
        return pl.Series([corrupt(line) for line in real(*args)])

    monkeypatch.setattr(scoring, "_scored_lines", buggy)
    out = tmp_path / "out"
    result = materialize_graph(project_defs, instance, FIXTURES, out)
    assert not result.success
    check = _evaluation(result, C.ASSET_SCORED_RUNS, C.CHECK_SCHEMA)
    assert not check.passed
    assert check.metadata["num_failures"].value == 2
    cases = check.metadata["failure_cases"].value
    assert {c["column"] for c in cases} == {"quality_score", "score"}
    assert any("great" in c["failure_case"] for c in cases)
    for path in (C.RAG_PATH, C.SFT_PATH, C.PREFERENCE_PATH):
        assert not (out / path).exists()
    summary = load_summary(out, result.run_id)
    reasons = {item.stage: item.reason for item in summary.not_run}
    for stage in S.EXPORT_STAGES:
        assert reasons[stage] == "blocked: blocking check scored_runs.schema_valid failed upstream"


def test_pandera_reports_failures_of_a_corrupted_table(tmp_path):
    good = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "id": "sft-1",
        "source_run_id": "r1",
        "task_id": "t",
        "category": None,
    }
    bad = [
        good,
        {**good, "id": "sft-2", "source_run_id": "r2", "messages": [{"role": "user"}]},
        {**good, "id": "sft-1", "source_run_id": "r3"},
        {**good, "id": "sft-4", "source_run_id": "r4", "surprise": 1},
    ]
    path = tmp_path / "sft.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in bad))
    outcome = validate_jsonl(SftExampleSchema, [path])
    assert not outcome.passed
    checks = {c["check"] for c in outcome.failure_cases}
    assert any("messages_user_to_assistant" in c for c in checks)
    assert any("unique" in c or "duplicate" in c for c in checks) or any(
        c["column"] == "id" for c in outcome.failure_cases
    )
    assert any("surprise" in str(c["failure_case"]) for c in outcome.failure_cases)
    path.write_bytes(orjson.dumps(good) + b"\n")
    assert validate_jsonl(SftExampleSchema, [path]).passed
