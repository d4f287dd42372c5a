"""Tests of ../shared never skip where it is required: DISTILL_REQUIRE_SHARED=1 (set by .ci/run)
or CI turns the absence of a shared file into a failure; elsewhere it is a skip naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill_tests.conftest import ENV_REQUIRE_SHARED, need_shared


def test_absent_shared_file_skips_with_its_path_on_a_plain_clone(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_REQUIRE_SHARED, raising=False)
    monkeypatch.delenv("CI", raising=False)
    missing = tmp_path / "real_runs" / "x.json"
    with pytest.raises(pytest.skip.Exception, match=str(missing)):
        need_shared(missing)


@pytest.mark.parametrize("env", [(ENV_REQUIRE_SHARED, "1"), ("CI", "true")])
def test_absent_shared_file_fails_where_it_is_required(tmp_path, monkeypatch, env):
    monkeypatch.delenv(ENV_REQUIRE_SHARED, raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv(*env)
    with pytest.raises(pytest.fail.Exception, match="must run"):
        need_shared(tmp_path / "absent.json")


def test_present_shared_file_neither_skips_nor_fails(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(ENV_REQUIRE_SHARED, "1")
    present = tmp_path / "x.json"
    present.write_text("[]")
    need_shared(present)


def test_ci_script_requires_shared():
    script = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert f"export {ENV_REQUIRE_SHARED}=1" in script
