"""The benchmark runs end to end on a small corpus and prints one JSON line of the right shape.

No timing is asserted: speed and memory are measured by the benchmark, not by tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from distill_assets.devtools.bench import ensure_corpus
from distill_assets.devtools.synth import SynthSpec
from distill_assets.lib import stages as S

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_bench_prints_one_json_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "distill_assets.bench", "--runs", "2000", "--days", "2"]
    command += ["--cache", str(tmp_path / "cache")]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    lines = done.stdout.decode().strip().splitlines()
    assert len(lines) == 1
    figures = orjson.loads(lines[0])
    for name in ("runs", "source_bytes", "floor_s", "total_s", "ratio", "peak_rss_mib"):
        assert name in figures, name
    assert figures["runs"] == 2000 and figures["success"] is True
    assert figures["source_bytes"] > 2000 * 1000
    assert figures["floor_s"] > 0 and figures["total_s"] > 0 and figures["peak_rss_mib"] > 0
    assert figures["ratio"] == pytest.approx(figures["total_s"] / figures["floor_s"], rel=0.02)
    assert set(figures["stages"]) == set(S.STAGES)
    for stage in figures["stages"].values():
        assert stage["records_in"] > 0 and stage["seconds"] >= 0
    # the corpus is cached: the next run reuses it instead of generating it again
    marker = tmp_path / "cache" / "corpus-r2000-d2-s1" / "synth.json"
    stamp = marker.stat().st_mtime_ns
    _source, summary = ensure_corpus(SynthSpec(runs=2000, days=2, seed=1), tmp_path / "cache", 1)
    assert marker.stat().st_mtime_ns == stamp
    assert summary["bytes"] == figures["source_bytes"]
