"""The single entry point: every Dagster object lives in the autoloaded ``defs/`` folder."""

from pathlib import Path

import dagster as dg

from distill_assets.orchestration import BACKFILL_SINGLE_RUN, backfill_mode, per_day_backfill


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    # DISTILL_BACKFILL=per_day makes a backfill launch one run per day (docs/performance.md)
    if backfill_mode() == BACKFILL_SINGLE_RUN:
        return loaded
    return per_day_backfill(loaded)
