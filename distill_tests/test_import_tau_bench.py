"""τ-bench importer: the mapping on hand-made result files, and the whole graph on the shared
real sample (../shared/real_runs/tau-bench/gpt-4o-airline.json, 200 runs of gpt-4o)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.importers import make_spec, run_import
from distill_assets.lib.infra import layout
from distill_assets.lib.infra.io import iter_jsonl, sha256_file
from distill_assets.lib.records.receipts import load_receipt
from distill_assets.runtime.resource import DistillResource, ImportSource
from distill_tests.conftest import need_shared

REPO_ROOT = Path(__file__).resolve().parents[1]
TAU_SAMPLE = REPO_ROOT.parent / "shared" / "real_runs" / "tau-bench" / "gpt-4o-airline.json"


def _trial(task_id: int, trial: int, reward: float, reward_info: Any, final: str) -> dict:
    return {
        "task_id": task_id,
        "trial": trial,
        "reward": reward,
        "info": {
            "task": {"user_id": "ana_1", "instruction": "You are ana_1. Change your flight."},
            "source": "user",
            "reward_info": reward_info,
        },
        "traj": [
            {"role": "system", "content": "# Airline agent policy"},
            {"role": "user", "content": "Hi, I want to change my flight."},
            {"role": "assistant", "content": "Sure, what is your user id?"},
            {"role": "user", "content": "ana_1"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_user_details", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "name": "get_user_details", "content": "{}"},
            {"role": "assistant", "content": final},
            {"role": "user", "content": "Thanks! ###STOP###"},
        ],
    }


COMPLETE = {"reward": 1.0, "info": {"r_actions": 1.0, "gt_data_hash": "ab"}, "actions": []}
FAILED = {"reward": 0.0, "info": {"r_actions": 0.0, "gt_data_hash": "cd"}, "actions": []}
OUTPUTS_ONLY = {"reward": 1.0, "info": {"r_outputs": 1.0, "outputs": {"12": True}}, "actions": []}


def _write(path: Path, results: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results))
    return path


def _objects(batch, kind: str) -> list[dict]:
    return [item.obj for item in batch.objects if item.obj["kind"] == kind]


def test_a_trial_becomes_a_run_and_an_outcome(tmp_path: Path) -> None:
    source = _write(
        tmp_path / "claude-retail.json",
        [_trial(7, 0, 1.0, COMPLETE, "Your flight is changed."), _trial(7, 1, 0.0, FAILED, "No.")],
    )
    batch = run_import(make_spec(C.IMPORT_TAU_BENCH, source, created_at="2025-02-03T04:05:06Z"))
    assert batch.failures == [] and batch.warnings == []
    runs, outcomes = _objects(batch, C.KIND_RUN), _objects(batch, C.KIND_OUTCOME)
    assert [r["run_id"] for r in runs] == [
        "tau-bench/claude/retail/7/0",
        "tau-bench/claude/retail/7/1",
    ]
    run = runs[0]
    assert run["task_id"] == "tau-bench/retail/7"
    assert run["agent"] == "claude" and run["category"] == "retail"
    assert run["instruction"] == "Hi, I want to change my flight."
    # the last assistant text, not the later tool call's empty content or the user's sign-off
    assert run["response"] == "Your flight is changed."
    assert [m["role"] for m in run["messages"]][:2] == ["user", "assistant"]
    assert all(m["role"] != "system" for m in run["messages"])
    assert len(run["messages"]) == 7
    assert run["created_at"] == "2025-02-03T04:05:06Z"
    assert run["meta"]["created_at_source"] == "option"
    assert run["meta"]["task_instruction"] == "You are ana_1. Change your flight."
    assert run["meta"]["imported_from"] == {
        "path": "claude-retail.json",
        "record": 1,
        "sha256": sha256_file(source),
    }
    assert [(o["outcome"], o["reward"]) for o in outcomes] == [("success", 1.0), ("failure", 0.0)]
    assert outcomes[0]["meta"]["signals"] == {"r_actions": 1.0}
    assert outcomes[1]["meta"]["signals"] == {"r_actions": 0.0}
    assert [item.origin.record for item in batch.objects] == [1, 1, 2, 2]
    assert batch.files[0].path == "tau-bench:claude-retail.json"
    assert batch.files[0].record_count == 2


@pytest.mark.parametrize(
    ("reward_info", "reward", "status", "signals"),
    [
        (COMPLETE, 1.0, "complete", {"r_actions": 1.0}),
        (None, 0.0, "missing", {"incomplete": 1.0}),
        ({}, 0.0, "missing", {"incomplete": 1.0}),
        (OUTPUTS_ONLY, 1.0, "no_r_actions", {"r_outputs": 1.0, "incomplete": 1.0}),
        (COMPLETE, 0.0, "reward_mismatch", {"r_actions": 1.0, "incomplete": 1.0}),
    ],
)
def test_incomplete_reward_info_is_flagged_for_review(
    tmp_path: Path, reward_info: Any, reward: float, status: str, signals: dict
) -> None:
    source = _write(tmp_path / "gpt-airline.json", [_trial(1, 0, reward, reward_info, "Done.")])
    batch = run_import(make_spec(C.IMPORT_TAU_BENCH, source))
    (outcome,) = _objects(batch, C.KIND_OUTCOME)
    assert outcome["meta"]["reward_info"] == status
    assert outcome["meta"]["signals"] == signals
    assert outcome["outcome"] == ("success" if reward == 1.0 else "failure")


def test_a_reward_between_zero_and_one_is_partial(tmp_path: Path) -> None:
    source = _write(tmp_path / "gpt-airline.json", [_trial(1, 0, 0.5, COMPLETE, "Half.")])
    (outcome,) = _objects(run_import(make_spec(C.IMPORT_TAU_BENCH, source)), C.KIND_OUTCOME)
    assert outcome["outcome"] == "partial" and outcome["reward"] == 0.5


def test_created_at_defaults_to_the_file_mtime_and_says_so(tmp_path: Path) -> None:
    source = _write(tmp_path / "gpt-airline.json", [_trial(1, 0, 1.0, COMPLETE, "Done.")])
    moment = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC).timestamp()
    os.utime(source, (moment, moment))
    batch = run_import(make_spec(C.IMPORT_TAU_BENCH, source))
    for obj in (item.obj for item in batch.objects):
        assert obj["created_at"] == "2025-05-06T07:08:09Z"
        assert obj["meta"]["created_at_source"] == "file_mtime"


@pytest.mark.parametrize(
    ("filename", "options", "expected"),
    [
        ("gpt-4o-airline.json", {}, ("gpt-4o", "airline")),
        ("gpt-4o-airline.json", {"domain": "airline"}, ("gpt-4o", "airline")),
        ("gpt-4o-airline.json", {"system": "gpt-4o"}, ("gpt-4o", "airline")),
        ("results.json", {"system": "s1", "domain": "retail"}, ("s1", "retail")),
        ("results.json", {"domain": "retail"}, ("results", "retail")),
    ],
)
def test_system_and_domain_come_from_options_or_the_file_name(
    tmp_path: Path, filename: str, options: dict, expected: tuple[str, str]
) -> None:
    source = _write(tmp_path / filename, [_trial(3, 2, 1.0, COMPLETE, "Done.")])
    (run,) = _objects(run_import(make_spec(C.IMPORT_TAU_BENCH, source, **options)), C.KIND_RUN)
    system, domain = expected
    assert (run["meta"]["system"], run["meta"]["domain"]) == expected
    assert run["run_id"] == f"tau-bench/{system}/{domain}/3/2"


def test_a_file_name_without_system_and_domain_needs_the_options(tmp_path: Path) -> None:
    source = _write(tmp_path / "results.json", [_trial(3, 2, 1.0, COMPLETE, "Done.")])
    batch = run_import(make_spec(C.IMPORT_TAU_BENCH, source))
    assert batch.objects == []
    (failure,) = batch.failures
    assert failure.reason == C.R_IMPORT_MALFORMED
    assert "tau-bench:results.json" in failure.message and "domain" in failure.message


@pytest.mark.parametrize(
    ("content", "reason", "phrase"),
    [
        (b'[{"task_id": 1, "trial": 0, "reward": 1.0, "traj": [', C.R_IMPORT_INVALID_JSON,
         "unexpected end of data"),
        (b'[{"task_id": 1, "trial": 0},]', C.R_IMPORT_INVALID_JSON, "trailing comma"),
        (b'{"task_id": 1}', C.R_IMPORT_MALFORMED, "expected a JSON array"),
        (b"", C.R_IMPORT_INVALID_JSON, "empty document"),
        (b"\xff\xfe[]", C.R_IMPORT_INVALID_JSON, "not UTF-8"),
    ],
)  # fmt: skip
def test_a_broken_file_is_skipped_whole_with_a_message_naming_it(
    tmp_path: Path, content: bytes, reason: str, phrase: str
) -> None:
    good = _write(tmp_path / "runs" / "a-airline.json", [_trial(1, 0, 1.0, COMPLETE, "Done.")])
    (tmp_path / "runs" / "b-airline.json").write_bytes(content)
    batch = run_import(make_spec(C.IMPORT_TAU_BENCH, tmp_path / "runs"))
    (failure,) = batch.failures
    assert failure.disposition == C.DISPOSITION_SKIPPED
    assert failure.reason == reason
    assert failure.message.startswith("tau-bench:b-airline.json: ")
    assert phrase in failure.message
    # nothing of the broken file is imported; the good file is, whole
    assert {item.origin.path for item in batch.objects} == {"tau-bench:a-airline.json"}
    assert len(batch.objects) == 2
    assert {f.path for f in batch.files} == {"tau-bench:a-airline.json", "tau-bench:b-airline.json"}
    assert good.exists()


@pytest.mark.parametrize(
    ("record", "phrase"),
    [
        ({"task_id": 1, "trial": 0, "reward": 1.0}, "missing key(s) traj"),
        ({"task_id": True, "trial": 0, "reward": 1.0, "traj": []}, "task_id"),
        ({"task_id": 1, "trial": "0", "reward": 1.0, "traj": []}, "trial must be an integer"),
        ({"task_id": 1, "trial": 0, "reward": "1", "traj": []}, "reward must be a number"),
        ({"task_id": 1, "trial": 0, "reward": 1.0, "traj": {}}, "traj must be an array"),
        ([1, 2], "expected an object"),
    ],
)
def test_a_bad_record_is_quarantined_and_the_others_kept(
    tmp_path: Path, record: Any, phrase: str
) -> None:
    source = _write(
        tmp_path / "gpt-airline.json",
        [_trial(1, 0, 1.0, COMPLETE, "Done."), record, _trial(1, 1, 0.0, FAILED, "No.")],
    )
    batch = run_import(make_spec(C.IMPORT_TAU_BENCH, source, created_at="2025-01-02T00:00:00Z"))
    (failure,) = batch.failures
    assert failure.disposition == C.DISPOSITION_QUARANTINED
    assert failure.reason == C.R_IMPORT_MALFORMED
    assert (
        failure.record == 2 and failure.day is not None and failure.day.isoformat() == "2025-01-02"
    )
    assert failure.message.startswith("tau-bench:gpt-airline.json: record 2: ")
    assert phrase in failure.message
    assert [item.origin.record for item in batch.objects] == [1, 1, 3, 3]


def test_a_link_out_of_the_configured_folder_is_not_followed(tmp_path: Path) -> None:
    outside = _write(tmp_path / "elsewhere" / "x-airline.json", [_trial(1, 0, 1, COMPLETE, "A")])
    folder = tmp_path / "runs"
    _write(folder / "a-airline.json", [_trial(1, 0, 1.0, COMPLETE, "Done.")])
    (folder / "b-airline.json").symlink_to(outside)
    batch = run_import(make_spec(C.IMPORT_TAU_BENCH, folder))
    (failure,) = batch.failures
    assert failure.reason == C.R_OUTSIDE_SOURCE_DIR
    assert failure.path == "tau-bench:b-airline.json"
    assert {item.origin.path for item in batch.objects} == {"tau-bench:a-airline.json"}


# --- the shared real sample through the whole graph -----------------------------------------


@pytest.fixture(scope="module")
def sample() -> list[dict]:
    need_shared(TAU_SAMPLE)  # skips on a clone without ../shared; fails under CI
    return orjson.loads(TAU_SAMPLE.read_bytes())


def _run_id(result: dict) -> str:
    return f"tau-bench/gpt-4o/airline/{result['task_id']}/{result['trial']}"


def _complete(result: dict) -> bool:
    reward_info = result["info"].get("reward_info")
    return isinstance(reward_info, dict) and "r_actions" in (reward_info.get("info") or {})


SAMPLE_DAY = "2026-03-01"  # the sample has no timestamps: pinned, never the file's mtime


@pytest.fixture(scope="module")
def tau_graph(run_graph, tmp_path_factory, sample):
    """The whole graph over the sample imported through the resource (no evidence folder), with
    the runs' day and the receipts' clock pinned (a module fixture runs before the autouse
    function fixture that pins DISTILL_RECORDED_AT)."""
    out = tmp_path_factory.mktemp("tau-out")
    empty = tmp_path_factory.mktemp("no-evidence")
    day = date.fromisoformat(SAMPLE_DAY)
    resource = DistillResource(
        source_dir=str(empty),
        output_dir=str(out),
        imports=[
            ImportSource(
                kind=C.IMPORT_TAU_BENCH, path=str(TAU_SAMPLE), created_at=f"{SAMPLE_DAY}T12:00:00Z"
            )
        ],
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(C.ENV_RECORDED_AT, "2026-03-10T00:00:00Z")
        result = run_graph(resource, day.isoformat())
    return result, out, day


def test_sample_figures_the_issue_states(sample) -> None:
    rewarded = [r for r in sample if r["reward"] == 1.0]
    assert len(sample) == 200 and len(rewarded) == 84
    assert sum(1 for r in rewarded if _complete(r)) == 81
    assert sum(1 for r in sample if not r["info"].get("reward_info")) == 5
    rewards = defaultdict(set)
    for r in sample:
        rewards[r["task_id"]].add(r["reward"])
    assert sum(1 for values in rewards.values() if values == {0.0, 1.0}) == 26


def test_sample_indexes_all_200_runs_with_provenance(tau_graph, sample) -> None:
    result, out, day = tau_graph
    assert result.success
    index = list(iter_jsonl(out / layout.evidence_index(day)))
    assert sum(1 for row in index if row["kind"] == C.KIND_RUN) == 200
    assert sum(1 for row in index if row["kind"] == C.KIND_OUTCOME) == 200
    sha = sha256_file(TAU_SAMPLE)
    for row in iter_jsonl(out / layout.evidence_records(day)):
        assert row["source_path"] == "tau-bench:gpt-4o-airline.json"
        assert row["importer"] == C.IMPORT_TAU_BENCH and row["source_sha256"] == sha
        original = sample[row["source_record"] - 1]
        assert row["run_id"] == _run_id(original)
    receipt = orjson.loads(next((out / C.REPORTS_DIR).glob("*/collect.json")).read_bytes())
    assert receipt["stats"]["records_in"] == 400 and receipt["stats"]["records_out"] == 400
    assert [(f["path"], f["sha256"], f["record_count"]) for f in receipt["inputs"]["files"]] == [
        ("tau-bench:gpt-4o-airline.json", sha, 200)
    ]


def test_sample_accepts_exactly_the_complete_reward_1_runs(tau_graph, sample) -> None:
    _result, out, day = tau_graph
    scored = {row["run_id"]: row for row in iter_jsonl(out / layout.scored_runs(day))}
    assert len(scored) == 200
    accepted = {run_id for run_id, row in scored.items() if row["quality_score"] == "accepted"}
    reward = {_run_id(r): r["reward"] for r in sample}
    assert all(reward[run_id] == 1.0 for run_id in accepted)
    complete_winners = {_run_id(r) for r in sample if r["reward"] == 1.0 and _complete(r)}
    assert len(complete_winners) == 81
    assert accepted == complete_winners
    # the policy for incomplete reward_info: the run goes to human review, never to a dataset
    incomplete = {_run_id(r) for r in sample if not _complete(r)}
    assert len(incomplete) == 18
    for run_id in incomplete:
        assert scored[run_id]["quality_score"] == "needs_human_review"
        assert C.R_INCOMPLETE in scored[run_id]["reasons"]
    assert all(
        scored[_run_id(r)]["quality_score"] == "rejected"
        for r in sample
        if r["reward"] == 0.0 and _complete(r)
    )


def test_sample_pairs_stay_in_a_task_and_prefer_success(tau_graph, sample) -> None:
    _result, out, day = tau_graph
    scored = {row["run_id"]: row for row in iter_jsonl(out / layout.scored_runs(day))}
    reward = {_run_id(r): r["reward"] for r in sample}
    # the holdout split moves whole tasks to holdout.jsonl: read both sides
    pairs = [*iter_jsonl(out / C.PREFERENCE_PATH), *iter_jsonl(out / C.PREFERENCE_HOLDOUT_PATH)]
    assert pairs
    for pair in pairs:
        chosen, rejected = scored[pair["chosen_run_id"]], scored[pair["rejected_run_id"]]
        assert chosen["task_id"] == rejected["task_id"] == pair["task_id"]
        assert reward[chosen["run_id"]] == 1.0 and chosen["quality_score"] == "accepted"
        assert reward[rejected["run_id"]] == 0.0 and rejected["quality_score"] == "rejected"
    qualities: dict[str, set[str]] = defaultdict(set)
    for row in scored.values():
        qualities[row["task_id"]].add(row["quality_score"])
    both = {task for task, q in qualities.items() if {"accepted", "rejected"} <= q}
    assert {pair["task_id"] for pair in pairs} == both
    assert len(both) == 24


def test_sample_passes_every_check_with_zero_firewall_violations(tau_graph) -> None:
    result, out, _day = tau_graph
    evaluations = result.get_asset_check_evaluations()
    failed = [(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed]
    assert failed == []
    firewall = [e for e in evaluations if e.check_name == C.CHECK_FIREWALL]
    assert len(firewall) == 5  # extracted playbooks, RAG, SFT, preference, KTO
    assert all(e.metadata["num_failures"] == dg.IntMetadataValue(0) for e in firewall)
    sft = [*iter_jsonl(out / C.SFT_PATH), *iter_jsonl(out / C.SFT_HOLDOUT_PATH)]
    receipt = load_receipt(out / C.REPORTS_DIR / result.run_id / f"{C.STAGE_EXPORT_SFT}.json")
    # every accepted run is a row on one side, or left out as a near-duplicate of one
    assert len(sft) + receipt.stats.reasons.get(C.R_NEAR_DUPLICATE, 0) == 81


def test_sample_playbooks_come_from_the_tool_calls_and_are_searchable(tau_graph, capsys) -> None:
    """The τ-bench chats carry tool calls: the playbooks quote them, failed trials of the same
    task are compared with them, and `distill search` finds them in the published index."""
    from distill_assets.cli import main

    result, out, _day = tau_graph
    extracted = [*iter_jsonl(out / C.EXTRACTED_PATH), *iter_jsonl(out / C.EXTRACTED_HOLDOUT_PATH)]
    # (train and holdout together) 34 tasks have an accepted trial (a complete reward 1.0);
    # 24 of them also have a rejected one (a complete reward 0.0), whose trials are compared
    assert len(extracted) == 34
    assert sum(1 for row in extracted if row["failed_run_ids"]) == 24
    # 3 accepted trials only talked (they asked the user for a reservation id and stopped)
    assert sum(1 for row in extracted if row["steps"]) == 31
    assert all(len(row["steps"]) == min(row["steps_total"], 40) for row in extracted)
    assert all(row["task_id"].startswith("tau-bench/airline/") for row in extracted)
    tools = {tool for row in extracted for tool in row["tags"]["tools"]}
    assert {"get_user_details", "get_reservation_details"} <= tools
    step = extracted[0]["steps"][0]
    assert step["n"] == 1 and step["tool"] and "=" in step["arguments"]
    assert len(step["result"] or "") <= 240
    diverged = [d for row in extracted for d in row["divergences"]]
    assert len(diverged) >= 24 and all(d["kind"] in C.DIVERGENCE_KINDS for d in diverged)
    assert {d["kind"] for d in diverged} - {"same_steps"}  # most failed trials acted differently
    rag = [*iter_jsonl(out / C.RAG_PATH), *iter_jsonl(out / C.RAG_HOLDOUT_PATH)]
    assert len(rag) == 34
    # the index holds the train playbooks only: held-out tasks are not searchable
    held_out = {row["task_id"] for row in iter_jsonl(out / C.RAG_HOLDOUT_PATH)}

    assert main(["search", "cancel my reservation", "-k", "5", "--json", "--output", str(out)]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 5 and all(h["task_id"].startswith("tau-bench/airline/") for h in hits)
    assert not {h["task_id"] for h in hits} & held_out
    by_id = {row["id"]: row for row in extracted}
    top = by_id[hits[0]["id"]]
    assert "cancel" in (top["problem"] + " ".join(s["tool"] for s in top["steps"])).lower()
    assert hits[0]["source_run_ids"] == top["source_run_ids"]
