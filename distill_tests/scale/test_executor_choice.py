"""DISTILL_EXECUTOR picks the executor when the definitions load (defs/shared/executor.py)."""

from __future__ import annotations

import importlib.util

import pytest

from distill_assets.definitions import defs
from distill_assets.lib import constants as C

from .conftest import need_module


def causes(error: BaseException) -> str:
    """The messages of an error and of every error it was raised from."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(messages)


def executor_name() -> str:
    return defs().resolve_implicit_global_asset_job_def().executor_def.name


def test_default_executor_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(C.ENV_EXECUTOR, raising=False)
    assert executor_name() == C.EXECUTOR_DEFAULT_NAME
    # in-process unless run config asks for subprocesses (the plain dagster command's speed)
    executor_def = defs().resolve_implicit_global_asset_job_def().executor_def
    assert executor_def.config_schema.as_field().default_value == {"in_process": {}}


def test_celery_executor_reads_the_broker_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    need_module("dagster_celery")
    monkeypatch.setenv(C.ENV_EXECUTOR, C.EXECUTOR_CELERY)
    # the broker URL is not needed to load the code, only when a run starts
    monkeypatch.delenv(C.ENV_CELERY_BROKER, raising=False)
    assert executor_name() == C.EXECUTOR_CELERY


def test_k8s_executor_or_a_clear_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(C.ENV_EXECUTOR, C.EXECUTOR_K8S)
    if importlib.util.find_spec("dagster_k8s") is None:
        with pytest.raises(Exception) as raised:
            defs()
        assert "pip install 'distill[k8s]'" in causes(raised.value)
    else:
        assert executor_name() == "k8s"


def test_unknown_executor_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(C.ENV_EXECUTOR, "spark")
    with pytest.raises(Exception) as raised:
        defs()
    assert f"invalid setting {C.ENV_EXECUTOR}='spark'" in causes(raised.value)
