"""Per-run reports: recording a stage (receipt, ledger, drift), check results, failures, and the
RunSummary v1 that verifies the chain of custody.

Everything here is rewritten under the reports lock after each stage and each check, so the
summary of a run is always current: a stage that has not run yet, was blocked by a failed check
or crashed is listed with the reason.

Length: every file rewritten under the reports lock (receipt, ledger, run index, summary, drift)
is written here, so what the lock covers is in one module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.infra.io import write_bytes_atomic, write_json_atomic
from distill_assets.lib.publishing.diff import explained_md
from distill_assets.lib.records.accounting import StageResult
from distill_assets.lib.records.drift import (
    DriftReport,
    DriftThresholds,
    StageDrift,
    build_report,
    compare,
    snapshot_from_receipt,
)
from distill_assets.lib.records.receipts import (
    FileEntry,
    Provenance,
    StageReceipt,
    aggregate_hash,
    build_receipt,
    load_receipt,
    receipt_relpath,
    reports_lock,
    resolve_inputs,
    update_ledger,
    write_receipt,
)


def run_dir(out_root: Path, run_id: str) -> Path:
    return out_root / C.REPORTS_DIR / run_id


# --- models -------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageRow(_Strict):
    stage: str
    ran: bool
    records_in: int
    records_out: int
    accepted: int
    rejected: int
    quarantined: int
    skipped: int
    passed: bool
    output_hash: str | None
    receipt_path: str | None
    failed_checks: list[str]
    # why the stage's validation failed (the receipt's errors; empty when it passed)
    errors: list[str] = []


class NotRun(_Strict):
    stage: str
    reason: str


class ChainLink(_Strict):
    stage: str
    path: str
    sha256: str
    producer_run_id: str | None
    producer_stage: str | None
    ok: bool
    problem: str | None


class CheckRecord(_Strict):
    asset: str
    stage: str
    check: str
    passed: bool
    severity: Literal["WARN", "ERROR"]
    blocking: bool
    num_failures: int
    description: str


class DatasetSize(_Strict):
    path: str
    records: int
    bytes: int
    sha256: str


class RunSummary(_Strict):
    """A run's summary (``reports/<run_id>/summary.json``): the seed's v1 fields (the
    ``total_*`` figures, ``datasets`` as rows per dataset, ``run_hash``, ``overall_passed``)
    and distill's additions (the detailed dataset files under ``dataset_files``, ...)."""

    schema_version: Literal[1]
    run_id: str
    timestamp: str
    total_records_in: int
    total_records_out: int
    total_accepted: int
    total_rejected: int
    total_quarantined: int
    total_skipped: int
    datasets: dict[str, int]
    run_hash: str
    overall_passed: bool
    # additions
    expected_stages: list[str]
    stages: list[StageRow]
    not_run: list[NotRun]
    totals: dict[str, int]
    dataset_files: dict[str, DatasetSize]
    checks: list[CheckRecord]
    chain: list[ChainLink]
    chain_ok: bool
    drift_severity: str | None = None


# --- recording ----------------------------------------------------------------------------


@dataclass
class Recorded:
    receipt: StageReceipt
    receipt_path: Path
    drift: StageDrift
    summary: RunSummary


def _index_path(out_root: Path) -> Path:
    return out_root / C.RUN_INDEX_PATH


def _read_index(out_root: Path) -> list[dict[str, Any]]:
    path = _index_path(out_root)
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _append_index(out_root: Path, row: dict[str, Any]) -> None:
    existing = _index_path(out_root).read_bytes() if _index_path(out_root).exists() else b""
    write_bytes_atomic(_index_path(out_root), existing + orjson.dumps(row) + b"\n")


def prior_receipt(
    out_root: Path, run_id: str, stage: str, partitions: list[str] | None
) -> StageReceipt | None:
    """The latest receipt of ``stage`` over the same partitions from an earlier run."""
    for row in reversed(_read_index(out_root)):
        if row["stage"] != stage or row["run_id"] == run_id or row["partitions"] != partitions:
            continue
        path = out_root / receipt_relpath(row["run_id"], stage)
        if path.exists():
            return load_receipt(path)
    return None


