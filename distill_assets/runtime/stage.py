"""The one runner every asset uses: run a stage and account for it (lock, receipt, ledger,
drift, summary, metadata), in four steps.

``prepare`` validates every setting of the run and takes the output's lock before anything is
written; ``execute`` does the stage's work; ``record`` writes each stage's receipt, ledger entries
and drift; ``report`` turns a recorded stage into what Dagster shows (its materialization and
metadata, its drift check) and the failure to raise. ``run_stage`` runs one stage in a step,
``run_stages`` the stages that share one (the export pass).

Length: the runner and the metadata it reports (schema, per-day observations, dataset previews),
read top to bottom in the order a stage runs.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.datasets.formats import preview_markdown
from distill_assets.lib.infra import progress
from distill_assets.lib.infra.layout import version_relroot
from distill_assets.lib.infra.locking import OutputLocked, acquire, release, sweep_temp_files
from distill_assets.lib.infra.parallel import release_memory
from distill_assets.lib.infra.runconfig import asset_config
from distill_assets.lib.infra.storage import Workspace
from distill_assets.lib.playbooks.search import IndexSettings
from distill_assets.lib.publishing.versions import open_version
from distill_assets.lib.records.accounting import StageResult, skipped_share_errors
from distill_assets.lib.records.drift import DriftThresholds
from distill_assets.lib.records.receipts import (
    StageReceipt,
    load_receipt,
    receipt_metadata,
    receipt_relpath,
)
from distill_assets.lib.records.reports import Recorded, RunReports, record_failure, record_stage
from distill_assets.runtime.config import (
    AGREED_HYGIENE,
    CONFIG_CLASSES,
    ExportConfig,
    HygieneConfig,
    IndexConfig,
)
from distill_assets.runtime.resource import (
    ConfigError,
    DistillResource,
    progress_interval,
    provenance,
    run_tags,
)

# warnings of a receipt logged one by one; the rest are counted
LOGGED_WARNINGS = 20


def expected_stages(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[str]:
    """Stages the current run was asked to materialize."""
    selection = context.run.asset_selection
    if not selection:
        return list(S.STAGES)
    names = {key.to_user_string() for key in selection}
    return [stage for stage in S.STAGES if S.STAGE_ASSET[stage] in names]


def index_settings_of(context: dg.AssetExecutionContext) -> IndexSettings | None:
    """The search index's settings in this run, when the run builds the index (and its
    config is valid: preflight has said so); else None."""
    if C.STAGE_INDEX not in expected_stages(context):
        return None
    ops = (context.run.run_config or {}).get("ops", {})
    try:
        return IndexConfig(**asset_config(ops, C.ASSET_PLAYBOOK_INDEX)).settings()
    except (ConfigError, ValueError):
        return None


@contextmanager
def frozen_gc() -> Iterator[None]:
    """Keep the objects that exist now (Dagster's, the imported modules') out of the cyclic
    garbage collector while a stage works, so its collections only walk what the stage made.

    Without this, a stage that keeps many containers alive triggers full collections that
    each walk every object in the process; they are released again afterwards."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def preflight(context: dg.AssetExecutionContext, distill: DistillResource, stage: str) -> None:
    """Validate every setting the run will use before the first byte is written.

    Dagster has already refused unknown keys and wrong types; this checks values (thresholds,
    paths) for all assets selected in the run, so a bad export setting fails the run before
    collect writes anything.
    """
    ops = (context.run.run_config or {}).get("ops", {})
    selected = set(expected_stages(context))
    for asset, config_class in CONFIG_CLASSES.items():
        if S.ASSET_STAGE[asset] not in selected:
            continue
        values = asset_config(ops, asset)
        config = config_class(**values)
        validate = getattr(config, "settings", None) or config.policy
        validate()
        if isinstance(config, ExportConfig):
            config.eval_path(distill)
    distill.thresholds()
    distill.skipped_limit()
    if C.STAGE_COLLECT in selected:
        distill.source_root()
        distill.check_sources()
    hygienic = [
        asset
        for asset, config_class in CONFIG_CLASSES.items()
        if S.ASSET_STAGE[asset] in selected and issubclass(config_class, HygieneConfig)
    ]
    for name in AGREED_HYGIENE:
        values = {
            asset: asset_config(ops, asset).get(name, HygieneConfig.model_fields[name].default)
            for asset in hygienic
        }
        if len({repr(v) for v in values.values()}) > 1:
            raise ConfigError(
                name,
                values,
                "must be the same for every asset that publishes rows (set it on each of "
                + ", ".join(sorted(values))
                + ")",
            )


