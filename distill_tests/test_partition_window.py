"""The daily partitions' window (issue 15, point 5): DISTILL_PARTITION_END bounds the last
partition as DISTILL_PARTITION_START does the first, and `distill ui` shows the output's own
evidence days when the user set neither (the GraphQL side is in test_ui_instance.py)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from distill_assets.cli import materialize
from distill_assets.cli.common import UserError
from distill_assets.lib import constants as C
from distill_assets.lib.infra.layout import evidence_index
from distill_tests.conftest import REPO_ROOT

WINDOW = (C.ENV_PARTITION_START, C.ENV_PARTITION_END)


def _tomorrow() -> str:
    return (datetime.now(UTC).date() + timedelta(days=1)).isoformat()


def _partitions(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Loads the definitions as any Dagster process does and prints, per daily asset, its
    number of partitions, first and last key."""
    code = (
        "from distill_assets.definitions import defs\n"
        "d = defs()\n"
        "for name in ('evidence_index', 'scored_runs'):\n"
        "    keys = d.resolve_assets_def(name).partitions_def.get_partition_keys()\n"
        "    print(len(keys), keys[0], keys[-1])\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**{k: v for k, v in os.environ.items() if k not in WINDOW}, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def _window(env: dict[str, str]) -> tuple[int, str, str]:
    done = _partitions(env)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.split("\n")[:2]
    assert lines[0] == lines[1]  # evidence_index and scored_runs share the partitions
    count, first, last = lines[0].split()
    return int(count), first, last


def test_partition_end_default_runs_to_tomorrow():
    before = _tomorrow()
    _, first, last = _window({})
    assert first == C.PARTITION_START
    assert last in {before, _tomorrow()}  # the day may turn while the definitions load


def test_partition_end_is_inclusive():
    window = {C.ENV_PARTITION_START: "2026-02-28", C.ENV_PARTITION_END: "2026-03-04"}
    assert _window(window) == (5, "2026-02-28", "2026-03-04")
    # the end alone, from the default start; one day when both are the same
    assert _window({C.ENV_PARTITION_END: "2020-01-31"}) == (31, C.PARTITION_START, "2020-01-31")
    same = {C.ENV_PARTITION_START: "2026-03-01", C.ENV_PARTITION_END: "2026-03-01"}
    assert _window(same) == (1, "2026-03-01", "2026-03-01")


def test_partition_end_never_passes_tomorrow():
    before = _tomorrow()
    _, _, last = _window({C.ENV_PARTITION_START: "2026-01-01", C.ENV_PARTITION_END: "2999-01-01"})
    assert last in {before, _tomorrow()}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {C.ENV_PARTITION_END: "March"},
            f"invalid setting {C.ENV_PARTITION_END}='March': not an ISO date",
        ),
        (
            {C.ENV_PARTITION_START: "2026-03-02", C.ENV_PARTITION_END: "2026-03-01"},
            f"invalid setting {C.ENV_PARTITION_END}='2026-03-01': before the first partition "
            f"2026-03-02 ({C.ENV_PARTITION_START})",
        ),
    ],
)
def test_a_bad_partition_end_names_the_setting(env, message):
    done = _partitions(env)
    assert done.returncode != 0
    assert message in done.stderr


def test_materialize_range_ends_at_the_partition_end(tmp_path, monkeypatch, capsys):
    for name in WINDOW:
        monkeypatch.delenv(name, raising=False)
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.jsonl").write_text(
        '{"created_at": "2026-03-01T00:00:00Z"}\n{"created_at": "2026-03-06T00:00:00Z"}\n'
    )
    # unset: the data's days, one either side, as before
    assert materialize.partition_range(source) == "2026-02-28...2026-03-07"
    assert "left out" not in capsys.readouterr().out
    monkeypatch.setenv(C.ENV_PARTITION_END, "2026-03-03")
    assert materialize.partition_range(source) == "2026-02-28...2026-03-03"
    said = capsys.readouterr().out
    assert f"source days after {C.ENV_PARTITION_END}=2026-03-03 (to 2026-03-06)" in said
    # nothing dated in the source: one day, inside the partitions
    empty = tmp_path / "empty"
    empty.mkdir()
    assert materialize.partition_range(empty) == "2026-03-03...2026-03-03"
    monkeypatch.setenv(C.ENV_PARTITION_END, "soon")
    with pytest.raises(UserError, match=f"invalid setting {C.ENV_PARTITION_END}='soon'"):
        materialize.partition_range(source)


