"""DriftReport v1: how a stage's latest figures differ from the run before, and how much it matters.

``compare`` is pure: it takes two snapshots of a stage (from receipts, or from materialization
metadata in the sensor) and thresholds, and says ok, warn or alert with the flags that caused it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distill_assets.lib import constants as C

Severity = Literal["ok", "warn", "alert"]
COUNTED = ("records_in", "records_out", "accepted", "rejected", "quarantined")


@dataclass(frozen=True)
class DriftThresholds:
    """Percent changes that raise a warning or an alert; counts below ``min_base`` are too small
    for a percentage to mean anything and only their absolute change is reported."""

    warn_pct: float = 20.0
    alert_pct: float = 50.0
    min_base: int = 10

    def errors(self) -> list[str]:
        problems = []
        if not 0 < self.warn_pct < self.alert_pct:
            problems.append(
                f"drift thresholds warn_pct={self.warn_pct!r}, alert_pct={self.alert_pct!r}: "
                "need 0 < warn_pct < alert_pct"
            )
        if self.min_base < 0:
            problems.append(f"drift min_base={self.min_base!r} must be at least 0")
        return problems

    @classmethod
    def from_env(
        cls,
        warn_pct: float | None = None,
        alert_pct: float | None = None,
        min_base: int | None = None,
    ) -> DriftThresholds:
        """Explicit values win, then DISTILL_DRIFT_WARN_PCT / _ALERT_PCT / _MIN_BASE, then the
        defaults."""

        def pick(explicit: float | None, env: str, default: float) -> float:
            if explicit is not None:
                return explicit
            raw = os.environ.get(env)
            if raw is None or raw == "":
                return default
            try:
                return float(raw)
            except ValueError as exc:
                raise ValueError(f"{env}={raw!r} is not a number") from exc

        return cls(
            warn_pct=pick(warn_pct, C.ENV_DRIFT_WARN, cls.warn_pct),
            alert_pct=pick(alert_pct, C.ENV_DRIFT_ALERT, cls.alert_pct),
            min_base=int(pick(min_base, C.ENV_DRIFT_MIN_BASE, cls.min_base)),
        )


class StageSnapshot(BaseModel):
    """The figures of one stage execution that drift compares."""

    model_config = ConfigDict(extra="forbid")
    stage: str
    run_id: str
    partitions: list[str] | None = None
    records_in: int
    records_out: int
    accepted: int
    rejected: int
    quarantined: int
    skipped: int
    reasons: dict[str, int]
    input_hash: str
    output_hash: str


class StageDrift(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str
    prior_run_id: str | None
    baseline_established: bool
    deltas: dict[str, int]
    pct_change: dict[str, float | None]
    pct_change_out: float | None
    input_hash_match: bool | None
    output_hash_match: bool | None
    deterministic_violation: bool
    new_reason_codes: list[str]
    dropped_reason_codes: list[str]
    severity: Severity
    flags: list[str]


class DriftReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1]
    run_id: str
    prior_run_id: str | None
    baseline_established: bool
    severity: Severity
    flags: list[str]
    thresholds: dict[str, float]
    stages: dict[str, StageDrift] = Field(default_factory=dict)


def _pct(previous: int, current: int) -> float | None:
    if previous == 0:
        return None if current == 0 else 100.0
    return round((current - previous) / previous * 100.0, 3)


def worst(severities: list[str]) -> Severity:
    level = max((C.SEVERITY_ORDER[s] for s in severities), default=0)
    return {0: "ok", 1: "warn", 2: "alert"}[level]  # type: ignore[return-value]


def compare(
    previous: StageSnapshot | None, current: StageSnapshot, thresholds: DriftThresholds
) -> StageDrift:
    """Judge one stage's change since the previous comparable execution."""
    if previous is None:
        return StageDrift(
            stage=current.stage,
            prior_run_id=None,
            baseline_established=True,
            deltas={},
            pct_change={},
            pct_change_out=None,
            input_hash_match=None,
            output_hash_match=None,
            deterministic_violation=False,
            new_reason_codes=[],
            dropped_reason_codes=[],
            severity="ok",
            flags=["baseline_established"],
        )
    flags: list[str] = []
    levels: list[str] = []
    deltas: dict[str, int] = {}
    pcts: dict[str, float | None] = {}
    for name in COUNTED:
        before, after = getattr(previous, name), getattr(current, name)
        deltas[name] = after - before
        pct = _pct(before, after)
        pcts[name] = pct
        if pct is None or max(before, after) < thresholds.min_base:
            continue
        if abs(pct) >= thresholds.alert_pct:
            levels.append("alert")
            flags.append(f"{name}_changed_{pct:+.1f}pct")
        elif abs(pct) >= thresholds.warn_pct:
            levels.append("warn")
            flags.append(f"{name}_changed_{pct:+.1f}pct")
    input_match = previous.input_hash == current.input_hash
    output_match = previous.output_hash == current.output_hash
    violation = input_match and not output_match
    if violation:
        levels.append("alert")
        flags.append("deterministic_violation")
    before_codes = {code for code, n in previous.reasons.items() if n}
    after_codes = {code for code, n in current.reasons.items() if n}
    new_codes = sorted(after_codes - before_codes)
    if new_codes:
        levels.append("warn")
        flags.extend(f"new_reason_code:{code}" for code in new_codes)
    return StageDrift(
        stage=current.stage,
        prior_run_id=previous.run_id,
        baseline_established=False,
        deltas=deltas,
        pct_change=pcts,
        pct_change_out=pcts["records_out"],
        input_hash_match=input_match,
        output_hash_match=output_match,
        deterministic_violation=violation,
        new_reason_codes=new_codes,
        dropped_reason_codes=sorted(before_codes - after_codes),
        severity=worst(levels),
        flags=flags,
    )