def _note_plan(out_root: Path, run_id: str, expected: list[str]) -> list[str]:
    path = run_dir(out_root, run_id) / "plan.json"
    known = orjson.loads(path.read_bytes())["expected_stages"] if path.exists() else []
    merged = [s for s in S.STAGES if s in set(known) | set(expected)]
    if merged != known:
        write_json_atomic(path, {"run_id": run_id, "expected_stages": merged})
    return merged


@dataclass(frozen=True)
class RunReports:
    """Where a run's reports are recorded: the output root, the run, the stages it was asked
    to materialize (its plan, which the summary lists as not run until they are), and what its
    records are stamped with (the edge's pins, runtime/resource.py)."""

    out_root: Path
    run_id: str
    expected_stages: list[str]
    provenance: Provenance


def record_stage(
    run: RunReports, result: StageResult, started: float, thresholds: DriftThresholds
) -> Recorded:
    """Turn a finished stage into its receipt, ledger entries, drift and a fresh summary."""
    out_root, run_id = run.out_root, run.run_id
    if result.stage == C.STAGE_COLLECT:
        inputs = [FileEntry(**f.as_dict()) for f in result.inputs]
    else:
        inputs = resolve_inputs(out_root, result.inputs, out_root / result.input_root)
    if result.output_root:
        result.extra["root"] = result.output_root
    duration_ms = int((time.perf_counter() - started) * 1000)
    receipt = build_receipt(result, run_id, inputs, duration_ms, run.provenance)
    path = write_receipt(out_root, receipt)
    update_ledger(out_root, run_id, result.stage, result.outputs, result.output_root)
    with reports_lock(out_root):
        _note_plan(out_root, run_id, run.expected_stages)
        _append_index(
            out_root,
            {
                "run_id": run_id,
                "stage": result.stage,
                "partitions": result.partitions,
                "timestamp": receipt.timestamp,
            },
        )
        previous = prior_receipt(out_root, run_id, result.stage, result.partitions)
        drift = compare(
            snapshot_from_receipt(previous) if previous else None,
            snapshot_from_receipt(receipt),
            thresholds,
        )
        _write_drift(out_root, run_id, drift, thresholds)
        summary = _write_summary_locked(out_root, run_id, run.provenance)
    return Recorded(receipt, path, drift, summary)


def _write_drift(
    out_root: Path, run_id: str, drift: StageDrift, thresholds: DriftThresholds
) -> DriftReport:
    path = run_dir(out_root, run_id) / "drift.json"
    stages: dict[str, StageDrift] = {}
    if path.exists():
        stages = DriftReport.model_validate(orjson.loads(path.read_bytes())).by_stage()
    stages[drift.stage] = drift
    report = build_report(run_id, stages, thresholds)
    write_json_atomic(path, report.model_dump(mode="json"))
    return report


def _refresh_drift(out_root: Path, run_id: str, run_hash: str) -> DriftReport | None:
    """The run's drift report with its run-level flags for the current run hash (compared with
    the prior run's, read from that run's summary), rewritten; None before any stage."""
    path = run_dir(out_root, run_id) / "drift.json"
    if not path.exists():
        return None
    report = DriftReport.model_validate(orjson.loads(path.read_bytes()))
    prior_hash = None
    if report.prior_run_id is not None:
        prior_summary = run_dir(out_root, report.prior_run_id) / "summary.json"
        if prior_summary.exists():
            prior_hash = orjson.loads(prior_summary.read_bytes()).get("run_hash")
    thresholds = DriftThresholds(
        warn_pct=report.thresholds["warn_pct"],
        alert_pct=report.thresholds["alert_pct"],
        min_base=int(report.thresholds["min_base"]),
    )
    fresh = build_report(run_id, report.by_stage(), thresholds, run_hash, prior_hash)
    if fresh != report:
        write_json_atomic(path, fresh.model_dump(mode="json"))
    return fresh


def record_checks(run: RunReports, checks: list[CheckRecord]) -> RunSummary | None:
    """Keep several asset checks' verdicts with the run (one check step's), then refresh the
    summary once."""
    if not checks:
        return None
    out_root, run_id = run.out_root, run.run_id
    with reports_lock(out_root):
        _note_plan(out_root, run_id, run.expected_stages)
        for check in checks:
            path = run_dir(out_root, run_id) / "checks" / f"{check.asset}.{check.check}.json"
            write_json_atomic(path, check.model_dump(mode="json"))
        return _write_summary_locked(out_root, run_id, run.provenance)


