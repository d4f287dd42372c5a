"""``distill trace`` and ``distill diff`` on real runs of the graph: every line of a trace is
checked against the files it names (the scored runs, the evidence store, the datasets, the
quarantines); a second run with one added review that flips a verdict is explained by ``diff``
(the run, the review, the rows that moved) and linked from the drift report; and, over random
rows of a seeded synthetic corpus, the evidence a trace lists hashes to what the index says."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_assets.cli import main
from distill_assets.defs.monitoring.sensors import drift_sensor
from distill_assets.devtools.synth import SynthSpec, synthesize
from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.infra import layout
from distill_assets.lib.publishing.diff import diff
from distill_assets.lib.publishing.trace import (
    TraceError,
    build_lookup,
    left_out,
    open_lookup,
    redactions,
    render_trace,
    trace,
)
from distill_assets.runtime.resource import DistillResource
from distill_tests.conftest import copy_fixtures, materialize_graph


def rows(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def scored(out: Path) -> dict[str, dict]:
    found = {}
    for day in layout.days_on_disk(out, C.SCORED_DIR, C.SCORED_FILE):
        for row in rows(out / layout.scored_runs(day)):
            found[row["run_id"]] = row
    return found


def quarantine_lines(out: Path, stage: str, run_id: str) -> list[dict]:
    names = ("run_id", "chosen_run_id", "rejected_run_id")
    return [
        line
        for line in rows(out / C.quarantine_path(stage))
        if any(line.get(name) == run_id for name in names)
        or run_id in (line.get("source_run_ids") or [])
    ]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_run_against_files(out: Path, run: dict) -> None:
    """Every fact of one run's trace is what the files say."""
    run_id = run["run_id"]
    row = scored(out)[run_id]
    verdict = run["verdict"]
    assert (verdict["quality"], verdict["score"], verdict["reasons"]) == (
        row["quality_score"],
        row["score"],
        row["reasons"],
    )
    settings_used = orjson.loads(
        (out / C.REPORTS_DIR / verdict["scored_by_run"] / "score.json").read_bytes()
    )["extra"]["settings"]
    assert verdict["policy"] == settings_used
    # the evidence: exactly the scored row's, each read from the store and hashing to its id
    assert [e["evidence_id"] for e in run["evidence"]] == row["evidence_ids"]
    for item in run["evidence"]:
        store, _, offset = item["store"].partition("@")
        with open(out / store, "rb") as fh:
            fh.seek(int(offset))
            record = orjson.loads(fh.readline())
        assert record["evidence_id"] == item["evidence_id"] == item["sha256"]
        canonical = orjson.dumps(record["record"], option=orjson.OPT_SORT_KEYS)
        assert hashlib.sha256(canonical).hexdigest() == item["sha256"]
        assert (record["source_path"], record["line"], record["kind"]) == (
            item["source_path"],
            item["line"],
            item["kind"],
        )
        assert "problem" not in item
    # collect: the quarantined and skipped lines naming the run
    collect = quarantine_lines(out, C.STAGE_COLLECT, run_id)
    assert sorted((c["source_path"], c["line"], tuple(c["reasons"])) for c in collect) == sorted(
        (c["source_path"], c["line"], tuple(c["reasons"])) for c in run["collect"]
    )
    # exports: each published row is in its file; each left-out line is in its quarantine
    published = [e for e in run["exports"] if e["status"] == "published"]
    for item in published:
        ids = {r["id"] for r in rows(out / item["file"])}
        assert item["row_id"] in ids
        expected = S.HOLDOUT_PATHS[item["stage"]] if item["split"] == "holdout" else None
        assert expected is None or item["file"] == expected
    for stage in (C.STAGE_EXPORT_SFT, C.STAGE_EXPORT_KTO, C.STAGE_EXPORT_PREFERENCE):
        wanted = sorted(tuple(line["reasons"]) for line in quarantine_lines(out, stage, run_id))
        got = sorted(
            tuple(e["reasons"])
            for e in run["exports"]
            if e["stage"] == stage and e["status"] != "published"
        )
        assert got == wanted, stage
    sft_rows = [r for r in rows(out / C.SFT_PATH) + rows(out / C.SFT_HOLDOUT_PATH)]
    in_sft = [r["id"] for r in sft_rows if r["source_run_id"] == run_id]
    assert [e["row_id"] for e in published if e["stage"] == C.STAGE_EXPORT_SFT] == in_sft


@pytest.fixture(scope="module")
def published(fixture_run):
    result, out, _ = fixture_run
    return result.run_id, out


