"""What is published is what the user meant (issue 14), through ``distill materialize`` as a
user runs it: the output records its sources and refuses others in one line (``--output NEW``
or ``--replace`` are the ways out; more sources are fine); a source with nothing usable fails
the run before anything is published, naming the top reason codes; the last line printed is
the run's drift severity."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.sources import (
    record_sources,
    recorded_sources,
    replace_sources,
    source_names,
    sources_conflict,
)
from distill_assets.lib.infra.io import iter_jsonl

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "fixtures" / "evidence"


def _distill(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distill_assets.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _exports(out: Path) -> dict[str, bytes]:
    root = out / C.EXPORTS_DIR
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict[str, str], subprocess.CompletedProcess]:
    """The quick start: the bundled fixtures into a fresh output."""
    base = tmp_path_factory.mktemp("sources")
    (base / "home").mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(base / "home"),
        "DISTILL_RECORDED_AT": "2026-04-10T00:00:00Z",
    }
    env.pop(C.ENV_SOURCE_DIR, None)
    env.pop(C.ENV_IMPORTS, None)
    source = base / "fixtures"
    shutil.copytree(FIXTURES, source)
    out = base / "out"
    done = _distill(["materialize", "--source", str(source), "--output", str(out)], env)
    assert done.returncode == 0, done.stderr[-2000:]
    return out, env, done


def test_the_last_line_printed_is_the_drift_severity(built) -> None:
    out, _, done = built
    last = done.stdout.rstrip("\n").splitlines()[-1]
    assert last.startswith("distill: drift OK (baseline established)"), last
    assert recorded_sources(out) == source_names(out.parent / "fixtures")


def test_other_sources_are_refused_in_one_line_and_nothing_changes(built, tmp_path) -> None:
    out, env, _ = built
    other = tmp_path / "my-evidence"
    shutil.copytree(FIXTURES / "runs", other / "runs")
    before = _exports(out)
    done = _distill(["materialize", "--source", str(other), "--output", str(out)], env)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert f"dir:{(out.parent / 'fixtures').resolve()}" in line
    assert f"dir:{other.resolve()}" in line
    assert "--output NEW" in line and "--replace" in line
    assert _exports(out) == before
    assert recorded_sources(out) == source_names(out.parent / "fixtures")


def test_replace_rebuilds_the_output_from_the_new_sources_only(built, tmp_path) -> None:
    out, env, _ = built
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    other = tmp_path / "my-evidence"
    (other / "runs").mkdir(parents=True)
    shutil.copy(FIXTURES / "runs" / "2026-03-02.jsonl", other / "runs" / "2026-03-02.jsonl")
    done = _distill(
        ["materialize", "--source", str(other), "--output", str(copy), "--replace"], env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--replace: removed evidence, scored-runs, sources.json" in done.stdout
    assert recorded_sources(copy) == source_names(other)
    # no row of the old source's other days is published
    days = {
        row["created_at"][:10]
        for path in sorted((copy / C.EVIDENCE_DIR).rglob("records.jsonl"))
        for row in iter_jsonl(path)
        if row.get("created_at")
    }
    assert days == {"2026-03-02"}
    # what the exports name (datasets, review queue, quarantines): the new source's runs only
    named = b"".join(p.read_bytes() for p in (copy / C.EXPORTS_DIR).rglob("*.jsonl"))
    assert b'"run-011"' in named and b'"run-001"' not in named  # run-001 is of 2026-03-01


def test_a_source_of_nothing_usable_fails_before_publishing(built, tmp_path) -> None:
    out, env, _ = built
    fresh = tmp_path / "out"
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "bad.jsonl").write_bytes(
        b'not json\n{"kind": "run", "run_id": "r"}\n\xff\xfe\n[1, 2]\n'
    )
    done = _distill(["materialize", "--source", str(garbage), "--output", str(fresh)], env)
    assert done.returncode != 0
    run_id = next((fresh / C.REPORTS_DIR).glob("*/summary.json")).parent.name
    assert f"distill: run {run_id}: FAILED" in done.stdout
    assert "  FAILED: collect: no usable record among 4 read; top reasons: " in done.stdout
    assert "invalid_json 1" in done.stdout and "invalid_utf8 1" in done.stdout
    assert not (fresh / C.PUBLISHED_POINTER_PATH).exists()
    assert not (fresh / C.EXPORTS_DIR / "sft").exists()
    assert recorded_sources(fresh) is None  # a failed collect records nothing
    summary = orjson.loads(next((fresh / C.REPORTS_DIR).glob("*/summary.json")).read_bytes())
    assert summary["overall_passed"] is False
    (collect,) = [row for row in summary["stages"] if row["stage"] == C.STAGE_COLLECT]
    assert collect["errors"] and "top reasons" in collect["errors"][0]


def test_sources_that_extend_the_recorded_ones_are_accepted(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    assert sources_conflict(out, source_names(a)) is None  # nothing recorded yet
    record_sources(out, source_names(a))

    class Spec:
        kind, path = C.IMPORT_TAU_BENCH, b

    more = source_names(a, [Spec()])
    assert sources_conflict(out, more) is None
    record_sources(out, more)
    assert recorded_sources(out) == more
    # dropping one is not extending
    assert "would mix both" in (sources_conflict(out, source_names(a)) or "")
    assert replace_sources(out) == [C.SOURCES_PATH]
    assert sources_conflict(out, source_names(b)) is None
