"""A file changed between stages breaks the chain of custody: the stage that reads it fails,
naming the file, and the run summary says the chain is broken."""

from __future__ import annotations

import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.lib.records.receipts import load_receipt, receipt_relpath
from distill_assets.lib.records.reports import load_summary
from distill_tests.conftest import FIXTURES, materialize_graph


def _sft_alone(project_defs, instance, out) -> dg.ExecuteInProcessResult:
    return materialize_graph(project_defs, instance, FIXTURES, out, selection=[C.ASSET_SFT_DATASET])


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected a failed step"
    data = failures[0].step_failure_data
    if data.user_failure_data is not None:  # a dg.Failure raised by the step
        return data.user_failure_data.description or ""
    return data.error.to_string()


def test_untouched_inputs_keep_the_chain(project_defs, instance, tmp_path):
    out = tmp_path / "out"
    assert materialize_graph(project_defs, instance, FIXTURES, out).success
    again = _sft_alone(project_defs, instance, out)
    assert again.success
    summary = load_summary(out, again.run_id)
    links = [link for link in summary.chain if link.stage == C.STAGE_EXPORT_SFT]
    assert links and all(link.ok for link in links)


def test_a_scored_file_changed_after_scoring_fails_the_reader(project_defs, instance, tmp_path):
    out = tmp_path / "out"
    first = materialize_graph(project_defs, instance, FIXTURES, out)
    assert first.success
    read = [
        f.path
        for f in load_receipt(out / receipt_relpath(first.run_id, C.STAGE_EXPORT_SFT)).inputs.files
        if f.path.startswith(C.SCORED_DIR)
    ]
    assert read
    tampered = out / read[0]
    data = tampered.read_bytes()
    assert data[:1] in (b"{", b"[")
    tampered.write_bytes(data[:1] + b" " + data[1:])  # same rows, different bytes
    result = _sft_alone(project_defs, instance, out)
    assert not result.success
    message = _failure_message(result)
    assert "chain of custody broken" in message
    assert tampered.relative_to(out).as_posix() in message
    summary = load_summary(out, result.run_id)
    broken = [link for link in summary.chain if not link.ok]
    assert [link.path for link in broken] == [tampered.relative_to(out).as_posix()]
    assert broken[0].problem == "no receipt produced this file (changed outside distill?)"
    assert not summary.chain_ok and not summary.overall_passed


def test_publish_refuses_a_dataset_changed_after_its_export(fixture_run, tmp_path):
    """A published file that differs from what its producer recorded (here one row edited,
    which changes its size and time) is read again, found different, and nothing is swapped in."""
    import shutil

    from distill_assets.lib.publishing.publish import publish

    result, source, _ = fixture_run
    out = tmp_path / "out"
    shutil.copytree(source, out, symlinks=True)
    version = out / ".versions" / result.run_id
    dataset = version / C.SFT_PATH
    dataset.chmod(0o644)
    dataset.write_bytes(dataset.read_bytes().replace(b'"role":"user"', b'"role":"user" ', 1))
    published = (out / C.EXPORTS_DIR).resolve()
    done = publish(out, result.run_id)
    assert any(
        C.SFT_PATH in error and "differs from what its producer recorded" in error
        for error in done.errors
    )
    assert "published" not in done.extra and (out / C.EXPORTS_DIR).resolve() == published