def record_failure(
    run: RunReports, stage: str, error: BaseException, message: str | None = None
) -> RunSummary:
    """Note that a stage raised. Only messages we wrote ourselves (a setting, a lock) are kept:
    an arbitrary exception's text may quote input."""
    out_root, run_id = run.out_root, run.run_id
    with reports_lock(out_root):
        _note_plan(out_root, run_id, run.expected_stages)
        path = run_dir(out_root, run_id) / "failures" / f"{stage}.json"
        write_json_atomic(
            path,
            {
                "stage": stage,
                "error_type": type(error).__name__,
                "message": message,
                "timestamp": run.provenance.recorded_at(),
            },
        )
        return _write_summary_locked(out_root, run_id, run.provenance)


# --- summary ------------------------------------------------------------------------------


def _load_checks(directory: Path) -> list[CheckRecord]:
    checks_dir = directory / "checks"
    if not checks_dir.is_dir():
        return []
    return [
        CheckRecord.model_validate(orjson.loads(p.read_bytes()))
        for p in sorted(checks_dir.glob("*.json"))
    ]


def _failures(directory: Path) -> dict[str, str]:
    failures_dir = directory / "failures"
    if not failures_dir.is_dir():
        return {}
    found = {}
    for p in sorted(failures_dir.glob("*.json")):
        row = orjson.loads(p.read_bytes())
        detail = f": {row['message']}" if row.get("message") else ""
        found[row["stage"]] = f"{row['error_type']}{detail}"
    return found


def verify_chain(out_root: Path, receipts: dict[str, StageReceipt]) -> list[ChainLink]:
    """Each input a stage read must be listed, with the same sha256, in its producer's receipt."""
    links: list[ChainLink] = []
    cache: dict[tuple[str, str], StageReceipt | None] = {}
    for stage, receipt in receipts.items():
        if stage == C.STAGE_COLLECT:
            continue
        for entry in receipt.inputs.files:
            problem = None
            producer: StageReceipt | None = None
            if entry.producer_run_id is None or entry.producer_stage is None:
                problem = "no receipt produced this file (changed outside distill?)"
            else:
                key = (entry.producer_run_id, entry.producer_stage)
                if key not in cache:
                    path = out_root / receipt_relpath(*key)
                    cache[key] = load_receipt(path) if path.exists() else None
                producer = cache[key]
                if producer is None:
                    problem = f"producer receipt {receipt_relpath(*key)} is missing"
                else:
                    listed = {f.path: f.sha256 for f in producer.outputs.files}
                    if entry.path not in listed:
                        problem = "the producer's receipt does not list this file"
                    elif listed[entry.path] != entry.sha256:
                        problem = "sha256 differs from the producer's receipt"
            links.append(
                ChainLink(
                    stage=stage,
                    path=entry.path,
                    sha256=entry.sha256,
                    producer_run_id=entry.producer_run_id,
                    producer_stage=entry.producer_stage,
                    ok=problem is None,
                    problem=problem,
                )
            )
    return links


def _dataset_sizes(receipts: dict[str, StageReceipt]) -> dict[str, DatasetSize]:
    wanted = {
        C.RAG_PATH: "rag",
        C.EXTRACTED_PATH: "rag_extracted",
        C.INDEX_PATH: "rag_index",
        C.SFT_PATH: "sft",
        C.PREFERENCE_PATH: "preference",
        C.KTO_PATH: "kto",
    }
    sizes = {}
    for receipt in receipts.values():
        for f in receipt.outputs.files:
            if f.path in wanted:
                sizes[wanted[f.path]] = DatasetSize(
                    path=f.path, records=f.record_count, bytes=f.bytes, sha256=f.sha256
                )
    return dict(sorted(sizes.items()))


def _not_run_reason(
    stage: str,
    receipts: dict[str, StageReceipt],
    checks: list[CheckRecord],
    failures: dict[str, str],
    expected: list[str],
) -> str:
    if stage in failures:
        return f"failed: the stage raised {failures[stage]}"
    ancestors: list[str] = []
    frontier = list(S.STAGE_READS.get(stage, ()))
    while frontier:
        up = frontier.pop(0)
        if up not in ancestors:
            ancestors.append(up)
            frontier.extend(S.STAGE_READS.get(up, ()))
    blocked = [c for c in checks if c.stage in ancestors and c.blocking and not c.passed]
    if blocked:
        names = ", ".join(sorted(f"{c.asset}.{c.check}" for c in blocked))
        return f"blocked: blocking check {names} failed upstream"
    for up in ancestors:
        if up in failures:
            return f"blocked: upstream stage {up} failed"
        if up in receipts and not receipts[up].validation.passed:
            return f"blocked: upstream stage {up} failed its validation"
        if up in expected and up not in receipts:
            return f"blocked: upstream stage {up} did not run"
    return "not run (yet): no receipt was recorded for this stage in this run"


