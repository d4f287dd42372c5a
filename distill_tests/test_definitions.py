"""The definitions load through the defs folder and wire the lineage the UI shows."""

from __future__ import annotations

import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S


def test_assets_checks_and_lineage(project_defs):
    graph = project_defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == set(S.ASSET_STAGE)
    assert len(keys) == len(S.STAGES) == 10

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents(C.ASSET_SCORED_RUNS) == {C.ASSET_EVIDENCE_INDEX}
    for export in (
        C.ASSET_EXTRACTED_PLAYBOOKS,
        C.ASSET_SFT_DATASET,
        C.ASSET_PREFERENCE_PAIRS,
        C.ASSET_KTO_DATASET,
    ):
        assert parents(export) == {C.ASSET_SCORED_RUNS}
    assert parents(C.ASSET_RAG_PLAYBOOKS) == {C.ASSET_EXTRACTED_PLAYBOOKS}
    assert parents(C.ASSET_PLAYBOOK_INDEX) == {C.ASSET_RAG_PLAYBOOKS}
    assert C.ASSET_PLAYBOOK_INDEX in parents(C.ASSET_DATASET_MANIFEST)
    # every parent edge is a stage read the run summary knows about
    for asset, stage in S.ASSET_STAGE.items():
        for parent in parents(asset):
            assert S.ASSET_STAGE[parent] in S.STAGE_READS[stage], (asset, parent)
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert parents(C.ASSET_REVIEW_QUEUE) == {C.ASSET_SCORED_RUNS}
    assert C.ASSET_REVIEW_QUEUE in parents(C.ASSET_DATASET_MANIFEST)
    assert C.ASSET_KTO_DATASET in parents(C.ASSET_DATASET_MANIFEST)
    for export in (
        C.ASSET_RAG_PLAYBOOKS,
        C.ASSET_SFT_DATASET,
        C.ASSET_PREFERENCE_PAIRS,
        C.ASSET_KTO_DATASET,
    ):
        for name in (
            C.CHECK_SCHEMA,
            C.CHECK_FIREWALL,
            C.CHECK_CONSERVATION,
            C.CHECK_DRIFT,
            C.CHECK_NO_SECRETS,
            C.CHECK_HOLDOUT_DISJOINT,
        ):
            assert (export, name) in checks
    for name in (C.CHECK_NO_SECRETS, C.CHECK_CONSERVATION, C.CHECK_DRIFT):
        assert (C.ASSET_REVIEW_QUEUE, name) in checks
    for export in (
        C.ASSET_EXTRACTED_PLAYBOOKS,
        C.ASSET_RAG_PLAYBOOKS,
        C.ASSET_SFT_DATASET,
        C.ASSET_PREFERENCE_PAIRS,
    ):
        for name in (
            C.CHECK_SCHEMA,
            C.CHECK_FIREWALL,
            C.CHECK_CONSERVATION,
            C.CHECK_DRIFT,
            C.CHECK_NO_SECRETS,
            C.CHECK_HOLDOUT_DISJOINT,
        ):
            assert (export, name) in checks
    for name in (C.CHECK_SCHEMA, C.CHECK_INDEX_CONSISTENT, C.CHECK_CONSERVATION, C.CHECK_DRIFT):
        assert (C.ASSET_PLAYBOOK_INDEX, name) in checks
    assert (C.ASSET_EVIDENCE_INDEX, C.CHECK_SCHEMA) in checks
    assert (C.ASSET_SCORED_RUNS, C.CHECK_SCHEMA) in checks


def test_partitioning_and_sensor(project_defs):
    graph = project_defs.resolve_asset_graph()
    for name in (C.ASSET_EVIDENCE_INDEX, C.ASSET_SCORED_RUNS):
        assert isinstance(graph.get(dg.AssetKey(name)).partitions_def, dg.DailyPartitionsDefinition)
    assert graph.get(dg.AssetKey(C.ASSET_SFT_DATASET)).partitions_def is None
    sensor = project_defs.resolve_sensor_def("drift_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
