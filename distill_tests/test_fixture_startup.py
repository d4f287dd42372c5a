"""What keeps the first run on the fixtures short (docs/performance.md, issue 13): the
definitions load once per process and setting, the process skips the exit-time walk over
every object, and `distill materialize` starts Dagster without loading the stages' libraries."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import orjson
import pytest

from distill_assets.cli.inspect import drift_line
from distill_assets.definitions import defs
from distill_assets.lib import constants as C
from distill_assets.lib.infra.layout import run_ids, source_date_range
from distill_assets.lib.records.reports import load_drift
from distill_assets.runtime.partitions import PER_DAY, SINGLE_RUN

ROOT = Path(__file__).resolve().parent.parent


def _policy(definitions: dg.Definitions, asset: str) -> dg.BackfillPolicy | None:
    for found in definitions.assets or []:
        if dg.AssetKey(asset) in found.keys:
            return found.backfill_policy
    raise AssertionError(asset)


def test_definitions_load_once_per_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(C.ENV_BACKFILL, raising=False)
    monkeypatch.delenv(C.ENV_EXECUTOR, raising=False)
    first = defs()
    assert defs() is first  # Dagster calls defs() five times in one run
    assert _policy(first, C.ASSET_EVIDENCE_INDEX) == SINGLE_RUN
    monkeypatch.setenv(C.ENV_BACKFILL, "per_day")
    per_day = defs()
    assert per_day is not first
    assert _policy(per_day, C.ASSET_EVIDENCE_INDEX) == PER_DAY
    assert defs() is per_day
    monkeypatch.delenv(C.ENV_BACKFILL)
    assert defs() is first
    # the executor setting is part of what was loaded: a bad one still fails after a load
    monkeypatch.setenv(C.ENV_EXECUTOR, "nonsense")
    with pytest.raises(Exception) as raised:  # noqa: B017 (the loader wraps the error)
        defs()
    chain: BaseException | None = raised.value
    messages = []
    while chain is not None:
        messages.append(str(chain))
        chain = chain.__cause__ or chain.__context__
    assert any(f"invalid setting {C.ENV_EXECUTOR}='nonsense'" in m for m in messages)


def test_a_process_that_loads_the_definitions_freezes_its_objects() -> None:
    # exit handlers run last-registered first: the probe, registered before defs() runs,
    # sees what the handler defs() registered did (the objects made after the load frozen too)
    script = (
        "import atexit, gc\n"
        "counts = {}\n"
        "atexit.register(lambda: print(gc.get_freeze_count() >= counts['loaded'] + 10000))\n"
        "from distill_assets.definitions import defs\n"
        "print(gc.get_freeze_count())\n"
        "defs()\n"
        "counts['loaded'] = gc.get_freeze_count()\n"
        "print(counts['loaded'] > 0)\n"
        "made = [[n] for n in range(10000)]\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == ["0", "True", "True"]


def test_materialize_runs_dagster_without_loading_the_stage_libraries(fixture_run) -> None:
    # what `distill materialize` does before it starts Dagster (on the bundled fixtures) and
    # after (the summary's run id and drift line, here on the session's fixture run)
    _, out, _ = fixture_run
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from distill_assets.cli.inspect import drift_line\n"
        "from distill_assets.cli.materialize import _configured_imports, partition_range\n"
        "from distill_assets.lib.infra.layout import run_ids\n"
        "specs, env = _configured_imports([])\n"
        "print(specs, env)\n"
        f"print(partition_range(Path({str(ROOT / 'fixtures' / 'evidence')!r}), specs))\n"
        f"out = Path({str(out)!r})\n"
        "print(drift_line(out, run_ids(out)[-1]).split(':')[1])\n"
        "heavy = ('numpy', 'polars', 'pydantic', 'detect_secrets',\n"
        "         'distill_assets.lib.evidence.collect', 'distill_assets.lib.evidence.importers',\n"
        "         'distill_assets.lib.records.reports')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    env = {"PATH": "/usr/bin:/bin", C.ENV_PARTITION_END: "2030-01-01"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert done.stdout.splitlines() == [
        "[] {}",
        "2026-02-28...2026-03-04",
        " drift OK (baseline established)",
        "[]",
    ]


def test_source_date_range_scans_created_at_in_every_jsonl(tmp_path: Path) -> None:
    assert source_date_range(tmp_path) is None
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.jsonl").write_bytes(
        b'{"created_at": "2026-03-02T10:00:00Z"}\n'
        b'{"created_at":"2026-02-27T23:59:59Z", "x": 1}\n'
        b'{"created_at": "2026-13-40T00:00:00Z"}\n'  # not a date: ignored
    )
    (tmp_path / "two.jsonl").write_bytes(b'{"run": {"created_at": "2026-03-05"}}\n')
    (tmp_path / "notes.txt").write_bytes(b'{"created_at": "2019-01-01"}\n')  # not a source
    assert source_date_range(tmp_path) == (date(2026, 2, 27), date(2026, 3, 5))


def _drift_line_from_the_model(out: Path, run_id: str) -> str:
    """The line as the CLI rendered it through lib/records/drift.py's model before (the
    reference)."""
    report = load_drift(out, run_id)
    against = (
        f"against run {report.prior_run_id}" if report.prior_run_id else "(baseline established)"
    )
    stages = tuple(f"{d.stage}:" for d in report.stages)
    run_flags = [f for f in report.flags if not f.startswith(stages)]
    detail = "; ".join([*run_flags, f"{len(report.flags) - len(run_flags)} stage flag(s)"])
    return f"distill: drift {report.severity.upper()} {against}: {detail} (distill drift {run_id})"


def test_the_summary_after_a_run_reads_what_the_reports_library_reads(fixture_run, tmp_path):
    result, out, _ = fixture_run
    assert run_ids(out) == [result.run_id]
    run_id = run_ids(out)[0]
    assert drift_line(out, run_id) == _drift_line_from_the_model(out, run_id)
    assert drift_line(out, run_id).startswith("distill: drift OK (baseline established): ")
    # a later run's shape: an earlier run to compare with, a run-level flag, a warning
    report = load_drift(out, run_id)
    later = report.model_copy(
        update={
            "prior_run_id": "earlier-run",
            "severity": "warn",
            "flags": ["run hash changed", *report.flags],
        }
    )
    (tmp_path / C.REPORTS_DIR / run_id).mkdir(parents=True)
    (tmp_path / C.REPORTS_DIR / run_id / "drift.json").write_bytes(
        orjson.dumps(later.model_dump(mode="json"))
    )
    line = drift_line(tmp_path, run_id)
    assert line == _drift_line_from_the_model(tmp_path, run_id)
    assert line.startswith("distill: drift WARN against run earlier-run: run hash changed; ")
    assert drift_line(tmp_path, "no-such-run") == "distill: drift: not judged (no stage finished)"
    assert run_ids(tmp_path) == []
