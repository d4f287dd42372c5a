"""A one-asset Dagster graph: the yardstick ``python -m distill_assets.bench --fixtures`` runs
through the same ``dagster asset materialize`` path as ``distill materialize``."""

import dagster as dg


@dg.asset
def trivial() -> dg.MaterializeResult:
    """Does nothing: its run costs what Dagster itself costs."""
    return dg.MaterializeResult(metadata={"rows": 0})


defs = dg.Definitions(assets=[trivial])
