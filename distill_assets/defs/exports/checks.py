"""The six exports' checks, one step re-reading what the run wrote (lib/verify/checks.py)."""

from distill_assets.lib import stages as S
from distill_assets.runtime.checks import check_step

exports_checks = check_step(
    "exports_checks",
    S.EXPORT_ASSETS,
    "Every export's checks (schema, firewall, pair rules, conservation, no secrets, holdout)"
    " in one step, re-read from what this run wrote; each blocks what is built on its asset.",
)
