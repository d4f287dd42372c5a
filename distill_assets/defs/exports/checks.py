"""The six exports' checks, one step re-reading what the run wrote (lib/checks.py)."""

from collections.abc import Iterable

import dagster as dg

from distill_assets.lib import stages as S
from distill_assets.runtime.checks import check_specs, run_check_step
from distill_assets.runtime.resource import DistillResource


@dg.multi_asset_check(
    name="exports_checks",
    specs=check_specs(S.EXPORT_ASSETS),
    can_subset=True,
)
def exports_checks(
    context: dg.AssetCheckExecutionContext, distill: DistillResource
) -> Iterable[dg.AssetCheckResult]:
    """Every export's checks (schema, firewall, pair rules, conservation, no secrets, holdout)
    in one step, re-read from what this run wrote; each blocks what is built on its asset."""
    yield from run_check_step(context, distill)