def tag_run(context: dg.AssetExecutionContext, distill: DistillResource) -> None:
    """Tag the run with its source and output, however it was launched (``distill
    materialize``, ``dagster asset materialize``, the UI, a backfill)."""
    tags = run_tags(distill)
    if any(context.run.tags.get(key) != value for key, value in tags.items()):
        context.instance.add_run_tags(context.run.run_id, tags)


def _run_finished(context: dg.AssetExecutionContext) -> Callable[[str], bool]:
    def finished(run_id: str) -> bool:
        run = context.instance.get_run_by_id(run_id)
        return run is not None and run.is_finished

    return finished


@dataclass(frozen=True)
class StageStep:
    """What one Dagster step runs: its stages, the work that does them (``work(out_root,
    write_root)`` returns each stage's StageResult), the settings each stage's receipt records,
    and whether the step is a multi-asset (each materialization then names its asset)."""

    stages: list[str]
    work: Callable[[Path, Path], dict[str, StageResult]]
    settings: dict[str, dict[str, object] | None]
    named: bool = False

    @property
    def label(self) -> str:
        """The step's name in progress lines."""
        return C.OP_EXPORTS if self.named else self.stages[0]


@dataclass
class Prepared:
    """A step ready to work: its workspace, where it writes, where the run's reports go (with
    the stages it was asked for), and the run's settings."""

    workspace: Workspace
    write_root: Path
    reports: RunReports
    thresholds: DriftThresholds
    skipped_limit: float | None


@dataclass
class Accounted:
    """A stage whose receipt is written, with what its materialization reports."""

    stage: str
    result: StageResult
    recorded: Recorded
    receipt_at: str
    extras: dict[str, object]


def run_stage(
    context: dg.AssetExecutionContext,
    distill: DistillResource,
    stage: str,
    work: Callable[[Path, Path], StageResult],
    settings: dict[str, object] | None = None,
) -> dg.MaterializeResult:
    """Run one stage and account for it: lock, receipt, ledger, drift, summary and metadata.

    ``work(out_root, write_root)`` does the stage; ``write_root`` is the run's version
    directory for the export and publish stages (see lib/publishing/versions.py), else ``out_root``.
    """
    step = StageStep([stage], lambda out, root: {stage: work(out, root)}, {stage: settings})
    [(materialized, failure)] = run_stages(context, distill, step)
    if failure is not None:
        raise failure
    return materialized


def run_stages(
    context: dg.AssetExecutionContext, distill: DistillResource, step: StageStep
) -> list[tuple[dg.MaterializeResult, dg.Failure | None]]:
    """Run stages that share one step (the export pass) and account for each as if it had run
    alone: its own receipt, ledger entries, drift, metadata and drift check, in stage order.

    ``step.work(out_root, write_root)`` returns each stage's StageResult; a stage's duration is
    its own share of the step (``extra["own_ms"]``) when the work says so. Returns, per stage,
    its materialization (naming its asset when ``step.named``: a multi-asset) and the failure to
    raise when its chain of custody is broken or its validation failed: every receipt is
    recorded first, and the caller reports the stages that passed before raising.
    """
    started = time.perf_counter()
    stages = step.stages
    expected = expected_stages(context)
    reads = tuple(dict.fromkeys(g for stage in stages for g in S.STAGE_INPUT_GLOBS[stage]))
    with distill.workspace(reads) as workspace:
        prepared = prepare(context, distill, stages, workspace, expected)
        results = execute(context, prepared, step)
        accounted = [
            record(prepared, stage, results[stage], step.settings.get(stage), started)
            for stage in stages
        ]
    with frozen_gc():  # the first report loads the table models (pandera, pandas)
        return [report(context, item, named=step.named) for item in accounted]


def prepare(
    context: dg.AssetExecutionContext,
    distill: DistillResource,
    stages: list[str],
    workspace: Workspace,
    expected: list[str],
) -> Prepared:
    """Validate the run's settings, tag the run and take the output's lock (sweeping what a
    killed run left), before the stages write anything; open the run's version when a stage
    writes one."""
    run_id = context.run.run_id
    out_root = workspace.root
    versioned = any(stage in S.VERSIONED_STAGES for stage in stages)
    stamps = provenance()
    try:
        for stage in stages:
            preflight(context, distill, stage)
        tag_run(context, distill)
        thresholds = distill.thresholds()
        skipped_limit = distill.skipped_limit()
        with workspace.reports(run_id):
            taken = acquire(out_root, run_id, _run_finished(context), context.log.warning, stamps)
            if versioned and workspace.remote:
                # the run's version is seeded once, under the store's lock
                workspace.pull_versions(run_id)
                open_version(out_root, run_id)
                workspace.push_data()
        if taken:
            swept = sweep_temp_files(out_root)
            if swept:
                context.log.warning(f"removed {swept} temporary file(s) left by a killed run")
    except OutputLocked as exc:
        # nothing is written: the directory belongs to the run that holds it
        raise dg.Failure(description=str(exc)) from exc
    write_root = open_version(out_root, run_id) if versioned else out_root
    reports = RunReports(out_root, run_id, expected, stamps)
    return Prepared(workspace, write_root, reports, thresholds, skipped_limit)


