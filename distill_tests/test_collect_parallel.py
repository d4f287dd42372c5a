"""Collect writes the same bytes whether files are scanned in-process, streamed or in workers."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest

from distill_assets.devtools.synth import SynthSpec, synthesize
from distill_assets.lib import constants as C
from distill_assets.lib.evidence import collect as collect_module
from distill_assets.lib.evidence.collect import CollectOptions, collect, list_source_files
from distill_assets.lib.evidence.format import ParseSettings
from distill_assets.lib.infra import layout
from distill_assets.lib.infra.digests import DigestTable


def _run(run_id: str, at: str, text: str = "Fix the bug.") -> bytes:
    row = {
        "kind": "run",
        "run_id": run_id,
        "task_id": "T1",
        "instruction": text,
        "response": "Done  \n fixed.",
        "created_at": at,
    }
    return orjson.dumps(row)


def _review(run_id: str, at: str) -> bytes:
    return orjson.dumps(
        {"kind": "review", "run_id": run_id, "verdict": "approve", "created_at": at}
    )


KEY = "sk-ant-api03-" + "Q7vX2pL9mK4rT8wZ3nB6yH1cF5dJ0sG2aE7uI9oP"
# a key in an answer is redacted; a key in an identifier quarantines the record
SCRUBBED = _run("r-scrubbed", "2024-05-03T08:00:00Z", f"Use {KEY} to call the API.")
HELD = _run(f"r-{KEY}", "2024-05-03T09:00:00Z")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("src")
    shared = _run("r-shared", "2024-05-02T10:00:00Z")
    (root / "a.jsonl").write_bytes(
        b"\n".join(
            [
                b"{torn",  # no day yet: takes the day of the first dated line
                _run("r1", "2024-05-01T09:00:00Z"),
                shared,
                shared,  # duplicate within the file
                b"",
                _review("r1", "2024-05-02T01:00:00+02:00"),
                _run("r2", "2024-05-02T11:30:00.250000Z"),
                SCRUBBED,
                HELD,
            ]
        )
        + b"\n"
    )
    (root / "b.jsonl").write_bytes(
        b"\xef\xbb\xbf"
        + b"\r\n".join(
            [
                _review("r2", "2024-05-02T12:00:00Z"),
                shared,  # duplicate of a record in a.jsonl
                b"[1,2]",
                _run("r3", "2024-05-02T13:00:00Z"),
                shared,
                HELD,  # duplicates of records of a.jsonl: skipped, whatever their secrets
                SCRUBBED,
            ]
        )
    )
    (root / "c.jsonl").write_bytes(b"not json\n{\n")  # never dated: undated bucket
    (root / "d.jsonl").write_bytes(b"")
    return root


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


MODES = {
    "in-process": {"workers": 1},
    "streamed": {"workers": 1, "whole_file_bytes": 40},
    "workers": {"workers": 2, "pool_min_bytes": 0},
    "workers+streamed": {"workers": 2, "pool_min_bytes": 0, "whole_file_bytes": 300},
    "one day's ids in memory": {"workers": 1, "resident_days": 1},
}


def test_duplicates_across_files_are_skipped_in_line_order(tmp_path: Path, sources: Path) -> None:
    out = tmp_path / "out"
    result = collect(
        list_source_files(sources), out, None, ParseSettings(), CollectOptions(workers=1)
    )
    # three copies of r-shared on 2024-05-02, and b.jsonl's copies of HELD and SCRUBBED
    assert result.tally.reasons[C.R_DUPLICATE] == 5
    assert result.tally.records_in == result.tally.records_out + result.tally.skipped + (
        result.tally.quarantined
    )
    rows = [
        orjson.loads(raw)
        for raw in (out / layout.evidence_quarantine(layout.day_from_key("2024-05-02")))
        .read_bytes()
        .splitlines()
    ]
    assert [(r["source_path"], r["line"], r["reasons"]) for r in rows] == [
        ("a.jsonl", 4, [C.R_DUPLICATE]),
        ("a.jsonl", 5, [C.R_EMPTY_LINE]),
        ("b.jsonl", 2, [C.R_DUPLICATE]),
        ("b.jsonl", 3, [C.R_NOT_AN_OBJECT]),
        ("b.jsonl", 5, [C.R_DUPLICATE]),
    ]
    index = [
        orjson.loads(raw)
        for raw in (out / layout.evidence_index(layout.day_from_key("2024-05-02")))
        .read_bytes()
        .splitlines()
    ]
    records = (out / layout.evidence_records(layout.day_from_key("2024-05-02"))).read_bytes()
    for row in index:  # every offset points at its record
        line = records[row["offset"] :].split(b"\n", 1)[0]
        assert orjson.loads(line)["evidence_id"] == row["evidence_id"]
    assert [r["run_id"] for r in index] == ["r-shared", "r2", "r2", "r3"]


@pytest.mark.parametrize("mode", [mode for mode in MODES if MODES[mode] != {"workers": 1}])
def test_every_mode_writes_the_same_bytes(
    tmp_path: Path, sources: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each other mode against plain in-process collect (comparing that mode with itself would
    prove nothing); a mode with workers really scans in a pool of that many processes."""
    reference = tmp_path / "ref"
    collect(list_source_files(sources), reference, None, ParseSettings(), CollectOptions(workers=1))
    pools: list[int] = []
    real_pool = collect_module.process_pool

    def counted_pool(workers: int, *args, **kwargs):
        pools.append(workers)
        return real_pool(workers, *args, **kwargs)

    monkeypatch.setattr(collect_module, "process_pool", counted_pool)
    out = tmp_path / mode
    collect(list_source_files(sources), out, None, ParseSettings(), CollectOptions(**MODES[mode]))
    assert pools == ([MODES[mode]["workers"]] if MODES[mode]["workers"] > 1 else [])
    assert _tree(out) == _tree(reference)


