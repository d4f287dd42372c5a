"""Receipt hashing and the report models."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from distill_assets.lib.records.drift import DriftReport
from distill_assets.lib.records.receipts import FileEntry, StageReceipt, aggregate_hash
from distill_assets.lib.records.reports import RunSummary

A = FileEntry(path="a.jsonl", sha256="a" * 64, bytes=1, record_count=1)
B = FileEntry(path="b.jsonl", sha256="b" * 64, bytes=1, record_count=1)


def test_hash_ignores_order():
    assert aggregate_hash([A, B]) == aggregate_hash([B, A])


@pytest.mark.parametrize(
    "changed",
    [
        FileEntry(path="a2.jsonl", sha256="a" * 64, bytes=1, record_count=1),
        FileEntry(path="a.jsonl", sha256="c" * 64, bytes=1, record_count=1),
    ],
)
def test_hash_changes_with_path_or_content(changed):
    assert aggregate_hash([changed, B]) != aggregate_hash([A, B])


def test_hash_does_not_confuse_paths_with_content():
    left = FileEntry(path="x", sha256="a" * 64, bytes=0, record_count=0)
    assert aggregate_hash([left]) != aggregate_hash([A])
    assert aggregate_hash([A, A]) != aggregate_hash([A])


def test_models_are_strict(fixture_run):
    result, out, _ = fixture_run
    directory = out / "reports" / result.run_id
    receipt = (directory / "score.json").read_text()
    StageReceipt.model_validate_json(receipt)
    with pytest.raises(ValidationError):
        StageReceipt.model_validate_json(receipt.replace('"stage"', '"stage_name"', 1))
    with pytest.raises(ValidationError):
        StageReceipt.model_validate_json(
            receipt.replace('"schema_version": 1', '"schema_version": 2')
        )
    RunSummary.model_validate_json((directory / "summary.json").read_text())
    DriftReport.model_validate_json((directory / "drift.json").read_text())
    with pytest.raises(ValidationError):
        DriftReport.model_validate_json(
            (directory / "drift.json").read_text().replace('"severity": "ok"', '"severity": "meh"')
        )


def test_code_version_covers_the_whole_package():
    # a receipt's code_version must change with any module of the package, not only lib/'s
    # (receipts.py sits two levels down: its root is computed, and a move once got it wrong)
    import distill_assets
    from distill_assets.lib.records import receipts

    package = Path(distill_assets.__file__).resolve().parent
    assert receipts.PACKAGE_ROOT == package
    hashed = {p.relative_to(package).as_posix() for p in receipts.PACKAGE_ROOT.rglob("*.py")}
    assert {"definitions.py", "runtime/stage.py", "cli/main.py", "lib/scoring.py"} <= hashed
