"""Importers on folders shaped like a real multi-system experiment (issue 14): several SWE-agent
systems over the same instances, each with a SWE-bench harness report (schema_version 2) that
lists instances it was not given under ``incomplete_ids`` and carries the docker clean-up keys.
Whatever is there is imported; what is not is left out item by item with a reason, once."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from distill_assets import cli
from distill_assets.lib import constants as C
from distill_assets.lib.evidence.collect import CollectOptions, collect
from distill_assets.lib.evidence.format import ParseSettings
from distill_assets.lib.evidence.importers import left_out_summary, make_spec, run_import
from distill_assets.lib.infra import layout
from distill_assets.lib.infra.io import iter_jsonl

DAY = "2025-02-03T00:00:00Z"
# Java instances as SWE-bench-java names them; the dataset has 9, the systems predicted some
DATASET = [
    f"{repo}-{n}" for repo in ("apache__dubbo", "fasterxml__jackson-core") for n in (1, 2, 3)
]
DATASET += ["google__gson-7", "google__gson-8", "google__gson-9"]
PATCH = "diff --git a/A.java b/A.java\n--- a/A.java\n+++ b/A.java\n@@ -1 +1 @@\n-a\n+b\n"


def _report(predicted: list[str], resolved: list[str], extra: dict | None = None) -> dict:
    """A harness report as swebench.harness.reporting writes it (schema_version 2): every
    dataset instance without a prediction is listed under incomplete_ids."""
    unresolved = [i for i in predicted if i not in resolved]
    incomplete = [i for i in DATASET if i not in predicted]
    report = {
        "total_instances": len(DATASET),
        "submitted_instances": len(predicted),
        "completed_instances": len(predicted),
        "resolved_instances": len(resolved),
        "unresolved_instances": len(unresolved),
        "empty_patch_instances": 0,
        "error_instances": 0,
        "unstopped_instances": 0,
        "completed_ids": sorted(predicted),
        "incomplete_ids": sorted(incomplete),
        "empty_patch_ids": [],
        "submitted_ids": sorted(predicted),
        "resolved_ids": sorted(resolved),
        "unresolved_ids": sorted(unresolved),
        "error_ids": [],
        "unstopped_containers": [],
        "unremoved_images": ["sweb.eval.x86_64.apache__dubbo-1:latest"],
        "schema_version": 2,
    }
    report.update(extra or {})
    return report


def _system(root: Path, name: str, predicted: list[str], resolved: list[str], **extra) -> None:
    folder = root / name
    (folder / "results").mkdir(parents=True)
    lines = [
        orjson.dumps({"instance_id": i, "model_name_or_path": name, "model_patch": PATCH})
        for i in predicted
    ]
    (folder / "all_preds.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    report = _report(predicted, resolved, extra or None)
    (folder / "results" / "results.json").write_bytes(orjson.dumps(report))


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    """Three systems; each report lists the dataset instances the system did not predict."""
    root = tmp_path / "java-experiment"
    _system(root, "sweagent-gpt4o", DATASET[:7], DATASET[:2])
    _system(root, "sweagent-claude", DATASET[:8], DATASET[:4])
    _system(root, "sweagent-llama", DATASET[1:6], [])
    return root


def test_ids_without_a_prediction_are_quarantined_one_by_one_and_every_system_imports(
    experiment: Path,
) -> None:
    batch = run_import(make_spec(C.IMPORT_SWE_BENCH, experiment, created_at=DAY))
    runs = [item.obj for item in batch.objects if item.obj["kind"] == C.KIND_RUN]
    per_system: dict[str, int] = {}
    for run in runs:
        per_system[run["agent"]] = per_system.get(run["agent"], 0) + 1
    assert per_system == {"sweagent-gpt4o": 7, "sweagent-claude": 8, "sweagent-llama": 5}
    assert all(f.disposition == C.DISPOSITION_QUARANTINED for f in batch.failures)
    assert {f.reason for f in batch.failures} == {C.R_IMPORT_ORPHAN_RESULT}
    orphans = {(f.path.split(":")[1].split("/")[0], f.message) for f in batch.failures}
    # 2 + 1 + 4 dataset instances each system was not given
    assert len(batch.failures) == 7
    assert (
        "sweagent-claude",
        "swe-bench:sweagent-claude/results/results.json: instance google__gson-9 is listed "
        "under incomplete_ids but has no prediction in "
        "swe-bench:sweagent-claude/all_preds.jsonl",
    ) in orphans
    # the record number points into the list that named the id
    llama = sorted((f.record, f.message.split()[2]) for f in batch.failures if "llama" in f.path)
    assert llama == [(1, "apache__dubbo-1"), (2, "google__gson-7"), (3, "google__gson-8"),
                     (4, "google__gson-9")]  # fmt: skip
    # the harness report's own keys are known: no warning at all
    assert batch.warnings == []
    # the orphans do not get an outcome, and predicted ones get their verdict
    outcomes = {
        item.obj["run_id"]: item.obj["outcome"]
        for item in batch.objects
        if item.obj["kind"] == C.KIND_OUTCOME
    }
    assert outcomes["swe-bench/sweagent-claude/fasterxml__jackson-core-1"] == "success"
    assert outcomes["swe-bench/sweagent-llama/apache__dubbo-2"] == "failure"
    assert not any(run_id.endswith("google__gson-9") for run_id in outcomes)


def test_a_truly_unknown_key_warns_once_however_many_systems_carry_it(tmp_path: Path) -> None:
    root = tmp_path / "exp"
    for name in ("a1", "a2", "a3"):
        _system(root, name, DATASET[:3], DATASET[:1], flaky_ids=[], llm_usage={"tokens": 3})
    batch = run_import(make_spec(C.IMPORT_SWE_BENCH, root, created_at=DAY))
    assert batch.warnings == [
        "swe-bench:a1/results/results.json: unknown key 'flaky_ids' ignored "
        "(also in 2 other results file(s))",
        "swe-bench:a1/results/results.json: unknown key 'llm_usage' ignored "
        "(also in 2 other results file(s))",
    ]


def test_newer_harness_bookkeeping_keys_are_known_by_their_shape(tmp_path: Path) -> None:
    root = tmp_path / "exp"
    extra = {"unremoved_volumes": [], "unstopped_networks": [], "skipped_instances": 0}
    _system(root, "a1", DATASET[:3], DATASET[:1], **extra)
    batch = run_import(make_spec(C.IMPORT_SWE_BENCH, root, created_at=DAY))
    assert batch.warnings == []
    assert {f.reason for f in batch.failures} == {C.R_IMPORT_ORPHAN_RESULT}


def test_collect_quarantines_each_orphan_with_its_file_and_id(
    experiment: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    spec = make_spec(C.IMPORT_SWE_BENCH, experiment, created_at=DAY)
    result = collect([], out, None, ParseSettings(), CollectOptions(imported=[run_import(spec)]))
    assert result.errors == []
    rows = list(iter_jsonl(out / layout.evidence_quarantine(None)))
    assert len(rows) == 7
    assert all(row["reasons"] == [C.R_IMPORT_ORPHAN_RESULT] for row in rows)
    assert all(row["disposition"] == C.DISPOSITION_QUARANTINED for row in rows)
    assert {row["source_path"] for row in rows} == {
        f"swe-bench:{name}/results/results.json"
        for name in ("sweagent-gpt4o", "sweagent-claude", "sweagent-llama")
    }
    tally = result.tally
    assert tally.records_in == tally.records_out + tally.quarantined + tally.skipped
    assert tally.reasons[C.R_IMPORT_ORPHAN_RESULT] == 7
    assert tally.records_out == 20 + 20  # a run and an outcome per prediction


def test_the_command_exits_0_with_one_line_saying_what_was_left_out(
    experiment: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "evidence"
    argv = ["import", "swe-bench", str(experiment), "--out", str(out), "--created-at", DAY]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "20 runs, 20 outcomes" in captured.out
    left = [line for line in captured.err.splitlines() if "left out" in line]
    assert left == ["distill import: left out 7 record(s) quarantined (import_orphan_result 7)"]
    assert "warning" not in captured.err
    assert len(list(iter_jsonl(out / "swe-bench.jsonl"))) == 40
    # --strict makes anything left out an error, the file is still written
    assert cli.main([*argv, "--strict"]) == 1


def test_the_command_fails_only_when_nothing_could_be_imported(tmp_path: Path, capsys) -> None:
    root = tmp_path / "exp"
    _system(root, "a1", DATASET[:3], DATASET[:1])
    (root / "a1" / "all_preds.jsonl").write_bytes(b"{not json\n")
    out = tmp_path / "evidence"
    assert cli.main(["import", "swe-bench", str(root), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "left out 1 file(s) or folder(s) skipped (import_invalid_json 1)" in err


def test_tau_bench_keeps_the_good_trials_and_exits_0(tmp_path: Path, capsys) -> None:
    traj = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "ok"}]
    good = {"task_id": 1, "trial": 0, "reward": 1.0, "info": {}, "traj": traj}
    source = tmp_path / "gpt-4o-airline.json"
    source.write_bytes(orjson.dumps([good, {"task_id": 2}, {**good, "trial": 1}]))
    out = tmp_path / "evidence"
    argv = ["import", "tau-bench", str(source), "--out", str(out), "--created-at", DAY]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "distill import: left out 1 record(s) quarantined (import_malformed 1)" in err
    assert len(list(iter_jsonl(out / "tau-bench.jsonl"))) == 4
    assert cli.main([*argv, "--strict"]) == 1


def test_left_out_summary_ranks_reasons_by_count() -> None:
    from distill_assets.lib.evidence.importers import ImportFailure

    failures = [
        ImportFailure("p", C.R_IMPORT_MISSING_FILE, "m"),
        ImportFailure("p", C.R_IMPORT_ORPHAN_RESULT, "m", C.DISPOSITION_QUARANTINED, 1),
        ImportFailure("p", C.R_IMPORT_MALFORMED, "m", C.DISPOSITION_QUARANTINED, 1),
        ImportFailure("p", C.R_IMPORT_ORPHAN_RESULT, "m", C.DISPOSITION_QUARANTINED, 2),
    ]
    assert left_out_summary(failures, invalid=2) == (
        "1 file(s) or folder(s) skipped (import_missing_file 1); 3 record(s) quarantined "
        "(import_orphan_result 2, import_malformed 1); 2 record(s) that break the evidence "
        "format (collect quarantines them)"
    )
    assert left_out_summary([]) == ""
