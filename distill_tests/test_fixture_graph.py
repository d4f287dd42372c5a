"""Acceptance suite of the whole graph on the bundled fixtures: exact per-stage counts derived by
hand from fixtures/evidence (see the comments), the firewall, the pair rules, conservation,
receipts and the run summary, all read back from the files a real Dagster run wrote."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.datasets.exporter import ExportSettings
from distill_assets.lib.evidence.format import normalize_text
from distill_assets.lib.infra.io import sha256_file
from distill_assets.lib.records.receipts import StageReceipt, aggregate_hash, load_receipt
from distill_assets.lib.records.reports import load_drift, load_summary
from distill_assets.lib.verify.firewall import (
    verify_kto,
    verify_pair_rules,
    verify_preference,
    verify_rag,
    verify_sft,
)
from distill_tests.conftest import FIXTURES, materializations_of


def rows(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run(fixture_run):
    return fixture_run


@pytest.fixture(scope="module")
def out(run) -> Path:
    return run[1]


@pytest.fixture(scope="module")
def receipts(run) -> dict[str, StageReceipt]:
    result, out, _ = run
    directory = out / C.REPORTS_DIR / result.run_id
    return {stage: load_receipt(directory / f"{stage}.json") for stage in S.STAGES}


def test_run_succeeds_and_every_check_passes(run):
    result, _, _ = run
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    names = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations}
    for asset in (
        C.ASSET_EXTRACTED_PLAYBOOKS,
        C.ASSET_RAG_PLAYBOOKS,
        C.ASSET_SFT_DATASET,
        C.ASSET_PREFERENCE_PAIRS,
        C.ASSET_KTO_DATASET,
    ):
        assert (asset, C.CHECK_FIREWALL) in names
        assert (asset, C.CHECK_SCHEMA) in names
    for check in (C.CHECK_SCHEMA, C.CHECK_INDEX_CONSISTENT, C.CHECK_CONSERVATION):
        assert (C.ASSET_PLAYBOOK_INDEX, check) in names
    assert (C.ASSET_EVIDENCE_INDEX, C.CHECK_CONSERVATION) in names
    assert all(e.passed for e in evaluations), [e for e in evaluations if not e.passed]


# collect: 66 lines in 5 files.
#  kept 55 = 12 outcomes + 19 reviews + 10 + 11 + 3 runs
#  quarantined 7 = unknown kind, bad verdict, unreadable timestamp, score 1.5,
#                  missing created_at, task_id 42, blank instruction
#  skipped 4 = duplicate line, truncated JSON, empty line, a JSON array
# score: 55 records of the three days.
#  quarantined 5 = run-022 twice (conflicting duplicate) and its review, and two orphans
#  out 50 = 22 scored runs + 28 reviews/outcomes attached to them
# exports: 22 scored runs each (10 accepted, 5 partially accepted, 4 rejected, 3 to review)
# holdout (10%): of the 11 tasks only T-certs hashes below 0.1 (sha256 point 0.099); its one
#  trusted run, run-009, goes to the holdout files (extracted playbooks, RAG, SFT); it forms no
#  pair (its other three runs need review). Holdout rows still count as out.
# extract-playbooks: the 22 scored runs. 11 tasks have a verified run (T-backup, T-cache,
#  T-certs, T-dns, T-incident, T-login, T-onboard, T-phish, T-refund, T-sql, T-translate), so
#  11 playbooks backed by the 15 accepted or partially accepted runs (none has an empty answer
#  or a placeholder instruction); the 4 rejected runs (run-002 T-login, run-005 T-refund,
#  run-012 T-sql, run-018 T-dns) all belong to one of those tasks and are compared as failed
#  runs; out 15 + 4 = 19, accepted 15, rejected 4; the 3 runs to review (all T-certs) are
#  quarantined. 10 playbooks in the train file, T-certs' in the holdout file.
# export-rag: the 11 extracted playbooks (10 + 1), all rendered (partially accepted runs are
#  allowed), none near-duplicate of another: RAG 10 train + 1 holdout.
# near-duplicates (prompt + chosen for pairs): T-login's (run-001, run-003) and (run-001, run-002)
#  share prompt and chosen, the first in export order is kept; T-refund's (run-004, run-005) and
#  (run-006, run-005) too, since run-004 and run-006 differ only in whitespace: run-006 is then in
#  no written pair and is quarantined near_duplicate (2 pair rows + 1 run row). SFT has no
#  near-duplicates (run-006 is not in SFT).
#  preference: out 12 - 1 = 11 (accepted 8 - 1 = 7), quarantined 10 + 1 = 11, pairs 8 - 2 = 6.
# export-kto: the 22 scored runs. Label true for the accepted runs SFT takes: 9 of the 10 (the
#  tenth has an unsafe category: unsafe_sft_category); label false for the 4 rejected runs (none
#  answers with the same text as an accepted run of its task). Left out: 5 partially accepted,
#  3 to review, 1 unsafe = 9. No near-duplicates (as in SFT; the rejected answers differ from
#  their tasks' accepted ones). out 9 + 4 = 13 (accepted 9, rejected 4); run-009 (T-certs) is
#  the one holdout row: 12 train + 1 holdout.
# review queue: the 3 runs to review (run-007, run-008, run-010) are queued.
# index: the 10 RAG train playbooks, all indexed (held-out tasks are not searchable).
# publish: dataset rows, train + holdout: extracted 10 + 1, RAG 10 + 1, SFT 8 + 1,
#  preference 6 + 0, KTO 12 + 1 = 50.
EXPECTED = {
    C.STAGE_COLLECT: dict(records_in=66, records_out=55, quarantined=7, skipped=4),
    C.STAGE_SCORE: dict(
        records_in=55, records_out=50, quarantined=5, skipped=0, accepted=10, rejected=4
    ),
    C.STAGE_EXTRACT_PLAYBOOKS: dict(
        records_in=22, records_out=18, quarantined=4, skipped=0, accepted=14, rejected=4
    ),
    C.STAGE_EXPORT_RAG: dict(records_in=10, records_out=10, quarantined=0, skipped=0),
    C.STAGE_EXPORT_SFT: dict(records_in=22, records_out=9, quarantined=13, skipped=0),
    C.STAGE_EXPORT_PREFERENCE: dict(
        records_in=22, records_out=11, quarantined=11, skipped=0, accepted=7, rejected=4
    ),
    C.STAGE_EXPORT_KTO: dict(
        records_in=22, records_out=13, quarantined=9, skipped=0, accepted=9, rejected=4
    ),
    C.STAGE_EXPORT_REVIEW: dict(records_in=3, records_out=3, quarantined=0, skipped=0),
    C.STAGE_INDEX: dict(records_in=9, records_out=9, quarantined=0, skipped=0),
    C.STAGE_PUBLISH: dict(records_in=48, records_out=48, quarantined=0, skipped=0),
}
EXPECTED_REASONS = {
    C.STAGE_COLLECT: {
        C.R_UNKNOWN_KIND: 1,
        C.invalid_value("verdict"): 1,
        C.R_BAD_TIMESTAMP: 1,
        C.invalid_value("score"): 1,
        C.missing_field("created_at"): 1,
        C.invalid_type("task_id"): 1,
        C.empty_field("instruction"): 1,
        C.R_DUPLICATE: 1,
        C.R_INVALID_JSON: 1,
        C.R_EMPTY_LINE: 1,
        C.R_NOT_AN_OBJECT: 1,
    },
    C.STAGE_SCORE: {C.R_CONFLICTING_DUPLICATE: 3, C.R_ORPHAN_EVIDENCE: 2},
    # run-013 (T-phish, malware) is denied everywhere since issue 14
    C.STAGE_EXTRACT_PLAYBOOKS: {C.R_NEEDS_HUMAN_REVIEW: 3, C.R_DENIED_CATEGORY: 1},
    C.STAGE_EXPORT_RAG: {},
    C.STAGE_EXPORT_SFT: {
        C.R_PARTIALLY_ACCEPTED: 5,
        C.R_QUALITY_REJECTED: 4,
        C.R_NEEDS_HUMAN_REVIEW: 3,
        C.R_UNSAFE_SFT_CATEGORY: 1,
    },
    C.STAGE_EXPORT_PREFERENCE: {
        C.R_NEEDS_HUMAN_REVIEW: 3,
        C.R_DENIED_CATEGORY: 1,
        C.R_NO_PAIR: 6,
        C.R_IDENTICAL_TEXT: 1,
        C.R_BELOW_MARGIN: 1,
        C.R_NEAR_DUPLICATE: 3,
    },
    C.STAGE_EXPORT_KTO: {
        C.R_PARTIALLY_ACCEPTED: 5,
        C.R_NEEDS_HUMAN_REVIEW: 3,
        C.R_UNSAFE_SFT_CATEGORY: 1,
    },
    C.STAGE_EXPORT_REVIEW: {},
    C.STAGE_INDEX: {},
    C.STAGE_PUBLISH: {},
}


@pytest.mark.parametrize("stage", S.STAGES)
def test_exact_counts_per_stage(receipts, stage):
    stats = receipts[stage].stats
    for name, value in EXPECTED[stage].items():
        assert getattr(stats, name) == value, (stage, name)
    assert stats.reasons == EXPECTED_REASONS[stage]


@pytest.mark.parametrize("stage", S.STAGES)
def test_conservation(receipts, stage):
    s = receipts[stage].stats
    assert s.records_in == s.records_out + s.quarantined + s.skipped
    assert receipts[stage].validation.passed


def test_dataset_sizes(out):
    # one playbook per task with a trusted run (11) but T-phish (denied category: issue 14),
    # T-certs' in the holdout
    assert len(rows(out / C.RAG_PATH)) == 9
    assert len(rows(out / C.EXTRACTED_PATH)) == 9
    assert [r["task_id"] for r in rows(out / C.EXTRACTED_HOLDOUT_PATH)] == ["T-certs"]
    assert [r["task_id"] for r in rows(out / C.RAG_HOLDOUT_PATH)] == ["T-certs"]
    assert len(rows(out / C.SFT_PATH)) == 8
    assert [r["source_run_id"] for r in rows(out / C.SFT_HOLDOUT_PATH)] == ["run-009"]
    assert len(rows(out / C.PREFERENCE_PATH)) == 6
    assert rows(out / C.PREFERENCE_HOLDOUT_PATH) == []
    assert len(rows(out / C.KTO_PATH)) == 12
    assert [r["source_run_id"] for r in rows(out / C.KTO_HOLDOUT_PATH)] == ["run-009"]
    sft_runs = {r["source_run_id"] for r in rows(out / C.SFT_PATH) + rows(out / C.SFT_HOLDOUT_PATH)}
    kto = rows(out / C.KTO_PATH) + rows(out / C.KTO_HOLDOUT_PATH)
    assert {r["source_run_id"] for r in kto if r["label"]} == sft_runs
    assert sorted(r["source_run_id"] for r in kto if not r["label"]) == [
        "run-002",
        "run-005",
        "run-012",
        "run-018",
    ]
    queue = rows(out / C.REVIEW_QUEUE_PATH)
    assert [r["run_id"] for r in queue] == ["run-007", "run-008", "run-010"]


def test_scored_grades(out):
    scored = {
        r["run_id"]: r
        for day in ("01", "02", "03")
        for r in rows(out / f"scored-runs/2026/03/{day}/scored_runs.jsonl")
    }
    assert len(scored) == 22 and "run-022" not in scored
    grades = Counter(r["quality_score"] for r in scored.values())
    assert grades == {
        C.QUALITY_ACCEPTED: 10,
        C.QUALITY_PARTIAL: 5,
        C.QUALITY_REJECTED: 4,
        C.QUALITY_REVIEW: 3,
    }
    assert C.R_CONFLICTING_EVIDENCE in scored["run-007"]["reasons"]  # approve + failure
    assert scored["run-008"]["reasons"] == [C.R_OUTCOME_ERROR]
    assert scored["run-010"]["reasons"] == [C.R_NO_EVIDENCE]
    assert scored["run-011"]["quality_score"] == C.QUALITY_PARTIAL  # partial reward 0.6
    assert scored["run-009"]["quality_score"] == C.QUALITY_ACCEPTED  # review with +02:00
    assert scored["run-019"]["n_reviews"] == 1  # naive timestamp on the next day
    assert len(scored["run-001"]["evidence_ids"]) == 3  # the run, a review, an outcome


def test_quarantine_rows_name_the_record(out):
    collect = rows(out / C.quarantine_path(C.STAGE_COLLECT))
    assert len(collect) == 11
    for row in collect:
        assert row["source_path"] and row["reasons"]
        assert row["line"] is not None
        assert "record" not in row  # never the content
    dup = next(r for r in collect if r["reasons"] == [C.R_DUPLICATE])
    assert (dup["source_path"], dup["line"]) == ("runs/2026-03-01.jsonl", 11)
    score_q = rows(out / C.quarantine_path(C.STAGE_SCORE))
    assert {r["run_id"] for r in score_q if C.R_ORPHAN_EVIDENCE in r["reasons"]} == {
        "run-ghost",
        "run-ghost-2",
    }
    for stage in S.PUBLISHED_QUARANTINES:
        for row in rows(out / C.quarantine_path(stage)):
            assert row["reasons"] and (
                row["run_id"] or row["record_type"] == "pair" or row["playbook_id"]
            )
    extract_q = rows(out / C.quarantine_path(C.STAGE_EXTRACT_PLAYBOOKS))
    assert sorted(r["run_id"] for r in extract_q) == ["run-007", "run-008", "run-010", "run-013"]


def test_extracted_playbooks(out):
    extracted = {
        r["task_id"]: r for r in rows(out / C.EXTRACTED_PATH) + rows(out / C.EXTRACTED_HOLDOUT_PATH)
    }
    incident = extracted["T-incident"]  # run-014's chat: one call of fetch_incident
    assert [(s["n"], s["tool"], s["arguments"]) for s in incident["steps"]] == [
        (1, "fetch_incident", "id=INC-2291")
    ]
    assert incident["steps"][0]["result"].startswith('{"start": "14:02"')
    assert incident["source_run_ids"] == ["run-014", "run-015"]  # both accepted, 014 earlier
    assert incident["tags"] == {
        "category": "ops",
        "agents": ["ops-agent", "ops-agent-2"],
        "tools": ["fetch_incident"],
    }
    login = extracted["T-login"]  # run-002 was rejected; no run of T-login has a chat
    assert login["failed_run_ids"] == ["run-002"]
    [diverged] = login["divergences"]
    assert (diverged["run_id"], diverged["kind"], diverged["step"]) == (
        "run-002",
        "same_steps",
        None,
    )
    assert diverged["answer"].startswith("I wrapped the handler in try/except")
    assert extracted["T-sql"]["quality"] == C.QUALITY_PARTIAL
    assert "T-certs" in extracted and extracted["T-certs"]["source_run_ids"] == ["run-009"]
    rag = {r["task_id"]: r for r in rows(out / C.RAG_PATH) + rows(out / C.RAG_HOLDOUT_PATH)}
    assert set(rag) == set(extracted)
    assert "## Steps taken\n1. `fetch_incident`(id=INC-2291) → " in rag["T-incident"]["text"]
    assert "- `run-002`: answered: I wrapped the handler" in rag["T-login"]["text"]
    assert rag["T-login"]["failed_run_ids"] == ["run-002"]


def test_evidence_provenance(out):
    records = rows(out / "evidence/2026/03/01/records.jsonl")
    for record in records:
        source = FIXTURES / record["source_path"]
        assert record["source_sha256"] == sha256_file(source)
        raw = source.read_bytes().splitlines()[record["line"] - 1]
        assert orjson.loads(raw.lstrip(b"\xef\xbb\xbf")) == record["record"]


def test_firewall_nothing_untrusted_reaches_training(out):
    scored = {
        r["run_id"]: r["quality_score"]
        for day in ("01", "02", "03")
        for r in rows(out / f"scored-runs/2026/03/{day}/scored_runs.jsonl")
    }
    for row in rows(out / C.SFT_PATH):
        assert scored[row["source_run_id"]] == C.QUALITY_ACCEPTED
        assert row["category"] != "malware"
        assert [m["role"] for m in row["messages"]][0] == "user"
        assert row["messages"][-1]["role"] == "assistant"
        assert all(m["role"] != "system" for m in row["messages"])
    for row in rows(out / C.RAG_PATH):
        assert all(
            scored[r] in (C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL) for r in row["source_run_ids"]
        )
    settings = ExportSettings()
    assert verify_sft(out, settings).passed
    assert verify_rag(out, settings).passed
    assert verify_pair_rules(out, settings).passed
    assert verify_preference(out, settings).passed
    assert verify_kto(out, settings).passed


def test_sft_keeps_tool_calls_and_drops_the_system_policy(out):
    row = next(r for r in rows(out / C.SFT_PATH) if r["source_run_id"] == "run-014")
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert row["messages"][1]["tool_calls"][0]["function"]["name"] == "fetch_incident"


def test_pair_rules(out):
    scored = {
        r["run_id"]: r
        for day in ("01", "02", "03")
        for r in rows(out / f"scored-runs/2026/03/{day}/scored_runs.jsonl")
    }
    rank = C.QUALITY_RANK
    pairs = rows(out / C.PREFERENCE_PATH)
    for pair in pairs:
        chosen, rejected = scored[pair["chosen_run_id"]], scored[pair["rejected_run_id"]]
        assert pair["chosen_run_id"] != pair["rejected_run_id"]
        assert chosen["task_id"] == rejected["task_id"] == pair["task_id"]
        assert C.QUALITY_REVIEW not in (chosen["quality_score"], rejected["quality_score"])
        assert chosen["quality_score"] != C.QUALITY_REJECTED
        assert (rank[chosen["quality_score"]], chosen["score"]) > (
            rank[rejected["quality_score"]],
            rejected["score"],
        )
        assert pair["margin"] >= 0.2
        assert normalize_text(pair["chosen"]) != normalize_text(pair["rejected"])
    keys = {(p["chosen_run_id"], p["rejected_run_id"]) for p in pairs}
    assert ("run-004", "run-006") not in keys  # identical text after whitespace folding
    assert ("run-014", "run-015") not in keys  # margin 0.05 below 0.2
    quarantined = rows(out / C.quarantine_path(C.STAGE_EXPORT_PREFERENCE))
    pair_rows = {
        (r["chosen_run_id"], r["rejected_run_id"]): r["reasons"]
        for r in quarantined
        if r["record_type"] == "pair"
    }
    assert pair_rows == {
        ("run-004", "run-006"): [C.R_IDENTICAL_TEXT],
        ("run-014", "run-015"): [C.R_BELOW_MARGIN],
        # same prompt and chosen text as a pair written before them (see EXPECTED)
        ("run-001", "run-002"): [C.R_NEAR_DUPLICATE],
        ("run-006", "run-005"): [C.R_NEAR_DUPLICATE],
    }
    kept = {r["id"]: r for r in pairs}
    for row in quarantined:
        if C.R_NEAR_DUPLICATE in row["reasons"]:
            assert row["kept_id"] in kept
    near = next(r for r in quarantined if r["reasons"] == [C.R_NEAR_DUPLICATE] and r["run_id"])
    assert near["run_id"] == "run-006"
    assert kept[near["kept_id"]]["chosen_run_id"] == "run-004"


def test_receipts_hash_the_files_on_disk(out, receipts):
    for receipt in receipts.values():
        for entry in receipt.outputs.files:
            assert sha256_file(out / entry.path) == entry.sha256, entry.path
            assert (out / entry.path).stat().st_size == entry.bytes
        # dataset cards are listed but not hashed: they name the run (test_datasets.py)
        data = [f for f in receipt.outputs.files if not C.is_card(f.path)]
        assert receipt.outputs.hash == aggregate_hash(data)
        assert receipt.run_id == receipts[C.STAGE_COLLECT].run_id
    quarantine = [f.path for f in receipts[C.STAGE_EXPORT_SFT].outputs.files]
    assert C.quarantine_path(C.STAGE_EXPORT_SFT) in quarantine


def test_chain_of_custody_links_every_input_to_its_producer(out, receipts):
    score_inputs = {f.path: f for f in receipts[C.STAGE_SCORE].inputs.files}
    collect_outputs = {f.path: f.sha256 for f in receipts[C.STAGE_COLLECT].outputs.files}
    assert score_inputs
    for path, entry in score_inputs.items():
        assert entry.producer_stage == C.STAGE_COLLECT
        assert collect_outputs[path] == entry.sha256
    summary = load_summary(out, receipts[C.STAGE_COLLECT].run_id)
    assert summary.chain_ok and summary.chain
    assert summary.overall_passed and not summary.not_run


def test_summary_and_drift_files(out, receipts):
    run_id = receipts[C.STAGE_COLLECT].run_id
    summary = load_summary(out, run_id)
    assert [row.stage for row in summary.stages] == list(S.STAGES)
    assert summary.datasets["sft"] == 8  # the train file; run-009 is in the holdout
    assert summary.totals["records_in"] == sum(r.stats.records_in for r in receipts.values())
    drift = load_drift(out, run_id)
    assert drift.prior_run_id is None and drift.baseline_established
    assert drift.severity == "ok"
    md = (out / C.REPORTS_DIR / run_id / "summary.md").read_text()
    assert "| collect | 66 | 55 |" in md


def test_materialization_metadata(run):
    result, _, instance = run
    materializations = materializations_of(result, C.ASSET_SFT_DATASET)
    metadata = materializations[-1].metadata
    assert metadata[C.MD_ROW_COUNT].value == 8  # train rows
    assert metadata[C.MD_HOLDOUT_ROWS].value == 1
    assert metadata[C.MD_ACCEPTED].value == 9  # train + holdout
    assert metadata[C.MD_QUARANTINED].value == 13
    assert metadata[f"{C.MD_REASON_PREFIX}{C.R_UNSAFE_SFT_CATEGORY}"].value == 1
    assert metadata[C.MD_DRIFT_SEVERITY].value == "ok"
    for key in (C.MD_INPUT_HASH, C.MD_OUTPUT_HASH, C.MD_RECEIPT_PATH, C.MD_SKIPPED, C.MD_REJECTED):
        assert key in metadata
    schema = metadata[C.MD_COLUMN_SCHEMA].value
    assert [c.name for c in schema.columns] == [
        "messages",
        "id",
        "source_run_id",
        "task_id",
        "category",
    ]
    evidence = materializations_of(result, C.ASSET_EVIDENCE_INDEX)
    assert {m.partition for m in evidence} == {"2026-03-01", "2026-03-02", "2026-03-03"}


def test_manifest_lists_checked_datasets(out):
    manifest = orjson.loads((out / C.MANIFEST_PATH).read_bytes())
    listed = {f["path"]: f for f in manifest["files"]}
    for path in (
        C.RAG_PATH,
        C.EXTRACTED_PATH,
        C.INDEX_PATH,
        C.SFT_PATH,
        C.PREFERENCE_PATH,
        C.KTO_PATH,
        *S.HOLDOUT_PATHS.values(),
    ):
        assert listed[path]["sha256"] == sha256_file(out / path)
    assert listed[C.REVIEW_QUEUE_PATH]["rows"] == 3
    assert listed[C.INDEX_PATH]["rows"] == 9  # T-phish is denied (issue 14)
    assert manifest["indexes"] == {"rag_index": C.INDEX_PATH}
    assert "run_id" not in manifest


def test_one_step_makes_every_export_and_the_index_is_built_ahead(receipts):
    """The export pass made every export in one step (one pass over the scored runs), and
    the index stage adopted the index built while the other exports finished."""
    exports = [receipts[S.ASSET_STAGE[asset]] for asset in S.EXPORT_ASSETS]
    assert {r.extra["pass_ms"] for r in exports} == {exports[0].extra["pass_ms"]}
    assert exports[0].extra["pass_stages"] == [S.ASSET_STAGE[a] for a in S.EXPORT_ASSETS]
    assert receipts[C.STAGE_INDEX].extra["built_ahead"] is True
