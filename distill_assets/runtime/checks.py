"""The bodies of the check steps declared in ``defs/``: fetch what this run wrote, let lib's
checks judge it, record the verdicts with the run's reports and hand them to Dagster.

A check's verdict has one shape, lib/verify/checks.py's ``CheckOutcome``; this module only turns it
into
the ledger's ``CheckRecord`` and Dagster's ``AssetCheckResult``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.infra.storage import Workspace
from distill_assets.lib.records.receipts import StageReceipt
from distill_assets.lib.records.reports import CheckRecord, RunReports, record_checks
from distill_assets.runtime.resource import DistillResource, provenance
from distill_assets.runtime.stage import expected_stages, frozen_gc, stage_receipt

if TYPE_CHECKING:
    from distill_assets.lib.verify.checks import CheckOutcome


def check_specs(assets: Sequence[str]) -> list[dg.AssetCheckSpec]:
    """The blocking check specs of ``assets`` (lib/verify/checks.CHECKS), for one check step."""
    from distill_assets.lib.verify.checks import CHECKS

    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=True, description=description)
        for asset in assets
        for name, description in CHECKS[asset].items()
    ]


def check_step(name: str, assets: Sequence[str], description: str) -> dg.AssetChecksDefinition:
    """The one step (``@dg.multi_asset_check``) that runs every check of ``assets``
    (lib/verify/checks.CHECKS) on what this run wrote: each ``defs/<domain>/checks.py`` declares its
    step with this, so the steps differ only in their name, assets and description."""

    @dg.multi_asset_check(
        name=name, specs=check_specs(assets), can_subset=True, description=description
    )
    # ``context`` is left unannotated: this module postpones annotations, and Dagster checks a
    # context's annotation by its class (the resource's it resolves)
    def checks(context, distill: DistillResource) -> Iterable[dg.AssetCheckResult]:
        yield from run_check_step(context, distill)

    return checks


def run_check_step(
    context: dg.AssetCheckExecutionContext, distill: DistillResource
) -> list[dg.AssetCheckResult]:
    """Run the selected checks of one check step (a multi-asset check) on what this run wrote:
    per asset, its receipt's files are fetched once and every selected check of it judges them
    (lib/verify/checks.py); all verdicts are recorded with the run's reports at once."""
    from distill_assets.lib.verify.checks import run_all

    run_id = context.run.run_id
    wanted = selected_checks(context)
    reads = tuple(
        dict.fromkeys(g for asset in wanted for g in S.CHECK_INPUT_GLOBS[S.ASSET_STAGE[asset]])
    )
    with distill.workspace(reads) as workspace:
        receipts = fetch_written(workspace, run_id, wanted)
        with frozen_gc():
            outcomes = run_all(wanted, receipts, workspace.root, distill.worker_count())
        with workspace.reports(run_id):
            record_checks(
                RunReports(workspace.root, run_id, expected_stages(context), provenance()),
                [check_record(outcome) for outcome in outcomes],
            )
    return [check_result(outcome) for outcome in outcomes]


def selected_checks(context: dg.AssetCheckExecutionContext) -> dict[str, list[str]]:
    """The step's selected checks: per asset (by name), its check names in CHECKS order."""
    from distill_assets.lib.verify.checks import CHECKS

    wanted: dict[str, list[str]] = {}
    for key in sorted(
        context.selected_asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)
    ):
        wanted.setdefault(key.asset_key.to_user_string(), []).append(key.name)
    for asset, names in wanted.items():
        names.sort(key=list(CHECKS[asset]).index)
    return wanted


def fetch_written(
    workspace: Workspace, run_id: str, wanted: dict[str, list[str]]
) -> dict[str, StageReceipt]:
    """Each checked asset's receipt in this run, its listed files fetched into the workspace
    (the index's checks also read the playbooks); an asset without one was not materialized."""
    receipts = {}
    for asset in wanted:
        stage = S.ASSET_STAGE[asset]
        receipt = stage_receipt(workspace.root, run_id, stage)
        if receipt is None:
            raise dg.Failure(
                description=f"{asset}: no receipt for stage {stage} in run {run_id}; the "
                "asset was not materialized in this run"
            )
        root = receipt.extra.get("root", "")
        pulled = [f.path for f in receipt.outputs.files]
        if asset == C.ASSET_PLAYBOOK_INDEX:
            pulled.append(C.RAG_PATH)
        workspace.pull([f"{root}/{p}" if root else p for p in pulled])
        receipts[asset] = receipt
    return receipts


def check_record(outcome: CheckOutcome) -> CheckRecord:
    """A verdict as the run's reports record it."""
    return CheckRecord(
        asset=outcome.asset,
        stage=S.ASSET_STAGE[outcome.asset],
        check=outcome.check,
        passed=outcome.passed,
        severity="ERROR" if outcome.severity == "ERROR" else "WARN",
        blocking=outcome.blocking,
        num_failures=outcome.num_failures,
        description=outcome.description,
    )


def check_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    """A verdict as Dagster shows it: lists and mappings in its metadata as JSON."""
    return dg.AssetCheckResult(
        asset_key=outcome.asset,
        check_name=outcome.check,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR
        if outcome.severity == "ERROR"
        else dg.AssetCheckSeverity.WARN,
        description=outcome.description,
        metadata={
            "num_failures": outcome.num_failures,
            **{
                name: dg.MetadataValue.json(value) if isinstance(value, list | dict) else value
                for name, value in outcome.metadata.items()
            },
        },
    )
