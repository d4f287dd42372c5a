"""The distill command against a real run's reports."""

from __future__ import annotations

import orjson
import pytest

from distill_assets.cli import main
from distill_assets.lib import stages as S


@pytest.fixture
def reports(fixture_run):
    result, out, _ = fixture_run
    return result.run_id, out


def test_receipts_list(reports, capsys):
    run_id, out = reports
    assert main(["receipts", "list", "--output", str(out), "--json"]) == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == [run_id]
    assert listed[0]["overall_passed"] is True
    assert main(["receipts", "list", "--output", str(out)]) == 0
    assert run_id in capsys.readouterr().out


def test_receipts_show_one_stage(reports, capsys):
    run_id, out = reports
    assert (
        main(["receipts", "show", run_id, "--stage", "export-sft", "--output", str(out), "--json"])
        == 0
    )
    receipt = orjson.loads(capsys.readouterr().out)
    assert receipt["stage"] == "export-sft" and receipt["run_id"] == run_id
    assert receipt["stats"]["records_out"] == 9
    assert main(["receipts", "show", run_id, "--output", str(out)]) == 0
    text = capsys.readouterr().out
    for stage in S.STAGES:
        assert f"[{stage}]" in text


def test_drift(reports, capsys):
    run_id, out = reports
    assert main(["drift", run_id, "--output", str(out), "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["severity"] == "ok" and report["baseline_established"] is True
    assert main(["drift", run_id, "--output", str(out)]) == 0
    assert "baseline established" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["receipts", "show", "no-such-run"],
        ["drift", "no-such-run"],
        ["receipts", "show", "../../etc"],
    ],
)
def test_unknown_run_is_one_line_error(reports, capsys, argv):
    _, out = reports
    assert main([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("distill: error:") and "\n" not in err


def test_missing_output_directory(tmp_path, capsys):
    assert main(["receipts", "list", "--output", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and "\n" not in err


def test_unknown_stage(reports, capsys):
    run_id, out = reports
    assert main(["receipts", "show", run_id, "--stage", "polish", "--output", str(out)]) == 2
    assert "unknown stage" in capsys.readouterr().err