def execute(
    context: dg.AssetExecutionContext, prepared: Prepared, step: StageStep
) -> dict[str, StageResult]:
    """Do the stages' work (progress lines under the step's label); a failure is recorded for
    every stage of the step before it propagates. The data written is pushed to a remote
    output."""
    workspace, run_id = prepared.workspace, prepared.reports.run_id
    out_root = workspace.root
    try:
        with frozen_gc(), progress.reporting(step.label, context.log.info, progress_interval()):
            results = step.work(out_root, prepared.write_root)
    except Exception as exc:
        with workspace.reports(run_id):
            for stage in step.stages:
                record_failure(prepared.reports, stage, exc)
        raise
    release_memory()
    workspace.push_data()
    return results


def record(
    prepared: Prepared,
    stage: str,
    result: StageResult,
    settings: dict[str, object] | None,
    started: float,
) -> Accounted:
    """Write one stage's receipt, ledger entries and drift (releasing the lock after the run's
    last stage), and read what its materialization will show while the workspace is at hand."""
    workspace, run_id = prepared.workspace, prepared.reports.run_id
    out_root = workspace.root
    if stage in S.VERSIONED_STAGES:
        result.output_root = version_relroot(run_id)
    if settings:
        result.extra["settings"] = settings
    result.errors.extend(skipped_share_errors(stage, result.tally, prepared.skipped_limit))
    own_ms = result.extra.get("own_ms")
    began = started if own_ms is None else time.perf_counter() - own_ms / 1000
    with workspace.reports(run_id):
        recorded = record_stage(prepared.reports, result, began, prepared.thresholds)
        if stage == prepared.reports.expected_stages[-1]:
            release(out_root, run_id)
    receipt_at = workspace.location_of(recorded.receipt_path)
    # read while the workspace (a staged copy of a remote output) is still at hand
    extras = (
        dataset_metadata(stage, prepared.write_root, recorded.receipt)
        if stage in S.DATASET_STAGES
        else {}
    )
    return Accounted(stage, result, recorded, receipt_at, extras)


def report(
    context: dg.AssetExecutionContext, accounted: Accounted, named: bool
) -> tuple[dg.MaterializeResult, dg.Failure | None]:
    """A recorded stage as Dagster sees it: its materialization (metadata, drift check), and
    the failure to raise when its chain of custody is broken or its validation failed."""
    stage, recorded, receipt_at = accounted.stage, accounted.recorded, accounted.receipt_at
    _log_stage(context, stage, recorded, receipt_at)
    asset = S.STAGE_ASSET[stage]
    metadata = _stage_metadata(context, accounted)
    return (
        dg.MaterializeResult(
            asset_key=asset if named else None,
            metadata=metadata,
            check_results=[_drift_check(recorded, asset if named else None)],
        ),
        _stage_failure(stage, recorded, receipt_at),
    )


def _log_stage(
    context: dg.AssetExecutionContext, stage: str, recorded: Recorded, receipt_at: str
) -> None:
    """The receipt's first warnings and its counts, in the step's log."""
    receipt = recorded.receipt
    stats = receipt.stats
    warnings = receipt.validation.warnings
    for warning in warnings[:LOGGED_WARNINGS]:
        context.log.warning(f"{stage}: {warning}")
    if len(warnings) > LOGGED_WARNINGS:
        context.log.warning(f"{stage}: {len(warnings) - LOGGED_WARNINGS} more warning(s)")
    context.log.info(
        f"{stage}: {stats.records_in} in, {stats.records_out} out, {stats.quarantined} "
        f"quarantined, {stats.skipped} skipped; drift {recorded.drift.severity}; "
        f"receipt {receipt_at}"
    )


def _stage_failure(stage: str, recorded: Recorded, receipt_at: str) -> dg.Failure | None:
    """The failure to raise when the stage's chain of custody is broken or its validation
    failed (None: it passed)."""
    receipt = recorded.receipt
    broken = [link for link in recorded.summary.chain if not link.ok and link.stage == stage]
    if broken:
        return dg.Failure(
            description=f"{stage}: chain of custody broken for {len(broken)} input file(s), "
            f"first {broken[0].path}: {broken[0].problem}",
            metadata={"receipt": receipt_at},
        )
    if not receipt.validation.passed:
        return dg.Failure(
            description=f"{stage}: validation failed: " + "; ".join(receipt.validation.errors),
            metadata={"receipt": receipt_at},
        )
    return None


