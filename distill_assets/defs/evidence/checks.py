import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.orchestration import DistillResource, conservation_check, schema_check


@dg.asset_check(asset=C.ASSET_EVIDENCE_INDEX, name=C.CHECK_SCHEMA, blocking=True)
def evidence_index_schema(
    context: dg.AssetCheckExecutionContext, distill: DistillResource
) -> dg.AssetCheckResult:
    """Index rows match EvidenceIndexSchema (strict, lazily validated)."""
    return schema_check(context, distill, C.ASSET_EVIDENCE_INDEX, "/index.jsonl")


@dg.asset_check(asset=C.ASSET_EVIDENCE_INDEX, name=C.CHECK_CONSERVATION, blocking=True)
def evidence_index_conservation(
    context: dg.AssetCheckExecutionContext, distill: DistillResource
) -> dg.AssetCheckResult:
    """Every source line is kept, skipped or quarantined, and the quarantine says so."""
    return conservation_check(context, distill, C.ASSET_EVIDENCE_INDEX)
