import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.orchestration import DistillResource, conservation_check, schema_check


@dg.asset_check(asset=C.ASSET_SCORED_RUNS, name=C.CHECK_SCHEMA, blocking=True)
def scored_runs_schema(
    context: dg.AssetCheckExecutionContext, distill: DistillResource
) -> dg.AssetCheckResult:
    """Scored rows match ScoredRunSchema (strict, lazily validated)."""
    return schema_check(context, distill, C.ASSET_SCORED_RUNS, "/" + C.SCORED_FILE)


@dg.asset_check(asset=C.ASSET_SCORED_RUNS, name=C.CHECK_CONSERVATION, blocking=True)
def scored_runs_conservation(
    context: dg.AssetCheckExecutionContext, distill: DistillResource
) -> dg.AssetCheckResult:
    """Every evidence record of the day is scored, attached to a run, or quarantined."""
    return conservation_check(context, distill, C.ASSET_SCORED_RUNS)
