"""Reproducibility and drift: identical inputs give identical bytes and an ok drift; changed
corpora give warn or alert; a planted nondeterminism is caught."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.evidence.sources import record_sources, source_names
from distill_assets.lib.infra.runconfig import run_config_of
from distill_assets.lib.records.reports import load_drift
from distill_tests.conftest import copy_fixtures, materialize_graph

DATASET_TREES = (C.EVIDENCE_DIR, C.SCORED_DIR, C.EXPORTS_DIR)


def snapshot(out: Path, run_id: str | None = None) -> dict[str, bytes]:
    """Every dataset file's bytes. A dataset card names the run that built its dataset (and
    nothing else that varies): the run id in it is masked, so a card must match byte for byte
    everywhere else."""
    files = {}
    for top in DATASET_TREES:
        for path in sorted((out / top).rglob("*")):
            if path.is_file():
                relpath = path.relative_to(out).as_posix()
                data = path.read_bytes()
                if C.is_card(relpath):
                    assert run_id is not None and run_id.encode() in data, relpath
                    data = data.replace(run_id.encode(), b"<run-id>")
                files[relpath] = data
    return files


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, project_defs):
    """One run over a copy of the fixtures; scenarios copy its output directory (with its
    reports, so drift finds this run as the prior one)."""
    base = tmp_path_factory.mktemp("baseline")
    source = copy_fixtures(base / "src")
    home = base / "home"
    home.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTILL_RECORDED_AT", "2026-03-10T00:00:00Z")
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = materialize_graph(project_defs, instance, source, base / "out")
    mp.undo()
    assert result.success
    return source, base / "out", result.run_id


def scenario(tmp_path: Path, baseline) -> tuple[Path, Path]:
    source, out, _ = baseline
    shutil.copytree(source, tmp_path / "src")
    shutil.copytree(out, tmp_path / "out")
    # the copies stand for the baseline's source and output: the output's record of its
    # sources (lib/evidence/sources.py) follows the source to its new path
    record_sources(tmp_path / "out", source_names(tmp_path / "src"))
    return tmp_path / "src", tmp_path / "out"


def rerun(project_defs, instance, source, out):
    result = materialize_graph(project_defs, instance, source, out)
    assert result.success
    return load_drift(out, result.run_id)


def test_identical_inputs_give_identical_bytes_and_ok_drift(
    tmp_path, baseline, project_defs, instance
):
    source, out = scenario(tmp_path, baseline)
    before = snapshot(out, baseline[2])
    drift = rerun(project_defs, instance, source, out)
    assert snapshot(out, drift.run_id) == before
    assert drift.severity == C.SEVERITY_OK and drift.prior_run_id == baseline[2]
    for stage in S.STAGES:
        assert drift.stage(stage).output_hash_match is True
        assert drift.stage(stage).input_hash_match is True
        assert not drift.stage(stage).deterministic_violation
    fresh = materialize_graph(project_defs, instance, source, tmp_path / "fresh")
    assert fresh.success
    assert snapshot(tmp_path / "fresh", fresh.run_id) == before


def test_counts_between_thresholds_warn(tmp_path, baseline, project_defs, instance):
    source, out = scenario(tmp_path, baseline)
    # 16 more unreadable lines: collect's records in grow 66 -> 82 (+24%), nothing else moves
    (source / "runs" / "garbage.jsonl").write_text("{not json\n" * 16)
    drift = rerun(project_defs, instance, source, out)
    assert drift.stage(C.STAGE_COLLECT).severity == C.SEVERITY_WARN
    assert drift.severity == C.SEVERITY_WARN
    assert any("records_in_changed" in f for f in drift.stage(C.STAGE_COLLECT).flags)


def test_counts_beyond_alert_threshold_alert(tmp_path, baseline, project_defs, instance):
    source, out = scenario(tmp_path, baseline)
    (source / "runs" / "garbage.jsonl").write_text("{not json\n" * 40)  # 66 -> 106 (+61%)
    drift = rerun(project_defs, instance, source, out)
    assert drift.stage(C.STAGE_COLLECT).severity == C.SEVERITY_ALERT
    assert drift.severity == C.SEVERITY_ALERT


def test_removing_half_the_reviews_warns_at_least(tmp_path, baseline, project_defs, instance):
    source, out = scenario(tmp_path, baseline)
    reviews = source / "reviews" / "reviews.jsonl"
    lines = reviews.read_text().splitlines(keepends=True)
    reviews.write_text("".join(lines[::2]))
    drift = rerun(project_defs, instance, source, out)
    assert drift.severity in (C.SEVERITY_WARN, C.SEVERITY_ALERT)
    assert drift.stage(C.STAGE_SCORE).severity != C.SEVERITY_OK
    assert not drift.stage(C.STAGE_COLLECT).input_hash_match


def test_new_reason_code_warns(tmp_path, baseline, project_defs, instance):
    source, out = scenario(tmp_path, baseline)
    (source / "runs" / "odd.jsonl").write_bytes(b'{"kind": "run", "bad": "\xff"}\n')
    drift = rerun(project_defs, instance, source, out)
    assert f"new_reason_code:{C.R_INVALID_UTF8}" in drift.stage(C.STAGE_COLLECT).flags
    assert drift.stage(C.STAGE_COLLECT).severity == C.SEVERITY_WARN


def test_planted_nondeterminism_is_an_alert(
    tmp_path, baseline, project_defs, instance, monkeypatch
):
    source, out = scenario(tmp_path, baseline)
    import itertools

    import distill_assets.lib.datasets.sft as sft_lib

    counter = itertools.count()
    real = sft_lib.stable_id
    monkeypatch.setattr(sft_lib, "stable_id", lambda *a: real(*a, str(next(counter))))
    drift = rerun(project_defs, instance, source, out)
    sft = drift.stage(C.STAGE_EXPORT_SFT)
    assert sft.input_hash_match and not sft.output_hash_match
    assert sft.deterministic_violation and sft.severity == C.SEVERITY_ALERT
    assert "deterministic_violation" in sft.flags
    assert drift.severity == C.SEVERITY_ALERT
    assert not drift.stage(C.STAGE_COLLECT).deterministic_violation


def test_changed_config_is_a_changed_input_not_a_violation(
    tmp_path, baseline, project_defs, instance
):
    source, out = scenario(tmp_path, baseline)
    config = run_config_of({C.ASSET_PREFERENCE_PAIRS: {"min_margin": 0.6}})
    result = materialize_graph(project_defs, instance, source, out, run_config=config)
    assert result.success
    drift = load_drift(out, result.run_id).stage(C.STAGE_EXPORT_PREFERENCE)
    assert drift.input_hash_match is False and not drift.deterministic_violation