def build_report(
    run_id: str, stages: dict[str, StageDrift], thresholds: DriftThresholds
) -> DriftReport:
    priors = [d.prior_run_id for d in stages.values() if d.prior_run_id]
    return DriftReport(
        schema_version=C.DRIFT_SCHEMA_VERSION,
        run_id=run_id,
        prior_run_id=priors[0] if priors else None,
        baseline_established=not priors,
        severity=worst([d.severity for d in stages.values()]),
        flags=[f"{stage}:{flag}" for stage, d in sorted(stages.items()) for flag in d.flags],
        thresholds={
            "warn_pct": thresholds.warn_pct,
            "alert_pct": thresholds.alert_pct,
            "min_base": thresholds.min_base,
        },
        stages=dict(sorted(stages.items())),
    )


def snapshot_from_receipt(receipt: Any) -> StageSnapshot:
    return StageSnapshot(
        stage=receipt.stage,
        run_id=receipt.run_id,
        partitions=receipt.partitions,
        records_in=receipt.stats.records_in,
        records_out=receipt.stats.records_out,
        accepted=receipt.stats.accepted,
        rejected=receipt.stats.rejected,
        quarantined=receipt.stats.quarantined,
        skipped=receipt.stats.skipped,
        reasons=receipt.stats.reasons,
        input_hash=receipt.inputs.hash,
        output_hash=receipt.outputs.hash,
    )


def snapshot_from_metadata(stage: str, run_id: str, metadata: dict[str, Any]) -> StageSnapshot:
    """Rebuild a snapshot from materialization metadata (plain values)."""
    reasons = {
        key[len(C.MD_REASON_PREFIX) :]: int(value)
        for key, value in metadata.items()
        if key.startswith(C.MD_REASON_PREFIX)
    }
    quarantined = int(metadata.get(C.MD_QUARANTINED, 0))
    skipped = int(metadata.get(C.MD_SKIPPED, 0))
    records_in = int(metadata.get(C.MD_RECORDS_IN, 0))
    return StageSnapshot(
        stage=stage,
        run_id=run_id,
        records_in=records_in,
        records_out=records_in - quarantined - skipped,
        accepted=int(metadata.get(C.MD_ACCEPTED, 0)),
        rejected=int(metadata.get(C.MD_REJECTED, 0)),
        quarantined=quarantined,
        skipped=skipped,
        reasons=reasons,
        input_hash=str(metadata.get(C.MD_INPUT_HASH, "")),
        output_hash=str(metadata.get(C.MD_OUTPUT_HASH, "")),
    )