def test_trace_an_sft_row(published, capsys):
    run_id, out = published
    row = rows(out / C.SFT_PATH)[0]
    code, stdout, _ = run_cli(capsys, "trace", row["id"], "--output", str(out), "--json")
    assert code == 0
    answer = orjson.loads(stdout)
    assert answer["matched"] == ["sft row (train)"]
    assert answer["version"]["run_id"] == run_id
    assert (out / answer["version"]["path"] / C.EXPORTS_DIR).resolve() == (
        out / C.EXPORTS_DIR
    ).resolve()
    assert [r["run_id"] for r in answer["runs"]] == [row["source_run_id"]]
    check_run_against_files(out, answer["runs"][0])
    mine = [e for e in answer["runs"][0]["exports"] if e["stage"] == C.STAGE_EXPORT_SFT]
    assert mine == [
        {
            "stage": C.STAGE_EXPORT_SFT,
            "dataset": "sft",
            "status": "published",
            "split": "train",
            "row_id": row["id"],
            "file": C.SFT_PATH,
        }
    ]
    # the text answer says the same, line by line
    code, text, _ = run_cli(capsys, "trace", row["id"], "--output", str(out))
    assert code == 0
    assert f"read from the version published by run {run_id}" in text
    assert f"export-sft: published train sft row {row['id']}" in text
    for item in answer["runs"][0]["evidence"]:
        assert f"{item['source_path']}:{item['line']}  sha256 {item['sha256']}" in text


def test_trace_a_preference_pair(published, capsys):
    _, out = published
    pair = rows(out / C.PREFERENCE_PATH)[0]
    code, stdout, _ = run_cli(capsys, "trace", pair["id"], "--output", str(out), "--json")
    assert code == 0
    answer = orjson.loads(stdout)
    assert answer["matched"] == ["preference row (train)"]
    assert answer["rows"][0]["run_ids"] == [pair["chosen_run_id"], pair["rejected_run_id"]]
    assert [r["run_id"] for r in answer["runs"]] == [
        pair["chosen_run_id"],
        pair["rejected_run_id"],
    ]
    for run, side in zip(answer["runs"], ("chosen", "rejected"), strict=True):
        check_run_against_files(out, run)
        mine = [
            e
            for e in run["exports"]
            if e["stage"] == C.STAGE_EXPORT_PREFERENCE and e.get("row_id") == pair["id"]
        ]
        assert [e["side"] for e in mine] == [side]


def test_trace_a_quarantined_run(published, capsys):
    _, out = published
    # run-007: a conflict left to a human; every export keeps it out with that reason
    answer = trace(open_lookup(out), "run-007")
    run = answer["runs"][0]
    check_run_against_files(out, run)
    left = {e["stage"]: e["reasons"] for e in run["exports"] if e["status"] != "published"}
    assert left == {
        C.STAGE_EXTRACT_PLAYBOOKS: [C.R_NEEDS_HUMAN_REVIEW],
        C.STAGE_EXPORT_SFT: [C.R_NEEDS_HUMAN_REVIEW],
        C.STAGE_EXPORT_PREFERENCE: [C.R_NEEDS_HUMAN_REVIEW],
        C.STAGE_EXPORT_KTO: [C.R_NEEDS_HUMAN_REVIEW],
    }
    assert not [e for e in run["exports"] if e["status"] == "published"]
    # run-022: scored twice with different contents, so never scored: score's quarantine says so
    answer = trace(open_lookup(out), "run-022")
    assert answer["matched"] == ["run id (never scored)"]
    run = answer["runs"][0]
    assert run["verdict"] is None
    expected = [
        (line["evidence_id"], tuple(line["reasons"]))
        for line in quarantine_lines(out, C.STAGE_SCORE, "run-022")
    ]
    assert expected and sorted(expected) == sorted(
        (s["evidence_id"], tuple(s["reasons"])) for s in run["score"]
    )
    text = "\n".join(render_trace(answer))
    assert "not scored" in text and C.R_CONFLICTING_DUPLICATE in text


def test_unknown_id_is_one_line_naming_what_was_searched(published, capsys):
    run_id, out = published
    code, stdout, stderr = run_cli(capsys, "trace", "sft-000000000000", "--output", str(out))
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1
    assert "unknown id 'sft-000000000000'" in stderr
    for what in ("row ids", "run ids", "task ids", "evidence ids", run_id):
        assert what in stderr


def test_a_version_without_a_lookup_or_unknown_run_is_a_clear_error(published, tmp_path):
    _, out = published
    with pytest.raises(TraceError, match="no kept version"):
        open_lookup(out, "no-such-run")
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    (layout.published_exports(copy).parent / C.TRACE_FILE).unlink()
    with pytest.raises(TraceError, match="has no trace lookup"):
        open_lookup(copy)


