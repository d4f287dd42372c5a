"""The synthetic corpus: seeded bytes, realistic shape, and every kind of bad line."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest

from distill_assets.cli import main as cli_main
from distill_assets.devtools.synth import MAX_DAYS, SynthSpec, synthesize
from distill_assets.lib import constants as C
from distill_assets.lib.evidence.collect import collect, list_source_files
from distill_assets.lib.evidence.format import ParseSettings


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "evidence"
    summary = synthesize(SynthSpec(runs=3000, days=3, seed=11), out)
    return out, summary.as_dict()


def test_same_seed_same_bytes_also_in_parallel(tmp_path: Path, corpus) -> None:
    again = tmp_path / "again"
    synthesize(SynthSpec(runs=3000, days=3, seed=11), again, workers=2)
    assert tree_digest(again) == tree_digest(corpus[0])


def test_other_seed_other_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    synthesize(SynthSpec(runs=200, days=2, seed=1), a)
    synthesize(SynthSpec(runs=200, days=2, seed=2), b)
    assert tree_digest(a) != tree_digest(b)


def test_cli_writes_the_same_corpus(tmp_path: Path, corpus, capsys) -> None:
    out = tmp_path / "cli"
    code = cli_main(["synth", "--runs", "3000", "--days", "3", "--seed", "11", "--out", str(out)])
    assert code == 0
    printed = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == corpus[1]
    assert tree_digest(out) == tree_digest(corpus[0])


def test_cli_refuses_bad_arguments(tmp_path: Path, capsys) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert cli_main(["synth", "--runs", "10", "--days", "2", "--out", str(tmp_path / "full")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert cli_main(["synth", "--runs", "0", "--days", "1", "--out", str(tmp_path / "n")]) == 2
    assert "runs=0" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**40])
def test_dates_follow_the_seed_within_the_partition_range(seed: int) -> None:
    for days in (1, 30, MAX_DAYS):
        spec = SynthSpec(runs=days, days=days, seed=seed)
        start = spec.start_date()
        last = date.fromordinal(start.toordinal() + days - 1)
        assert start >= date.fromisoformat(C.PARTITION_START)
        assert last < datetime.now(UTC).date()
        assert spec.start_date() == start


def test_layout_is_rotated_logs(corpus) -> None:
    root, summary = corpus
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jsonl"))
    first = summary["first_day"]
    assert f"runs/{first}.000.jsonl" in names
    assert f"reviews/{first}.000.jsonl" in names
    assert f"outcomes/{first}.000.jsonl" in names
    assert f"runs/{first}.rotated.jsonl" in names  # an empty rotated file
    assert "incoming/partial-upload.jsonl" in names
    assert {n.split("/")[0] for n in names} == {"runs", "reviews", "outcomes", "incoming"}


def test_shards_stay_under_the_limit(tmp_path: Path) -> None:
    out = tmp_path / "sharded"
    synthesize(SynthSpec(runs=400, days=1, seed=3, shard_bytes=64 * 1024), out)
    runs = sorted((out / "runs").glob("*.0*.jsonl"))
    assert len(runs) > 3
    for path in runs:
        # a line longer than the limit sits in a shard of its own; every other shard fits
        data = path.read_bytes()
        assert len(data) <= 64 * 1024 or data.count(b"\n") == 1


def test_runs_are_realistic(corpus) -> None:
    root, summary = corpus
    runs = []
    for path in sorted((root / "runs").glob("*.jsonl")):
        for raw in path.read_bytes().splitlines():
            try:
                obj = orjson.loads(raw.removeprefix(b"\xef\xbb\xbf"))
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict) and obj.get("kind") == "run" and obj.get("task_id"):
                runs.append(obj)
    assert len(runs) >= 3000
    sizes = [len(r["instruction"]) for r in runs if r["task_id"].startswith("task-2")]
    assert min(sizes) >= 150 and max(sizes) <= 4000
    assert sum(sizes) / len(sizes) > 700
    per_task: dict[str, int] = {}
    for r in runs:
        per_task[r["task_id"]] = per_task.get(r["task_id"], 0) + 1
    counts = set(per_task.values())
    assert {1, 2, 3, 4} <= counts
    assert len({r["category"] for r in runs if r.get("category")}) >= 6
    assert len({r["agent"] for r in runs if r.get("agent")}) >= 6
    with_messages = [r for r in runs if r.get("messages")]
    assert 0.05 < len(with_messages) / len(runs) < 0.3
    assert any(m.get("tool_calls") for r in with_messages for m in r["messages"])


def _reason_counts(out: Path, source: Path) -> dict[str, int]:
    result = collect(list_source_files(source), out, None, ParseSettings())
    return dict(result.tally.reasons)


def test_every_kind_of_bad_line_is_recognized(tmp_path: Path, corpus) -> None:
    root, summary = corpus
    reasons = _reason_counts(tmp_path / "out", root)
    codes = {code.split(":")[0] for code in reasons}
    expected = {
        C.R_EMPTY_LINE,
        C.R_EMPTY_FILE,
        C.R_INVALID_UTF8,
        C.R_INVALID_JSON,
        C.R_NOT_AN_OBJECT,
        C.R_LINE_TOO_LONG,
        C.R_JSON_TOO_DEEP,
        C.R_DUPLICATE,
        C.R_UNKNOWN_KIND,
        C.R_MISSING_FIELD,
        C.R_INVALID_VALUE,
        C.R_INVALID_TYPE,
        C.R_EMPTY_FIELD,
        C.R_BAD_TIMESTAMP,
        C.R_FUTURE_TIMESTAMP,
        C.R_TIMESTAMP_OUT_OF_RANGE,
        C.R_MESSAGES_TOO_DEEP,
        C.R_MESSAGES_TOO_LARGE,
    }
    assert expected <= codes, expected - codes
    left_out = sum(reasons.values())
    lines = sum(summary["lines"].values())
    assert left_out / lines < 0.02  # a small share
