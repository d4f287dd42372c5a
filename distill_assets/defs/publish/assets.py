"""The publish step: the dataset manifest, written last, over the exports whose checks passed."""

from pathlib import Path

import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.publishing.publish import publish
from distill_assets.runtime.partitions import SINGLE_RUN
from distill_assets.runtime.resource import DistillResource
from distill_assets.runtime.stage import run_stage


@dg.asset(
    name=C.ASSET_DATASET_MANIFEST,
    group_name=C.ASSET_GROUP,
    deps=list(S.ASSET_DEPS[C.ASSET_DATASET_MANIFEST]),
    backfill_policy=SINGLE_RUN,
    kinds={"python", "json"},
    check_specs=[dg.AssetCheckSpec(C.CHECK_DRIFT, asset=C.ASSET_DATASET_MANIFEST)],
)
def dataset_manifest(
    context: dg.AssetExecutionContext, distill: DistillResource
) -> dg.MaterializeResult:
    """The manifest of datasets whose checks passed, written last; readers follow it."""

    def work(out_root: Path, _write_root: Path):
        return publish(out_root, context.run.run_id)

    return run_stage(context, distill, C.STAGE_PUBLISH, work)