def test_workers_match_on_a_synthetic_corpus(tmp_path: Path) -> None:
    source = tmp_path / "synth"
    synthesize(SynthSpec(runs=1500, days=3, seed=5, shard_bytes=256 * 1024), source)
    files = list_source_files(source)
    one = tmp_path / "one"
    two = tmp_path / "two"
    first = collect(files, one, None, ParseSettings(), CollectOptions(workers=1))
    second = collect(
        files,
        two,
        None,
        ParseSettings(),
        CollectOptions(workers=2, pool_min_bytes=0, resident_days=1),
    )
    assert _tree(one) == _tree(two)
    assert not (two / ".scratch").exists()
    assert first.tally == second.tally
    assert [f.as_dict() for f in first.inputs] == [f.as_dict() for f in second.inputs]


def test_digest_table_confirms_prefix_matches_on_the_full_digest() -> None:
    digests = [hashlib.sha256(str(i).encode()).digest() for i in range(300)]
    table = DigestTable()
    table.add(digests[:200])
    table.add(digests[200:250])
    assert len(table) == 250
    assert table.find(digests[150:300]) == [*range(150, 250), *[-1] * 50]
    same_prefix = digests[7][:8] + bytes(24)
    assert table.find([same_prefix, digests[7]]) == [-1, 7]
    table.add([digests[7]])  # added again: found at its latest position
    assert table.find([digests[7]]) == [250]
    assert DigestTable().find(digests[:2]) == [-1, -1]


