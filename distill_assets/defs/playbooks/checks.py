"""The playbook index's checks, one step re-reading what the run wrote (lib/verify/checks.py)."""

from distill_assets.lib import constants as C
from distill_assets.runtime.checks import check_step

playbook_index_checks = check_step(
    "playbook_index_checks",
    [C.ASSET_PLAYBOOK_INDEX],
    "The search index's schema, its consistency with the playbooks and its conservation.",
)
