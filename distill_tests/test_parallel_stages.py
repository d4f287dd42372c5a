"""Scoring and schema validation give the same results in worker processes as in-process."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import orjson
import pytest

from distill_assets.devtools.synth import SynthSpec, synthesize
from distill_assets.lib.evidence.collect import collect, list_source_files
from distill_assets.lib.evidence.format import ParseSettings
from distill_assets.lib.infra import layout
from distill_assets.lib.scoring import ScoringPolicy, score
from distill_assets.lib.verify.schemas import EvidenceIndexSchema, ScoredRunSchema, validate_jsonl


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    base = tmp_path_factory.mktemp("stages")
    synthesize(SynthSpec(runs=2400, days=12, seed=9), base / "src")
    out = base / "collected"
    result = collect(list_source_files(base / "src"), out, None, ParseSettings())
    days = sorted(
        layout.day_from_key(key) for key in result.extra["per_partition"] if key[0] != "u"
    )
    return out, days


def test_scoring_in_workers_writes_the_same_bytes(tmp_path: Path, collected) -> None:
    out, days = collected
    trees = []
    for workers in (1, 2):
        target = tmp_path / f"w{workers}"
        target.mkdir()
        (target / "evidence").symlink_to(out / "evidence")
        result = score(target, days, ScoringPolicy(), workers=workers, pool_min_bytes=0)
        trees.append((_tree(target / "scored-runs"), result.tally, result.inputs))
    assert trees[0] == trees[1]
    assert sum(trees[0][1].reasons.values()) > 0  # the corpus has orphans and conflicts


def test_validation_in_workers_finds_the_same_failures(tmp_path: Path, collected) -> None:
    out, days = collected
    paths = [out / layout.evidence_index(day) for day in days]
    broken = tmp_path / "index.jsonl"
    rows = [orjson.loads(raw) for raw in paths[3].read_bytes().splitlines()]
    rows[5]["kind"] = "heartbeat"
    rows[7]["offset"] = -1
    rows[9]["evidence_id"] = rows[8]["evidence_id"]
    broken.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    files = [*paths[:2], broken, paths[4]]
    serial = validate_jsonl(EvidenceIndexSchema, files, chunk_bytes=300_000)
    parallel = validate_jsonl(EvidenceIndexSchema, files, chunk_bytes=300_000, workers=2)
    assert serial == parallel
    assert serial.rows == sum(len(p.read_bytes().splitlines()) for p in files)
    assert serial.num_failures >= 3
    found = {(case["file"], case["row"], case["column"]) for case in serial.failure_cases}
    assert ("index.jsonl", 5, "kind") in found
    assert ("index.jsonl", 7, "offset") in found


def test_scored_files_validate(collected, tmp_path: Path) -> None:
    out, days = collected
    target = tmp_path / "scored"
    target.mkdir()
    (target / "evidence").symlink_to(out / "evidence")
    score(target, days, ScoringPolicy())
    outcome = validate_jsonl(ScoredRunSchema, [target / layout.scored_runs(day) for day in days])
    assert outcome.passed and outcome.rows > 2000


def test_workers_start_from_a_fork_server_when_threads_run(collected, tmp_path: Path) -> None:
    """Forking a process in which other threads run is unsafe, so the pool then uses a fork
    server; the files written are the same."""
    import threading

    from distill_assets.lib.infra.parallel import pool_context

    out, days = collected
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        assert pool_context().get_start_method() == "forkserver"
        target = tmp_path / "forkserver"
        target.mkdir()
        (target / "evidence").symlink_to(out / "evidence")
        score(target, days, ScoringPolicy(), workers=2, pool_min_bytes=0)
    finally:
        stop.set()
        thread.join()
    reference = tmp_path / "inline"
    reference.mkdir()
    (reference / "evidence").symlink_to(out / "evidence")
    score(reference, days, ScoringPolicy(), workers=1)
    assert _tree(target / "scored-runs") == _tree(reference / "scored-runs")


def test_export_pass_in_workers_writes_the_same_bytes(tmp_path: Path, collected) -> None:
    """Every export of the pass, over task ranges in 1, 2 and 3 worker processes: the same
    datasets, holdouts, quarantines and counts; a run of a task range leaves no file behind."""
    from distill_assets.lib.datasets.export_pass import ExportPlan, run_exports
    from distill_assets.lib.datasets.exporter import ExportSettings
    from distill_assets.lib.playbooks.playbook import PlaybookSettings

    out, days = collected
    scored = tmp_path / "scored"
    shutil.copytree(out / "evidence", scored / "evidence")  # records are read only inside
    score(scored, days, ScoringPolicy())
    export = ExportSettings()
    outcomes = []
    for workers in (1, 2, 3):
        write_root = tmp_path / f"exports-{workers}"
        plan = ExportPlan.every(write_root, export, PlaybookSettings())
        results = run_exports(scored, plan, workers=workers, pool_min_runs=0)
        counts = {
            stage: (r.tally, r.extra.get("pairs_quarantined"), r.extra.get("steps"))
            for stage, r in results.items()
        }
        outcomes.append((_tree(write_root), counts))
        assert not [p for p in write_root.rglob(".*") if p.is_file()]  # no spool left behind
    assert outcomes[0] == outcomes[1] == outcomes[2]
    tree, counts = outcomes[0]
    # every export's files: five datasets with holdouts and quarantines, the queue and its own,
    # and the five row lists the trace lookup is built from (exports/.trace/<stage>.arrow)
    assert len(tree) == 22
    assert len([path for path in tree if path.startswith("exports/.trace/")]) == 5
    empty = hashlib.sha256(b"").hexdigest()
    assert [k for k in ("sft", "kto", "rag") if tree[f"exports/{k}/holdout.jsonl"] == empty] == []
    assert counts["export-preference"][0].reasons["near_duplicate"] > 0