def _write_summary_locked(out_root: Path, run_id: str, provenance: Provenance) -> RunSummary:
    directory = run_dir(out_root, run_id)
    plan = directory / "plan.json"
    expected = orjson.loads(plan.read_bytes())["expected_stages"] if plan.exists() else []
    receipts: dict[str, StageReceipt] = {}
    for stage in S.STAGES:
        path = out_root / receipt_relpath(run_id, stage)
        if path.exists():
            receipts[stage] = load_receipt(path)
    checks = _load_checks(directory)
    failures = _failures(directory)
    chain = verify_chain(out_root, receipts)
    rows: list[StageRow] = []
    not_run: list[NotRun] = []
    for stage in S.STAGES:
        receipt = receipts.get(stage)
        failed_checks = [
            f"{c.asset}.{c.check}"
            for c in checks
            if c.stage == stage and not c.passed and c.severity == "ERROR"
        ]
        if receipt is None:
            if stage in expected:
                reason = _not_run_reason(stage, receipts, checks, failures, expected)
                not_run.append(NotRun(stage=stage, reason=reason))
                rows.append(
                    StageRow(
                        stage=stage,
                        ran=False,
                        records_in=0,
                        records_out=0,
                        accepted=0,
                        rejected=0,
                        quarantined=0,
                        skipped=0,
                        passed=False,
                        output_hash=None,
                        receipt_path=None,
                        failed_checks=failed_checks,
                        errors=[],
                    )
                )
            continue
        stats = receipt.stats
        chain_ok = all(link.ok for link in chain if link.stage == stage)
        rows.append(
            StageRow(
                stage=stage,
                ran=True,
                records_in=stats.records_in,
                records_out=stats.records_out,
                accepted=stats.accepted,
                rejected=stats.rejected,
                quarantined=stats.quarantined,
                skipped=stats.skipped,
                passed=receipt.validation.passed and not failed_checks and chain_ok,
                output_hash=receipt.outputs.hash,
                receipt_path=receipt_relpath(run_id, stage),
                failed_checks=failed_checks,
                errors=list(receipt.validation.errors),
            )
        )
    totals = {
        name: sum(getattr(r, name) for r in rows)
        for name in ("records_in", "records_out", "accepted", "rejected", "quarantined", "skipped")
    }
    run_hash = aggregate_hash(
        [
            FileEntry(path=r.stage, sha256=r.output_hash, bytes=0, record_count=0)
            for r in rows
            if r.output_hash
        ]
    )
    chain_ok = all(link.ok for link in chain)
    files = _dataset_sizes(receipts)
    drift = _refresh_drift(out_root, run_id, run_hash)
    summary = RunSummary(
        schema_version=C.SUMMARY_SCHEMA_VERSION,
        run_id=run_id,
        timestamp=provenance.recorded_at(),
        total_records_in=totals["records_in"],
        total_records_out=totals["records_out"],
        total_accepted=totals["accepted"],
        total_rejected=totals["rejected"],
        total_quarantined=totals["quarantined"],
        total_skipped=totals["skipped"],
        datasets={name: size.records for name, size in files.items()},
        run_hash=run_hash,
        overall_passed=bool(rows) and not not_run and all(r.passed for r in rows) and chain_ok,
        expected_stages=expected,
        stages=rows,
        not_run=not_run,
        totals=totals,
        dataset_files=files,
        checks=checks,
        chain=chain,
        chain_ok=chain_ok,
        drift_severity=None if drift is None else drift.severity,
    )
    write_json_atomic(directory / "summary.json", summary.model_dump(mode="json"))
    markdown = render_summary_md(summary, drift)
    write_bytes_atomic(directory / "summary.md", markdown.encode("utf-8"))
    return summary