def test_a_duplicate_is_found_after_its_day_left_memory(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    record = _run("r-1", "2024-05-01T09:00:00Z")
    (source / "1.jsonl").write_bytes(record + b"\n")
    (source / "2.jsonl").write_bytes(_run("r-2", "2024-05-02T09:00:00Z") + b"\n")
    (source / "3.jsonl").write_bytes(record + b"\n")
    result = collect(list_source_files(source), tmp_path / "out", None, ParseSettings(),
                     CollectOptions(resident_days=1))  # fmt: skip
    assert result.tally.reasons[C.R_DUPLICATE] == 1
    assert result.tally.records_out == 2
    assert not (tmp_path / "out" / C.SCRATCH_DIR).exists()


def test_secrets_are_scrubbed_once_and_duplicates_of_held_records_skipped(
    tmp_path: Path, sources: Path
) -> None:
    out = tmp_path / "out"
    result = collect(
        list_source_files(sources), out, None, ParseSettings(), CollectOptions(workers=1)
    )
    day = layout.day_from_key("2024-05-03")
    rows = [
        orjson.loads(raw)
        for raw in (out / layout.evidence_quarantine(day)).read_bytes().splitlines()
    ]
    assert [(r["source_path"], r["line"], r["reasons"], r["run_id"]) for r in rows] == [
        ("a.jsonl", 9, [C.R_SECRET_DETECTED], None),
        ("b.jsonl", 6, [C.R_DUPLICATE], None),  # the held record's id is never written
        ("b.jsonl", 7, [C.R_DUPLICATE], "r-scrubbed"),
    ]
    records = (out / layout.evidence_records(day)).read_bytes()
    assert (
        KEY.encode() not in records
        and KEY.encode() not in (out / layout.evidence_index(day)).read_bytes()
    )
    kept = [orjson.loads(raw) for raw in records.splitlines()]
    assert [r["run_id"] for r in kept] == ["r-scrubbed"]
    assert [f["field"] for f in kept[0]["secrets"]] == ["instruction"]
    # each record counted once (a duplicate is not scanned again)
    assert sum(result.extra["secrets"].values()) == 2
    assert result.tally.reasons[C.R_SECRET_DETECTED] == 1


# sha256 of {relative path: sha256} of everything collect wrote for the corpus below, as the
# implementation before the quick path (parsing, validation and rows from byte templates) wrote
# it; every way of running collect must keep writing exactly these bytes
GOLDEN_TREE = "e5a1e0957a1ec61fdfc8eb91d6d91bbfa083ffe52aa974993932c8c05d607686"


@pytest.fixture(scope="module")
def small_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("golden") / "evidence"
    synthesize(SynthSpec(runs=600, days=2, seed=11, shard_bytes=128 * 1024), source)
    return source


@pytest.mark.parametrize("mode", list(MODES))
def test_outputs_are_the_reference_bytes(tmp_path: Path, small_synth: Path, mode: str) -> None:
    out = tmp_path / "out"
    now = datetime(2026, 12, 1, tzinfo=UTC)
    kwargs = {**MODES[mode], "whole_file_bytes": 100_000} if "streamed" in mode else MODES[mode]
    result = collect(
        list_source_files(small_synth), out, None, ParseSettings(now=now), CollectOptions(**kwargs)
    )
    tree = hashlib.sha256(orjson.dumps(_tree(out), option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert tree == GOLDEN_TREE
    t = result.tally
    assert (t.records_in, t.records_out, t.quarantined, t.skipped) == (1490, 1469, 11, 10)


@pytest.mark.parametrize("prefilter", ["absent", "flags nothing"])
def test_the_prefilter_only_saves_work(
    tmp_path: Path, sources: Path, monkeypatch: pytest.MonkeyPatch, prefilter: str
) -> None:
    """Without the native prefilter every record is scrubbed; with it only the lines it flags
    are, which must give the same bytes (here: it flags the lines holding the key). Telling
    collect that no line holds a secret keeps clean records as they are."""
    reference = tmp_path / "ref"
    collect(list_source_files(sources), reference, None, ParseSettings(), CollectOptions(workers=1))
    flag = None if prefilter == "absent" else (lambda data: np.empty(0, dtype=np.int64))
    monkeypatch.setattr(collect_module, "_flag_lines", flag)
    out = tmp_path / "out"
    collect(list_source_files(sources), out, None, ParseSettings(), CollectOptions(workers=1))
    if prefilter == "absent":
        assert _tree(out) == _tree(reference)
    else:
        day = layout.day_from_key("2024-05-02")  # no secret on this day
        for path in (layout.evidence_records(day), layout.evidence_index(day)):
            assert (out / path).read_bytes() == (reference / path).read_bytes()
