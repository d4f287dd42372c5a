"""Run ids scored more than once across days (lib/datasets/runs.repeated_run_ids): read from the
score stage's Arrow lists where they describe the scored files, else from the files, with the
same answer as counting every scored line."""

from __future__ import annotations

import shutil
from collections import Counter

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.datasets import runs as E
from distill_assets.lib.infra import layout


def _counted(out) -> frozenset[str]:
    ids: Counter[str] = Counter()
    for day in layout.days_on_disk(out, C.SCORED_DIR, C.SCORED_FILE):
        for raw in (out / layout.scored_runs(day)).read_bytes().splitlines():
            if raw.strip():
                ids[orjson.loads(raw)["run_id"]] += 1
    return frozenset(run_id for run_id, n in ids.items() if n > 1)


def test_repeated_run_ids_from_the_lists_or_the_files_alike(fixture_run, tmp_path):
    _, out, _ = fixture_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    days = layout.days_on_disk(copy, C.SCORED_DIR, C.SCORED_FILE)
    assert len(days) >= 2
    E._REPEATED.clear()
    assert E.repeated_run_ids(copy) == _counted(copy)
    # one day's run scored again on another day: the files change, so their lists no longer
    # describe them and that day is read from its files
    first, last = days[0], days[-1]
    line = (copy / layout.scored_runs(first)).read_bytes().splitlines()[0]
    run_id = orjson.loads(line)["run_id"]
    for relpath, raw in (
        (layout.scored_runs(last), line),
        (layout.scored_by_task(last), _by_task_line(copy, first, run_id)),
    ):
        if (copy / relpath).exists():
            with open(copy / relpath, "ab") as fh:
                fh.write(raw + b"\n")
    E._REPEATED.clear()
    found = E.repeated_run_ids(copy)
    assert run_id in found
    assert found == _counted(copy)
    # without any list: the same answer from the files
    for day in days:
        (copy / layout.scored_trace(day)).unlink(missing_ok=True)
    E._REPEATED.clear()
    assert E.repeated_run_ids(copy) == found


def _by_task_line(out, day, run_id: str) -> bytes:
    for raw in (out / layout.scored_by_task(day)).read_bytes().splitlines():
        if raw.strip() and orjson.loads(raw)[4] == run_id:
            return raw
    raise AssertionError(f"{run_id} not in the by-task file of {day}")
