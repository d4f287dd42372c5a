"""The playbook index's checks, one step re-reading what the run wrote (lib/checks.py)."""

from collections.abc import Iterable

import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.runtime.checks import check_specs, run_check_step
from distill_assets.runtime.resource import DistillResource


@dg.multi_asset_check(
    name="playbook_index_checks",
    specs=check_specs([C.ASSET_PLAYBOOK_INDEX]),
    can_subset=True,
)
def playbook_index_checks(
    context: dg.AssetCheckExecutionContext, distill: DistillResource
) -> Iterable[dg.AssetCheckResult]:
    """The search index's schema, its consistency with the playbooks and its conservation."""
    yield from run_check_step(context, distill)