def test_secrets_are_named_by_type_and_field_never_by_value():
    line = {
        "stage": C.STAGE_EXPORT_SFT,
        "disposition": C.DISPOSITION_QUARANTINED,
        "reasons": [C.R_SECRET_DETECTED],
        "record_type": "run",
        "run_id": "r1",
        "findings": [{"type": "github_token", "field": "messages[0].content", "preview": "ghp_"}],
    }
    item = left_out(C.STAGE_EXPORT_SFT, line, "r1")
    assert item["secrets"] == [{"type": "github_token", "field": "messages[0].content"}]
    assert "ghp_" not in orjson.dumps(item).decode()
    row = {"messages": [{"content": "key [REDACTED:aws_access_key] here"}], "id": "sft-1"}
    assert redactions(row) == [{"type": "aws_access_key", "field": "messages[0].content"}]


# --- diff: one added review flips a verdict ---------------------------------------------


@pytest.fixture(scope="module")
def review_added(tmp_path_factory, project_defs):
    """A run over the fixtures, then one with a late review approving run-010 (whose verdict
    was needs_human_review: no evidence but the run), in one instance and output directory,
    with drift thresholds low enough for the change to warn."""
    base = tmp_path_factory.mktemp("diff")
    home = base / "home"
    home.mkdir()
    source = copy_fixtures(base / "src")
    out = base / "out"
    thresholds = {"drift_warn_pct": 5.0, "drift_alert_pct": 90.0, "drift_min_base": 1}
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTILL_RECORDED_AT", "2026-03-10T00:00:00Z")
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        try:
            first = materialize_graph(project_defs, instance, source, out, **thresholds)
            review = {
                "kind": "review",
                "run_id": "run-010",
                "verdict": "approve",
                "created_at": "2026-03-01T20:00:00Z",
                "reviewer": "dave",
            }
            (source / "reviews" / "late.jsonl").write_bytes(orjson.dumps(review) + b"\n")
            second = materialize_graph(project_defs, instance, source, out, **thresholds)
        finally:
            mp.undo()
        assert first.success and second.success
        yield instance, out, first.run_id, second.run_id, thresholds


def test_diff_names_the_run_the_review_and_the_rows_that_moved(review_added, capsys):
    _, out, first, second, _ = review_added
    code, stdout, _ = run_cli(capsys, "diff", "--output", str(out), "--json")
    assert code == 0
    answer = orjson.loads(stdout)
    assert (answer["a"], answer["b"]) == (first, second)
    verdicts = answer["verdicts"]
    assert verdicts["changed"] == 1
    (run,) = verdicts["runs"]
    assert run["run_id"] == "run-010"
    assert run["before"]["quality"] == C.QUALITY_REVIEW
    assert run["after"]["quality"] == C.QUALITY_ACCEPTED
    (why,) = run["because"]
    assert why["change"] == "new review"
    assert (why["source_path"], why["line"], why["verdict"], why["reviewer"]) == (
        "reviews/late.jsonl",
        1,
        "approve",
        "dave",
    )
    sft_ids = [r["id"] for r in rows(out / C.SFT_PATH) + rows(out / C.SFT_HOLDOUT_PATH)]
    moved = [r for r in run["rows_added"] if r[0] == "sft"]
    assert len(moved) == 1 and moved[0][2] in sft_ids
    by_name = {d["dataset"]: d for d in answer["datasets"]}
    assert by_name["sft"]["added"] == 1 and by_name["sft"]["added_ids"] == [moved[0][2]]
    assert by_name["sft"]["rows_b"] == by_name["sft"]["rows_a"] + 1
    assert by_name["preference"]["added"] == by_name["preference"]["removed"] == 0
    moved_reasons = {(m["stage"], m["reason"]): (m["a"], m["b"]) for m in answer["reasons"]}
    assert moved_reasons[(C.STAGE_EXPORT_SFT, C.R_NEEDS_HUMAN_REVIEW)] == (3, 2)
    assert moved_reasons[("verdict", C.QUALITY_ACCEPTED)] == (10, 11)
    # the collect and score quarantines did not move
    assert not [k for k in moved_reasons if k[0] in (C.STAGE_COLLECT, C.STAGE_SCORE)]
    # the text: a summary line per dataset first, then the details
    code, text, _ = run_cli(capsys, "diff", first, second, "--output", str(out))
    lines = text.splitlines()
    assert lines[1].startswith("sft: 9 -> 10 rows  +1 added")
    assert "  run-010: needs_human_review 0.0 -> accepted 1.0" in text
    assert "(reviews/late.jsonl:1) approve by dave" in text
    assert f"row added: sft {moved[0][1]} {moved[0][2]}" in text


