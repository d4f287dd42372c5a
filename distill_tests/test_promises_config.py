"""Each setting of the README's Configuration table changes what a real run does, next to the
same run with defaults (the session's ``fixture_run``): export run config (``max_pairs_per_task``,
``rag_include_partial``), scoring run config (``conflict_policy``), DISTILL_RECORDED_AT,
DISTILL_PROGRESS_INTERVAL_S and the drift thresholds DISTILL_DRIFT_WARN_PCT / _ALERT_PCT /
_MIN_BASE, with ``distill drift --fail-on-alert``. (The webhook URL from the environment:
test_sensor.py.)"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import dagster as dg
import orjson
import pytest

from distill_assets.cli import main
from distill_assets.lib import constants as C
from distill_assets.lib.evidence.sources import record_sources, source_names
from distill_assets.lib.infra.runconfig import run_config_of
from distill_assets.lib.records.receipts import load_receipt
from distill_assets.lib.records.reports import load_drift
from distill_tests.conftest import FIXTURES, copy_fixtures, materialize_graph

PINNED = "2026-03-10T00:00:00Z"


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _scored(out: Path) -> dict[str, dict]:
    return {
        row["run_id"]: row
        for path in sorted((out / C.SCORED_DIR).rglob(C.SCORED_FILE))
        for row in _rows(path)
    }


def _receipt(out: Path, run_id: str, stage: str):
    return load_receipt(out / C.REPORTS_DIR / run_id / f"{stage}.json")


def _progress_lines(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        e.user_message
        for e in instance.all_logs(run_id)
        if e.user_message
        and e.user_message.startswith(f"{C.OP_EXPORTS}: ")
        and " runs (" in e.user_message
    ]


def _run(base: Path, project_defs, env: dict[str, str], run_config: dict):
    """One run of the whole graph over the fixtures with ``env`` and ``run_config``."""
    home = base / "home"
    home.mkdir()
    out = base / "out"
    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test(temp_dir=str(home)) as inst:
        for name, value in {C.ENV_RECORDED_AT: PINNED, **env}.items():
            mp.setenv(name, value)
        result = materialize_graph(project_defs, inst, FIXTURES, out, run_config=run_config)
        progress = _progress_lines(inst, result.run_id)
    assert result.success
    return result, out, progress


@pytest.fixture(scope="module")
def export_settings_run(tmp_path_factory, project_defs):
    """At most one pair per task, no partially accepted run behind a playbook, progress lines
    at every record."""
    config = run_config_of(
        {
            C.ASSET_PREFERENCE_PAIRS: {"max_pairs_per_task": 1},
            C.ASSET_RAG_PLAYBOOKS: {"rag_include_partial": False},
        }
    )
    return _run(
        tmp_path_factory.mktemp("export_settings"),
        project_defs,
        {C.ENV_PROGRESS_INTERVAL: "0"},
        config,
    )


@pytest.fixture(scope="module")
def scoring_clock_run(tmp_path_factory, project_defs):
    """Reviews win over outcomes, 'now' on the second fixture day, progress never due."""
    config = run_config_of({C.ASSET_SCORED_RUNS: {"conflict_policy": "review_wins"}})
    env = {C.ENV_RECORDED_AT: "2026-03-02T12:00:00Z", C.ENV_PROGRESS_INTERVAL: "3600"}
    return _run(tmp_path_factory.mktemp("scoring_clock"), project_defs, env, config)


def _pairs_by_task(out: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = defaultdict(list)
    for path in (C.PREFERENCE_PATH, C.PREFERENCE_HOLDOUT_PATH):
        for row in _rows(out / path):
            found[row["task_id"]].append(row)
    return found


def test_max_pairs_per_task_keeps_the_widest_margin(fixture_run, export_settings_run):
    _, default_out, _ = fixture_run
    _, out, _ = export_settings_run
    default, capped = _pairs_by_task(default_out), _pairs_by_task(out)
    assert max(len(pairs) for pairs in default.values()) > 1  # the cap has something to cut
    assert set(capped) == set(default)
    assert sum(map(len, capped.values())) < sum(map(len, default.values()))
    for task, pairs in default.items():
        (kept,) = capped[task]  # one pair per task, the widest margin of the task's candidates
        assert kept["margin"] >= max(p["margin"] for p in pairs)


def test_rag_include_partial_false_keeps_partial_runs_out_of_playbooks(
    fixture_run, export_settings_run
):
    _, default_out, _ = fixture_run
    _, out, _ = export_settings_run
    scored = _scored(default_out)

    def sources(root: Path) -> set[str]:
        return {
            run_id
            for path in (C.RAG_PATH, C.RAG_HOLDOUT_PATH)
            for row in _rows(root / path)
            for run_id in row["source_run_ids"]
        }

    partial = {r for r, row in scored.items() if row["quality_score"] == C.QUALITY_PARTIAL}
    assert sources(default_out) & partial  # by default they may back a playbook
    assert sources(out) and not sources(out) & partial
    assert {scored[r]["quality_score"] for r in sources(out)} == {C.QUALITY_ACCEPTED}


def test_progress_interval_decides_the_progress_lines(export_settings_run, scoring_clock_run):
    _, _, every_record = export_settings_run
    _, _, never_due = scoring_clock_run
    assert any(line.startswith(f"{C.OP_EXPORTS}: 22 of 22 runs (100%)") for line in every_record)
    assert never_due == []


def test_conflict_policy_settles_a_conflict(fixture_run, scoring_clock_run):
    """run-007: approved by its review, failed by its outcome."""
    _, default_out, _ = fixture_run
    _, out, _ = scoring_clock_run
    default, settled = _scored(default_out)["run-007"], _scored(out)["run-007"]
    assert default["quality_score"] == C.QUALITY_REVIEW
    assert C.R_CONFLICTING_EVIDENCE in default["reasons"]
    assert settled["quality_score"] == C.QUALITY_ACCEPTED
    assert C.R_OVERRULED in settled["reasons"]
    # nothing else of the first day conflicts (later days also see the earlier clock)
    changed = {
        run_id
        for run_id, row in _scored(out).items()
        if row["created_at"] < "2026-03-02"
        and row["quality_score"] != _scored(default_out)[run_id]["quality_score"]
    }
    assert changed == {"run-007"}


def test_recorded_at_pins_receipts_and_judges_future_timestamps(fixture_run, scoring_clock_run):
    default_result, default_out, _ = fixture_run
    result, out, _ = scoring_clock_run
    default = _receipt(default_out, default_result.run_id, C.STAGE_COLLECT)
    pinned = _receipt(out, result.run_id, C.STAGE_COLLECT)
    assert default.timestamp == PINNED and pinned.timestamp == "2026-03-02T12:00:00Z"
    assert C.R_FUTURE_TIMESTAMP not in default.stats.reasons
    assert pinned.stats.reasons[C.R_FUTURE_TIMESTAMP] > 0
    # what is judged in the future is what was created after the pinned moment (+ horizon)
    quarantined = [
        row
        for path in sorted((out / C.EVIDENCE_DIR).rglob("quarantine.jsonl"))
        for row in _rows(path)
        if C.R_FUTURE_TIMESTAMP in row["reasons"]
    ]
    assert len(quarantined) == pinned.stats.reasons[C.R_FUTURE_TIMESTAMP]


# --- drift thresholds ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def drift_baseline(tmp_path_factory, project_defs):
    base = tmp_path_factory.mktemp("drift_settings")
    source = copy_fixtures(base / "src")
    home = base / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test(temp_dir=str(home)) as inst:
        mp.setenv(C.ENV_RECORDED_AT, PINNED)
        assert materialize_graph(project_defs, inst, source, base / "out").success
    return source, base / "out"


@pytest.mark.parametrize(
    "case",
    [
        ({C.ENV_DRIFT_WARN: "30"}, C.SEVERITY_OK),  # +24% is under a 30% warning
        ({C.ENV_DRIFT_ALERT: "22"}, C.SEVERITY_ALERT),  # and over a 22% alert
        ({C.ENV_DRIFT_MIN_BASE: "100"}, C.SEVERITY_OK),  # 66 records: too few to judge
    ],
    ids=["warn_pct", "alert_pct", "min_base"],
)
def test_drift_thresholds_from_the_environment(
    tmp_path, drift_baseline, materialize, monkeypatch, case
):
    """16 runs more: collect's records in grow 66 -> 82 (+24%), which warns with the default
    thresholds (test_determinism_drift.py); each variable (``case``: the variables set and
    the severity they give) moves the verdict."""
    env, severity = case
    source, out = drift_baseline
    shutil.copytree(source, tmp_path / "src")
    shutil.copytree(out, tmp_path / "out", symlinks=True)
    # the copies stand for the baseline's source and output (lib/evidence/sources.py)
    record_sources(tmp_path / "out", source_names(tmp_path / "src"))
    # 16 more runs, copies of one under new ids: more records, the same mix of reasons (garbage
    # lines would move the mix of reason codes, which warns on its own: lib/records/drift.py)
    first = orjson.loads((source / "runs" / "2026-03-01.jsonl").read_bytes().splitlines()[0])
    extra = [orjson.dumps({**first, "run_id": f"{first['run_id']}-more-{n}"}) for n in range(16)]
    (tmp_path / "src" / "runs" / "more.jsonl").write_bytes(b"\n".join(extra) + b"\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = materialize(tmp_path / "src", tmp_path / "out")
    assert result.success
    drift = load_drift(tmp_path / "out", result.run_id)
    collect = drift.stage(C.STAGE_COLLECT)
    assert collect.severity == severity, collect.notes
    assert collect.pct_change["records_in"] == pytest.approx(24.242, abs=0.01)
    recorded = {
        C.ENV_DRIFT_WARN: "warn_pct",
        C.ENV_DRIFT_ALERT: "alert_pct",
        C.ENV_DRIFT_MIN_BASE: "min_base",
    }
    for name, value in env.items():
        assert drift.thresholds[recorded[name]] == float(value)


@pytest.fixture(scope="module")
def alert_run(tmp_path_factory, drift_baseline, project_defs):
    """After the baseline, a run whose collect sees 61% more records: an alert."""
    source, baseline_out = drift_baseline
    base = tmp_path_factory.mktemp("drift_alert")
    shutil.copytree(source, base / "src")
    shutil.copytree(baseline_out, base / "out", symlinks=True)
    record_sources(base / "out", source_names(base / "src"))
    (base / "src" / "runs" / "garbage.jsonl").write_text("{not json\n" * 40)
    home = base / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test(temp_dir=str(home)) as inst:
        mp.setenv(C.ENV_RECORDED_AT, PINNED)
        result = materialize_graph(project_defs, inst, base / "src", base / "out")
    assert result.success
    assert load_drift(base / "out", result.run_id).severity == C.SEVERITY_ALERT
    return base / "out", result.run_id


def test_drift_fail_on_alert_exits_3_on_an_alert_only(alert_run, capsys):
    """``distill drift RUN_ID --fail-on-alert`` (docs/operations.md)."""
    out, alert = alert_run
    runs = [
        orjson.loads(line)["run_id"] for line in (out / C.RUN_INDEX_PATH).read_bytes().splitlines()
    ]
    ok = runs[0]  # the baseline: a report of severity ok
    assert load_drift(out, ok).severity == C.SEVERITY_OK
    assert main(["drift", alert, "--output", str(out), "--fail-on-alert"]) == 3
    assert "drift ALERT" in capsys.readouterr().out
    assert main(["drift", alert, "--output", str(out)]) == 0  # without the flag: a report
    assert main(["drift", ok, "--output", str(out), "--fail-on-alert"]) == 0
    capsys.readouterr()
    assert main(["drift", alert, "--output", str(out), "--json", "--fail-on-alert"]) == 3
    assert orjson.loads(capsys.readouterr().out)["severity"] == C.SEVERITY_ALERT
