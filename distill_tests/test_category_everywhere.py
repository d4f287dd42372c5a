"""The category deny-list on every published artifact (issue 14): the fixture's
credential-harvesting run (run-013, task T-phish, category malware, accepted) stays out of the
extraction, the RAG playbooks, the search index and the preference pairs by default; an export
may override its own list; and the firewall catches a denied run with its own reading of the
rule even when the exporters' rule is broken."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.datasets import exporter as exports_lib
from distill_assets.lib.datasets.export_pass import ExportPlan, run_exports
from distill_assets.lib.datasets.exporter import ExportSettings
from distill_assets.lib.infra.io import iter_jsonl
from distill_assets.lib.playbooks import extraction as extraction_lib
from distill_assets.lib.playbooks.extraction import verify_extracted
from distill_assets.lib.playbooks.playbook import PlaybookSettings
from distill_assets.lib.playbooks.search import published_index, search
from distill_assets.lib.verify.firewall import (
    verify_kto,
    verify_preference,
    verify_rag,
    verify_sft,
)

DENIED_RUN, DENIED_TASK = "run-013", "T-phish"


def _rows(path: Path) -> list[dict]:
    return list(iter_jsonl(path)) if path.exists() else []


def _runs_named(root: Path, relpaths: tuple[str, ...]) -> set[str]:
    named: set[str] = set()
    for relpath in relpaths:
        for row in _rows(root / relpath):
            for key in ("source_run_ids", "failed_run_ids"):
                named.update(row.get(key) or [])
            for key in ("source_run_id", "chosen_run_id", "rejected_run_id"):
                if row.get(key):
                    named.add(row[key])
    return named


PUBLISHED = (
    C.EXTRACTED_PATH,
    C.EXTRACTED_HOLDOUT_PATH,
    C.RAG_PATH,
    C.RAG_HOLDOUT_PATH,
    C.SFT_PATH,
    C.SFT_HOLDOUT_PATH,
    C.PREFERENCE_PATH,
    C.PREFERENCE_HOLDOUT_PATH,
    C.KTO_PATH,
    C.KTO_HOLDOUT_PATH,
)


def test_the_denied_run_is_published_nowhere_and_search_does_not_return_it(fixture_run) -> None:
    _, out, _ = fixture_run
    assert DENIED_RUN not in _runs_named(out, PUBLISHED)
    tasks = {row["task_id"] for relpath in PUBLISHED for row in _rows(out / relpath)}
    assert DENIED_TASK not in tasks
    hits = search(published_index(out), "fix the login bug", k=10)
    assert hits and DENIED_TASK not in {hit.task_id for hit in hits}
    # left out with a reason where it was a candidate
    for stage in (C.STAGE_EXTRACT_PLAYBOOKS, C.STAGE_EXPORT_PREFERENCE):
        rows = _rows(out / C.quarantine_path(stage))
        (row,) = [r for r in rows if r.get("run_id") == DENIED_RUN]
        assert row["reasons"] == [C.R_DENIED_CATEGORY]


@pytest.fixture
def copied(fixture_run, tmp_path: Path) -> Path:
    """The fixture run's scored runs and evidence, for exports run again under other rules."""
    _, out, _ = fixture_run
    root = tmp_path / "out"
    for name in (C.SCORED_DIR, C.EVIDENCE_DIR):
        shutil.copytree(out / name, root / name)
    return root


def _export(root: Path, write: Path, playbooks: PlaybookSettings, export: ExportSettings) -> None:
    plan = ExportPlan(
        write_root=write,
        extract=(playbooks, None, None),
        rag=(export, None),
        sft=(export, None),
        preference=(export, None),
        kto=(export, None),
    )
    results = run_exports(root, plan)
    assert all(not r.errors for r in results.values()), {s: r.errors for s, r in results.items()}


