"""The one resource every step gets: paths and settings (runtime/resource.py)."""

import dagster as dg

from distill_assets.runtime.resource import DistillResource


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"distill": DistillResource()})
