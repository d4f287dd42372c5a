"""Shared test helpers: the project's real definitions, run on a temporary Dagster instance."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg
import pytest

from distill_assets.definitions import defs as load_defs
from distill_assets.orchestration import DistillResource


@pytest.fixture(scope="session")
def project_defs() -> dg.Definitions:
    """The Definitions the project ships (assets, checks, resources) from its one entry point."""
    return load_defs()


GraphRunner = Callable[[DistillResource, str, str | None], dg.ExecuteInProcessResult]


@pytest.fixture(scope="session")
def run_graph(project_defs: dg.Definitions) -> GraphRunner:
    """Materialize every asset and check for a partition range with the given resource, on a
    fresh ephemeral instance (a single run over the range, as ``distill materialize`` does)."""

    def run(
        resource: DistillResource, first: str, last: str | None = None
    ) -> dg.ExecuteInProcessResult:
        tags = {
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last or first,
        }
        with dg.DagsterInstance.ephemeral() as instance:
            return dg.materialize(
                [*project_defs.assets, *project_defs.asset_checks],
                instance=instance,
                resources={"distill": resource},
                tags=tags,
                raise_on_error=False,
            )

    return run
