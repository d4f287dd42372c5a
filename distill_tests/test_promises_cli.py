"""CLI options the docs promise, each run for real: ``materialize --multiprocess`` (steps in
subprocesses, the same datasets), ``materialize --per-day`` succeeding (one run per day, then
the exports; the same datasets as one run over the range), ``drift --fail-on-alert`` (exit 3 on
an alert only: test_promises_config.py, beside the drift settings) and ``search --mode``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import orjson
import pytest

from distill_assets.cli import main
from distill_assets.lib import constants as C
from distill_tests.conftest import (
    FIXTURE_RANGE,
    FIXTURES,
    REPO_ROOT,
    materialize_graph,
)
from distill_tests.scale.conftest import dataset_files

PINNED = "2026-03-10T00:00:00Z"


def _distill(home: Path, *argv: str) -> subprocess.CompletedProcess:
    """``distill ARGV`` as a user runs it, in its own process, with its own DAGSTER_HOME."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(home), C.ENV_RECORDED_AT: PINNED}
    for name in (C.ENV_SOURCE_DIR, C.ENV_OUTPUT_DIR, C.ENV_BACKFILL, C.ENV_EXECUTOR):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "distill_assets.cli", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=900,
        check=False,
    )


def _runs(home: Path) -> list:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        return [(run, list(instance.all_logs(run.run_id))) for run in reversed(runs)]


def test_multiprocess_runs_steps_in_subprocesses_with_the_same_datasets(fixture_run, tmp_path):
    """Collect and score (and their checks: four steps, each a process of its own; every step
    process loads Dagster and the definitions, so the whole graph would cost a minute for the
    same proof) over the fixture run's days."""
    _, in_process_out, _ = fixture_run
    home, out = tmp_path / "home", tmp_path / "out"
    done = _distill(
        home,
        "materialize",
        "--multiprocess",
        "--select",
        f"{C.ASSET_EVIDENCE_INDEX},{C.ASSET_SCORED_RUNS}",
        "--partition-range",
        "...".join(FIXTURE_RANGE),
        "--source",
        str(FIXTURES),
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    ((run, events),) = _runs(home)
    assert "in_process" not in orjson.dumps(run.run_config).decode()
    started = [e for e in events if e.dagster_event and e.dagster_event.event_type_value
               == "STEP_WORKER_STARTED"]  # fmt: skip
    assert len(started) >= 2  # the multiprocess executor launched step workers
    step_pids = {
        e.dagster_event.pid for e in events if e.dagster_event and e.dagster_event.is_step_event
    }
    assert len(step_pids) >= 2
    written = dataset_files(out)
    assert written and set(written) == {
        path for path in dataset_files(in_process_out) if not path.startswith("exports/")
    }
    expected = dataset_files(in_process_out)
    assert all(written[path] == expected[path] for path in written)


def test_per_day_succeeds_with_the_datasets_of_one_run(project_defs, instance, tmp_path):
    days = ("2026-03-01", "2026-03-01")
    home, out = tmp_path / "home", tmp_path / "per-day"
    done = _distill(
        home,
        "materialize",
        "--per-day",
        "--source",
        str(FIXTURES),
        "--output",
        str(out),
        "--partition-range",
        f"{days[0]}...{days[1]}",
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert b"one run per day" in done.stdout
    runs = _runs(home)
    assert len(runs) == 3  # collect the day, score the day, then the rest
    assert all(run.is_success for run, _ in runs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(C.ENV_RECORDED_AT, PINNED)
        single = materialize_graph(project_defs, instance, FIXTURES, tmp_path / "one", days=days)
    assert single.success
    assert dataset_files(out) == dataset_files(tmp_path / "one")


def test_search_mode(fixture_run, capsys):
    _, out, _ = fixture_run
    query = "rotate the TLS certificates"
    assert main(["search", query, "--output", str(out), "--json"]) == 0
    default = orjson.loads(capsys.readouterr().out)
    assert default
    assert main(["search", query, "--output", str(out), "--json", "--mode", "bm25"]) == 0
    assert orjson.loads(capsys.readouterr().out) == default  # bm25 is the default
    # the fixture index has no embeddings: dense and hybrid say so, naming what to do
    for mode in ("dense", "hybrid"):
        assert main(["search", query, "--output", str(out), "--mode", mode]) == 2
        err = capsys.readouterr().err
        assert err.startswith("distill: error: ") and "embeddings" in err
    with pytest.raises(SystemExit):
        main(["search", query, "--output", str(out), "--mode", "fuzzy"])
    assert "invalid choice: 'fuzzy'" in capsys.readouterr().err


def test_search_mode_dense_reaches_the_index(tmp_path, fixture_run, capsys):
    """Without embeddings in the index, the error comes from the index, not the CLI: a copy of
    the output whose index is gone is a different error."""
    _, out, _ = fixture_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    for path in copy.rglob("*.sqlite"):
        path.unlink()
    assert main(["search", "rotate", "--output", str(copy), "--mode", "dense"]) == 2
    assert "no published search index" in capsys.readouterr().err
