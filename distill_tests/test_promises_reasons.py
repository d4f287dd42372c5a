"""Reason codes the docs promise, each produced where it is documented to appear:
``self_pair`` (a pair of one run with itself), ``missing_source_run_id`` (the evidence index of a
day rebuilt after the day was scored, through the real graph) and ``unreadable_file`` (a source
file that cannot be read, in collect and in an importer)."""

from __future__ import annotations

from pathlib import Path

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import ExportSettings
from distill_assets.lib.datasets.preference import candidate_pairs
from distill_assets.lib.datasets.runs import RunKey
from distill_assets.lib.evidence.collect import collect, list_source_files
from distill_assets.lib.evidence.format import ParseSettings
from distill_assets.lib.evidence.importers import make_spec, run_import
from distill_assets.lib.infra import layout
from distill_assets.lib.records.receipts import load_receipt
from distill_tests.conftest import copy_fixtures, materialize_graph


def _key(run_id: str, quality: str, score: float, response_hash: str, day: str) -> RunKey:
    return RunKey(
        run_id,
        "t",
        quality,
        score,
        f"{day}T00:00:00Z",
        None,
        f"evidence/{day}/records.jsonl",
        0,
        "e" * 64,
        response_hash,
        False,
        True,
    )


def test_a_run_paired_with_itself_is_a_self_pair() -> None:
    # one run id scored twice (two records of it, on two days), once well and once badly
    runs = sorted(
        [
            _key("r-1", C.QUALITY_ACCEPTED, 1.0, "h1", "2026-03-01"),
            _key("r-1", C.QUALITY_REJECTED, 0.0, "h2", "2026-03-02"),
            _key("r-2", C.QUALITY_REJECTED, 0.0, "h3", "2026-03-02"),
        ],
        key=RunKey.order,
    )
    pairs = [
        (c.run_id, r.run_id, reasons) for c, r, reasons in candidate_pairs(runs, ExportSettings())
    ]
    assert ("r-1", "r-1", [C.R_SELF_PAIR]) in pairs
    assert ("r-1", "r-2", []) in pairs


def _rows(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_evidence_rebuilt_after_scoring_leaves_runs_out_as_missing_source_run_id(
    project_defs, instance, tmp_path
):
    """The scored rows of 2026-03-01 point at byte offsets of that day's records; collecting the
    day again with one more run in front moves every run, so the exports (run without scoring
    again) cannot fetch those runs' texts and leave them out, never writing another run's text."""
    source = copy_fixtures(tmp_path / "source")
    out = tmp_path / "out"
    assert materialize_graph(project_defs, instance, source, out).success
    day_file = source / "runs" / "2026-03-01.jsonl"
    first = orjson.loads(day_file.read_bytes().splitlines()[0])
    intruder = {**first, "run_id": "run-intruder", "response": "INTRUDER TEXT " * 4}
    day_file.write_bytes(orjson.dumps(intruder) + b"\n" + day_file.read_bytes())
    day = ("2026-03-01", "2026-03-01")
    again = materialize_graph(
        project_defs, instance, source, out, days=day, selection=[C.ASSET_EVIDENCE_INDEX]
    )
    assert again.success
    exports = materialize_graph(
        project_defs,
        instance,
        source,
        out,
        selection=[
            C.ASSET_EXTRACTED_PLAYBOOKS,
            C.ASSET_SFT_DATASET,
            C.ASSET_PREFERENCE_PAIRS,
            C.ASSET_KTO_DATASET,
        ],
    )
    assert exports.success
    scored_day = {
        r["run_id"] for r in _rows(out / layout.scored_runs(layout.day_from_key("2026-03-01")))
    }
    staged = layout.version_root(out, exports.run_id)
    for stage, sides in (
        (C.STAGE_EXPORT_SFT, ("run_id",)),
        (C.STAGE_EXPORT_KTO, ("run_id",)),
        (C.STAGE_EXPORT_PREFERENCE, ("chosen_run_id", "rejected_run_id")),
    ):
        receipt = load_receipt(out / C.REPORTS_DIR / exports.run_id / f"{stage}.json")
        missing = [
            r
            for r in _rows(staged / C.quarantine_path(stage))
            if C.R_MISSING_SOURCE_RUN_ID in r["reasons"]
        ]
        assert missing, stage
        assert receipt.stats.reasons[C.R_MISSING_SOURCE_RUN_ID] == len(missing)
        for row in missing:  # each names a run of the rebuilt day
            assert any(row[side] in scored_day for side in sides)
        assert receipt.stats.records_in == (
            receipt.stats.records_out + receipt.stats.quarantined + receipt.stats.skipped
        )
    for path in (staged / C.EXPORTS_DIR).rglob("*.jsonl"):
        assert b"INTRUDER" not in path.read_bytes(), path


def test_an_unreadable_source_file_is_skipped_with_its_reason(tmp_path: Path) -> None:
    """A link to a file that is gone (chmod would not do: the tests may run as root)."""
    source = copy_fixtures(tmp_path / "source")
    (source / "runs" / "gone.jsonl").symlink_to(source / "runs" / "deleted-since.jsonl")
    out = tmp_path / "out"
    result = collect(list_source_files(source), out, None, ParseSettings())
    assert result.tally.reasons[C.R_UNREADABLE_FILE] == 1
    rows = [
        r
        for r in _rows(out / layout.evidence_quarantine(None))
        if r["reasons"] == [C.R_UNREADABLE_FILE]
    ]
    assert [(r["source_path"], r["line"], r["disposition"]) for r in rows] == [
        ("runs/gone.jsonl", None, C.DISPOSITION_SKIPPED)
    ]
    t = result.tally
    assert t.records_in == t.records_out + t.quarantined + t.skipped


def test_an_unreadable_import_file_is_skipped_with_its_reason(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    good = [{"task_id": 1, "trial": 0, "reward": 0.0, "traj": [], "info": {}}]
    (folder / "a-airline.json").write_bytes(orjson.dumps(good))
    (folder / "b-airline.json").symlink_to(folder / "deleted-since.json")
    batch = run_import(make_spec(C.IMPORT_TAU_BENCH, folder))
    (failure,) = batch.failures
    assert failure.reason == C.R_UNREADABLE_FILE
    assert failure.disposition == C.DISPOSITION_SKIPPED
    assert failure.message.startswith("tau-bench:b-airline.json: cannot be read")
    assert {item.origin.path for item in batch.objects} == {"tau-bench:a-airline.json"}
