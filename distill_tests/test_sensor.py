"""The drift sensor over a real temporary Dagster instance and two materializations: it emits
the drift check evaluation, appends the alert line and POSTs it to a local webhook."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import orjson
import pytest

from distill_assets.defs.monitoring.sensors import drift_sensor
from distill_assets.lib import constants as C
from distill_assets.lib.records.alerts import OUTBOX_PATH
from distill_assets.runtime.resource import DistillResource
from distill_tests.conftest import copy_fixtures, materialize_graph
from distill_tests.ports import closed_port


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers["Content-Length"])
        type(self).received.append(orjson.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    _Hook.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Hook.received
    server.shutdown()
    server.server_close()


def _tick(instance, out: Path, url: str | None, cursor: str | None):
    resource = DistillResource(output_dir=str(out), alert_webhook_url=url)
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"distill": resource}
    )
    return drift_sensor(context), context


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, project_defs):
    """A baseline run over the fixtures, then a run with every review gone (a large change),
    in one instance. Tests copy the output directory, where the sensor writes its alerts."""
    base = tmp_path_factory.mktemp("sensor")
    home = base / "home"
    home.mkdir()
    source = copy_fixtures(base / "src")
    out = base / "out"
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTILL_RECORDED_AT", "2026-03-10T00:00:00Z")
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        try:
            assert materialize_graph(project_defs, instance, source, out).success
            (source / "reviews" / "reviews.jsonl").unlink()
            assert materialize_graph(project_defs, instance, source, out).success
        finally:
            mp.undo()
        yield instance, out


def _fresh_copy(two_runs, tmp_path: Path):
    instance, out = two_runs
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    return instance, copy


def test_sensor_raises_drift_checks_alerts_and_posts(two_runs, tmp_path, webhook):
    url, received = webhook
    instance, out = _fresh_copy(two_runs, tmp_path)
    result, context = _tick(instance, out, url, None)
    assert isinstance(result, dg.SensorResult)
    evaluations = [e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
    assert evaluations
    assert all(e.check_name == C.CHECK_DRIFT and not e.passed for e in evaluations)
    by_asset = {e.asset_key.to_user_string(): e for e in evaluations}
    assert by_asset[C.ASSET_SCORED_RUNS].severity == dg.AssetCheckSeverity.ERROR
    alerts = [orjson.loads(x) for x in (out / C.ALERTS_PATH).read_bytes().splitlines()]
    assert {a["asset"] for a in alerts} == set(by_asset)
    assert all(a["severity"] in ("warn", "alert") for a in alerts)
    assert sorted(a["alert_id"] for a in received) == sorted(a["alert_id"] for a in alerts)
    cursor = orjson.loads(result.cursor)
    assert set(cursor) >= {C.ASSET_EVIDENCE_INDEX, C.ASSET_SFT_DATASET}

    again, _ = _tick(instance, out, url, result.cursor)
    assert isinstance(again, dg.SkipReason | dg.SensorResult)
    events = getattr(again, "asset_events", None) or []
    assert not events  # each materialization is judged once
    assert len((out / C.ALERTS_PATH).read_bytes().splitlines()) == len(alerts)
    assert len(received) == len(alerts)


def test_first_materializations_are_a_baseline(project_defs, instance, tmp_path):
    source = copy_fixtures(tmp_path / "src")
    out = tmp_path / "out"
    assert materialize_graph(project_defs, instance, source, out).success
    result, _ = _tick(instance, out, None, None)
    events = getattr(result, "asset_events", None) or []
    assert not events
    assert not (out / C.ALERTS_PATH).exists()


def test_undelivered_alerts_wait_in_the_outbox(two_runs, tmp_path, webhook):
    url, received = webhook
    instance, out = _fresh_copy(two_runs, tmp_path)
    with closed_port() as port:  # bound and never listening: refuses by construction
        result, _ = _tick(instance, out, f"http://127.0.0.1:{port}/hook", None)
    queued = (out / OUTBOX_PATH).read_bytes().splitlines()
    assert queued and not received
    retry, _ = _tick(instance, out, url, result.cursor)
    assert len(received) == len(queued)
    assert (out / OUTBOX_PATH).read_bytes() == b""
    assert retry is not None


def test_webhook_url_comes_from_the_environment(two_runs, tmp_path, webhook, monkeypatch):
    """DISTILL_ALERT_WEBHOOK_URL (README, Configuration) is where alerts go when the resource
    names no URL; a URL on the resource wins over it."""
    url, received = webhook
    instance, out = _fresh_copy(two_runs, tmp_path)
    monkeypatch.setenv(C.ENV_ALERT_WEBHOOK, url)
    result, _ = _tick(instance, out, None, None)
    alerts = [orjson.loads(x) for x in (out / C.ALERTS_PATH).read_bytes().splitlines()]
    assert alerts and sorted(a["alert_id"] for a in received) == sorted(
        a["alert_id"] for a in alerts
    )
    assert (out / OUTBOX_PATH).read_bytes() == b""
    # the resource's own URL (here one that refuses) wins over the environment's
    _, again = _fresh_copy(two_runs, tmp_path / "again")
    received.clear()
    with closed_port() as port:
        _tick(instance, again, f"http://127.0.0.1:{port}/hook", None)
    assert received == []
    assert len((again / OUTBOX_PATH).read_bytes().splitlines()) == len(alerts)
