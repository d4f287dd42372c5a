"""The daily partitions and the backfill policies: fixed when the definitions load (a partitions
definition cannot change during a run).

The first and last partitions are settings (DISTILL_PARTITION_START, default 2020-01-01;
DISTILL_PARTITION_END, inclusive, default none), read once when the definitions load
(settings.py): the UI counts every day between them as a partition, materialized or missing
(`distill ui` sets both to the output's evidence days when the user set neither). The last
partition is never later than tomorrow (UTC), so records up to the one-day horizon have a home;
Dagster's end_date is exclusive, and end_offset stops there. DISTILL_BACKFILL (settings.py
``backfill_mode``) picks ``SINGLE_RUN`` or ``PER_DAY``: one run over the whole range or one run
per day.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from distill_assets.runtime.settings import partition_bounds

try:
    FIRST_DAY, LAST_DAY = partition_bounds()
except ValueError as _exc:
    raise dg.DagsterInvariantViolationError(str(_exc)) from None
DAILY = dg.DailyPartitionsDefinition(
    start_date=FIRST_DAY.isoformat(),
    end_date=None if LAST_DAY is None else (LAST_DAY + timedelta(days=1)).isoformat(),
    end_offset=2,
)
SINGLE_RUN = dg.BackfillPolicy.single_run()
PER_DAY = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)


def per_day_backfill(loaded: dg.Definitions) -> dg.Definitions:
    """``loaded`` with its daily-partitioned assets backfilled one run per day."""
    assets = [
        asset.with_attributes(backfill_policy=PER_DAY)
        if isinstance(asset, dg.AssetsDefinition) and asset.partitions_def is not None
        else asset
        for asset in loaded.assets or []
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=loaded.asset_checks,
        schedules=loaded.schedules,
        sensors=loaded.sensors,
        jobs=loaded.jobs,
        resources=loaded.resources,
        executor=loaded.executor,
        loggers=loaded.loggers,
        metadata=loaded.metadata,
    )
