"""The asset checks' bodies (lib/verify/checks.py) run in worker processes: they rebuild the
settings a
run used from its receipt with lib alone, the same settings the run's Dagster config gave, and
never import Dagster (about half a second of imports in every fresh worker otherwise)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import recorded_settings
from distill_assets.runtime.config import ExportConfig, PlaybookConfig

CONFIGS = [
    {},
    {"sft_deny_categories": [], "min_margin": 0.35, "max_pairs_per_task": 3},
    {
        "sft_allow_categories": ["Coding", "ops"],
        "sft_deny_categories": ["secrets"],
        "rag_include_partial": False,
        "secret_action": C.SECRET_ACTION_REDACT,
        "holdout_fraction": 0.25,
        "near_dup_threshold": None,
        "decontam_ngram": 8,
        "sft_format": C.SFT_FORMAT_PROMPT_COMPLETION,
        "parquet": True,
        "license": "mit",
    },
]


@pytest.mark.parametrize("given", CONFIGS)
def test_recorded_settings_are_the_ones_the_config_gave(given):
    config = ExportConfig(**given)
    # what a receipt records: every field of the config (lib/records/receipts via the stage runner)
    recorded = config.model_dump()
    assert recorded_settings(recorded) == config.settings()
    # an older receipt without some fields: their defaults, as the config would give them
    assert recorded_settings(given) == config.settings()


def test_the_playbook_deny_list_is_the_one_the_config_gave(fixture_run):
    from distill_assets.lib.records.receipts import load_receipt
    from distill_assets.lib.verify.checks import playbook_deny_list

    result, out, _ = fixture_run
    receipt = load_receipt(
        out / C.REPORTS_DIR / result.run_id / f"{C.STAGE_EXTRACT_PLAYBOOKS}.json"
    )
    expected = PlaybookConfig(**receipt.extra["settings"]).settings().deny_categories
    assert playbook_deny_list(receipt) == expected
    for denied in ([], ["coding"]):
        receipt.extra["settings"]["deny_categories"] = denied
        assert playbook_deny_list(receipt) == tuple(denied)


def test_dataset_checks_run_without_importing_dagster(fixture_run):
    result, out, _ = fixture_run
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from distill_assets.lib import constants as C
        from distill_assets.lib import stages as S
        from distill_assets.lib.verify.checks import CHECKS, run_checks
        from distill_assets.lib.records.receipts import load_receipt

        out = Path({str(out)!r})
        ran = 0
        for stage, asset in S.STAGE_ASSET.items():
            path = out / C.REPORTS_DIR / {result.run_id!r} / f"{{stage}}.json"
            if asset not in CHECKS or not path.exists():
                continue
            outcomes = run_checks(asset, list(CHECKS[asset]), load_receipt(path), out)
            assert all(o.passed for o in outcomes), [o for o in outcomes if not o.passed]
            ran += len(outcomes)
        assert ran >= 25, ran
        loaded = sorted(m for m in sys.modules if m == "dagster" or m.startswith("dagster."))
        assert not loaded, loaded[:5]
        print("ran", ran)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ran ")
