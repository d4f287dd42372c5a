"""Shared test helpers: the project's real definitions, a temporary Dagster instance, and a
function that materializes the whole graph (assets and their checks) over a partition range."""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from hypothesis import settings

from distill_assets.definitions import defs as load_defs
from distill_assets.runtime.resource import DistillResource

# property tests draw the same examples on every run and keep no example database: a test
# that fails one run in forty is a defect, not luck
settings.register_profile("distill", derandomize=True, database=None)
settings.load_profile("distill")

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "fixtures" / "evidence"
SHARED = REPO_ROOT.parent / "shared"
FIXTURE_RANGE = ("2026-03-01", "2026-03-03")
# set by .ci/run (and implied by CI): tests on ../shared's real runs must run, never skip
ENV_REQUIRE_SHARED = "DISTILL_REQUIRE_SHARED"


def need_shared(path: Path) -> None:
    """Skip a test of ``path`` (a file under ../shared) when it is absent, with the reason; where
    ../shared is required (DISTILL_REQUIRE_SHARED=1 or CI set, as in .ci/run), fail instead."""
    if path.exists():
        return
    reason = f"{path} is absent (../shared, the real public runs, is not beside the repo)"
    if os.environ.get(ENV_REQUIRE_SHARED) == "1" or os.environ.get("CI"):
        pytest.fail(f"{reason}; {ENV_REQUIRE_SHARED}=1 or CI is set, so the test must run")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def project_defs() -> dg.Definitions:
    return load_defs()


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture(autouse=True)
def _pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin 'now' so future-timestamp checks and receipts do not depend on the day tests run."""
    monkeypatch.setenv("DISTILL_RECORDED_AT", "2026-03-10T00:00:00Z")
    monkeypatch.delenv("DISTILL_SOURCE_DIR", raising=False)
    monkeypatch.delenv("DISTILL_OUTPUT_DIR", raising=False)
    monkeypatch.delenv("DISTILL_ALERT_WEBHOOK_URL", raising=False)


def copy_fixtures(dest: Path) -> Path:
    shutil.copytree(FIXTURES, dest)
    return dest


# materialize_graph's options for the run itself, with their defaults (the rest of its keyword
# arguments are DistillResource fields)
RUN_OPTIONS: dict[str, object] = {
    "days": FIXTURE_RANGE,
    "run_config": None,
    "selection": None,
    "raise_on_error": False,
}


def materialize_graph(
    project_defs: dg.Definitions,
    instance: dg.DagsterInstance,
    source: Path,
    out: Path,
    **options: object,
) -> dg.ExecuteInProcessResult:
    """Materialize the real graph (assets and checks) over ``days`` in one run.

    ``options``: ``days`` (first, last), ``run_config``, ``selection`` and ``raise_on_error``
    for the run (``RUN_OPTIONS``); any other is a DistillResource field."""
    run = {name: options.pop(name, default) for name, default in RUN_OPTIONS.items()}
    days: Any = run.pop("days")
    resource = DistillResource(source_dir=str(source), output_dir=str(out), **options)
    assets = list(project_defs.assets or []) + list(project_defs.asset_checks or [])
    return dg.materialize(
        assets,
        instance=instance,
        resources={"distill": resource},
        tags={
            "dagster/asset_partition_range_start": days[0],
            "dagster/asset_partition_range_end": days[1],
        },
        **run,
    )


@pytest.fixture
def materialize(
    project_defs: dg.Definitions, instance: dg.DagsterInstance
) -> Callable[..., dg.ExecuteInProcessResult]:
    """``materialize_graph`` on the project's definitions and this test's instance: called with
    the source, the output directory and its options."""
    return functools.partial(materialize_graph, project_defs, instance)


def materializations_of(result: dg.ExecuteInProcessResult, asset: str) -> list:
    """The asset's materializations in a run (an export's come from the export pass's step)."""
    key = dg.AssetKey(asset)
    return [
        event.step_materialization_data.materialization
        for event in result.get_asset_materialization_events()
        if event.asset_key == key
    ]


@pytest.fixture(scope="session")
def fixture_run(tmp_path_factory, project_defs):
    """One real run of the whole graph over the bundled fixtures, shared by read-only tests:
    (result, output directory, instance)."""
    base = tmp_path_factory.mktemp("fixture_run")
    home = base / "home"
    home.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTILL_RECORDED_AT", "2026-03-10T00:00:00Z")
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        try:
            result = materialize_graph(project_defs, inst, FIXTURES, base / "out")
        finally:
            mp.undo()  # the pin must not leak into tests that run later in this session
        yield result, base / "out", inst


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
