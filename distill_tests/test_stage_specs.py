"""The stage registry (lib/stages.py) and the code it describes agree: every spec has its
asset in the definitions, with the lineage its reads say, its Pandera model and its checks,
and every asset of the definitions has its spec (issue 17: three places to add a stage)."""

from __future__ import annotations

import dagster as dg
import pytest

from distill_assets.definitions import defs
from distill_assets.lib import constants as C
from distill_assets.lib import stages
from distill_assets.lib.verify.checks import CHECKS
from distill_assets.lib.verify.schemas import SCHEMAS


@pytest.fixture(scope="module")
def graph() -> dg.AssetGraph:  # type: ignore[name-defined]
    return defs().resolve_asset_graph()


def test_every_asset_has_a_spec_and_every_spec_an_asset(graph) -> None:
    assets = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert assets == set(stages.BY_ASSET)
    assert len(stages.SPECS) == len(stages.BY_STAGE) == len(stages.BY_ASSET)
    assert set(stages.STAGES) == set(C.Stage)


def test_the_lineage_is_what_the_specs_read(graph) -> None:
    for spec in stages.SPECS:
        parents = {key.to_user_string() for key in graph.get(dg.AssetKey(spec.asset)).parent_keys}
        assert parents == set(stages.ASSET_DEPS[spec.asset]), spec.stage
        # a stage reads what is upstream of it, never downstream
        for read in spec.reads:
            assert stages.STAGES.index(read) < stages.STAGES.index(spec.stage)


def test_the_day_partitioned_assets_are_the_daily_specs(graph) -> None:
    partitioned = {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).partitions_def is not None
    }
    assert partitioned == set(stages.DAILY_ASSETS)


def test_every_spec_has_its_model_and_checks() -> None:
    for spec in stages.SPECS:
        if spec.stage == C.STAGE_PUBLISH:
            # the manifest's only check is its drift, reported with the materialization
            assert spec.asset not in CHECKS
            continue
        assert CHECKS.get(spec.asset), f"{spec.asset} has no checks"
        if spec.train_path is not None:
            assert spec.schema is not None, f"{spec.stage} writes rows without a model"
        if spec.schema is not None:
            assert SCHEMAS[spec.asset].__name__ == spec.schema
            assert C.CHECK_SCHEMA in CHECKS[spec.asset]
    assert set(SCHEMAS) == {spec.asset for spec in stages.SPECS if spec.schema}


def test_datasets_and_cards_are_complete() -> None:
    for spec in stages.SPECS:
        assert (spec.train_path is None) == (spec.holdout_path is None) == (spec.dataset is None)
        if spec.card is not None:
            assert spec.card_kind and spec.dataset and spec.export
            assert spec.card.title and spec.card.built and spec.card.tags
    assert list(stages.DATASET_KINDS.values()) == list(stages.DATASET_STAGES)
    # a dataset's files live under exports/<kind>/, beside its card
    for kind, stage in stages.DATASET_KINDS.items():
        assert stages.TRAIN_PATHS[stage].startswith(f"{C.EXPORTS_DIR}/{kind}/")
        assert stages.HOLDOUT_PATHS[stage].startswith(f"{C.EXPORTS_DIR}/{kind}/")


def test_the_derived_tables_live_only_in_the_registry() -> None:
    # lib/constants holds names; a table of stages is declared once, in lib/stages
    for table in ("STAGES", "ASSET_STAGE", "STAGE_READS", "EXPORT_ASSETS", "DATASET_KINDS"):
        assert hasattr(stages, table)
        assert not hasattr(C, table), f"lib/constants.{table} is a second declaration"
