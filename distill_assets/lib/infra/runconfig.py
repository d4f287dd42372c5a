"""Run config of the asset graph: where each asset's config values go (no Dagster import).

The exports are made by one step, the export pass (``constants.OP_EXPORTS``), whose config holds
each export's settings under the export's asset name; every other asset is its own op.
"""

from __future__ import annotations

from typing import Any

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S


def run_config_of(config_by_asset: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Run config that gives each asset its config values: an export's go under the export
    pass's op (``ops.exports.config.<asset>``), any other asset's under its own op."""
    ops: dict[str, Any] = {}
    for asset, values in config_by_asset.items():
        if asset in S.EXPORT_ASSETS:
            shared = ops.setdefault(C.OP_EXPORTS, {"config": {}})["config"]
            shared[asset] = {**shared.get(asset, {}), **values}
        else:
            ops[asset] = {"config": values}
    return {"ops": ops}


def upgrade_run_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Run config written for separate export ops (``ops.sft_dataset.config``, before the
    export pass) moved to where the export pass reads it; also the moved paths."""
    ops = config.get("ops")
    if not isinstance(ops, dict):
        return config, []
    moved = [asset for asset in S.EXPORT_ASSETS if isinstance(ops.get(asset), dict)]
    if not moved:
        return config, []
    ops = dict(ops)
    shared = dict((ops.get(C.OP_EXPORTS) or {}).get("config") or {})
    for asset in moved:
        values = ops.pop(asset).get("config") or {}
        shared[asset] = {**values, **(shared.get(asset) or {})}
    ops[C.OP_EXPORTS] = {**(ops.get(C.OP_EXPORTS) or {}), "config": shared}
    return {**config, "ops": ops}, [f"ops.{asset}" for asset in moved]


def asset_config(ops: dict[str, Any], asset: str) -> dict[str, Any]:
    """The config values an asset was given in run config: the exports' under the export
    pass's op (``ops.exports.config.<asset>``), the others' under their own op."""
    if asset in S.EXPORT_ASSETS:
        shared = ((ops.get(C.OP_EXPORTS) or {}).get("config") or {}).get(asset)
        return shared or {}
    return (ops.get(asset) or {}).get("config") or {}
