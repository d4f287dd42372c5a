"""The evidence index's checks, one step re-reading what the run wrote (lib/checks.py)."""

from collections.abc import Iterable

import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.runtime.checks import check_specs, run_check_step
from distill_assets.runtime.resource import DistillResource


@dg.multi_asset_check(
    name="evidence_index_checks",
    specs=check_specs([C.ASSET_EVIDENCE_INDEX]),
    can_subset=True,
)
def evidence_index_checks(
    context: dg.AssetCheckExecutionContext, distill: DistillResource
) -> Iterable[dg.AssetCheckResult]:
    """Schema and conservation of the evidence index, re-read from what this run wrote."""
    yield from run_check_step(context, distill)