def test_the_printed_dagster_command_carries_the_end(monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", "/somewhere")
    monkeypatch.setenv(C.ENV_PARTITION_END, "2026-03-04")
    args = argparse.Namespace(source=None, output=None)
    assert materialize.env_changes(args, {}, set())[C.ENV_PARTITION_END] == "2026-03-04"


def _evidence_days(out: Path, *days: str) -> None:
    for day in days:
        path = out / evidence_index(date.fromisoformat(day))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


@pytest.fixture
def no_window(monkeypatch):
    for name in WINDOW:
        monkeypatch.delenv(name, raising=False)


def test_ui_window_is_the_evidence_days_on_disk(tmp_path, no_window):
    out = tmp_path / "out"
    _evidence_days(out, "2026-03-04", "2026-02-28", "2026-03-01")
    # a folder that is not a day, and a day with no index, change nothing
    (out / C.EVIDENCE_DIR / "2026" / "02" / "30").mkdir(parents=True)
    (out / C.EVIDENCE_DIR / "2026" / "02" / "30" / "index.jsonl").write_bytes(b"")
    (out / C.EVIDENCE_DIR / "2026" / "03" / "09").mkdir(parents=True)
    window, line = materialize.ui_partitions(str(out))
    assert window == {C.ENV_PARTITION_START: "2026-02-28", C.ENV_PARTITION_END: "2026-03-04"}
    assert line.startswith(
        "distill: the lineage shows the daily partitions 2026-02-28...2026-03-04,"
    )
    assert f"set {C.ENV_PARTITION_START} / {C.ENV_PARTITION_END}" in line


def test_ui_window_keeps_the_defaults_before_the_first_run(tmp_path, no_window):
    window, line = materialize.ui_partitions(str(tmp_path / "out"))
    assert window == {}
    assert f"{C.PARTITION_START}...tomorrow (no evidence days in" in line
    # an object-store output is not listed: the defaults too
    window, _ = materialize.ui_partitions("s3://bucket/prefix")
    assert window == {}


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ({C.ENV_PARTITION_START: "2026-01-01"}, "2026-01-01...tomorrow"),
        ({C.ENV_PARTITION_END: "2026-03-10"}, f"{C.PARTITION_START}...2026-03-10"),
        (
            {C.ENV_PARTITION_START: "2026-01-01", C.ENV_PARTITION_END: "2026-03-10"},
            "2026-01-01...2026-03-10",
        ),
    ],
)
def test_ui_window_a_user_setting_wins(tmp_path, no_window, monkeypatch, given, shown):
    out = tmp_path / "out"
    _evidence_days(out, "2026-03-01")
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    window, line = materialize.ui_partitions(str(out))
    assert window == {}  # nothing set over the user's choice, not even the other one
    assert f"the daily partitions {shown} (as set: " in line


def test_ui_window_refuses_a_bad_setting_before_starting(tmp_path, no_window, monkeypatch):
    monkeypatch.setenv(C.ENV_PARTITION_END, "2026-13-01")
    with pytest.raises(UserError, match=f"invalid setting {C.ENV_PARTITION_END}='2026-13-01'"):
        materialize.ui_partitions(str(tmp_path))


def test_ui_gives_the_server_an_absolute_output(tmp_path, monkeypatch):
    """The webserver and daemon run from the instance's folder: a relative --output must
    name the folder the user meant, not one under the instance."""
    monkeypatch.chdir(tmp_path)
    assert materialize.ui_output("my-out") == str(tmp_path.resolve() / "my-out")
    assert materialize.ui_output("s3://bucket/prefix") == "s3://bucket/prefix"
