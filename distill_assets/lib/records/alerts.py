"""Drift alerts: judge new materializations against the previous ones, record and deliver alerts.

``judge`` is pure: given, per partition, the metadata of a materialization and of the one before
it, it returns the worst StageDrift. Alerts are appended to ``reports/alerts.jsonl``; when a
webhook is configured each alert is POSTed as JSON, and one that cannot be delivered stays in
``reports/alerts-outbox.jsonl`` to be retried on the next sensor tick, so none is lost.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.infra.io import sha256_bytes, write_bytes_atomic
from distill_assets.lib.records.drift import (
    DriftThresholds,
    StageDrift,
    compare,
    snapshot_from_metadata,
    worst,
)
from distill_assets.lib.records.receipts import Provenance, reports_lock

OUTBOX_PATH = "reports/alerts-outbox.jsonl"


class Alert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    alert_id: str
    asset: str
    stage: str
    run_id: str
    prior_run_id: str | None
    severity: str
    flags: list[str]
    partitions: list[str]
    detected_at: str


def judge(
    stage: str,
    run_id: str,
    pairs: list[tuple[str | None, dict[str, Any], str | None, dict[str, Any] | None]],
    thresholds: DriftThresholds,
) -> tuple[StageDrift | None, list[str]]:
    """Worst drift over (partition, metadata, prior run id, prior metadata) tuples of one run.

    Returns (None, []) when no partition has a prior materialization to compare with.
    """
    judged: list[tuple[str | None, StageDrift]] = []
    for partition, metadata, prior_run, prior_metadata in pairs:
        if prior_metadata is None or prior_run is None:
            continue
        drift = compare(
            snapshot_from_metadata(stage, prior_run, prior_metadata),
            snapshot_from_metadata(stage, run_id, metadata),
            thresholds,
        )
        judged.append((partition, drift))
    if not judged:
        return None, []
    level = worst([d.severity for _, d in judged])
    worst_drift = next(d for _, d in judged if d.severity == level)
    flagged = sorted(p for p, d in judged if p is not None and d.severity != C.SEVERITY_OK)
    return worst_drift, flagged


def make_alert(
    asset: str, drift: StageDrift, run_id: str, partitions: list[str], provenance: Provenance
) -> Alert:
    """The alert for an asset's drift in a run, stamped by ``provenance``."""
    return Alert(
        alert_id=sha256_bytes(f"{asset}\x1f{run_id}".encode())[:24],
        asset=asset,
        stage=S.ASSET_STAGE[asset],
        run_id=run_id,
        prior_run_id=drift.prior_run_id,
        severity=drift.severity,
        flags=drift.flags,
        partitions=partitions,
        detected_at=provenance.recorded_at(),
    )


def _append(path: Path, rows: list[bytes]) -> None:
    existing = path.read_bytes() if path.exists() else b""
    write_bytes_atomic(path, existing + b"".join(rows))


def record_alerts(out_root: Path, alerts: list[Alert]) -> None:
    """Append alerts (once each, by alert_id) to reports/alerts.jsonl."""
    if not alerts:
        return
    with reports_lock(out_root):
        path = out_root / C.ALERTS_PATH
        known = {row["alert_id"] for row in _read(path)}
        fresh = [a for a in alerts if a.alert_id not in known]
        _append(path, [orjson.dumps(a.model_dump()) + b"\n" for a in fresh])


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def post_json(url: str, payload: dict[str, Any], timeout: float = 5.0) -> None:
    """POST one JSON document; raises OSError (URLError/HTTPError) when it is not accepted."""
    request = urllib.request.Request(
        url,
        data=orjson.dumps(payload),
        headers={"Content-Type": "application/json", "User-Agent": "distill-drift-sensor"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        if response.status >= 300:
            raise urllib.error.HTTPError(url, response.status, "not accepted", None, None)


def deliver(
    out_root: Path,
    url: str | None,
    alerts: list[Alert],
    log: Callable[[str], None],
    sender: Callable[[str, dict[str, Any]], None] = post_json,
) -> tuple[int, int]:
    """Send queued and new alerts to the webhook; keep what fails in the outbox.

    Returns (delivered, still queued). Without a webhook nothing is queued.
    """
    if not url:
        return 0, 0
    with reports_lock(out_root):
        outbox = out_root / OUTBOX_PATH
        queued = _read(outbox) + [a.model_dump() for a in alerts]
        remaining: list[dict[str, Any]] = []
        delivered = 0
        for payload in queued:
            try:
                sender(url, payload)
                delivered += 1
            except (OSError, ValueError) as exc:
                log(
                    f"drift alert {payload['alert_id']} not delivered ({type(exc).__name__}); "
                    "kept for the next tick"
                )
                remaining.append(payload)
        write_bytes_atomic(outbox, b"".join(orjson.dumps(p) + b"\n" for p in remaining))
    return delivered, len(remaining)
