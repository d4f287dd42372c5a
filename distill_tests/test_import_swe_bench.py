"""SWE-bench importer on the hand-made folders in fixtures/swe_bench/experiments: agentx uses the
newer results layout, agenty the older one; malformed variants are copies broken in tmp_path."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.importers import ImportBatch, make_spec, run_import
from distill_assets.lib.evidence.importers.swe_bench import (
    NEW_COUNTS,
    NEW_LAYOUT,
    OLD_LAYOUT,
    issue_from_history,
    placeholder_instruction,
)
from distill_assets.lib.infra.io import sha256_file

EXPERIMENTS = Path(__file__).resolve().parents[1] / "fixtures" / "swe_bench" / "experiments"
DAY = "2024-07-01T00:00:00Z"


def _iid(n: int) -> str:
    return f"acme__widgets-{n}"


# every instance of the fixtures: (results key that decides it, status, outcome or None)
EXPECTED: dict[tuple[str, int], tuple[str | None, str, str | None]] = {
    ("agentx", 101): ("resolved_ids", "resolved", "success"),
    ("agentx", 102): ("unresolved_ids", "unresolved", "failure"),
    ("agentx", 103): ("empty_patch_ids", "null_patch", "failure"),
    ("agentx", 104): ("empty_patch_ids", "empty_patch", "failure"),
    ("agentx", 105): ("error_ids", "error", "error"),
    ("agentx", 106): ("incomplete_ids", "incomplete", "error"),
    ("agentx", 107): ("completed_ids", "no_verdict", None),
    ("agentx", 108): (None, "absent_from_results", None),
    ("agentx", 109): ("resolved_ids", "null_patch", "failure"),
    ("agentx", 110): ("resolved_ids", "conflicting_results", "error"),
    ("agentx", 111): ("submitted_ids", "no_verdict", None),
    ("agentx", 120): ("resolved_ids", "resolved", "success"),
    ("agenty", 101): ("applied", "unresolved", "failure"),
    ("agenty", 102): ("resolved", "resolved", "success"),
    ("agenty", 103): ("no_generation", "empty_patch", "failure"),
    ("agenty", 104): ("resolved", "resolved", "success"),
    ("agenty", 105): ("no_apply", "patch_not_applied", "failure"),
    ("agenty", 106): ("install_fail", "error", "error"),
    ("agenty", 107): ("reset_failed", "error", "error"),
    ("agenty", 108): ("test_errored", "error", "error"),
    ("agenty", 109): ("test_timeout", "incomplete", "error"),
    ("agenty", 110): ("no_logs", "incomplete", "error"),
    ("agenty", 111): ("with_logs", "unresolved", "failure"),
    ("agenty", 112): ("generated", "incomplete", "error"),
    ("agenty", 113): (None, "absent_from_results", None),
    ("agenty", 114): ("no_generation", "null_patch", "failure"),
}


@pytest.fixture(scope="module")
def batch() -> ImportBatch:
    return run_import(make_spec(C.IMPORT_SWE_BENCH, EXPERIMENTS, created_at=DAY))


def _by_run(batch: ImportBatch) -> dict[str, dict[str, dict]]:
    found: dict[str, dict[str, dict]] = {}
    for item in batch.objects:
        found.setdefault(item.obj["run_id"], {})[item.obj["kind"]] = item.obj
    return found


def test_the_fixtures_import_cleanly(batch: ImportBatch) -> None:
    assert batch.failures == []
    assert batch.warnings == []  # with the created_at option the logs are not needed
    assert len(_by_run(batch)) == len(EXPECTED)


def test_the_fixtures_cover_every_results_key_of_both_layouts() -> None:
    used = {key for key, _status, _outcome in EXPECTED.values()}
    results_x = orjson.loads((EXPERIMENTS / "agentx/results/results.json").read_bytes())
    results_y = orjson.loads((EXPERIMENTS / "agenty/results/results.json").read_bytes())
    newer = {key for key, _, _ in NEW_LAYOUT}
    older = {key for key, _, _ in OLD_LAYOUT}
    assert newer - {"resolved"} <= set(results_x)
    assert older == set(results_y)
    assert set(NEW_COUNTS) - {"incomplete_instances"} <= set(results_x)
    # every id list decides at least one instance (the newer layout's "resolved" spelling is
    # tested below)
    assert (newer | older) - used == set()


def test_the_newer_layout_may_spell_resolved_ids_resolved(tmp_path: Path, batch) -> None:
    root = _copy(tmp_path)
    _edit_json(root / RESULTS, lambda r: r.update(resolved=r.pop("resolved_ids")))
    renamed = run_import(make_spec(C.IMPORT_SWE_BENCH, root, created_at=DAY))
    assert renamed.failures == []

    def verdicts(b: ImportBatch) -> dict:
        return {
            item.obj["run_id"]: item.obj["meta"]["status"]
            for item in b.objects
            if item.obj["kind"] == C.KIND_OUTCOME
        }

    assert verdicts(renamed) == verdicts(batch)


def test_unknown_results_keys_are_ignored_with_a_warning(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _edit_json(root / RESULTS, lambda r: r.update(flaky_ids=["acme__widgets-101"]))
    batch = run_import(make_spec(C.IMPORT_SWE_BENCH, root, created_at=DAY))
    assert batch.failures == []
    assert batch.warnings == [
        "swe-bench:agentx/results/results.json: unknown key 'flaky_ids' ignored"
    ]


@pytest.mark.parametrize(("system", "number"), sorted(EXPECTED))
def test_each_instance_gets_the_verdict_its_results_key_means(
    batch: ImportBatch, system: str, number: int
) -> None:
    key, status, outcome = EXPECTED[(system, number)]
    objs = _by_run(batch)[f"swe-bench/{system}/{_iid(number)}"]
    run = objs["run"]
    assert run["task_id"] == _iid(number) and run["agent"] == system
    assert run["created_at"] == DAY
    if outcome is None:
        assert "outcome" not in objs
        assert run["meta"]["results_status"] == status
        return
    made = objs["outcome"]
    assert made["outcome"] == outcome
    assert made["meta"]["status"] == status
    assert made["meta"]["results_key"] == key
    assert made.get("reward") == {"success": 1.0, "failure": 0.0}.get(outcome)
    assert ("incomplete" in (made["meta"].get("signals") or {})) == (status == "incomplete")


@pytest.mark.parametrize(
    ("system", "number", "state"),
    [("agentx", 103, "null"), ("agentx", 104, "empty"), ("agentx", 109, "null"),
     ("agenty", 103, "empty"), ("agenty", 114, "null")],
)  # fmt: skip
def test_null_and_empty_patches_are_failures_with_an_empty_response(
    batch: ImportBatch, system: str, number: int, state: str
) -> None:
    objs = _by_run(batch)[f"swe-bench/{system}/{_iid(number)}"]
    assert objs["run"]["response"] == ""
    assert objs["run"]["meta"]["patch"] == state
    assert objs["outcome"]["outcome"] == "failure"
    assert objs["outcome"]["meta"]["status"] == f"{state}_patch"


def test_the_issue_comes_from_the_turn_after_the_demonstration(batch: ImportBatch) -> None:
    runs = _by_run(batch)
    with_demo = runs["swe-bench/agentx/acme__widgets-101"]["run"]
    assert with_demo["instruction"].startswith("Widget.resize() ignores the minimum width")
    assert "TimeDelta" not in with_demo["instruction"]
    assert "INSTRUCTIONS" not in with_demo["instruction"]
    assert with_demo["meta"]["demonstration_skipped"] is True
    assert with_demo["meta"]["instruction_source"] == "trajectory"
    assert with_demo["meta"]["trajectory_submission_matches"] is True
    without_demo = runs["swe-bench/agentx/acme__widgets-102"]["run"]
    assert without_demo["instruction"].startswith("Widget.resize() accepts a negative height")
    assert without_demo["meta"]["demonstration_skipped"] is False
    assert without_demo["meta"]["trajectory_submission_matches"] is False
    pr_description = runs["swe-bench/agenty/acme__widgets-104"]["run"]
    assert pr_description["instruction"].startswith("Widget.resize() crashes on None")
    assert "uploaded" not in pr_description["instruction"]
    for run in (with_demo, without_demo, pr_description):
        assert "sft_eligible" not in run["meta"]


def test_without_a_trajectory_the_instruction_is_a_placeholder_and_not_sft_eligible(
    batch: ImportBatch,
) -> None:
    run = _by_run(batch)["swe-bench/agentx/acme__widgets-120"]["run"]
    assert run["instruction"] == placeholder_instruction(_iid(120))
    assert run["meta"]["instruction_source"] == "placeholder"
    assert run["meta"]["sft_eligible"] is False
    assert run["response"].startswith("diff --git")


def test_provenance_points_at_the_prediction_and_the_results_entry(batch: ImportBatch) -> None:
    preds_sha = sha256_file(EXPERIMENTS / "agentx/all_preds.jsonl")
    results_sha = sha256_file(EXPERIMENTS / "agentx/results/results.json")
    origins = {(i.obj["run_id"], i.obj["kind"]): i.origin for i in batch.objects}
    run = origins[("swe-bench/agentx/acme__widgets-102", "run")]
    assert (run.path, run.record, run.line, run.sha256) == (
        "swe-bench:agentx/all_preds.jsonl",
        2,
        2,
        preds_sha,
    )
    outcome = origins[("swe-bench/agentx/acme__widgets-102", "outcome")]
    assert (outcome.path, outcome.record, outcome.sha256) == (
        "swe-bench:agentx/results/results.json",
        1,  # first id of unresolved_ids
        results_sha,
    )
    # a null patch is decided by the prediction itself
    null = origins[("swe-bench/agentx/acme__widgets-109", "outcome")]
    assert (null.path, null.record) == ("swe-bench:agentx/all_preds.jsonl", 9)
    paths = {f.path for f in batch.files}
    assert "swe-bench:agentx/trajs/acme__widgets-101.traj" in paths
    assert "swe-bench:agenty/results/results.json" in paths


def test_created_at_comes_from_the_log_else_the_predictions_mtime() -> None:
    batch = run_import(make_spec(C.IMPORT_SWE_BENCH, EXPERIMENTS / "agentx"))
    runs = _by_run(batch)
    logged = runs["swe-bench/agentx/acme__widgets-101"]["run"]
    assert logged["created_at"] == "2024-06-25T20:31:48.123000Z"
    assert logged["meta"]["created_at_source"] == "log"
    unlogged = runs["swe-bench/agentx/acme__widgets-102"]["run"]
    assert unlogged["meta"]["created_at_source"] == "file_mtime"
    assert any("acme__widgets-102/run_instance.log" in w for w in batch.warnings)
    # a single system folder is accepted as ROOT and named after itself
    assert logged["run_id"] == "swe-bench/agentx/acme__widgets-101"


@pytest.mark.parametrize(
    ("history", "issue", "skipped"),
    [
        ([{"role": "user", "content": "ISSUE:\nFix A\n\nINSTRUCTIONS:\ngo"}], "Fix A", False),
        (
            [
                {"role": "user", "is_demo": True, "content": "ISSUE:\nDemo\n\nINSTRUCTIONS:\n"},
                {"role": "user", "content": "ISSUE:\nFix B\n\nINSTRUCTIONS:\ngo"},
            ],
            "Fix B",
            True,
        ),
        (  # an older demonstration turn without the is_demo flag
            [
                {"role": "user", "content": "Here is a demonstration of how to do it.\n"
                 "--- DEMONSTRATION ---\nISSUE:\nDemo\n\nINSTRUCTIONS:\n"},
                {"role": "user", "content": "Please fix C: it crashes."},
            ],
            "Please fix C: it crashes.",
            True,
        ),
        ([{"role": "assistant", "content": "ISSUE:\nnot a task"}], None, False),
        ([], None, False),
    ],
)  # fmt: skip
def test_issue_from_history(history: list, issue: str | None, skipped: bool) -> None:
    assert issue_from_history(history) == (issue, skipped)


# --- malformed inputs -------------------------------------------------------------------------


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "experiments"
    shutil.copytree(EXPERIMENTS, root, symlinks=True)
    return root


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    value = orjson.loads(path.read_bytes())
    change(value)
    path.write_bytes(orjson.dumps(value))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _trailing_comma(path: Path) -> None:
    path.write_bytes(path.read_bytes().rstrip().rstrip(b"}") + b',\n"x": 1,}')


def _preds_line(root: Path, change: Callable[[dict], object]) -> None:
    path = root / "agentx/all_preds.jsonl"
    lines = path.read_bytes().splitlines()
    obj = orjson.loads(lines[2])
    lines[2] = orjson.dumps(change(obj))
    path.write_bytes(b"\n".join(lines) + b"\n")


def _set(key, value):
    return lambda obj: {**obj, key: value}


def _drop(key):
    return lambda obj: {k: v for k, v in obj.items() if k != key}


RESULTS = "agentx/results/results.json"
PREDS = "agentx/all_preds.jsonl"
MALFORMED: dict[str, tuple[Callable[[Path], None], str, str, str]] = {
    "results truncated": (
        lambda root: _truncate(root / RESULTS), RESULTS, C.R_IMPORT_INVALID_JSON,
        "unexpected end of data"),
    "results trailing comma": (
        lambda root: _trailing_comma(root / RESULTS), RESULTS, C.R_IMPORT_INVALID_JSON,
        "trailing comma is not allowed"),
    "results not an object": (
        lambda root: (root / RESULTS).write_bytes(b"[]"), RESULTS, C.R_IMPORT_MALFORMED,
        "expected a JSON object"),
    "results missing resolved": (
        lambda root: _edit_json(root / RESULTS, lambda r: r.pop("resolved_ids")),
        RESULTS, C.R_IMPORT_MALFORMED, "missing key resolved"),
    "results missing every key": (
        lambda root: (root / RESULTS).write_bytes(b'{"total_instances": 3}'),
        RESULTS, C.R_IMPORT_MALFORMED, "missing keys"),
    "results mix layouts": (
        lambda root: _edit_json(root / RESULTS, lambda r: r.update(applied=[])),
        RESULTS, C.R_IMPORT_MALFORMED, "mixes keys"),
    "results count disagrees": (
        lambda root: _edit_json(root / RESULTS, lambda r: r.update(resolved_instances=9)),
        RESULTS, C.R_IMPORT_MALFORMED, "resolved_instances is 9 but resolved_ids lists 4"),
    "results list not a list": (
        lambda root: _edit_json(root / RESULTS, lambda r: r.update(error_ids="acme__widgets-105")),
        RESULTS, C.R_IMPORT_MALFORMED, "error_ids must be a list of instance ids"),
    "no results file": (
        lambda root: (root / RESULTS).unlink(), RESULTS, C.R_IMPORT_MISSING_FILE, "not found"),
    "no predictions file": (
        lambda root: (root / PREDS).unlink(), PREDS, C.R_IMPORT_MISSING_FILE, "not found"),
    "predictions truncated": (
        lambda root: _truncate(root / PREDS), PREDS, C.R_IMPORT_INVALID_JSON,
        "not valid JSON: unexpected end of data"),
    "prediction trailing comma": (
        lambda root: (root / PREDS).write_bytes(
            (root / PREDS).read_bytes().replace(b'"}\n', b'",}\n', 1)),
        PREDS, C.R_IMPORT_INVALID_JSON, "line 1: not valid JSON: trailing comma"),
    "prediction missing model_patch": (
        lambda root: _preds_line(root, _drop("model_patch")), PREDS, C.R_IMPORT_MALFORMED,
        "line 3: missing key(s) model_patch"),
    "prediction missing instance_id": (
        lambda root: _preds_line(root, _drop("instance_id")), PREDS, C.R_IMPORT_MALFORMED,
        "line 3: missing key(s) instance_id"),
    "prediction patch not text": (
        lambda root: _preds_line(root, _set("model_patch", 7)), PREDS, C.R_IMPORT_MALFORMED,
        "line 3: model_patch must be text or null"),
    "prediction id escapes": (
        lambda root: _preds_line(root, _set("instance_id", "../../etc")), PREDS,
        C.R_IMPORT_MALFORMED, "line 3: instance_id must be a name"),
    "prediction repeated": (
        lambda root: _preds_line(root, _set("instance_id", _iid(101))), PREDS,
        C.R_IMPORT_MALFORMED, "line 3: instance acme__widgets-101 was already predicted on line 1"),
    "no predictions": (
        lambda root: (root / PREDS).write_bytes(b"\n"), PREDS, C.R_IMPORT_MALFORMED,
        "holds no predictions"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_system_folder_is_skipped_whole_with_a_message(
    tmp_path: Path, case: str
) -> None:
    breaks, relpath, reason, phrase = MALFORMED[case]
    root = _copy(tmp_path)
    breaks(root)
    batch = run_import(make_spec(C.IMPORT_SWE_BENCH, root, created_at=DAY))
    (failure,) = batch.failures
    assert failure.disposition == C.DISPOSITION_SKIPPED
    assert failure.reason == reason
    assert failure.path == f"swe-bench:{relpath}"
    assert failure.message.startswith(f"swe-bench:{relpath}: ")
    assert phrase in failure.message
    # nothing of agentx is imported; agenty is, whole
    systems = {item.obj["run_id"].split("/")[1] for item in batch.objects}
    assert systems == {"agenty"}
    assert len(_by_run(batch)) == 14


def test_a_broken_trajectory_is_skipped_and_the_run_kept_with_a_placeholder(
    tmp_path: Path,
) -> None:
    root = _copy(tmp_path)
    _truncate(root / "agentx/trajs/acme__widgets-101.traj")
    (root / "agentx/trajs/acme__widgets-102.traj").write_bytes(b'{"info": {}}')
    batch = run_import(make_spec(C.IMPORT_SWE_BENCH, root, created_at=DAY))
    failures = {f.path: f for f in batch.failures}
    assert set(failures) == {
        "swe-bench:agentx/trajs/acme__widgets-101.traj",
        "swe-bench:agentx/trajs/acme__widgets-102.traj",
    }
    assert failures["swe-bench:agentx/trajs/acme__widgets-101.traj"].reason == (
        C.R_IMPORT_INVALID_JSON
    )
    assert (
        "missing key history" in failures["swe-bench:agentx/trajs/acme__widgets-102.traj"].message
    )
    runs = _by_run(batch)
    for number in (101, 102):
        run = runs[f"swe-bench/agentx/{_iid(number)}"]["run"]
        assert run["meta"]["instruction_source"] == "placeholder"
        assert run["meta"]["sft_eligible"] is False
    assert runs["swe-bench/agentx/acme__widgets-101"]["outcome"]["outcome"] == "success"


def test_links_out_of_the_root_are_not_followed(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    outside = tmp_path / "outside"
    shutil.copytree(EXPERIMENTS / "agenty", outside)
    (root / "agentz").symlink_to(outside, target_is_directory=True)
    traj = root / "agentx/trajs/acme__widgets-120.traj"
    traj.symlink_to(outside / "trajs/acme__widgets-102.traj")
    batch = run_import(make_spec(C.IMPORT_SWE_BENCH, root, created_at=DAY))
    reasons = {f.path: f.reason for f in batch.failures}
    assert reasons == {
        "swe-bench:agentz": C.R_OUTSIDE_SOURCE_DIR,
        "swe-bench:agentx/trajs/acme__widgets-120.traj": C.R_OUTSIDE_SOURCE_DIR,
    }
    runs = _by_run(batch)
    assert not any(run_id.startswith("swe-bench/agentz/") for run_id in runs)
    assert runs["swe-bench/agentx/acme__widgets-120"]["run"]["meta"]["sft_eligible"] is False


def test_a_root_without_system_folders_is_reported(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    batch = run_import(make_spec(C.IMPORT_SWE_BENCH, tmp_path / "empty"))
    (failure,) = batch.failures
    assert failure.reason == C.R_IMPORT_MISSING_FILE and "no system folder" in failure.message
