"""The scored runs: each run graded by the scoring policy, day by day."""

from pathlib import Path

import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.lib.infra.layout import day_from_key
from distill_assets.lib.scoring import score
from distill_assets.runtime.config import ScoringConfig
from distill_assets.runtime.partitions import DAILY, SINGLE_RUN
from distill_assets.runtime.resource import DistillResource
from distill_assets.runtime.stage import run_stage


@dg.asset(
    name=C.ASSET_SCORED_RUNS,
    group_name=C.ASSET_GROUP,
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    kinds={"python", "jsonl"},
    deps=[
        dg.AssetDep(
            C.ASSET_EVIDENCE_INDEX,
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-2, end_offset=2, allow_nonexistent_upstream_partitions=True
            ),
        )
    ],
    check_specs=[dg.AssetCheckSpec(C.CHECK_DRIFT, asset=C.ASSET_SCORED_RUNS)],
)
def scored_runs(
    context: dg.AssetExecutionContext, config: ScoringConfig, distill: DistillResource
) -> dg.MaterializeResult:
    """Each run of the day graded accepted, partially_accepted, rejected or needs_human_review."""
    days = [day_from_key(key) for key in context.partition_keys]
    workers = distill.worker_count()

    def work(out_root: Path, _write_root: Path):
        return score(out_root, days, config.policy(), workers)

    return run_stage(context, distill, C.STAGE_SCORE, work, config.model_dump())
