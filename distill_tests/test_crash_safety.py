"""SIGKILL at controlled points of a real `distill materialize` leaves the previous datasets and
receipts intact and readable, and the next run completes normally."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.infra.io import sha256_file
from distill_assets.lib.records.receipts import load_receipt, read_ledger
from distill_assets.lib.records.reports import load_summary
from distill_tests.conftest import REPO_ROOT, copy_fixtures
from distill_tests.corpus import CorpusSpec, write_corpus


def cli(args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distill_assets.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **kwargs,
    )


def exports_snapshot(out: Path) -> dict[str, bytes]:
    root = out / C.EXPORTS_DIR
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def report_dirs(out: Path) -> set[str]:
    return {p.name for p in (out / C.REPORTS_DIR).iterdir() if p.is_dir()}


def assert_previous_state_intact(out: Path, snapshot: dict[str, bytes], run_id: str) -> None:
    assert exports_snapshot(out) == snapshot
    manifest = orjson.loads((out / C.MANIFEST_PATH).read_bytes())
    for entry in manifest["files"]:
        assert sha256_file(out / entry["path"]) == entry["sha256"], entry["path"]
    for stage in S.STAGES:
        receipt = load_receipt(out / C.REPORTS_DIR / run_id / f"{stage}.json")
        if stage in (*S.EXPORT_STAGES, C.STAGE_EXTRACT_PLAYBOOKS, C.STAGE_INDEX):
            for entry in receipt.outputs.files:
                assert sha256_file(out / entry.path) == entry.sha256
    assert load_summary(out, run_id).overall_passed
    read_ledger(out)  # parses


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("crash")
    small = copy_fixtures(base / "small")
    big = write_corpus(base / "big", CorpusSpec(runs=3_000, first_day=date(2026, 4, 1), days=3))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(base / "home"),
        "DISTILL_RECORDED_AT": "2026-04-10T00:00:00Z",
    }
    (base / "home").mkdir()
    out = base / "out"
    done = cli(["materialize", "--source", str(small), "--output", str(out)], env)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err.decode()[-2000:]
    [run_id] = report_dirs(out)
    # new logs arrive in the same source folder: the later runs extend the output's source
    # (another folder would be refused: sources never mix, lib/evidence/sources.py)
    shutil.copytree(big, small / "april")
    return base, small, env, out, run_id, exports_snapshot(out)


def kill_when(proc: subprocess.Popen, condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the kill point '{what}' was reached")
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"the kill point '{what}' was not reached in time")


def big_temp_file(out: Path) -> bool:
    return any(
        p.stat().st_size > 1 << 19
        for p in (out / C.EVIDENCE_DIR).rglob(".records.jsonl.*.tmp")
        if p.exists()
    )


def new_receipt(out: Path, before: set[str], stage: str, absent: str | None = None) -> bool:
    for name in report_dirs(out) - before:
        directory = out / C.REPORTS_DIR / name
        if (directory / f"{stage}.json").exists() and not (
            absent and (directory / f"{absent}.json").exists()
        ):
            return True
    return False


KILL_POINTS = {
    "in the middle of a large write": lambda out, before: big_temp_file(out),
    "after collect wrote its outputs": lambda out, before: new_receipt(out, before, "collect"),
    "after the exports were staged, before publishing": lambda out, before: new_receipt(
        out, before, "export-sft", absent="publish"
    ),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_leaves_previous_datasets_intact(setup, point):
    base, big, env, out, run_id, snapshot = setup
    before = report_dirs(out)
    proc = cli(["materialize", "--source", str(big), "--output", str(out)], env)
    kill_when(proc, lambda: KILL_POINTS[point](out, before), point)
    assert_previous_state_intact(out, snapshot, run_id)
    assert (out / "evidence/2026/03/01/records.jsonl").exists()


def test_next_run_completes_after_kills(setup):
    base, big, env, out, run_id, snapshot = setup
    before = report_dirs(out)
    proc = cli(["materialize", "--source", str(big), "--output", str(out)], env)
    kill_when(proc, lambda: big_temp_file(out), "mid-write, again")
    done = cli(["materialize", "--source", str(big), "--output", str(out)], env)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err.decode()[-3000:]
    [new_run] = sorted(
        report_dirs(out)
        - before
        - {d for d in report_dirs(out) if not (out / C.REPORTS_DIR / d / "publish.json").exists()}
    )
    summary = load_summary(out, new_run)
    assert summary.overall_passed
    assert exports_snapshot(out) != snapshot
    assert summary.datasets["sft"] == sum(1 for _ in open(out / C.SFT_PATH, "rb"))
    leftovers = [p for p in out.rglob(".*.tmp")]
    assert not leftovers, leftovers
