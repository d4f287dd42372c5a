"""Each run config's defaults are its lib settings dataclass's (runtime/config.py takes them from
there): a default changed in lib changes the config, and the two cannot drift apart again."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import dagster as dg
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import ExportSettings
from distill_assets.lib.datasets.formats import FormatSettings
from distill_assets.lib.evidence.format import ParseSettings
from distill_assets.lib.hygiene.curate import HygieneSettings
from distill_assets.lib.playbooks.playbook import PlaybookSettings
from distill_assets.lib.playbooks.search import IndexSettings
from distill_assets.lib.records.drift import DriftThresholds
from distill_assets.lib.scoring import ScoringPolicy
from distill_assets.runtime.config import (
    CollectConfig,
    ExportConfig,
    HygieneConfig,
    IndexConfig,
    PlaybookConfig,
    ScoringConfig,
    default_of,
)
from distill_assets.runtime.partitions import FIRST_DAY
from distill_assets.runtime.resource import DistillResource

# config -> the settings dataclasses whose fields it carries
SETTINGS_OF: dict[type[dg.Config], tuple[type, ...]] = {
    CollectConfig: (ParseSettings,),
    ScoringConfig: (ScoringPolicy,),
    HygieneConfig: (HygieneSettings,),
    ExportConfig: (ExportSettings, HygieneSettings, FormatSettings),
    PlaybookConfig: (PlaybookSettings, HygieneSettings),
    IndexConfig: (IndexSettings,),
}
# config fields whose default is not a dataclass field's value: None standing for the
# dataclass's deny-list (an empty list denies none), and the horizon in hours
NOT_A_FIELD = {"sft_deny_categories", "deny_categories", "future_horizon_hours"}


def _config_default(config: type[dg.Config], name: str) -> object:
    value = config.model_fields[name].get_default(call_default_factory=True)
    return tuple(value) if isinstance(value, list) else value


def _pairs() -> list[tuple[type[dg.Config], str, type]]:
    found = []
    for config, settings in SETTINGS_OF.items():
        for name in config.model_fields:
            owner = next((s for s in settings if name in s.__dataclass_fields__), None)
            if owner is not None and name not in NOT_A_FIELD:
                found.append((config, name, owner))
    return found


@pytest.mark.parametrize(
    ("config", "name", "settings"),
    _pairs(),
    ids=[f"{c.__name__}.{n}" for c, n, _ in _pairs()],
)
def test_a_config_default_is_its_settings_default(config, name, settings) -> None:
    assert _config_default(config, name) == default_of(settings, name)


@pytest.mark.parametrize("config", list(SETTINGS_OF), ids=lambda c: c.__name__)
def test_every_config_field_has_its_settings_field(config) -> None:
    fields = {name for s in SETTINGS_OF[config] for name in s.__dataclass_fields__}
    assert set(config.model_fields) - fields <= NOT_A_FIELD


def test_the_default_configs_make_the_default_settings(monkeypatch) -> None:
    monkeypatch.delenv(C.ENV_RECORDED_AT, raising=False)
    for env in (C.ENV_DRIFT_WARN, C.ENV_DRIFT_ALERT, C.ENV_DRIFT_MIN_BASE):
        monkeypatch.delenv(env, raising=False)
    assert ScoringConfig().policy() == ScoringPolicy()
    assert HygieneConfig().hygiene() == HygieneSettings()
    assert ExportConfig().formats() == FormatSettings()
    assert ExportConfig().settings() == ExportSettings()
    assert PlaybookConfig().settings() == PlaybookSettings()
    assert IndexConfig().settings() == IndexSettings()
    assert ExportConfig().settings().sft_deny_categories == C.DEFAULT_UNSAFE_SFT_CATEGORIES
    parsed = CollectConfig().settings()
    assert parsed == dataclasses.replace(ParseSettings(), earliest=FIRST_DAY, now=parsed.now)
    assert CollectConfig().future_horizon_hours * timedelta(hours=1) == ParseSettings.future_horizon
    assert DistillResource().thresholds() == DriftThresholds()


def test_default_of_reads_defaults_and_factories() -> None:
    assert default_of(PlaybookSettings, "max_steps") == PlaybookSettings().max_steps
    assert default_of(ScoringPolicy, "score_signals") == ()
    with pytest.raises(TypeError, match="no default"):
        default_of(dataclasses.make_dataclass("Bare", ["x"]), "x")
