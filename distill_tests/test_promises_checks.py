"""The blocking checks ``pair_rules``, ``no_secrets`` and ``holdout_disjoint`` shown FAILING in a
real graph run: a hook on the export step (Dagster runs it after the step, before the check step)
plants a violation in the files the step just wrote, the way a bug in the export pass would.
Each check must fail with the metadata that locates the violation, block what is built on its
asset (nothing is published), and never quote a secret."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.infra import layout
from distill_tests.conftest import FIXTURE_RANGE, FIXTURES

# a realistic fake, planted only in the written export (never in the evidence)
PLANTED_KEY = "AKIA" + "Q7XK2M4PZR6T3WBN"


def _rows(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


def plant_violations(out: Path, context: dg.HookContext) -> None:
    """After the export step: a self-pair in the preference pairs, a key in an SFT row, and a
    train task's KTO row copied into the KTO holdout file."""
    if context.op.name != C.OP_EXPORTS:
        return
    root = layout.version_root(out, context.run_id)
    pairs = _rows(root / C.PREFERENCE_PATH)
    pairs[0]["rejected_run_id"] = pairs[0]["chosen_run_id"]
    _write(root / C.PREFERENCE_PATH, pairs)
    sft = _rows(root / C.SFT_PATH)
    sft[1]["messages"][-1]["content"] += f" (deployed with {PLANTED_KEY})"
    _write(root / C.SFT_PATH, sft)
    kto = _rows(root / C.KTO_PATH)
    holdout = root / C.KTO_HOLDOUT_PATH
    holdout.write_bytes(holdout.read_bytes() + orjson.dumps(kto[0]) + b"\n")


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory, project_defs):
    base = tmp_path_factory.mktemp("planted")
    source = base / "source"
    shutil.copytree(FIXTURES, source)
    out = base / "out"
    hook = dg.success_hook(name="plant_violations")(lambda context: plant_violations(out, context))
    job = project_defs.resolve_implicit_global_asset_job_def().with_hooks({hook})
    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test(temp_dir=str(base)) as inst:
        mp.setenv(C.ENV_RECORDED_AT, "2026-03-10T00:00:00Z")
        result = job.execute_in_process(
            instance=inst,
            run_config={
                "resources": {
                    "distill": {"config": {"source_dir": str(source), "output_dir": str(out)}}
                }
            },
            tags={
                "dagster/asset_partition_range_start": FIXTURE_RANGE[0],
                "dagster/asset_partition_range_end": FIXTURE_RANGE[1],
            },
            raise_on_error=False,
        )
        yield result, out


def _evaluation(result, asset: str, check: str):
    found = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.asset_key == dg.AssetKey(asset)
        and e.event_specific_data.check_name == check
    ]
    assert len(found) == 1, (asset, check)
    return found[0]


def _metadata(evaluation) -> dict:
    return {
        key: value.value if hasattr(value, "value") else value
        for key, value in evaluation.metadata.items()
    }


def test_pair_rules_fails_on_a_self_pair(planted_run):
    result, _ = planted_run
    evaluation = _evaluation(result, C.ASSET_PREFERENCE_PAIRS, C.CHECK_PAIR_RULES)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    metadata = _metadata(evaluation)
    assert metadata["num_failures"] >= 1
    rules = {(v["row"], v["rule"]) for v in metadata["violations"]}
    assert (1, C.R_SELF_PAIR) in rules
    assert {row for row, _ in rules} == {1}  # only the planted row


def test_no_secrets_fails_naming_file_row_and_type_never_the_value(planted_run):
    result, out = planted_run
    evaluation = _evaluation(result, C.ASSET_SFT_DATASET, C.CHECK_NO_SECRETS)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    metadata = _metadata(evaluation)
    assert metadata["num_failures"] == 1
    assert metadata["violations"] == [
        {"file": C.SFT_PATH, "row": 2, "types": [C.SECRET_AWS_ACCESS_KEY]}
    ]
    assert C.SECRET_AWS_ACCESS_KEY in evaluation.description
    # the check's verdicts and every event of the run name the type, never the key
    for event in result.all_events:
        assert PLANTED_KEY not in repr(event)
    for path in (out / C.REPORTS_DIR).rglob("*"):
        if path.is_file():
            assert PLANTED_KEY.encode() not in path.read_bytes(), path
    # the other exports' no_secrets checks still pass
    for asset in (C.ASSET_PREFERENCE_PAIRS, C.ASSET_KTO_DATASET, C.ASSET_RAG_PLAYBOOKS):
        assert _evaluation(result, asset, C.CHECK_NO_SECRETS).passed


def test_holdout_disjoint_fails_naming_the_shared_task(planted_run):
    result, out = planted_run
    evaluation = _evaluation(result, C.ASSET_KTO_DATASET, C.CHECK_HOLDOUT_DISJOINT)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    metadata = _metadata(evaluation)
    kto = _rows(layout.version_root(out, result.run_id) / C.KTO_PATH)
    assert metadata["num_failures"] == 1
    assert metadata["shared_tasks"] == [kto[0]["task_id"]]
    assert metadata["train_rows"] == len(kto) and metadata["holdout_rows"] >= 1
    for asset in (C.ASSET_SFT_DATASET, C.ASSET_PREFERENCE_PAIRS, C.ASSET_RAG_PLAYBOOKS):
        assert _evaluation(result, asset, C.CHECK_HOLDOUT_DISJOINT).passed


def test_failed_checks_block_publishing(planted_run):
    result, out = planted_run
    assert not result.success or not (out / C.EXPORTS_DIR).exists()
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert C.ASSET_DATASET_MANIFEST not in materialized
    assert not (out / C.EXPORTS_DIR).exists()  # nothing published
