"""The README's commands on one instance (issue 15): `distill materialize`, then the plain
Dagster command it prints, then `distill ui` (webserver and daemon on 127.0.0.1) shows both
runs, told apart by their tags, and each day's own figures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import orjson
import pytest

from distill_assets.lib import constants as C
from distill_tests.conftest import FIXTURES, REPO_ROOT
from distill_tests.ports import PortTaken, says_address_in_use, start_on_free_port
from distill_tests.test_webserver import graphql

RUNS = """{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"""
DAEMONS = """{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"""
PARTITIONS = """{ assetNodeOrError(assetKey: {path: ["%s"]}) { ... on AssetNode {
  partitionKeys partitionStats { numMaterialized numPartitions numFailed } } } }"""
# the days `distill materialize` covered on the fixtures (their days, one either side)
FIXTURE_DAYS = ["2026-02-28", "2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
PARTITION = """{ assetNodeOrError(assetKey: {path: ["evidence_index"]}) { ... on AssetNode {
  assetObservations(partitions: ["2026-03-01"]) { metadataEntries { label
    ... on IntMetadataEntry { intValue } } } } } }"""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(proc: subprocess.Popen) -> bool:
    """SIGTERM to `distill ui` alone, as a service manager sends it; True when it took the
    webserver, the daemon and the code servers down with it (its process group is empty).
    Whatever is left of the group this test started is killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + 60
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    clean = proc.poll() is not None and not _group_alive(proc.pid)
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return clean


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory) -> Iterator[tuple[dict[str, str], Path, list[str], str]]:
    base = tmp_path_factory.mktemp("first_hour")
    home = base / "home"
    home.mkdir()
    out = base / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTILL_", "DAGSTER_"))}
    env.update({"DAGSTER_HOME": str(home), "DISTILL_RECORDED_AT": "2026-03-10T00:00:00Z"})
    distill = Path(sys.executable).parent / "distill"
    done = subprocess.run(
        [str(distill), "materialize", "--output", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    command = lines[
        lines.index("distill: the same run with Dagster alone (from the project folder):") + 1
    ]
    assert "dagster asset materialize -m distill_assets.definitions --select '*'" in command
    assert "--partition-range 2026-02-28...2026-03-04" in command
    plain = subprocess.run(
        ["bash", "-c", command.strip()],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    yield env, out, lines, command


@pytest.fixture(scope="module")
def ui_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui_log") / "stderr.log"


@pytest.fixture(scope="module")
def ui(both_runs, ui_log) -> Iterator[str]:
    env, out = both_runs[0], both_runs[1]
    distill = Path(sys.executable).parent / "distill"

    def start(port: int) -> tuple[subprocess.Popen, str]:
        """`distill ui` on ``port``, answering; PortTaken when another process bound it first."""
        with open(ui_log, "wb") as log:  # a file, not a pipe: a full pipe would stall the server
            proc = subprocess.Popen(
                [str(distill), "ui", "-p", str(port), "--output", str(out)],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                    if response.status == 200:
                        return proc, url
            except OSError:
                pass
            if proc.poll() is not None:
                text = ui_log.read_text(errors="replace")
                if says_address_in_use(text):
                    _stop(proc)
                    raise PortTaken(text[-500:])
                pytest.fail(f"distill ui exited: {text[-2000:]}")
            if time.monotonic() > deadline:
                _stop(proc)
                pytest.fail("distill ui did not answer within 180 s")
            time.sleep(0.5)

    proc, url = start_on_free_port(start)
    try:
        yield url
    finally:
        clean = _stop(proc)
    # SIGTERM to `distill ui` stops everything it started (reported as a teardown error)
    assert clean, "distill ui left processes behind after SIGTERM"


def test_ui_shows_both_runs_with_their_tags(both_runs, ui):
    env, out, _, _ = both_runs
    runs = graphql(ui, RUNS)["data"]["runsOrError"]["results"]
    assert len(runs) == 2
    for run in runs:
        assert run["status"] == "SUCCESS"
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert tags[C.TAG_SOURCE] == str(FIXTURES.resolve())
        assert tags[C.TAG_OUTPUT] == str(out.resolve())
    # every run of the graph recorded its reports under the same id Dagster knows it by
    reported = {p.name for p in (out / C.REPORTS_DIR).iterdir() if p.is_dir()}
    assert {run["runId"] for run in runs} <= reported


def test_ui_runs_the_daemon(ui):
    deadline = time.monotonic() + 180
    while True:
        statuses = graphql(ui, DAEMONS)["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
        sensor = [s for s in statuses if s["daemonType"] == "SENSOR"]
        if sensor and sensor[0]["healthy"]:
            break
        assert time.monotonic() < deadline, f"the sensor daemon is not healthy: {statuses}"
        time.sleep(1)


def test_a_partition_shows_its_own_day(both_runs, ui):
    env, out, _, _ = both_runs
    node = graphql(ui, PARTITION)["data"]["assetNodeOrError"]
    observed = [
        {e["label"]: e.get("intValue") for e in o["metadataEntries"]}
        for o in node["assetObservations"]
    ]
    assert len(observed) == 2  # one per run
    run_dirs = sorted((out / C.REPORTS_DIR).glob("*/collect.json"))
    own = orjson.loads(run_dirs[0].read_bytes())["extra"]["per_partition"]["2026-03-01"]
    for metadata in observed:
        assert metadata[C.MD_ROW_COUNT] == own["records_out"]


def test_the_instance_is_the_project_one(both_runs):
    env, _, lines, command = both_runs
    assert f"DAGSTER_HOME={env['DAGSTER_HOME']}" in command
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert len(instance.get_runs()) == 2
    # the UI address, then the run's drift severity (the last line)
    assert lines[-2].startswith("  http://127.0.0.1:3000/runs/")
    assert lines[-1].startswith("distill: drift ")


def test_readme_and_ci_carry_the_printed_command(both_runs):
    """The plain Dagster command `distill materialize` prints for the fixtures is the README's
    and the one CI runs, range included."""
    command = both_runs[3]
    tail = command[command.index("dagster asset materialize") :]
    for path in (REPO_ROOT / "README.md", REPO_ROOT / ".ci" / "run"):
        text = path.read_text(encoding="utf-8").replace("\\\n  ", "")
        assert f'DAGSTER_HOME="$PWD"/.dagster_home .venv/bin/{tail}' in text, path


def test_ui_loads_one_named_location_on_the_project_instance(ui, ui_log):
    """No temporary instance, and the code location's name is fixed (no "does not match"
    warnings, whatever the checkout folder is called)."""
    graphql(ui, RUNS)
    text = ui_log.read_text(errors="replace")
    assert "Using temporary directory" not in text
    assert "does not match" not in text
    locations = graphql(
        ui, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
    )["data"]["workspaceOrError"]["locationEntries"]
    assert [entry["name"] for entry in locations] == ["distill"]


def test_lineage_shows_the_days_of_the_data_all_materialized(both_runs, ui, ui_log):
    """Issue 15 point 5: with neither DISTILL_PARTITION_START nor DISTILL_PARTITION_END set,
    `distill ui` shows the partitions of the output's evidence days, not every day since
    2020 up to tomorrow, and every one of them is materialized (the runs' partitions are in it),
    and it says so in one line."""
    for asset in (C.ASSET_EVIDENCE_INDEX, C.ASSET_SCORED_RUNS):
        node = graphql(ui, PARTITIONS % asset)["data"]["assetNodeOrError"]
        assert node["partitionKeys"] == FIXTURE_DAYS, asset
        stats = node["partitionStats"]
        assert stats == {"numMaterialized": 5, "numPartitions": 5, "numFailed": 0}, asset
    text = ui_log.read_text(errors="replace")
    assert "the lineage shows the daily partitions 2026-02-28...2026-03-04, the evidence" in text
    assert f"set {C.ENV_PARTITION_START} / {C.ENV_PARTITION_END}" in text
    # both runs still name the same dates as their partition range
    runs = graphql(ui, RUNS)["data"]["runsOrError"]["results"]
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert tags["dagster/asset_partition_range_start"] == FIXTURE_DAYS[0]
        assert tags["dagster/asset_partition_range_end"] == FIXTURE_DAYS[-1]
