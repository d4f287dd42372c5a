"""DriftReport v1: how a stage's latest figures differ from the run before, and how much it matters.

``compare`` is pure: it takes two snapshots of a stage (from receipts, or from materialization
metadata in the sensor) and thresholds, and says ok, warn or alert with the flags that caused it.
The shapes are the seed's v1 (``stages`` a list of ``{stage, delta_records_in, ...,
notes}``; run-level ``flags`` in words), with distill's own fields kept as additions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S

Severity = Literal[C.SEVERITY_OK, C.SEVERITY_WARN, C.SEVERITY_ALERT]
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
        environ: Mapping[str, str],
        warn_pct: float | None = None,
        alert_pct: float | None = None,
        min_base: int | None = None,
    ) -> DriftThresholds:
        """Explicit values win, then DISTILL_DRIFT_WARN_PCT / _ALERT_PCT / _MIN_BASE in
        ``environ`` (the caller's environment, read at the edge), then the defaults."""

        def pick(explicit: float | None, env: str, default: float) -> float:
            if explicit is not None:
                return explicit
            raw = environ.get(env)
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
    # the stage's category mix, when it records one (receipt extra.categories: score)
    categories: dict[str, int] = Field(default_factory=dict)


# run-level flags of the seed's DriftReport v1, in words
FLAG_BASELINE = "no prior; baseline established"
FLAG_RUN_HASH_DIFFERS = "run_hash differs from prior run"


class StageDrift(BaseModel):
    """One stage's drift: the seed's v1 fields first, distill's additions after."""

    model_config = ConfigDict(extra="forbid")
    stage: str
    delta_records_in: int | None
    delta_records_out: int | None
    delta_accepted: int | None
    delta_quarantined: int | None
    pct_change_out: float | None
    input_hash_match: bool | None
    output_hash_match: bool | None
    deterministic_violation: bool
    notes: list[str]
    # additions
    prior_run_id: str | None
    baseline_established: bool
    deltas: dict[str, int]
    pct_change: dict[str, float | None]
    new_reason_codes: list[str]
    dropped_reason_codes: list[str]
    # percentage points each reason code's (or category's) share moved, beyond the warn level
    reason_mix_swings: dict[str, float] = Field(default_factory=dict)
    category_mix_swings: dict[str, float] = Field(default_factory=dict)
    severity: Severity
    flags: list[str]


class DriftReport(BaseModel):
    """A run's drift (``reports/<run_id>/drift.json``): the seed's v1 fields (``flags`` holds
    the run-level flags in words, then every stage flag as ``<stage>:<flag>``) and additions."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1]
    run_id: str
    stages: list[StageDrift] = Field(default_factory=list)
    flags: list[str]
    # additions
    prior_run_id: str | None
    baseline_established: bool
    severity: Severity
    thresholds: dict[str, float]
    run_hash: str | None = None
    prior_run_hash: str | None = None

    def stage(self, name: str) -> StageDrift:
        """The drift of one stage (KeyError when the run has none)."""
        for drift in self.stages:
            if drift.stage == name:
                return drift
        raise KeyError(name)

    def by_stage(self) -> dict[str, StageDrift]:
        return {drift.stage: drift for drift in self.stages}


def _pct(previous: int, current: int) -> float | None:
    if previous == 0:
        return None if current == 0 else 100.0
    return round((current - previous) / previous * 100.0, 3)


def worst(severities: list[str]) -> Severity:
    return max(severities, key=C.SEVERITY_ORDER.__getitem__, default=C.SEVERITY_OK)  # type: ignore[return-value]


def mix_swings(before: dict[str, int], after: dict[str, int], min_base: int) -> dict[str, float]:
    """How many percentage points each key's share of the total moved (every key present in
    either mix; signed, rounded to 3 places); empty when both totals are below ``min_base`` or
    either is zero (a mix appearing or vanishing is a new or dropped code, not a swing)."""
    total_before = sum(n for n in before.values() if n > 0)
    total_after = sum(n for n in after.values() if n > 0)
    if not total_before or not total_after or max(total_before, total_after) < min_base:
        return {}
    swings = {}
    for key in sorted(set(before) | set(after)):
        share_before = max(before.get(key, 0), 0) / total_before * 100.0
        share_after = max(after.get(key, 0), 0) / total_after * 100.0
        swings[key] = round(share_after - share_before, 3)
    return swings


def compare(
    previous: StageSnapshot | None, current: StageSnapshot, thresholds: DriftThresholds
) -> StageDrift:
    """Judge one stage's change since the previous comparable execution."""
    if previous is None:
        return StageDrift(
            stage=current.stage,
            delta_records_in=None,
            delta_records_out=None,
            delta_accepted=None,
            delta_quarantined=None,
            pct_change_out=None,
            input_hash_match=None,
            output_hash_match=None,
            deterministic_violation=False,
            notes=["no prior run of this stage over the same partitions: baseline established"],
            prior_run_id=None,
            baseline_established=True,
            deltas={},
            pct_change={},
            new_reason_codes=[],
            dropped_reason_codes=[],
            severity=C.SEVERITY_OK,
            flags=["baseline_established"],
        )
    flags: list[str] = []
    notes: list[str] = []
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
        level = (
            C.SEVERITY_ALERT
            if abs(pct) >= thresholds.alert_pct
            else (C.SEVERITY_WARN if abs(pct) >= thresholds.warn_pct else None)
        )
        if level is not None:
            levels.append(level)
            flags.append(f"{name}_changed_{pct:+.1f}pct")
            notes.append(f"{name} {before} -> {after} ({pct:+.1f}%): {level}")
    input_match = previous.input_hash == current.input_hash
    output_match = previous.output_hash == current.output_hash
    violation = input_match and not output_match
    if violation:
        levels.append(C.SEVERITY_ALERT)
        flags.append("deterministic_violation")
        notes.append("same input hash, different output hash: deterministic violation")
    before_codes = {code for code, n in previous.reasons.items() if n}
    after_codes = {code for code, n in current.reasons.items() if n}
    new_codes = sorted(after_codes - before_codes)
    if new_codes:
        levels.append(C.SEVERITY_WARN)
        flags.extend(f"new_reason_code:{code}" for code in new_codes)
        notes.append("new reason code(s): " + ", ".join(new_codes))
    swung: dict[str, dict[str, float]] = {}
    for what, before_mix, after_mix in (
        ("reason", previous.reasons, current.reasons),
        ("category", previous.categories, current.categories),
    ):
        # a swing of more than the warn threshold in a share of the mix warns (the seed's
        # rule), whether or not the code is new
        swings = mix_swings(before_mix, after_mix, thresholds.min_base)
        big = {key: pp for key, pp in swings.items() if abs(pp) > thresholds.warn_pct}
        swung[what] = big
        if big:
            levels.append(C.SEVERITY_WARN)
            for key, pp in big.items():
                flags.append(f"{what}_mix_swing:{key}:{pp:+.1f}pp")
                notes.append(
                    f"{what} {key}: share of the stage's {what}s moved {pp:+.1f} points "
                    f"(more than {thresholds.warn_pct:g})"
                )
    if not input_match:
        notes.append("input changed since the prior run")
    return StageDrift(
        stage=current.stage,
        delta_records_in=deltas["records_in"],
        delta_records_out=deltas["records_out"],
        delta_accepted=deltas["accepted"],
        delta_quarantined=deltas["quarantined"],
        pct_change_out=pcts["records_out"],
        input_hash_match=input_match,
        output_hash_match=output_match,
        deterministic_violation=violation,
        notes=notes,
        prior_run_id=previous.run_id,
        baseline_established=False,
        deltas=deltas,
        pct_change=pcts,
        new_reason_codes=new_codes,
        dropped_reason_codes=sorted(before_codes - after_codes),
        reason_mix_swings=swung["reason"],
        category_mix_swings=swung["category"],
        severity=worst(levels),
        flags=flags,
    )


