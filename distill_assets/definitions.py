"""The single entry point: every Dagster object lives in the autoloaded ``defs/`` folder."""

import atexit
import gc
from pathlib import Path

import dagster as dg

# One `dagster asset materialize` calls defs() five times (to find the job, to create the run,
# to plan and execute it); what it returns depends only on the two settings in the key, so a
# process loads the defs folder once per setting (docs/performance.md, the fixtures' run).
_LOADED: dict[tuple[str, str], dg.Definitions] = {}


@dg.definitions
def defs() -> dg.Definitions:
    if not _LOADED:
        # What exists now (Dagster, its imports) lives as long as the process: frozen, the
        # collector's full passes while the stages' libraries load (polars, pandera) and at
        # exit skip it. Frozen at the last exit handler, what the run made is skipped too (the
        # other exit handlers, logging's flush among them, still run; the memory goes back with
        # the process): about 0.4 s of a run on the fixtures (docs/performance.md).
        gc.freeze()
        atexit.register(gc.freeze)
    from distill_assets.runtime.partitions import per_day_backfill
    from distill_assets.runtime.settings import BACKFILL_SINGLE_RUN, backfill_mode, executor_choice

    # DISTILL_BACKFILL=per_day makes a backfill launch one run per day (docs/performance.md);
    # DISTILL_EXECUTOR picks the executor (defs/shared/executor.py)
    key = (backfill_mode(), executor_choice())
    if key not in _LOADED:
        loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
        _LOADED[key] = loaded if key[0] == BACKFILL_SINGLE_RUN else per_day_backfill(loaded)
    return _LOADED[key]
