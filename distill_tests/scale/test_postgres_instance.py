"""The graph on a PostgreSQL instance: deploy/dagster-postgres.yaml, settings from the env."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from distill_assets.lib import constants as C

from .conftest import FIXTURES, RECORDED_AT, Postgres, materialize_range, postgres_home


@pytest.fixture
def pg_env(postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> Postgres:
    for name, value in postgres.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(C.ENV_RECORDED_AT, RECORDED_AT)
    return postgres


def test_partitioned_graph_records_materializations_in_postgres(
    pg_env: Postgres, tmp_path: Path
) -> None:
    import psycopg2
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    home = postgres_home(tmp_path / "home")
    out = tmp_path / "out"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_storage, PostgresRunStorage)
        result = materialize_range(instance, FIXTURES, str(out))
        assert result.success
        run_id = result.run_id

    # a fresh instance (new connections, settings read from the environment again) sees it all
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.is_success
        partitions = instance.get_materialized_partitions(dg.AssetKey(C.ASSET_EVIDENCE_INDEX))
        assert {"2026-03-01", "2026-03-02", "2026-03-03"} <= partitions
        for asset in (C.ASSET_RAG_PLAYBOOKS, C.ASSET_SFT_DATASET, C.ASSET_PREFERENCE_PAIRS):
            records = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
            assert records and records[0].run_id == run_id
            metadata = records[0].asset_materialization.metadata
            assert metadata[C.MD_OUTPUT_HASH].value
            assert metadata[C.MD_ROW_COUNT].value > 0
        checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey(C.ASSET_SFT_DATASET), C.CHECK_FIREWALL)]
        )
        assert list(checks.values())[0].run_id == run_id

    # and the rows are in the PostgreSQL database itself
    connection = psycopg2.connect(
        host=pg_env.host,
        port=pg_env.port,
        user=pg_env.user,
        password=pg_env.password,
        dbname=pg_env.db,
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "select asset_key, count(*) from event_logs where run_id = %s and "
                "dagster_event_type = 'ASSET_MATERIALIZATION' group by asset_key",
                (run_id,),
            )
            counts = {key: n for key, n in cursor.fetchall()}
    finally:
        connection.close()
    days = 5  # 2026-02-28 ... 2026-03-04
    assert counts == {
        f'["{C.ASSET_EVIDENCE_INDEX}"]': days,
        f'["{C.ASSET_SCORED_RUNS}"]': days,
        f'["{C.ASSET_EXTRACTED_PLAYBOOKS}"]': 1,
        f'["{C.ASSET_RAG_PLAYBOOKS}"]': 1,
        f'["{C.ASSET_SFT_DATASET}"]': 1,
        f'["{C.ASSET_PREFERENCE_PAIRS}"]': 1,
        f'["{C.ASSET_KTO_DATASET}"]': 1,
        f'["{C.ASSET_REVIEW_QUEUE}"]': 1,
        f'["{C.ASSET_PLAYBOOK_INDEX}"]': 1,
        f'["{C.ASSET_DATASET_MANIFEST}"]': 1,
    }
    assert (out / C.SFT_PATH).stat().st_size > 0  # published through the exports link


def test_missing_setting_names_the_variable(
    pg_env: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = postgres_home(tmp_path / "home")
    monkeypatch.delenv("DISTILL_PG_HOST")
    with pytest.raises(Exception, match="DISTILL_PG_HOST"):
        dg.DagsterInstance.from_config(str(home))
