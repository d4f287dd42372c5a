from pathlib import Path

import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.lib.cards import package_dataset
from distill_assets.lib.exports import export_preference, export_rag, export_sft
from distill_assets.lib.hygiene.review_queue import export_review
from distill_assets.lib.kto import export_kto
from distill_assets.lib.publish import publish
from distill_assets.orchestration import SINGLE_RUN, DistillResource, ExportConfig, run_stage


def _spec(asset: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(C.CHECK_DRIFT, asset=asset)]


@dg.asset(
    name=C.ASSET_RAG_PLAYBOOKS,
    group_name=C.ASSET_GROUP,
    deps=[C.ASSET_EXTRACTED_PLAYBOOKS],
    backfill_policy=SINGLE_RUN,
    kinds={"python", "jsonl"},
    check_specs=_spec(C.ASSET_RAG_PLAYBOOKS),
)
def rag_playbooks(
    context: dg.AssetExecutionContext, config: ExportConfig, distill: DistillResource
) -> dg.MaterializeResult:
    """One retrieval document per extracted playbook: its Markdown, source runs and tags."""

    def work(out_root: Path, write_root: Path):
        settings = config.settings()
        result = export_rag(out_root, settings, write_root, config.eval_set(distill))
        return package_dataset(
            result, write_root, settings.formats, context.run.run_id, config.model_dump()
        )

    return run_stage(context, distill, C.STAGE_EXPORT_RAG, work, config.model_dump())


@dg.asset(
    name=C.ASSET_SFT_DATASET,
    group_name=C.ASSET_GROUP,
    deps=[C.ASSET_SCORED_RUNS],
    backfill_policy=SINGLE_RUN,
    kinds={"python", "jsonl"},
    check_specs=_spec(C.ASSET_SFT_DATASET),
)
def sft_dataset(
    context: dg.AssetExecutionContext, config: ExportConfig, distill: DistillResource
) -> dg.MaterializeResult:
    """Accepted runs as TRL conversational messages for supervised fine-tuning."""

    def work(out_root: Path, write_root: Path):
        settings = config.settings()
        result = export_sft(out_root, settings, write_root, config.eval_set(distill))
        return package_dataset(
            result, write_root, settings.formats, context.run.run_id, config.model_dump()
        )

    return run_stage(context, distill, C.STAGE_EXPORT_SFT, work, config.model_dump())


@dg.asset(
    name=C.ASSET_PREFERENCE_PAIRS,
    group_name=C.ASSET_GROUP,
    deps=[C.ASSET_SCORED_RUNS],
    backfill_policy=SINGLE_RUN,
    kinds={"python", "jsonl"},
    check_specs=_spec(C.ASSET_PREFERENCE_PAIRS),
)
def preference_pairs(
    context: dg.AssetExecutionContext, config: ExportConfig, distill: DistillResource
) -> dg.MaterializeResult:
    """Chosen/rejected pairs within a task, chosen strictly better, for preference tuning."""

    def work(out_root: Path, write_root: Path):
        settings = config.settings()
        result = export_preference(out_root, settings, write_root, config.eval_set(distill))
        return package_dataset(
            result, write_root, settings.formats, context.run.run_id, config.model_dump()
        )

    return run_stage(context, distill, C.STAGE_EXPORT_PREFERENCE, work, config.model_dump())


@dg.asset(
    name=C.ASSET_KTO_DATASET,
    group_name=C.ASSET_GROUP,
    deps=[C.ASSET_SCORED_RUNS],
    backfill_policy=SINGLE_RUN,
    kinds={"python", "jsonl"},
    check_specs=_spec(C.ASSET_KTO_DATASET),
)
def kto_dataset(
    context: dg.AssetExecutionContext, config: ExportConfig, distill: DistillResource
) -> dg.MaterializeResult:
    """Accepted (label true) and rejected (label false) runs as unpaired rows for KTO."""

    def work(out_root: Path, write_root: Path):
        settings = config.settings()
        result = export_kto(out_root, settings, write_root, config.eval_set(distill))
        return package_dataset(
            result, write_root, settings.formats, context.run.run_id, config.model_dump()
        )

    return run_stage(context, distill, C.STAGE_EXPORT_KTO, work, config.model_dump())


@dg.asset(
    name=C.ASSET_REVIEW_QUEUE,
    group_name=C.ASSET_GROUP,
    deps=[C.ASSET_SCORED_RUNS],
    backfill_policy=SINGLE_RUN,
    kinds={"python", "jsonl"},
    check_specs=_spec(C.ASSET_REVIEW_QUEUE),
)
def review_queue(
    context: dg.AssetExecutionContext, distill: DistillResource
) -> dg.MaterializeResult:
    """Runs scored needs_human_review, with the evidence that flagged them, for annotators."""

    def work(out_root: Path, write_root: Path):
        return export_review(out_root, write_root)

    return run_stage(context, distill, C.STAGE_EXPORT_REVIEW, work)


@dg.asset(
    name=C.ASSET_DATASET_MANIFEST,
    group_name=C.ASSET_GROUP,
    deps=[
        C.ASSET_EXTRACTED_PLAYBOOKS,
        C.ASSET_RAG_PLAYBOOKS,
        C.ASSET_SFT_DATASET,
        C.ASSET_PREFERENCE_PAIRS,
        C.ASSET_KTO_DATASET,
        C.ASSET_REVIEW_QUEUE,
        C.ASSET_PLAYBOOK_INDEX,
    ],
    backfill_policy=SINGLE_RUN,
    kinds={"python", "json"},
    check_specs=_spec(C.ASSET_DATASET_MANIFEST),
)
def dataset_manifest(
    context: dg.AssetExecutionContext, distill: DistillResource
) -> dg.MaterializeResult:
    """The manifest of datasets whose checks passed, written last; readers follow it."""

    def work(out_root: Path, _write_root: Path):
        return publish(out_root, context.run.run_id)

    return run_stage(context, distill, C.STAGE_PUBLISH, work)
