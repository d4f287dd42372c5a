"""What a newcomer meets in the first hour (issue 15): the terminal run summary, each day's own
figures in the instance, `distill drift` for people, quiet broken pipes, the partition start."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import orjson
import pytest

from distill_assets.cli import main
from distill_assets.cli.common import plural
from distill_assets.cli.inspect import drift_lines, run_summary_lines
from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_tests.conftest import REPO_ROOT


@pytest.fixture
def reports(fixture_run):
    result, out, instance = fixture_run
    return result.run_id, out, instance


def test_terminal_summary_columns_add_up_and_say_where_holdout_rows_went(reports):
    run_id, out, _ = reports
    directory = out / C.REPORTS_DIR / run_id
    lines = run_summary_lines(directory)
    assert lines[0] == f"distill: run {run_id}: PASSED"
    rows = {}
    for line in lines:
        cells = line.split()
        if cells and cells[0] in S.STAGES:
            rows[cells[0]] = (cells[1:5], " ".join(cells[5:]))
    assert set(rows) == set(S.STAGES)
    for stage, (numbers, _) in rows.items():
        records_in, records_out, quarantined, skipped = (int(n.replace(",", "")) for n in numbers)
        assert records_in == records_out + quarantined + skipped, stage
    # export-sft: the runs out are the train file's rows plus the held-out ones
    receipt = orjson.loads((directory / "export-sft.json").read_bytes())
    train = sum(1 for _ in open(out / C.SFT_PATH, "rb"))
    held = sum(1 for _ in open(out / S.HOLDOUT_PATHS[C.STAGE_EXPORT_SFT], "rb"))
    assert receipt["stats"]["records_out"] == train + held
    assert (
        rows[C.STAGE_EXPORT_SFT][1]
        == f"{plural(train, 'row')} + {held} held out (the holdout split)"
    )
    text = "\n".join(lines)
    assert "total" not in text.lower()
    assert " 1 rows" not in text


def test_plural():
    assert plural(1, "row") == "1 row"
    assert plural(0, "row") == "0 rows"
    assert plural(1200, "pair") == "1,200 pairs"


def test_each_day_carries_its_own_counts_in_the_instance(reports):
    """A range run's materialization is labelled as the range's; each day's observation holds
    that day's own counts (the receipt's per-partition figures), including empty days."""
    run_id, out, instance = reports
    for asset, stage in (
        (C.ASSET_EVIDENCE_INDEX, C.STAGE_COLLECT),
        (C.ASSET_SCORED_RUNS, C.STAGE_SCORE),
    ):
        receipt = orjson.loads((out / C.REPORTS_DIR / run_id / f"{stage}.json").read_bytes())
        per_day = receipt["extra"]["per_partition"]
        key = dg.AssetKey(asset)
        materialized = instance.fetch_materializations(key, limit=10).records
        assert materialized
        for record in materialized:
            label = record.asset_materialization.metadata[C.MD_FIGURES_OF].value
            assert label.startswith("the whole range 2026-03-01...2026-03-03 (3 days)")
        observed = {}
        for record in instance.fetch_observations(key, limit=100).records:
            observation = record.asset_observation
            assert record.run_id == run_id
            observed[observation.partition] = {k: v.value for k, v in observation.metadata.items()}
        assert set(observed) == {"2026-03-01", "2026-03-02", "2026-03-03"}
        for day, metadata in observed.items():
            own = per_day.get(day, {})
            assert metadata[C.MD_ROW_COUNT] == own.get("records_out", 0)
            assert metadata[C.MD_RECORDS_IN] == own.get("records_in", 0)
            assert metadata[C.MD_QUARANTINED] == own.get("quarantined", 0)
            assert metadata[C.MD_FIGURES_OF] == f"the day {day}"
        # the days differ, so a day cannot be showing the range's totals
        assert len({m[C.MD_ROW_COUNT] for m in observed.values()}) > 1
        assert sum(m[C.MD_ROW_COUNT] for m in observed.values()) == receipt["stats"]["records_out"]


def test_drift_for_people(reports, capsys):
    run_id, out, _ = reports
    assert main(["drift", "--output", str(out)]) == 0  # no run id: the latest run
    text = capsys.readouterr().out
    assert text.startswith(f"run {run_id}: drift OK")
    assert "None" not in text and "n/a" not in text and "=" not in text


def test_drift_lines_read_other_shapes_defensively():
    report = {
        "run_id": "b",
        "prior_run_id": "a",
        "severity": "warn",
        "stages": [
            {
                "stage": "collect",
                "severity": "warn",
                "delta_records_out": -7,
                "input_hash_match": False,
                "output_hash_match": None,
                "flags": ["records_out_drop"],
            },
            {"stage": "score", "severity": "ok", "pct_change_out": 0.0, "input_hash_match": True},
        ],
    }
    lines = drift_lines(report)
    assert lines[0] == "run b: drift WARN (against run a)"
    assert lines[1] == "  collect: warn, records out -7, inputs changed"
    assert lines[2] == "    - records_out_drop"
    assert lines[3] == "  score: ok, records out +0.0%, inputs same"
    assert "None" not in "\n".join(lines)


def test_error_hints_name_the_option_and_the_variable(tmp_path, capsys):
    assert main(["drift", "--output", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "--output" in err and C.ENV_OUTPUT_DIR in err
    assert main(["materialize", "--source", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "--source" in err and C.ENV_SOURCE_DIR in err


@pytest.mark.parametrize(
    "argv",
    [
        ["receipts", "list"],
        ["receipts", "show", "RUN"],
        ["drift", "RUN"],
        ["search", "rotate certificates"],
    ],
)
def test_a_closed_pipe_ends_quietly(reports, argv):
    """`distill receipts list | head`: the reader is gone before distill writes; no traceback."""
    run_id, out, _ = reports
    argv = [run_id if a == "RUN" else a for a in argv]
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "distill_assets.cli", *argv, "--output", str(out)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.stderr.decode() == ""
    assert done.returncode == 0


def _first_partition(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = (
        "from distill_assets.definitions import defs\n"
        "d = defs()\n"
        "a = d.resolve_assets_def('evidence_index')\n"
        "print(a.partitions_def.get_first_partition_key())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_partition_start_is_a_setting():
    env = {k: v for k, v in os.environ.items() if k != C.ENV_PARTITION_START}
    assert _first_partition(env).stdout.strip() == C.PARTITION_START
    done = _first_partition({**env, C.ENV_PARTITION_START: "2026-02-01"})
    assert done.stdout.strip() == "2026-02-01", done.stderr[-2000:]
    bad = _first_partition({**env, C.ENV_PARTITION_START: "March"})
    assert bad.returncode != 0 and f"invalid setting {C.ENV_PARTITION_START}='March'" in bad.stderr


def test_materialize_range_starts_at_the_partition_start(tmp_path, monkeypatch):
    from distill_assets.cli.materialize import partition_range

    monkeypatch.setenv(C.ENV_PARTITION_START, "2026-03-02")
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.jsonl").write_text('{"created_at": "2026-03-01T00:00:00Z"}\n')
    # the range `distill materialize` picks never starts before the first partition
    assert partition_range(source).startswith("2026-03-02...")


def test_equivalent_command_runs_from_the_project_folder(monkeypatch, tmp_path):
    """Dagster wants DAGSTER_HOME absolute: a home in the project folder is printed as $PWD/..."""
    from distill_assets.cli.materialize import dagster_command

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".dagster_home").mkdir()
    base = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "distill_assets.definitions",
    ]
    command = base + ["--select", "*", "--partition-range", "2026-02-28...2026-03-04"]
    env = {"DAGSTER_HOME": str(tmp_path / ".dagster_home"), C.ENV_OUTPUT_DIR: str(tmp_path / "o")}
    shown = dagster_command([command], env)
    assert shown.startswith('DAGSTER_HOME="$PWD"/.dagster_home DISTILL_OUTPUT_DIR=o ')
    assert shown.endswith(
        "asset materialize -m distill_assets.definitions --select '*' "
        "--partition-range 2026-02-28...2026-03-04"
    )


def test_run_tags_name_source_and_output_without_credentials(tmp_path, monkeypatch):
    from distill_assets.runtime.resource import DistillResource, run_tags
    from distill_tests.conftest import FIXTURES

    url = DistillResource(source_dir=str(FIXTURES), output_dir="s3://key:s3cr3t@bucket/prefix")
    tags = run_tags(url)
    assert tags == {C.TAG_SOURCE: str(FIXTURES.resolve()), C.TAG_OUTPUT: "s3://bucket/prefix"}
    sample = tmp_path / "results.json"
    sample.write_text("[]")
    monkeypatch.setenv(
        C.ENV_IMPORTS, orjson.dumps([{"kind": "tau-bench", "path": str(sample)}]).decode()
    )
    only_imports = run_tags(DistillResource(output_dir=str(tmp_path / "o")))
    assert only_imports[C.TAG_SOURCE] == f"tau-bench {sample}"
    assert only_imports[C.TAG_OUTPUT] == str((tmp_path / "o").resolve())
