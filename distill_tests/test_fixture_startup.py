"""What keeps the first run on the fixtures short (docs/performance.md, issue 13): the
definitions load once per process and setting, the process skips the exit-time walk over
every object, and `distill materialize` starts Dagster without loading the stages' libraries."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from distill_assets.definitions import defs
from distill_assets.lib import constants as C
from distill_assets.lib.layout import source_date_range
from distill_assets.orchestration import PER_DAY, SINGLE_RUN

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


def test_a_process_that_loads_the_definitions_freezes_its_objects_at_exit() -> None:
    # exit handlers run last-registered first: the probe, registered before defs() runs,
    # sees what the handler defs() registered did
    script = (
        "import atexit, gc\n"
        "atexit.register(lambda: print('at exit', gc.get_freeze_count() > 0))\n"
        "from distill_assets.definitions import defs\n"
        "defs()\n"
        "print('loaded', gc.get_freeze_count() > 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == ["loaded False", "at exit True"]


def test_materialize_starts_dagster_without_the_stage_libraries() -> None:
    # what `distill materialize` does before it starts Dagster, on the bundled fixtures
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from distill_assets.cli import _configured_imports, partition_range\n"
        "specs, env = _configured_imports([])\n"
        "print(specs, env)\n"
        f"print(partition_range(Path({str(ROOT / 'fixtures' / 'evidence')!r}), specs))\n"
        "heavy = ('numpy', 'polars', 'detect_secrets', 'distill_assets.lib.collect',\n"
        "         'distill_assets.lib.importers')\n"
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
    assert done.stdout.splitlines() == ["[] {}", "2026-02-28...2026-03-04", "[]"]


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
