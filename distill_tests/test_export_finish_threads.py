"""The export pass finishes its exports in two threads (lib/datasets/export_pass._finish): the
extraction, export-rag and export-sft in one, the others in the other. A failure in one export
is raised once both are done, hears of no export after it, and leaves no temporary file
behind."""

from __future__ import annotations

import shutil

import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.export_pass import ExportPlan, run_exports
from distill_assets.lib.datasets.exporter import ExportSettings
from distill_assets.lib.datasets.preference import PreferenceExporter
from distill_assets.lib.playbooks.playbook import PlaybookSettings


def _tmp_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.tmp"))


def test_a_failing_finish_is_raised_and_cleaned_up(fixture_run, tmp_path, monkeypatch):
    _, out, _ = fixture_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    heard: list[str] = []

    # every export once, as the graph runs them: all finish, heard in stage order
    first = tmp_path / "first"
    plan = ExportPlan.every(first, ExportSettings(), PlaybookSettings())
    results = run_exports(copy, plan, finished=lambda stage, _: heard.append(stage))
    assert heard == list(results) == plan.stages
    assert _tmp_files(first) == []

    def broken(self, stream_inputs):
        raise RuntimeError("disk full while finishing the preference pairs")

    monkeypatch.setattr(PreferenceExporter, "result", broken)
    heard.clear()
    second = tmp_path / "second"
    plan = ExportPlan.every(second, ExportSettings(), PlaybookSettings())
    with pytest.raises(RuntimeError, match="disk full"):
        run_exports(copy, plan, finished=lambda stage, _: heard.append(stage))
    # heard: the exports before the broken one in stage order (the extraction, export-rag and
    # export-sft finish in the other thread), none after it
    order = plan.stages
    assert C.STAGE_EXPORT_PREFERENCE not in heard
    assert heard == order[: len(heard)]
    assert set(heard) <= {C.STAGE_EXTRACT_PLAYBOOKS, C.STAGE_EXPORT_RAG, C.STAGE_EXPORT_SFT}
    # the exports after the broken one in its thread never wrote their datasets
    assert not (second / C.KTO_PATH).exists()
    assert not (second / C.REVIEW_QUEUE_PATH).exists()
    assert _tmp_files(second) == []
