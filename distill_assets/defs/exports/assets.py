"""The exports step: one multi-asset that writes the playbooks (extraction, RAG), the training
datasets (SFT, preference, KTO) and the review queue in one pass over the scored runs.

Three domains share this folder because they share one Dagster step: the pass reads each run's
record once for all six (lib/datasets/export_pass.py, docs/performance.md); each export is still
its own
asset in the lineage, with its own receipt, metadata and checks (``checks.py``).
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.datasets.cards import package_dataset
from distill_assets.lib.datasets.export_pass import run_exports
from distill_assets.lib.playbooks.search import build_ahead
from distill_assets.lib.records.accounting import StageResult
from distill_assets.runtime.config import ExportsConfig
from distill_assets.runtime.partitions import SINGLE_RUN
from distill_assets.runtime.resource import DistillResource
from distill_assets.runtime.stage import StageStep, index_settings_of, run_stages

_DESCRIPTIONS = {
    C.ASSET_EXTRACTED_PLAYBOOKS: "One structured playbook per task: problem, steps, answer, where "
    "failed runs diverged.",
    C.ASSET_RAG_PLAYBOOKS: "One retrieval document per extracted playbook: its Markdown, source "
    "runs and tags.",
    C.ASSET_SFT_DATASET: "Accepted runs as TRL conversational messages for supervised fine-tuning.",
    C.ASSET_PREFERENCE_PAIRS: "Chosen/rejected pairs within a task, chosen strictly better, for "
    "preference tuning.",
    C.ASSET_KTO_DATASET: "Accepted (label true) and rejected (label false) runs as unpaired rows "
    "for KTO.",
    C.ASSET_REVIEW_QUEUE: "Runs scored needs_human_review, with the evidence that flagged them, "
    "for annotators.",
}


@dg.multi_asset(
    name=C.OP_EXPORTS,
    specs=[
        dg.AssetSpec(
            asset,
            group_name=C.ASSET_GROUP,
            deps=list(S.ASSET_DEPS[asset]),
            description=_DESCRIPTIONS[asset],
            kinds={"python", "jsonl"},
            skippable=True,
        )
        for asset in S.EXPORT_ASSETS
    ],
    check_specs=[dg.AssetCheckSpec(C.CHECK_DRIFT, asset=asset) for asset in S.EXPORT_ASSETS],
    can_subset=True,
    backfill_policy=SINGLE_RUN,
)
def exports(
    context: dg.AssetExecutionContext, config: ExportsConfig, distill: DistillResource
) -> Iterator[dg.MaterializeResult]:
    """Every export in one pass over the scored runs: each run's record is read once."""
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    stages = [S.ASSET_STAGE[asset] for asset in S.EXPORT_ASSETS if asset in selected]
    # the review queue has no settings; the others' are recorded in their receipts
    settings = {
        S.ASSET_STAGE[asset]: config.of(asset).model_dump()
        for asset in S.EXPORT_ASSETS
        if asset != C.ASSET_REVIEW_QUEUE
    }

    def work(out_root: Path, write_root: Path):
        plan = config.plan(distill, write_root, selected)

        def finished(stage: str, result: StageResult) -> None:
            # the playbooks are final: the index can be built while the other exports finish
            # and the checks run (the index stage adopts it if nothing changed meanwhile)
            if stage == C.STAGE_EXPORT_RAG and not result.errors:
                settings = index_settings_of(context)
                if settings is not None:
                    build_ahead(write_root / C.RAG_PATH, write_root / C.INDEX_PATH, settings)

        results = run_exports(out_root, plan, workers=distill.worker_count(), finished=finished)
        for stage, result in results.items():
            if stage in S.DATASET_STAGES:
                export = config.of(S.STAGE_ASSET[stage])
                package_dataset(
                    result,
                    write_root,
                    export.formats(),
                    context.run.run_id,
                    export.model_dump(),
                )
        return results

    outcomes = run_stages(context, distill, StageStep(stages, work, settings, named=True))
    for materialized, failure in outcomes:
        if failure is None:
            yield materialized
    for _, failure in outcomes:
        if failure is not None:
            raise failure
