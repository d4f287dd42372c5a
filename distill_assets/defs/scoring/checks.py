"""The scored runs' checks, one step re-reading what the run wrote (lib/verify/checks.py)."""

from distill_assets.lib import constants as C
from distill_assets.runtime.checks import check_step

scored_runs_checks = check_step(
    "scored_runs_checks",
    [C.ASSET_SCORED_RUNS],
    "Schema and conservation of the scored runs, re-read from what this run wrote.",
)
