"""Retrieval that works: the whole graph over the playbook corpus (fixtures/playbooks), recall of
the published index on questions whose right playbook is known, and `distill search` on it (the
τ-bench sample is searched in test_import_tau_bench.py, beside the graph run it shares)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import orjson
import pytest

from distill_assets.cli import main
from distill_assets.lib import constants as C
from distill_assets.lib.infra.runconfig import run_config_of
from distill_assets.lib.playbooks import search as S
from distill_assets.lib.playbooks.search import published_index, search
from distill_assets.lib.records.reports import load_summary
from distill_tests.conftest import FIXTURES, REPO_ROOT, materialize_graph

CORPUS = REPO_ROOT / "fixtures" / "playbooks"
# measured on the 35 questions of fixtures/playbooks/questions.jsonl; both misses are real:
# "credentials were exposed publicly and need rotating" shares no stem with the API key
# playbook (recall@5 miss), and "customer received a broken item and wants their money back"
# ranks the subscription playbook (refund wording) above the refund one (recall@1 miss)
RECALL_AT_5 = 34 / 35
RECALL_AT_1 = 33 / 35


# the retrieval evaluation indexes every playbook of the corpus: no task is held out
NO_HOLDOUT = run_config_of(
    {
        asset: {"holdout_fraction": 0.0}
        for asset in (
            C.ASSET_EXTRACTED_PLAYBOOKS,
            C.ASSET_RAG_PLAYBOOKS,
            C.ASSET_SFT_DATASET,
            C.ASSET_PREFERENCE_PAIRS,
            C.ASSET_KTO_DATASET,
        )
    }
)


def rows(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, project_defs):
    base = tmp_path_factory.mktemp("playbooks")
    home = base / "home"
    home.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTILL_RECORDED_AT", "2026-03-10T00:00:00Z")
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        try:
            result = materialize_graph(
                project_defs, instance, CORPUS / "evidence", base / "out", run_config=NO_HOLDOUT
            )
        finally:
            mp.undo()
    assert result.success
    return result, base / "out"


def test_the_committed_corpus_is_what_its_table_makes():
    spec = importlib.util.spec_from_file_location("make_evidence", CORPUS / "make_evidence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, built in module.build().items():
        assert rows(CORPUS / "evidence" / name) == built, name


def test_extraction_over_the_corpus(corpus_run):
    result, out = corpus_run
    receipt = orjson.loads(
        (out / C.REPORTS_DIR / result.run_id / f"{C.STAGE_EXTRACT_PLAYBOOKS}.json").read_bytes()
    )
    # 42 runs of 24 tasks: 22 tasks have a verified run, so 22 playbooks from 23 sources
    # (PB-cve-upgrade has an accepted and a partially accepted run); their 17 failed runs are
    # compared; PB-gpu-quota (rejected only) and PB-vendor-contract (unreviewed) have none
    stats = receipt["stats"]
    assert (stats["records_in"], stats["records_out"], stats["quarantined"]) == (42, 40, 2)
    assert (stats["accepted"], stats["rejected"]) == (23, 17)
    assert stats["reasons"] == {C.R_QUALITY_REJECTED: 1, C.R_NEEDS_HUMAN_REVIEW: 1}
    extracted = {r["task_id"]: r for r in rows(out / C.EXTRACTED_PATH)}
    assert len(extracted) == 22 and "PB-gpu-quota" not in extracted
    kinds = {
        task: [(d["kind"], d["step"]) for d in row["divergences"]]
        for task, row in extracted.items()
    }
    assert kinds["PB-certs"] == [("stopped_early", 4)]
    assert kinds["PB-mfa-reset"] == [("different_tool", 2)]
    assert kinds["PB-kafka-lag"] == [("different_arguments", 4)]
    assert kinds["PB-cron-systemd"] == [("extra_step", 6)]
    assert kinds["PB-refund"] == [("different_arguments", 2), ("stopped_early", 2)]
    assert kinds["PB-dns-stale"] == []
    tickets = extracted["PB-anthropic-tickets"]  # tool_use / tool_result blocks
    assert [s["tool"] for s in tickets["steps"]] == ["search_tickets", "merge_tickets"]
    assert tickets["steps"][1]["result"] == "merged"
    assert extracted["PB-translate-email"]["steps"] == []
    assert extracted["PB-cve-upgrade"]["source_run_ids"] == ["pb-cve-upgrade-0", "pb-cve-upgrade-1"]
    summary = load_summary(out, result.run_id)
    assert summary.overall_passed and summary.datasets["rag_index"] == 22


def test_recall_of_the_published_index(corpus_run):
    _, out = corpus_run
    index = published_index(out)
    assert index is not None and C.VERSIONS_DIR in index.parts  # the published version's
    questions = rows(CORPUS / "questions.jsonl")
    assert len(questions) == 35
    at1 = at5 = 0
    for question in questions:
        found = [hit.task_id for hit in search(index, question["question"], k=5)]
        at1 += found[:1] == [question["task_id"]]
        at5 += question["task_id"] in found
    assert (at5 / len(questions), at1 / len(questions)) == (RECALL_AT_5, RECALL_AT_1)


def test_distill_search_cli(corpus_run, capsys):
    _, out = corpus_run
    query = "kafka consumer lag keeps growing after a deploy"
    assert main(["search", query, "-k", "3", "--json", "--output", str(out)]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["task_id"] == "PB-kafka-lag" and hits[0]["source_run_ids"] == ["pb-kafka-lag-0"]
    assert hits[0]["score"] > hits[1]["score"]
    assert set(hits[0]) == {
        "rank",
        "score",
        "id",
        "task_id",
        "title",
        "quality",
        "playbook_score",
        "source_run_ids",
    }
    assert main(["search", query, "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith(" 1. ") and "task PB-kafka-lag" in text
    assert main(["search", "zzzz qqqq", "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "no playbook matches"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "x", "-k", "0"], "-k must be between 1 and 1000"),
        (["search", "?!"], "no words"),
    ],
)
def test_search_errors_are_one_line(corpus_run, capsys, argv, message):
    _, out = corpus_run
    assert main([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("distill: error:") and message in err and "\n" not in err


def test_search_without_an_index(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["search", "x", "--output", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no published search index" in err and "\n" not in err
    assert main(["search", "x", "--output", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_blocked_index_is_never_published(corpus_run, tmp_path, project_defs, monkeypatch):
    """An index that fails its checks stays in its run's version: readers keep the old one."""
    import distill_assets.lib.playbooks.search as search_module

    _, base_out = corpus_run
    out = tmp_path / "out"
    shutil.copytree(base_out, out, symlinks=True)
    published_before = published_index(out)
    real = search_module._insert

    def lossy(db, rowid, offset, row):  # the bug: one playbook never reaches the index
        if row["task_id"] != "PB-kafka-lag":
            real(db, rowid, offset, row)

    monkeypatch.setattr(search_module, "_insert", lossy)
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = materialize_graph(
            project_defs, instance, CORPUS / "evidence", out, run_config=NO_HOLDOUT
        )
    assert not result.success
    failed = {
        e.check_name
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == C.ASSET_PLAYBOOK_INDEX and not e.passed
    }
    # the file is a sound index of the wrong content; drift also sees the same input give
    # another output (a deterministic violation), which does not block
    assert failed == {C.CHECK_INDEX_CONSISTENT, C.CHECK_DRIFT}
    assert published_index(out) == published_before
    assert search(published_index(out), "kafka consumer lag")[0].task_id == "PB-kafka-lag"
    summary = load_summary(out, result.run_id)
    assert any(item.stage == C.STAGE_PUBLISH for item in summary.not_run)


