"""A bad setting fails the run before anything is written, with one message naming the setting
and its value."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.collect import list_source_files
from distill_assets.lib.infra.runconfig import run_config_of
from distill_tests.conftest import FIXTURES, copy_fixtures, materialize_graph

WRITTEN = (C.EVIDENCE_DIR, C.SCORED_DIR, C.EXPORTS_DIR, C.VERSIONS_DIR, C.REPORTS_DIR)


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "the run should have failed"
    return failures[0].step_failure_data.error.to_string()


def nothing_written(out: Path) -> bool:
    return not any((out / top).exists() for top in WRITTEN)


def test_missing_source_directory(project_defs, instance, tmp_path):
    out = tmp_path / "out"
    result = materialize_graph(project_defs, instance, tmp_path / "nope", out)
    assert not result.success
    message = failure_message(result)
    assert f"invalid setting source_dir='{tmp_path / 'nope'}'" in message
    assert "does not exist" in message
    assert nothing_written(out)


def test_source_that_is_not_a_directory(project_defs, instance, tmp_path):
    source = tmp_path / "evidence.jsonl"
    source.write_text("{}\n")
    result = materialize_graph(project_defs, instance, source, tmp_path / "out")
    assert f"invalid setting source_dir='{source}'" in failure_message(result)
    assert "not a directory" in failure_message(result)
    assert nothing_written(tmp_path / "out")


def test_output_directory_that_cannot_be_created(project_defs, instance, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    result = materialize_graph(project_defs, instance, FIXTURES, blocker / "out")
    message = failure_message(result)
    assert f"invalid setting output_dir='{blocker / 'out'}'" in message
    assert "cannot create it" in message


def test_unknown_config_key_is_refused_before_the_run(project_defs, instance, tmp_path):
    config = {"ops": {C.ASSET_SCORED_RUNS: {"config": {"accept_min_scor": 0.5}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="accept_min_scor"):
        materialize_graph(project_defs, instance, FIXTURES, tmp_path / "out", run_config=config)
    assert nothing_written(tmp_path / "out")


@pytest.mark.parametrize(
    ("asset", "config", "named"),
    [
        (C.ASSET_PREFERENCE_PAIRS, {"min_margin": 5.0}, "min_margin=5.0"),
        (C.ASSET_SFT_DATASET, {"sft_format": "alpaca"}, "sft_format='alpaca'"),
        (C.ASSET_KTO_DATASET, {"preference_format": "pairs"}, "preference_format='pairs'"),
        (C.ASSET_RAG_PLAYBOOKS, {"license": "MIT License"}, "license='MIT License'"),
        (C.ASSET_SCORED_RUNS, {"accept_min_score": -1.0}, "accept_min_score=-1.0"),
        (C.ASSET_SCORED_RUNS, {"conflict_policy": "coin_flip"}, "conflict_policy='coin_flip'"),
        (C.ASSET_EVIDENCE_INDEX, {"future_horizon_hours": 72.0}, "future_horizon_hours=72.0"),
    ],
)
def test_invalid_threshold_fails_before_collect_writes(materialize, tmp_path, asset, config, named):
    out = tmp_path / "out"
    run_config = run_config_of({asset: config})
    result = materialize(FIXTURES, out, run_config=run_config)
    assert not result.success
    assert named in failure_message(result)
    assert not (out / C.EVIDENCE_DIR).exists()


def test_invalid_drift_thresholds_from_the_environment(
    project_defs, instance, tmp_path, monkeypatch
):
    monkeypatch.setenv(C.ENV_DRIFT_WARN, "60")
    monkeypatch.setenv(C.ENV_DRIFT_ALERT, "50")
    result = materialize_graph(project_defs, instance, FIXTURES, tmp_path / "out")
    assert "warn_pct=60.0, alert_pct=50.0" in failure_message(result)
    assert not (tmp_path / "out" / C.EVIDENCE_DIR).exists()


def test_symlink_out_of_the_source_tree_is_reported(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text('{"kind": "run"}\n')
    source = copy_fixtures(tmp_path / "src")
    (source / "link.jsonl").symlink_to(outside / "secret.jsonl")
    (source / "linkdir").symlink_to(outside)
    found = {s.relpath: s.problem for s in list_source_files(source)}
    assert found["link.jsonl"] == C.R_OUTSIDE_SOURCE_DIR
    assert found["linkdir"] == C.R_OUTSIDE_SOURCE_DIR
    assert all(problem is None for name, problem in found.items() if "link" not in name)