def build_report(
    run_id: str,
    stages: dict[str, StageDrift],
    thresholds: DriftThresholds,
    run_hash: str | None = None,
    prior_run_hash: str | None = None,
) -> DriftReport:
    """The run's report over its stages (in pipeline order); ``run_hash`` and the prior run's
    (from the summaries) add the run-level flag when they differ."""
    ordered = [stages[s] for s in S.STAGES if s in stages] + [
        stages[s] for s in sorted(stages) if s not in S.STAGES
    ]
    priors = [d.prior_run_id for d in ordered if d.prior_run_id]
    run_flags = []
    if not priors:
        run_flags.append(FLAG_BASELINE)
    elif run_hash is not None and prior_run_hash is not None and run_hash != prior_run_hash:
        run_flags.append(FLAG_RUN_HASH_DIFFERS)
    return DriftReport(
        schema_version=C.DRIFT_SCHEMA_VERSION,
        run_id=run_id,
        stages=ordered,
        flags=run_flags + [f"{d.stage}:{flag}" for d in ordered for flag in d.flags],
        prior_run_id=priors[0] if priors else None,
        baseline_established=not priors,
        severity=worst([d.severity for d in ordered]),
        thresholds={
            "warn_pct": thresholds.warn_pct,
            "alert_pct": thresholds.alert_pct,
            "min_base": thresholds.min_base,
        },
        run_hash=run_hash,
        prior_run_hash=prior_run_hash if priors else None,
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
        categories=receipt.extra.get("categories") or {},
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
