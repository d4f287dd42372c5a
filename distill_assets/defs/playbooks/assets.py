"""The playbook index: the RAG playbooks' full-text (and optional dense) search index."""

from pathlib import Path

import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.playbooks.search import build_index
from distill_assets.runtime.config import IndexConfig
from distill_assets.runtime.partitions import SINGLE_RUN
from distill_assets.runtime.resource import DistillResource
from distill_assets.runtime.stage import run_stage


@dg.asset(
    name=C.ASSET_PLAYBOOK_INDEX,
    group_name=C.ASSET_GROUP,
    deps=list(S.ASSET_DEPS[C.ASSET_PLAYBOOK_INDEX]),
    backfill_policy=SINGLE_RUN,
    kinds={"python", "sqlite"},
    check_specs=[dg.AssetCheckSpec(C.CHECK_DRIFT, asset=C.ASSET_PLAYBOOK_INDEX)],
)
def playbook_index(
    context: dg.AssetExecutionContext, config: IndexConfig, distill: DistillResource
) -> dg.MaterializeResult:
    """SQLite FTS5 index (BM25) over the RAG playbooks, published with them; `distill search`."""

    def work(out_root: Path, write_root: Path):
        return build_index(out_root, config.settings(), write_root)

    return run_stage(context, distill, C.STAGE_INDEX, work, config.model_dump())