def test_diff_details_are_capped_unless_all(review_added):
    _, out, first, second, _ = review_added
    capped = diff(out, first, second)
    everything = diff(out, first, second, everything=True)
    assert capped["verdicts"]["runs"] == everything["verdicts"]["runs"]
    with pytest.raises(TraceError, match="no other kept version"):
        diff(out / "nowhere", first)


def test_the_drift_report_names_the_diff_that_explains_it(review_added):
    instance, out, first, second, thresholds = review_added
    drift = orjson.loads((out / C.REPORTS_DIR / second / "drift.json").read_bytes())
    assert drift["severity"] in (C.SEVERITY_WARN, C.SEVERITY_ALERT)
    summary = (out / C.REPORTS_DIR / second / "summary.md").read_text()
    assert f"`distill diff {first} {second}`" in summary
    first_summary = (out / C.REPORTS_DIR / first / "summary.md").read_text()
    assert "distill diff" not in first_summary  # a baseline has nothing to explain
    resource = DistillResource(output_dir=str(out), **thresholds)
    context = dg.build_sensor_context(instance=instance, resources={"distill": resource})
    result = drift_sensor(context)
    evaluations = [e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
    assert evaluations
    for evaluation in evaluations:
        assert evaluation.metadata["explain"].value == f"distill diff {first} {second}"


# --- property: the evidence a trace lists hashes to what the index says ------------------


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory, project_defs):
    base = tmp_path_factory.mktemp("synth_trace")
    source = base / "src"
    summary = synthesize(SynthSpec(runs=240, days=3, seed=16), source)
    home = base / "home"
    home.mkdir()
    out = base / "out"
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTILL_RECORDED_AT", "2030-01-01T00:00:00Z")
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        try:
            result = materialize_graph(
                project_defs,
                instance,
                source,
                out,
                days=(summary.first_day.isoformat(), summary.last_day.isoformat()),
            )
        finally:
            mp.undo()
    assert result.success
    index = {}
    for day in layout.days_on_disk(out, C.EVIDENCE_DIR, "index.jsonl"):
        for entry in rows(out / layout.evidence_index(day)):
            index[entry["evidence_id"]] = (layout.evidence_records(day), entry["offset"])
    ids = [
        r["id"]
        for path in (C.SFT_PATH, C.PREFERENCE_PATH, C.KTO_PATH, C.RAG_PATH)
        for r in rows(out / path)
    ]
    assert len(ids) > 50
    return out, index, ids


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_traced_evidence_hashes_to_the_index(synth_run, data):
    out, index, ids = synth_run
    row_id = data.draw(st.sampled_from(ids))
    lookup = open_lookup(out)
    try:
        answer = trace(lookup, row_id)
    finally:
        lookup.close()
    assert answer["runs"]
    for run in answer["runs"]:
        assert run["evidence"]
        for item in run["evidence"]:
            assert "problem" not in item
            assert item["sha256"] == item["evidence_id"]
            store, _, offset = item["store"].partition("@")
            assert index[item["sha256"]] == (store, int(offset))


def test_the_lookup_is_built_from_the_score_stage_lists_or_the_files_alike(published, tmp_path):
    run_id, out = published
    receipt = orjson.loads((out / C.REPORTS_DIR / run_id / "publish.json").read_bytes())
    figures = receipt["extra"]["trace_lookup"]
    assert figures["days_read_again"] == 0  # the score stage's lists described every day
    assert figures["runs"] == len(scored(out))
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    root = layout.published_exports(copy).parent

    def table() -> list[tuple]:
        lookup = open_lookup(copy)
        try:
            return sorted(map(str, lookup.table("runs").to_pylist()))
        finally:
            lookup.close()

    built = table()
    for day in layout.days_on_disk(copy, C.SCORED_DIR, C.SCORED_FILE):
        (copy / layout.scored_trace(day)).unlink()
    again = build_lookup(copy, root, run_id)
    assert again.rows["days_read_again"] == len(
        layout.days_on_disk(copy, C.SCORED_DIR, C.SCORED_FILE)
    )
    assert table() == built


def test_trace_reads_the_published_version_or_a_kept_one(review_added, capsys):
    _, out, first, second, _ = review_added
    now = trace(open_lookup(out), "run-010")
    assert now["version"]["run_id"] == second
    assert now["runs"][0]["verdict"]["quality"] == C.QUALITY_ACCEPTED
    code, stdout, _ = run_cli(capsys, "trace", "run-010", "--run", first, "--output", str(out))
    assert code == 0
    assert f"read from the version published by run {first}" in stdout
    assert "verdict needs_human_review" in stdout
    # the scored file was rewritten by the second run: the older version says so
    assert "was rewritten by a later run" in stdout