def test_each_export_may_override_its_deny_list(copied: Path) -> None:
    write = copied / "open"
    _export(
        copied, write, PlaybookSettings(deny_categories=()), ExportSettings(sft_deny_categories=())
    )
    assert DENIED_TASK in {row["task_id"] for row in _rows(write / C.RAG_PATH)} | {
        row["task_id"] for row in _rows(write / C.RAG_HOLDOUT_PATH)
    }
    assert DENIED_RUN in _runs_named(write, (C.EXTRACTED_PATH, C.EXTRACTED_HOLDOUT_PATH))
    # under the default lists the same scored runs give no trace of it
    closed = copied / "closed"
    _export(copied, closed, PlaybookSettings(), ExportSettings())
    assert DENIED_RUN not in _runs_named(closed, PUBLISHED)
    # the firewall reads the list each export used: the open files pass under the open list
    assert verify_rag(copied, ExportSettings(sft_deny_categories=()), write).passed
    assert verify_extracted(copied, write, deny=()).passed


def test_the_firewall_catches_denied_runs_when_the_exporters_rule_is_broken(
    copied: Path, monkeypatch
) -> None:
    never = lambda category, denied: False  # noqa: E731
    monkeypatch.setattr(exports_lib, "category_denied", never)
    monkeypatch.setattr(extraction_lib, "category_denied", never)
    write = copied / "broken"
    _export(copied, write, PlaybookSettings(), ExportSettings())
    assert DENIED_RUN in _runs_named(write, (C.RAG_PATH, C.RAG_HOLDOUT_PATH))
    settings = ExportSettings()
    for report in (
        verify_rag(copied, settings, write),
        verify_extracted(copied, write),
    ):
        rules = {(v["rule"], v["run_id"]) for v in report.violations}
        assert (C.R_DENIED_CATEGORY, DENIED_RUN) in rules


def test_the_firewall_reads_the_category_of_the_scored_run_not_the_rows_claim(
    copied: Path,
) -> None:
    write = copied / "w"
    _export(copied, write, PlaybookSettings(), ExportSettings())
    settings = ExportSettings()
    # an SFT and a KTO row that claim a harmless category for the denied run
    for relpath, verify, extra in (
        (C.SFT_PATH, verify_sft, {}),
        (C.KTO_PATH, verify_kto, {"label": True}),
    ):
        path = write / relpath
        rows = _rows(path)
        rows[0] = {**rows[0], "source_run_id": DENIED_RUN, "task_id": DENIED_TASK,
                   "category": "coding", **extra}  # fmt: skip
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        found = {(v["row"], v["rule"]) for v in verify(copied, settings, write).violations}
        assert (1, C.R_UNSAFE_SFT_CATEGORY) in found, (relpath, found)
    # a KTO negative (label false) of the denied run: the deny-list covers negatives too
    path = write / C.KTO_PATH
    rows = _rows(path)
    rows[0] = {**rows[0], "source_run_id": DENIED_RUN, "task_id": DENIED_TASK, "label": False}
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    found = {(v["row"], v["rule"]) for v in verify_kto(copied, settings, write).violations}
    assert (1, C.R_DENIED_CATEGORY) in found, found
    open_kto = ExportSettings(sft_deny_categories=())
    found = {(v["row"], v["rule"]) for v in verify_kto(copied, open_kto, write).violations}
    assert (1, C.R_DENIED_CATEGORY) not in found
    # a pair with the denied run on its rejected side
    path = write / C.PREFERENCE_PATH
    rows = _rows(path)
    rows[0] = {**rows[0], "rejected_run_id": DENIED_RUN}
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    found = {(v["row"], v["rule"]) for v in verify_preference(copied, settings, write).violations}
    assert (1, C.R_DENIED_CATEGORY) in found
    # an empty deny-list for the pairs: nothing to catch
    open_list = ExportSettings(sft_deny_categories=())
    found = {v["rule"] for v in verify_preference(copied, open_list, write).violations}
    assert C.R_DENIED_CATEGORY not in found


def test_the_deny_list_ignores_case_and_surrounding_whitespace() -> None:
    settings = ExportSettings(sft_deny_categories=("Malware",))
    assert settings.denies(" MALWARE\t") and not settings.denies("coding")
    assert not settings.denies(None)
