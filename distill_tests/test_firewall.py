"""The firewall checks catch rows that break it, on a synthetic corpus."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import orjson
import pytest

from distill_assets.devtools.synth import SynthSpec, synthesize
from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import ExportSettings
from distill_assets.lib.datasets.preference import export_preference
from distill_assets.lib.datasets.rag import export_rag
from distill_assets.lib.datasets.runs import scored_files
from distill_assets.lib.datasets.sft import export_sft
from distill_assets.lib.evidence.collect import collect, list_source_files
from distill_assets.lib.evidence.format import ParseSettings
from distill_assets.lib.playbooks.extraction import extract_playbooks
from distill_assets.lib.playbooks.playbook import PlaybookSettings
from distill_assets.lib.scoring import ScoringPolicy, score
from distill_assets.lib.verify.firewall import (
    scored_lookup,
    verify_pair_rules,
    verify_preference,
    verify_rag,
    verify_sft,
)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("firewall")
    synthesize(SynthSpec(runs=1200, days=3, seed=4), base / "src")
    out = base / "out"
    result = collect(list_source_files(base / "src"), out, None, ParseSettings())
    days = [d for d in result.extra["per_partition"] if d != C.UNDATED_BUCKET]
    score(out, [date.fromisoformat(d) for d in days], ScoringPolicy())
    assert extract_playbooks(out, PlaybookSettings()).errors == []
    for export in (export_rag, export_sft, export_preference):
        assert export(out, ExportSettings()).errors == []
    return out


def _scored(out: Path) -> list[dict]:
    rows = []
    for relpath in scored_files(out):
        rows += [orjson.loads(raw) for raw in (out / relpath).read_bytes().splitlines()]
    return rows


def _rewrite(path: Path, rows: list[dict]) -> None:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


def test_clean_exports_pass(out: Path) -> None:
    settings = ExportSettings()
    for verify in (verify_sft, verify_rag, verify_preference, verify_pair_rules):
        report = verify(out, settings)
        assert report.rows > 0 and report.passed, report.violations


def test_lookup_knows_every_scored_run(out: Path) -> None:
    scored = _scored(out)
    lookup = scored_lookup(out)
    assert len(lookup) == len(scored)
    for row in scored:
        found = lookup[row["run_id"]]
        assert found.quality == row["quality_score"] and found.score == row["score"]
        assert found.task_id == row["task_id"]
    assert scored_lookup(out) is lookup  # reused while the scored files stay the same
    path = out / scored_files(out)[0]
    original = path.read_bytes()
    try:
        path.write_bytes(original.split(b"\n", 1)[1])  # one run fewer: built again
        assert len(scored_lookup(out)) == len(scored) - 1
    finally:
        path.write_bytes(original)
    assert len(scored_lookup(out)) == len(scored)


def _judged_edited(out: Path, relpath: str, edit: Callable[[list[dict]], None], verify):
    """``verify``'s report on the dataset ``relpath`` with its rows changed by ``edit``; the
    file is restored afterwards."""
    path = out / relpath
    original = path.read_bytes()
    rows = [orjson.loads(raw) for raw in original.splitlines()]
    edit(rows)
    try:
        _rewrite(path, rows)
        return verify(out, ExportSettings())
    finally:
        path.write_bytes(original)


def test_broken_rows_are_caught(out: Path, tmp_path: Path) -> None:
    scored = _scored(out)
    by_quality: dict[str, dict] = {}
    for row in scored:
        by_quality.setdefault(row["quality_score"], row)
    rejected = by_quality[C.QUALITY_REJECTED]
    review = by_quality[C.QUALITY_REVIEW]

    def break_sft(rows: list[dict]) -> None:
        rows[0]["source_run_id"] = rejected["run_id"]
        rows[0]["task_id"] = rejected["task_id"]
        rows[1]["source_run_id"] = "run-that-never-was"
        rows[2]["task_id"] = "another-task"
        rows[3]["category"] = "malware"

    report = _judged_edited(out, C.SFT_PATH, break_sft, verify_sft)
    rules = [(v["row"], v["rule"]) for v in report.violations]
    assert rules == [
        (1, "not_accepted_in_sft"),
        (2, "source_run_unknown"),
        (3, "task_mismatch"),
        (4, C.R_UNSAFE_SFT_CATEGORY),
    ]

    def break_rag(rows: list[dict]) -> None:
        rows[0]["source_run_ids"] = [review["run_id"]]
        rows[0]["task_id"] = review["task_id"]

    report = _judged_edited(out, C.RAG_PATH, break_rag, verify_rag)
    assert [(v["row"], v["rule"]) for v in report.violations] == [(1, "untrusted_run_in_rag")]

    def break_pairs(rows: list[dict]) -> None:
        row = rows[0]
        row["chosen_run_id"], row["rejected_run_id"] = row["rejected_run_id"], row["chosen_run_id"]
        elsewhere = next(r for r in scored if r["task_id"] != rows[1]["task_id"])
        rows[1]["rejected_run_id"] = elsewhere["run_id"]
        rows[2]["rejected_run_id"] = rows[2]["chosen_run_id"]  # a run paired with itself

    report = _judged_edited(out, C.PREFERENCE_PATH, break_pairs, verify_pair_rules)
    found = {(v["row"], v["rule"]) for v in report.violations}
    assert (1, "chosen_not_better") in found
    assert (2, "cross_task_pair") in found
    assert (3, C.R_SELF_PAIR) in found
    assert not {rule for row, rule in found if row > 3}  # the untouched rows stay clean
