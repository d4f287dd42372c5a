"""A backfill through the Celery executor (dagster-celery, Redis broker) with a real worker,
on a PostgreSQL instance, gives the same datasets as an in-process run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S

from .conftest import (
    FIRST_DAY,
    FIXTURES,
    LAST_DAY,
    RECORDED_AT,
    REPO,
    Postgres,
    Redis,
    dataset_files,
    need_module,
    postgres_home,
)


def run_group(command: list[str], env: dict[str, str], timeout: float):
    """Run ``command`` in its own process group, all of which is killed if it overruns."""
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{' '.join(command)} did not finish in {timeout}s")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture
def cluster_env(
    postgres: Postgres, redis_server: Redis, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """The environment every process of the deployment shares, and one running worker."""
    need_module("dagster_celery")
    home = postgres_home(tmp_path / "home")
    bindir = Path(sys.executable).parent
    env = {
        **os.environ,
        # dagster-celery starts `celery` from PATH: the one installed beside this Python
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        **postgres.env(),
        "DAGSTER_HOME": str(home),
        C.ENV_EXECUTOR: C.EXECUTOR_CELERY,
        C.ENV_CELERY_BROKER: redis_server.url,
        C.ENV_SOURCE_DIR: str(FIXTURES),
        # an fsspec URL: two steps at a time share the store through the staging directory
        C.ENV_OUTPUT_DIR: (tmp_path / "store").as_uri(),
        C.ENV_STAGING_DIR: str(tmp_path / "staging"),
        C.ENV_RECORDED_AT: RECORDED_AT,
    }
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 (closed at teardown)
    worker = subprocess.Popen(
        [str(bindir / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app"]
        + ["-y", str(REPO / "deploy" / "celery-worker.yaml"), "-n", "distill-test"]
        + ["--", "--concurrency", "2"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the worker's pool processes share its process group
    )
    try:
        deadline = time.monotonic() + 90
        while b" ready." not in (tmp_path / "worker.log").read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "the Celery worker did not start:\n"
                    + (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
                )
            time.sleep(0.2)
        yield env
    finally:
        try:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        except ProcessLookupError:
            pass
        log.close()


def test_celery_backfill_matches_in_process(
    cluster_env: dict[str, str],
    postgres: Postgres,
    reference: Path,
    tmp_path: Path,
    recorded_checks: int,
) -> None:
    # the reference (conftest): the same range in one in-process run on a throwaway instance
    # the backfill: `distill materialize` launches one run whose steps go to the worker
    done = run_group(
        [str(Path(sys.executable).parent / "distill"), "materialize"]
        + ["--partition-range", f"{FIRST_DAY}...{LAST_DAY}"],
        cluster_env,
        timeout=240,
    )
    home = Path(cluster_env["DAGSTER_HOME"])
    worker_log = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
    dagster_log = (home / "last-materialize.log").read_text(errors="replace")[-3000:]
    assert done.returncode == 0, f"{done.stderr.decode()}\n{dagster_log}\n{worker_log}"

    url = cluster_env[C.ENV_OUTPUT_DIR]
    # the fixture's SFT train split: 8 rows (docs: test_fixture_graph.py derives it)
    assert f"{url}/{C.SFT_PATH}  (8 rows)" in done.stdout.decode()
    store = tmp_path / "store"
    produced, expected = dataset_files(store), dataset_files(reference)
    assert sorted(produced) == sorted(expected)
    assert produced == expected
    assert b"" != produced[C.SFT_PATH]
    # no report update was lost while steps ran side by side
    ledger = orjson.loads((store / C.REPORTS_DIR / "ledger.json").read_bytes())
    # the lists the trace lookup is built from are not stage outputs (docs/operations.md)
    trace_lists = {p for p in produced if p.startswith(C.TRACE_ROWS_DIR + "/")} | {
        p for p in produced if p.endswith("/" + C.SCORED_TRACE_FILE)
    }
    assert set(ledger) == set(produced) - trace_lists
    runs = [orjson.loads(line) for line in (store / C.RUN_INDEX_PATH).read_bytes().splitlines()]
    assert sorted(row["stage"] for row in runs) == sorted(S.STAGES)
    run_id = runs[0]["run_id"]
    summary = orjson.loads((store / C.REPORTS_DIR / run_id / "summary.json").read_bytes())
    assert summary["overall_passed"] and summary["chain_ok"]
    assert len(summary["checks"]) == recorded_checks

    # every step ran in the Celery worker, as the PostgreSQL event log records
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in postgres.env().items():
            monkeypatch.setenv(name, value)
        _assert_steps_ran_in_the_worker(home, run_id)


def _assert_steps_ran_in_the_worker(home: Path, run_id: str) -> None:
    """The run succeeded over the range, and the event log (the instance in ``home``) says
    every step it started ran in the Celery worker."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(run_id)  # the database is shared by the session's tests
        assert run is not None and run.is_success
        assert run.tags["dagster/asset_partition_range_start"] == FIRST_DAY
        events = instance.all_logs(run.run_id)
        started = {
            e.step_key for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_START
        }
        in_worker = {
            e.step_key
            for e in events
            if e.dagster_event_type == dg.DagsterEventType.ENGINE_EVENT
            and "in celery worker" in (e.message or "")
        }
        assert started and started == in_worker
        assert {C.ASSET_EVIDENCE_INDEX, C.ASSET_SCORED_RUNS, C.OP_EXPORTS} <= started
