"""The evidence index: every usable source record, day by day, with its provenance."""

from pathlib import Path

import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.collect import (
    CollectOptions,
    collect,
    dated_beyond,
    list_source_files,
)
from distill_assets.lib.evidence.importers import run_import
from distill_assets.lib.evidence.sources import record_sources
from distill_assets.lib.infra.layout import day_from_key, records_elsewhere
from distill_assets.lib.records.accounting import nothing_usable_errors
from distill_assets.runtime.config import CollectConfig
from distill_assets.runtime.partitions import DAILY, SINGLE_RUN
from distill_assets.runtime.resource import DistillResource
from distill_assets.runtime.stage import run_stage


@dg.asset(
    name=C.ASSET_EVIDENCE_INDEX,
    group_name=C.ASSET_GROUP,
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    kinds={"python", "jsonl"},
    check_specs=[dg.AssetCheckSpec(C.CHECK_DRIFT, asset=C.ASSET_EVIDENCE_INDEX)],
)
def evidence_index(
    context: dg.AssetExecutionContext, config: CollectConfig, distill: DistillResource
) -> dg.MaterializeResult:
    """Every usable evidence record of the day with provenance; bad lines skipped with a reason."""
    days = [day_from_key(key) for key in context.partition_keys]
    workers = distill.worker_count()

    def work(out_root: Path, _write_root: Path):
        source_root, imports = distill.evidence_sources()
        files = list_source_files(source_root) if source_root is not None else []
        batches = (run_import(spec) for spec in imports)
        options = CollectOptions(imported=batches, workers=workers)
        result = collect(files, out_root, days, config.settings(), options)
        # nothing usable is a failure, not an empty PASSED run that publishes empty datasets
        result.errors.extend(
            nothing_usable_errors(
                C.STAGE_COLLECT,
                result.tally,
                had_sources=bool(files) or bool(imports),
                # (looked for only when nothing was kept: a day without data of a per-day
                # backfill, while the source or the output has other days, is no failure)
                usable_elsewhere=result.tally.records_out == 0
                and (records_elsewhere(out_root, days) or dated_beyond(source_root, days)),
            )
        )
        if not result.errors:
            # checked in preflight: the same sources as recorded, or more
            record_sources(out_root, distill.source_names())
        return result

    return run_stage(context, distill, C.STAGE_COLLECT, work, config.model_dump())