def _stage_metadata(context: dg.AssetExecutionContext, accounted: Accounted) -> dict:
    """The materialization's metadata: the receipt's, the table schema, the partitions whose
    figures these are (each day's own logged as its observation) and a dataset's extras."""
    stage, result, recorded = accounted.stage, accounted.result, accounted.recorded
    receipt = recorded.receipt
    metadata = receipt_metadata(receipt, accounted.receipt_at, recorded.drift.severity)
    schema = column_schema(S.STAGE_ASSET[stage], str(receipt.extra.get("format", "")))
    if schema is not None:
        metadata[C.MD_COLUMN_SCHEMA] = schema
    if result.partitions:
        metadata[C.MD_PARTITIONS] = f"{result.partitions[0]}..{result.partitions[-1]}"
        metadata[C.MD_FIGURES_OF] = figures_label(result.partitions)
        observe_days(context, S.STAGE_ASSET[stage], result)
    metadata.update(accounted.extras)
    return metadata


def _drift_check(recorded: Recorded, asset: str | None) -> dg.AssetCheckResult:
    """The stage's drift check, judged against the previous comparable run."""
    drift = recorded.drift
    severity = (
        dg.AssetCheckSeverity.ERROR
        if drift.severity == C.SEVERITY_ALERT
        else (dg.AssetCheckSeverity.WARN)
    )
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=C.CHECK_DRIFT,
        passed=drift.severity == C.SEVERITY_OK,
        severity=severity,
        metadata={
            "severity": drift.severity,
            "prior_run_id": drift.prior_run_id or "",
            "flags": ", ".join(drift.flags) or "none",
        },
    )


def figures_label(days: Sequence[str]) -> str:
    """Whose figures a materialization carries: Dagster shows one range run's metadata on every
    partition of the range, so say it is the range's (each day's own is its observation)."""
    if len(days) == 1:
        return f"the day {days[0]}"
    return (
        f"the whole range {days[0]}...{days[-1]} ({len(days)} days); each day's own counts are "
        "its observation"
    )


def observe_days(context: dg.AssetExecutionContext, asset: str, result: StageResult) -> None:
    """Log each day's own counts on that day's partition (one AssetObservation per day of the
    run), so a partition's page shows its day, not the range's totals."""
    per_day = result.extra.get("per_partition") or {}
    if not context.has_partition_key_range and not context.has_partition_key:
        return
    for day in context.partition_keys:
        counts = per_day.get(day, {})
        records_out = int(counts.get("records_out", 0))
        context.log_event(
            dg.AssetObservation(
                asset_key=asset,
                partition=day,
                metadata={
                    C.MD_ROW_COUNT: records_out,
                    C.MD_RECORDS_IN: int(counts.get("records_in", 0)),
                    C.MD_RECORDS_OUT: records_out,
                    C.MD_QUARANTINED: int(counts.get("quarantined", 0)),
                    C.MD_SKIPPED: int(counts.get("skipped", 0)),
                    C.MD_FIGURES_OF: f"the day {day}",
                },
            )
        )


def dataset_metadata(stage: str, write_root: Path, receipt: StageReceipt) -> dict[str, object]:
    """A dataset's UI extras: a preview of its first rows (cut, redacted), its row format and
    the rows of its Parquet copies."""
    metadata: dict[str, object] = {
        C.MD_RECORDS_OUT: receipt.stats.records_out,
        C.MD_PREVIEW: dg.MetadataValue.md(
            preview_markdown(write_root / S.TRAIN_PATHS[stage], stage)
        ),
    }
    if receipt.extra.get("format"):
        metadata[C.MD_FORMAT] = str(receipt.extra["format"])
    if "parquet_rows" in receipt.extra:
        metadata[C.MD_PARQUET_ROWS] = int(receipt.extra["parquet_rows"])
    return metadata


def column_schema(asset: str, fmt: str = "") -> dg.TableSchema | None:
    """The asset's table schema for the UI, from its Pandera model (one definition) for the
    row format it wrote."""
    from distill_assets.lib.verify.schemas import SCHEMAS, schema_of

    if asset not in SCHEMAS:
        return None
    model = schema_of(asset, fmt)
    columns = model.to_schema().columns
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=name,
                type=str(column.dtype),
                description=column.description,
                constraints=dg.TableColumnConstraints(nullable=bool(column.nullable)),
            )
            for name, column in columns.items()
        ]
    )


def stage_receipt(out_root: Path, run_id: str, stage: str) -> StageReceipt | None:
    """The receipt a stage wrote in a run (None: the stage did not run in it)."""
    path = out_root / receipt_relpath(run_id, stage)
    return load_receipt(path) if path.exists() else None
