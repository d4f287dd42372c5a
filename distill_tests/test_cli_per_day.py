"""`distill materialize --per-day` plans one run per day in the order a backfill needs."""

from __future__ import annotations

from distill_assets.cli import main
from distill_assets.cli.materialize import per_day_steps
from distill_assets.lib import constants as C


def test_per_day_steps_collect_every_day_before_scoring_any() -> None:
    steps = per_day_steps("2026-02-27...2026-03-01")
    days = ["2026-02-27", "2026-02-28", "2026-03-01"]
    assert steps == [
        *(["--select", C.ASSET_EVIDENCE_INDEX, "--partition", day] for day in days),
        *(["--select", C.ASSET_SCORED_RUNS, "--partition", day] for day in days),
        # then every unpartitioned asset, in one run
        [
            "--select",
            "extracted_playbooks,rag_playbooks,sft_dataset,preference_pairs,kto_dataset,"
            "review_queue,"
            "playbook_index,dataset_manifest",
        ],
    ]


def test_per_day_refuses_a_partial_selection(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    code = main(
        ["materialize", "--per-day", "--select", "scored_runs", "--output", str(tmp_path / "o")]
    )
    assert code == 2
    assert "--per-day materializes the whole graph" in capsys.readouterr().err


def test_the_environment_picks_per_day_too(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(C.ENV_BACKFILL, "per_day")
    code = main(["materialize", "--select", "scored_runs", "--output", str(tmp_path / "o")])
    assert code == 2
    assert "--per-day materializes the whole graph" in capsys.readouterr().err
