"""One run over a date range and one run per day write byte-identical datasets."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from distill_assets.definitions import defs
from distill_assets.devtools.synth import SynthSpec, synthesize
from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.runtime.partitions import PER_DAY, SINGLE_RUN
from distill_assets.runtime.resource import ConfigError, DistillResource

DATASET_DIRS = (C.EXPORTS_DIR, C.EVIDENCE_DIR, C.SCORED_DIR)
# everything downstream of the daily assets (extraction, exports, index, publish)
UNPARTITIONED = tuple(
    asset for asset in S.ASSET_STAGE if asset not in (C.ASSET_EVIDENCE_INDEX, C.ASSET_SCORED_RUNS)
)


def _datasets(root: Path, run_id: str) -> dict[str, str]:
    """sha256 of every dataset file; a dataset card names the run that published it, so that
    run id is masked in cards, which must match byte for byte everywhere else."""
    found = {}
    for top in DATASET_DIRS:
        for p in sorted((root / top).rglob("*")):
            if p.is_file():
                relpath = p.relative_to(root).as_posix()
                data = p.read_bytes()
                if C.is_card(relpath):
                    assert run_id.encode() in data, relpath
                    data = data.replace(run_id.encode(), b"<run-id>")
                found[relpath] = hashlib.sha256(data).hexdigest()
    return found


def _instance(path: Path) -> dg.DagsterInstance:
    path.mkdir(parents=True)
    return dg.DagsterInstance.local_temp(str(path))


def _run(definitions, instance, source, out, selection, **kwargs) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [*definitions.assets, *definitions.asset_checks],
        instance=instance,
        resources={"distill": DistillResource(source_dir=str(source), output_dir=str(out))},
        selection=selection,
        raise_on_error=False,
        **kwargs,
    )
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} >= {C.CHECK_SCHEMA, C.CHECK_CONSERVATION}
    failed = [e for e in evaluations if not e.passed]
    assert [e.check_name for e in failed if e.check_name != C.CHECK_DRIFT] == []
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[date]]:
    source = tmp_path_factory.mktemp("backfill") / "evidence"
    summary = synthesize(SynthSpec(runs=600, days=3, seed=21), source)
    first, last = summary.first_day, summary.last_day
    # a day either side, as `distill materialize` picks the range
    days = [first - timedelta(days=1) + timedelta(days=i) for i in range((last - first).days + 3)]
    return source, days


def test_single_run_and_per_day_write_the_same_datasets(tmp_path: Path, corpus) -> None:
    source, days = corpus
    definitions = defs()
    every = [*definitions.assets]

    single = tmp_path / "single"
    with _instance(tmp_path / "instance-single") as instance:
        single_run = _run(
            definitions,
            instance,
            source,
            single,
            every,
            tags={
                "dagster/asset_partition_range_start": days[0].isoformat(),
                "dagster/asset_partition_range_end": days[-1].isoformat(),
            },
        )
        assert len(instance.get_runs()) == 1

    # one run per day, in the order a per-day backfill runs them: scoring a day needs the
    # evidence index of the days around it, and the exports need every scored day
    per_day = tmp_path / "per-day"
    with _instance(tmp_path / "instance-per-day") as instance:
        for asset in (C.ASSET_EVIDENCE_INDEX, C.ASSET_SCORED_RUNS):
            for day in days:
                _run(definitions, instance, source, per_day, [asset], partition_key=str(day))
        last_run = _run(definitions, instance, source, per_day, list(UNPARTITIONED))
        assert len(instance.get_runs()) == 2 * len(days) + 1

    expected = _datasets(single, single_run.run_id)
    assert any(path.startswith("evidence/undated/") for path in expected)
    # the published datasets (through the ``exports`` link), their holdouts and quarantines
    for rel in (C.RAG_PATH, C.SFT_PATH, C.PREFERENCE_PATH, *S.HOLDOUT_PATHS.values()):
        assert rel in expected
    assert sum(path.endswith("/records.jsonl") for path in expected) == len(days)
    assert _datasets(per_day, last_run.run_id) == expected


def test_backfill_mode_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    def policies() -> dict[str, dg.BackfillPolicy | None]:
        return {
            key.to_user_string(): asset.backfill_policy
            for asset in defs().assets
            for key in asset.keys
        }

    monkeypatch.delenv(C.ENV_BACKFILL, raising=False)
    assert policies()[C.ASSET_EVIDENCE_INDEX] == SINGLE_RUN
    checks = len(defs().asset_checks)
    monkeypatch.setenv(C.ENV_BACKFILL, "per_day")
    found = policies()
    assert found[C.ASSET_EVIDENCE_INDEX] == PER_DAY
    assert found[C.ASSET_SCORED_RUNS] == PER_DAY
    assert found[C.ASSET_SFT_DATASET] == SINGLE_RUN  # not partitioned
    assert len(defs().asset_checks) == checks  # the checks stay
    monkeypatch.setenv(C.ENV_BACKFILL, "weekly")
    with pytest.raises(ConfigError, match="DISTILL_BACKFILL"):
        defs()
