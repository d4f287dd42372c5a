"""The evidence index's checks, one step re-reading what the run wrote (lib/verify/checks.py)."""

from distill_assets.lib import constants as C
from distill_assets.runtime.checks import check_step

evidence_index_checks = check_step(
    "evidence_index_checks",
    [C.ASSET_EVIDENCE_INDEX],
    "Schema and conservation of the evidence index, re-read from what this run wrote.",
)