def render_drift_md(drift: DriftReport | None) -> list[str]:
    """The drift section that ends summary.md: severity, run-level flags, per-stage deltas."""
    lines = ["## Drift", ""]
    if drift is None:
        return [*lines, "No stage has been compared yet."]
    prior = drift.prior_run_id or "none"
    lines.append(f"Severity: **{drift.severity.upper()}** · prior run `{prior}`")
    lines += explained_md(drift.severity, drift.prior_run_id, drift.run_id)
    prefixes = tuple(f"{d.stage}:" for d in drift.stages)
    run_flags = [flag for flag in drift.flags if not flag.startswith(prefixes)]
    lines += ["", "Flags: " + ("; ".join(run_flags) if run_flags else "none")]
    lines += [
        "",
        "| stage | severity | Δ in | Δ out | Δ accepted | Δ quarantined | out % | "
        "input same | output same | notes |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---|",
    ]

    def cell(value: object) -> str:
        if value is None:
            return "–"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:+.1f}"
        if isinstance(value, int):
            return f"{value:+d}"
        return str(value)

    for d in drift.stages:
        notes = "; ".join(d.notes).replace("|", "/") if d.notes else ""
        lines.append(
            f"| {d.stage} | {d.severity} | {cell(d.delta_records_in)} | "
            f"{cell(d.delta_records_out)} | {cell(d.delta_accepted)} | "
            f"{cell(d.delta_quarantined)} | {cell(d.pct_change_out)} | "
            f"{cell(d.input_hash_match)} | {cell(d.output_hash_match)} | {notes} |"
        )
    return lines


def render_summary_md(summary: RunSummary, drift: DriftReport | None = None) -> str:
    verdict = "PASSED" if summary.overall_passed else "FAILED"
    lines = [
        f"# distill run {summary.run_id}",
        "",
        f"Overall: **{verdict}** · run hash `{summary.run_hash[:16]}` · {summary.timestamp}",
        "",
        "| stage | in | out | accepted | rejected | quarantined | skipped | passed |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in summary.stages:
        mark = "yes" if row.passed else ("not run" if not row.ran else "NO")
        lines.append(
            f"| {row.stage} | {row.records_in} | {row.records_out} | {row.accepted} | "
            f"{row.rejected} | {row.quarantined} | {row.skipped} | {mark} |"
        )
    t = summary.totals
    lines.append(
        f"| **total** | {t['records_in']} | {t['records_out']} | {t['accepted']} | "
        f"{t['rejected']} | {t['quarantined']} | {t['skipped']} | |"
    )
    if summary.dataset_files:
        lines += [
            "",
            "## Datasets",
            "",
            "| dataset | path | records | bytes |",
            "|---|---|---:|---:|",
        ]
        for name, size in summary.dataset_files.items():
            lines.append(f"| {name} | `{size.path}` | {size.records} | {size.bytes} |")
    failing = [row for row in summary.stages if row.errors]
    if failing:
        lines += ["", "## Stage errors", ""]
        lines += [f"- `{row.stage}`: {error}" for row in failing for error in row.errors]
    if summary.not_run:
        lines += ["", "## Stages that did not run", ""]
        lines += [f"- `{item.stage}`: {item.reason}" for item in summary.not_run]
    failed = [c for c in summary.checks if not c.passed]
    if failed:
        lines += ["", "## Failed checks", ""]
        lines += [
            f"- `{c.asset}.{c.check}` ({c.severity}{', blocking' if c.blocking else ''}): "
            f"{c.description}"
            for c in failed
        ]
    broken = [link for link in summary.chain if not link.ok]
    lines += ["", "## Chain of custody", ""]
    if broken:
        lines += [f"- BROKEN `{b.stage}` ← `{b.path}`: {b.problem}" for b in broken]
    else:
        lines.append(f"All {len(summary.chain)} links verified against their producers' receipts.")
    lines += ["", *render_drift_md(drift)]
    return "\n".join(lines) + "\n"


def load_summary(out_root: Path, run_id: str) -> RunSummary:
    return RunSummary.model_validate(
        orjson.loads((run_dir(out_root, run_id) / "summary.json").read_bytes())
    )


def load_drift(out_root: Path, run_id: str) -> DriftReport:
    return DriftReport.model_validate(
        orjson.loads((run_dir(out_root, run_id) / "drift.json").read_bytes())
    )
