"""summary.json, drift.json and summary.md as the seed's v1 defines them (issue 14): field
names and JSON types pinned against fixtures/seed_v1 (written from the seed's field lists), the
drift rules the seed names (a swing in the mix of reason codes or categories, the run hash, the
environment's threshold changing a verdict), the drift section that ends summary.md, and the
setting that fails a stage skipping too large a share of its records."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.records.accounting import Tally, nothing_usable_errors, skipped_share_errors
from distill_assets.lib.records.drift import (
    FLAG_BASELINE,
    FLAG_RUN_HASH_DIFFERS,
    DriftThresholds,
    StageSnapshot,
    build_report,
    compare,
    mix_swings,
)
from distill_assets.lib.records.reports import load_drift, load_summary, run_dir
from distill_assets.runtime.resource import ConfigError, DistillResource

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seed_v1"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _assert_shape(seed: dict, ours: dict, where: str) -> None:
    """Every field of the seed's example is in ours, with the same JSON type (a null in ours
    is allowed where the seed shows a number or boolean: no prior to compare with)."""
    for key, value in seed.items():
        assert key in ours, f"{where}: missing {key}"
        mine = ours[key]
        if mine is None and value is not None and _json_type(value) in ("number", "boolean"):
            continue
        assert _json_type(mine) == _json_type(value), f"{where}.{key}"
        if isinstance(value, dict) and key != "datasets":
            _assert_shape(value, mine, f"{where}.{key}")
        if isinstance(value, list) and value and isinstance(value[0], dict):
            assert mine, f"{where}.{key} is empty"
            for item in mine:
                _assert_shape(value[0], item, f"{where}.{key}[]")


@pytest.fixture(scope="module")
def reports(fixture_run) -> tuple[Path, str, dict, dict]:
    result, out, _ = fixture_run
    directory = run_dir(out, result.run_id)
    summary = orjson.loads((directory / "summary.json").read_bytes())
    drift = orjson.loads((directory / "drift.json").read_bytes())
    return out, result.run_id, summary, drift


def test_summary_json_has_the_seed_v1_fields(reports) -> None:
    out, run_id, summary, _ = reports
    _assert_shape(orjson.loads((SEED / "run_summary.json").read_bytes()), summary, "summary")
    # datasets: rows per dataset; the detailed objects are kept under dataset_files
    assert summary["datasets"]["sft"] == 8 and summary["datasets"]["rag"] == 9
    assert summary["dataset_files"]["sft"]["path"] == C.SFT_PATH
    for name in ("records_in", "records_out", "accepted", "rejected", "quarantined", "skipped"):
        assert summary[f"total_{name}"] == sum(row[name] for row in summary["stages"])
    assert load_summary(out, run_id).overall_passed is summary["overall_passed"] is True


def test_drift_json_has_the_seed_v1_fields(reports) -> None:
    out, run_id, _, drift = reports
    _assert_shape(orjson.loads((SEED / "drift_report.json").read_bytes()), drift, "drift")
    assert [d["stage"] for d in drift["stages"]] == list(S.STAGES)
    # the first run into this output: a baseline, said in words
    assert drift["flags"][0] == FLAG_BASELINE
    assert load_drift(out, run_id).stage(C.STAGE_COLLECT).notes


def test_summary_md_ends_with_the_drift_section(reports) -> None:
    out, run_id, _, drift = reports
    md = (run_dir(out, run_id) / "summary.md").read_text()
    section = md[md.rindex("\n## ") + 1 :]
    assert section.startswith("## Drift")
    assert f"Severity: **{drift['severity'].upper()}**" in section
    assert FLAG_BASELINE in section
    for stage in S.STAGES:
        assert f"\n| {stage} | " in section


def _snap(run_id: str, reasons: dict[str, int], categories: dict[str, int] | None = None):
    left = sum(reasons.values())
    return StageSnapshot(
        stage=C.STAGE_EXPORT_SFT, run_id=run_id, records_in=200, records_out=200 - left,
        accepted=200 - left, rejected=0, quarantined=left, skipped=0, reasons=reasons,
        input_hash="in-" + run_id, output_hash="out-" + run_id, categories=categories or {},
    )  # fmt: skip


def test_a_swing_in_the_reason_mix_warns_though_no_code_is_new() -> None:
    # same counts, same codes; the share of quality_rejected goes 50% -> 80%
    before = _snap("a", {C.R_QUALITY_REJECTED: 50, C.R_NEEDS_HUMAN_REVIEW: 50})
    after = _snap("b", {C.R_QUALITY_REJECTED: 80, C.R_NEEDS_HUMAN_REVIEW: 20})
    drift = compare(before, after, DriftThresholds())
    assert drift.severity == C.SEVERITY_WARN
    assert drift.new_reason_codes == []
    assert drift.reason_mix_swings == {C.R_NEEDS_HUMAN_REVIEW: -30.0, C.R_QUALITY_REJECTED: 30.0}
    assert f"reason_mix_swing:{C.R_QUALITY_REJECTED}:+30.0pp" in drift.flags
    # a smaller swing stays ok
    calm = _snap("c", {C.R_QUALITY_REJECTED: 60, C.R_NEEDS_HUMAN_REVIEW: 40})
    assert compare(before, calm, DriftThresholds()).severity == C.SEVERITY_OK


def test_a_swing_in_the_category_mix_warns() -> None:
    reasons = {C.R_QUALITY_REJECTED: 10}
    before = _snap("a", reasons, {"coding": 70, "ops": 30})
    after = _snap("b", reasons, {"coding": 30, "ops": 70})
    drift = compare(before, after, DriftThresholds())
    assert drift.severity == C.SEVERITY_WARN
    assert drift.category_mix_swings == {"coding": -40.0, "ops": 40.0}
    assert any("category ops" in note for note in drift.notes)


def test_mix_swings_ignore_small_or_empty_mixes() -> None:
    assert mix_swings({"a": 1}, {"b": 1}, min_base=10) == {}
    assert mix_swings({}, {"a": 50}, min_base=10) == {}
    assert mix_swings({"a": 5, "b": 5}, {"a": 10}, min_base=10) == {"a": 50.0, "b": -50.0}


def test_the_environment_threshold_changes_the_verdict(monkeypatch) -> None:
    before = _snap("a", {C.R_QUALITY_REJECTED: 50, C.R_NEEDS_HUMAN_REVIEW: 50})
    after = _snap("b", {C.R_QUALITY_REJECTED: 62, C.R_NEEDS_HUMAN_REVIEW: 38})  # 12 points
    monkeypatch.delenv(C.ENV_DRIFT_WARN, raising=False)
    assert compare(before, after, DriftThresholds.from_env(os.environ)).severity == C.SEVERITY_OK
    monkeypatch.setenv(C.ENV_DRIFT_WARN, "10")
    thresholds = DistillResource().thresholds()  # how a run reads it
    assert thresholds.warn_pct == 10.0
    assert compare(before, after, thresholds).severity == C.SEVERITY_WARN
    # a count change too: records 200 -> 185 (-7.5%) warns only under a 5% threshold
    base = _snap("d", {})
    fewer = base.model_copy(
        update={"run_id": "c", "records_in": 185, "records_out": 185, "accepted": 185}
    )
    monkeypatch.setenv(C.ENV_DRIFT_WARN, "5")
    assert compare(base, fewer, DriftThresholds.from_env(os.environ)).severity == C.SEVERITY_WARN
    monkeypatch.delenv(C.ENV_DRIFT_WARN)
    assert compare(base, fewer, DriftThresholds.from_env(os.environ)).severity == C.SEVERITY_OK


def test_run_level_flags_name_the_baseline_and_a_changed_run_hash() -> None:
    thresholds = DriftThresholds()
    first = compare(None, _snap("a", {}), thresholds)
    assert build_report("a", {first.stage: first}, thresholds, "h1").flags[0] == FLAG_BASELINE
    again = compare(_snap("a", {}), _snap("b", {}), thresholds)
    same = build_report("b", {again.stage: again}, thresholds, "h1", "h1")
    assert FLAG_RUN_HASH_DIFFERS not in same.flags and FLAG_BASELINE not in same.flags
    changed = build_report("b", {again.stage: again}, thresholds, "h2", "h1")
    assert changed.flags[0] == FLAG_RUN_HASH_DIFFERS


def test_max_skipped_share_fails_a_stage_only_beyond_the_limit() -> None:
    tally = Tally(records_in=10, records_out=6, skipped=4)
    tally.reasons.update({C.R_INVALID_JSON: 3, C.R_EMPTY_LINE: 1})
    assert skipped_share_errors(C.STAGE_COLLECT, tally, None) == []  # the default: no limit
    assert skipped_share_errors(C.STAGE_COLLECT, tally, 0.4) == []
    (error,) = skipped_share_errors(C.STAGE_COLLECT, tally, 0.25)
    assert "collect skipped 4 of 10 records (40.0%)" in error
    assert "invalid_json 3, empty_line 1" in error


@pytest.mark.parametrize(("raw", "phrase"), [("abc", "not a number"), ("1.5", "between 0 and 1")])
def test_max_skipped_share_refuses_bad_values(monkeypatch, raw: str, phrase: str) -> None:
    monkeypatch.setenv(C.ENV_MAX_SKIPPED_SHARE, raw)
    with pytest.raises(ConfigError, match=phrase):
        DistillResource().skipped_limit()
    monkeypatch.delenv(C.ENV_MAX_SKIPPED_SHARE)
    assert DistillResource().skipped_limit() is None
    assert DistillResource(max_skipped_share=0.1).skipped_limit() == 0.1


def test_nothing_usable_names_the_top_reasons() -> None:
    garbage = Tally(records_in=3, skipped=2, quarantined=1)
    garbage.reasons.update({C.R_INVALID_JSON: 2, "missing_field:created_at": 1})
    (error,) = nothing_usable_errors(C.STAGE_COLLECT, garbage, had_sources=True)
    assert error == (
        "collect: no usable record among 3 read; top reasons: invalid_json 2, "
        "missing_field:created_at 1"
    )
    assert nothing_usable_errors(C.STAGE_COLLECT, Tally(), had_sources=False)
    # a day without data in a source that has files (a per-day run): not a failure
    assert nothing_usable_errors(C.STAGE_COLLECT, Tally(), had_sources=True) == []
    # nor a day of garbage when other days of the output hold records
    assert nothing_usable_errors(C.STAGE_COLLECT, garbage, True, usable_elsewhere=True) == []