def test_bench_search_runs_small(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill_assets.bench_search",
            "--playbooks",
            "300",
            "--queries",
            "20",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.strip().splitlines()
    report = json.loads(line)
    assert report["playbooks"] == 300 and report["queries"] == 20
    for key in ("build_s", "index_bytes", "query_ms_p50", "query_ms_p95", "recall_at_5"):
        assert report[key] >= 0
    assert report["query_ms_p50"] <= report["query_ms_p95"]


DENSE_MISSING = S.dense_unavailable(S.DEFAULT_DENSE_PACKAGE)


@pytest.mark.skipif(DENSE_MISSING is None, reason="the dense extra is installed here")
def test_dense_without_its_package_fails_before_writing(tmp_path, project_defs, instance):
    out = tmp_path / "out"
    result = materialize_graph(
        project_defs,
        instance,
        CORPUS / "evidence",
        out,
        run_config={"ops": {C.ASSET_PLAYBOOK_INDEX: {"config": {"dense": True}}}},
    )
    assert not result.success
    failure = next(
        e for e in result.all_events if e.event_type_value == "STEP_FAILURE"
    ).event_specific_data.error.message
    assert "invalid setting index settings" in failure and "not installed" in failure
    assert not (out / C.EVIDENCE_DIR).exists()  # preflight stopped collect too


@pytest.mark.skipif(DENSE_MISSING is not None, reason=f"dense retrieval: {DENSE_MISSING}")
def test_dense_and_hybrid_retrieval(corpus_run, tmp_path):
    """With the dense extra installed: embeddings stored in the index, recall of each mode."""
    _, out = corpus_run
    settings = S.IndexSettings(dense=True)
    encoder = S.Encoder(settings.dense_package)
    first = S.write_index(out / C.RAG_PATH, tmp_path / "a.sqlite", settings, encoder)
    second = S.write_index(out / C.RAG_PATH, tmp_path / "b.sqlite", settings, encoder)
    assert first.sha256 == second.sha256  # embeddings are deterministic on the CPU
    questions = rows(CORPUS / "questions.jsonl")
    recall = {}
    for mode in S.MODES:
        found = 0
        for question in questions:
            hits = S.search(tmp_path / "a.sqlite", question["question"], 5, mode, encoder)
            found += question["task_id"] in [hit.task_id for hit in hits]
        recall[mode] = found / len(questions)
    print(f"recall@5 by mode: {recall}")
    assert recall["bm25"] == RECALL_AT_5
    assert recall["dense"] >= 0.9 and recall["hybrid"] >= 0.9


def test_a_rejected_run_quoted_as_a_playbook_is_stopped(
    project_defs, instance, tmp_path, monkeypatch
):
    """A bug in extraction that takes rejected runs as sources fails the firewall check, and
    nothing is published. (export-rag is made in the same step as the extraction, the export
    pass, so the extraction's check cannot keep it from being written; it renders only the
    trusted sources, and publishing waits for every export's checks.)"""
    import distill_assets.lib.playbooks.extraction as extraction

    real = extraction.ExtractExporter._sort_task

    def buggy(self, runs):  # the bug: rejected runs count as sources
        task = real(self, runs)
        return extraction._Task(task.sources + task.failed, [])

    monkeypatch.setattr(extraction.ExtractExporter, "_sort_task", buggy)
    out = tmp_path / "out"
    result = materialize_graph(project_defs, instance, FIXTURES, out)
    assert not result.success
    [firewall] = [
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == C.ASSET_EXTRACTED_PLAYBOOKS
        and e.check_name == C.CHECK_FIREWALL
    ]
    assert not firewall.passed
    # the fixture's four rejected runs, each in a task with a verified run
    assert firewall.metadata["num_failures"].value == 4
    assert {v["rule"] for v in firewall.metadata["violations"].value} == {"untrusted_source"}
    summary = load_summary(out, result.run_id)
    not_run = {item.stage: item.reason for item in summary.not_run}
    assert "extracted_playbooks.contamination_firewall" in not_run[C.STAGE_PUBLISH]
    assert C.STAGE_EXPORT_SFT not in not_run  # SFT does not read the extraction
    rag_checks = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == C.ASSET_RAG_PLAYBOOKS
    }
    assert rag_checks[C.CHECK_FIREWALL]  # only trusted sources were rendered
    assert published_index(out) is None and not (out / C.MANIFEST_PATH).exists()


def test_playbooks_rebuilt_without_their_index_are_not_published(
    corpus_run, tmp_path, project_defs, instance
):
    _, base_out = corpus_run
    out = tmp_path / "out"
    shutil.copytree(base_out, out, symlinks=True)
    before = published_index(out)
    result = materialize_graph(
        project_defs,
        instance,
        CORPUS / "evidence",
        out,
        selection=[C.ASSET_EXTRACTED_PLAYBOOKS, C.ASSET_RAG_PLAYBOOKS, C.ASSET_DATASET_MANIFEST],
        run_config=run_config_of({C.ASSET_EXTRACTED_PLAYBOOKS: {"max_steps": 1}}),
    )
    assert not result.success  # the new playbooks would be served by the old index
    receipt = orjson.loads(
        (out / C.REPORTS_DIR / result.run_id / f"{C.STAGE_PUBLISH}.json").read_bytes()
    )
    assert any("built from other playbooks" in e for e in receipt["validation"]["errors"])
    assert published_index(out) == before
