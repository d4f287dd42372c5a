"""The scored runs as the exports read them: task by task, best first, keys without texts.

``TaskStream`` merges every scored-runs partition on disk (each day's ``runs_by_task.jsonl``,
already sorted by task by the score stage, or a day's scored file sorted and spilled to a
scratch folder first) into one stream of tasks, holding one entry per day in memory, and cuts
it into task ranges for worker processes. What it gives of a run is its ``RunKey``: keys,
grades and text hashes, never the texts, which an export fetches by byte offset only when it
writes the run's row (lib/datasets/texts.py). ``repeated_run_ids`` names the runs scored more
than once across days, which every export leaves out.
"""

from __future__ import annotations

import heapq
import shutil
import tempfile
from collections.abc import Iterator
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.infra import layout
from distill_assets.lib.infra.io import WrittenFile, count_lines
from distill_assets.lib.scoring import task_entry


class RunKey(NamedTuple):
    """What the exports keep in memory of a scored run: no texts."""

    run_id: str
    task_id: str
    quality: str
    score: float
    created_at: str
    category: str | None
    run_file: str
    run_offset: int
    evidence_id: str
    response_hash: str
    response_empty: bool
    sft_eligible: bool
    # a run to review: [agent, reasons, its evidence ids, their places or None] (task_entry)
    review: list[Any] | None = None

    @property
    def rank(self) -> int:
        return C.QUALITY_RANK.get(self.quality, -1)

    def order(self) -> tuple[Any, ...]:
        """Best first: quality, then score, then age, then id (deterministic)."""
        return (-self.rank, -self.score, self.created_at, self.run_id)


def scored_files(out_root: Path) -> list[str]:
    return [
        layout.scored_runs(day)
        for day in layout.days_on_disk(out_root, C.SCORED_DIR, C.SCORED_FILE)
    ]


_SPILL_BLOCK = 2048  # entries per spilled line


_new = tuple.__new__


def _run_key(entry: list[Any]) -> RunKey:
    (task_id, _rank, neg_score, created_at, run_id, run_file, run_offset, quality, category,
     evidence_id, response_hash, response_empty, sft_eligible) = entry[:13]  # fmt: skip
    return _new(
        RunKey,
        (
            run_id,
            task_id,
            quality,
            -neg_score,
            created_at,
            category,
            run_file,
            run_offset,
            evidence_id,
            response_hash,
            response_empty,
            sft_eligible,
            entry[13] if len(entry) > 13 else None,
        ),
    )


def _read_spill(path: Path) -> Iterator[list[Any]]:
    loads = orjson.loads
    with open(path, "rb") as fh:
        for line in fh:
            yield from loads(line)


def _read_entries(path: Path, start: int = 0, stop: str | None = None) -> Iterator[list[Any]]:
    """The entries of a by-task file from byte ``start``, up to the first of task ``stop``."""
    loads = orjson.loads
    with open(path, "rb") as fh:
        fh.seek(start)
        for line in fh:
            entry = loads(line)
            if stop is not None and entry[0] >= stop:
                return
            yield entry


def _line_start(fh: Any, position: int) -> int:
    """The first line start at or after ``position``."""
    if position == 0:
        return 0
    fh.seek(position - 1)
    fh.readline()
    return int(fh.tell())


def _task_at(fh: Any, start: int) -> str:
    fh.seek(start)
    return str(orjson.loads(fh.readline())[0])


def _first_of(fh: Any, size: int, task: str) -> int:
    """Byte offset of the first entry of a by-task file whose task is ``task`` or later
    (``size`` when there is none): a bisection over line starts, entries being sorted."""
    low, high = 0, size
    while low < high:
        middle = (low + high) // 2
        start = _line_start(fh, middle)
        if start >= size or _task_at(fh, start) >= task:
            high = middle
        else:
            low = middle + 1
    return _line_start(fh, low)


class TaskStream:
    """Every scored run on disk, grouped by task in task order, each group best first.

    Each scored day comes with its runs already sorted by task (``runs_by_task.jsonl``,
    written by the score stage); the days are merged, so memory holds one entry per day, never
    the whole corpus, and the order is the one an in-memory sort would give. A day without that
    file (written by an older version) is sorted and spilled to a scratch folder first.
    """

    def __init__(self, out_root: Path, low: str | None = None, high: str | None = None) -> None:
        self.out_root = out_root
        # the tasks this stream gives: low <= task_id < high (None: no bound)
        self.low = low
        self.high = high
        self.inputs: list[WrittenFile] = []
        self._scratch: Path | None = None
        self._opened: list[Iterator[list[Any]]] | None = None
        self._by_task: list[Path] = []

    def __enter__(self) -> TaskStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            try:
                self._scratch.parent.rmdir()  # unless another stage is using it
            except OSError:
                pass
            self._scratch = None

    def _spill(self, relpath: str, scratch: Path) -> Path | None:
        loads = orjson.loads
        with open(self.out_root / relpath, "rb") as fh:
            entries = [task_entry(loads(raw)) for raw in fh if raw.strip()]
        self.inputs.append(WrittenFile(relpath, "", 0, len(entries)))
        if not entries:
            return None
        entries.sort()
        path = scratch / f"{len(self.inputs):06d}.spill"
        with open(path, "wb") as out:
            for start in range(0, len(entries), _SPILL_BLOCK):
                out.write(orjson.dumps(entries[start : start + _SPILL_BLOCK]) + b"\n")
        return path

    def _sources(self) -> list[Iterator[list[Any]]]:
        sources = []
        for day in layout.days_on_disk(self.out_root, C.SCORED_DIR, C.SCORED_FILE):
            relpath = layout.scored_by_task(day)
            path = self.out_root / relpath
            if path.exists():
                count = count_lines(path)
                self.inputs.append(WrittenFile(relpath, "", 0, count))
                self._by_task.append(path)
                start = 0
                if self.low is not None:
                    with open(path, "rb") as fh:
                        start = _first_of(fh, path.stat().st_size, self.low)
                sources.append(_read_entries(path, start, self.high))
                continue
            if self.low is not None or self.high is not None:
                raise ValueError(f"{relpath} is missing: a task range needs every by-task file")
            if self._scratch is None:
                scratch_root = self.out_root / C.SCRATCH_DIR
                scratch_root.mkdir(parents=True, exist_ok=True)
                self._scratch = Path(tempfile.mkdtemp(prefix="tasks-", dir=scratch_root))
            spill = self._spill(layout.scored_runs(day), self._scratch)
            if spill is not None:
                sources.append(_read_spill(spill))
        return sources

    def _opened_sources(self) -> list[Iterator[list[Any]]]:
        """The day sources, found (and counted into ``inputs``) once."""
        if self._opened is None:
            self._opened = self._sources()
        return self._opened

    def run_count(self) -> int:
        """How many scored runs the streams of all ranges give (for progress reports)."""
        self._opened_sources()
        return sum(f.record_count for f in self.inputs)

    def split(self, parts: int) -> list[tuple[str | None, str | None]]:
        """Task ranges ``[low, high)`` that cut the stream into about ``parts`` pieces of equal
        bytes, at task boundaries; one range (everything) when the days cannot be cut (a day
        without its by-task file) or there is too little to cut."""
        self._opened_sources()
        if parts <= 1 or len(self._by_task) != len(self.inputs) or not self._by_task:
            return [(None, None)]
        sizes = {path: path.stat().st_size for path in self._by_task}
        total = sum(sizes.values())
        handles = {path: open(path, "rb") for path in self._by_task}  # noqa: SIM115
        try:
            candidates: set[str] = set()
            for path, fh in handles.items():
                for eighth in range(1, 8):
                    start = _line_start(fh, sizes[path] * eighth // 8)
                    if start < sizes[path]:
                        candidates.add(_task_at(fh, start))
            ordered = sorted(candidates)

            def below(task: str) -> int:
                return sum(_first_of(fh, sizes[path], task) for path, fh in handles.items())

            cuts: list[str] = []
            for part in range(1, parts):
                goal = total * part // parts
                low, high = 0, len(ordered)
                while low < high:  # the first candidate with at least ``goal`` bytes below
                    middle = (low + high) // 2
                    if below(ordered[middle]) >= goal:
                        high = middle
                    else:
                        low = middle + 1
                if low < len(ordered) and (not cuts or ordered[low] > cuts[-1]):
                    cuts.append(ordered[low])
        finally:
            for fh in handles.values():
                fh.close()
        bounds: list[str | None] = [None, *cuts, None]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    def tasks(self) -> Iterator[tuple[str, list[RunKey]]]:
        """(task_id, runs best first) for every task, in task order."""
        merged = heapq.merge(*self._opened_sources())
        for task_id, entries in groupby(merged, key=itemgetter(0)):
            yield task_id, [_run_key(entry) for entry in entries]

    def repeated_run_ids(self) -> frozenset[str]:
        """Run ids scored more than once across all days on disk (conflicting duplicates the
        score stage could not see: further apart than its evidence window)."""
        return repeated_run_ids(self.out_root)


_REPEATED: dict[Path, tuple[tuple[tuple[str, int, int], ...], frozenset[str]]] = {}


def repeated_run_ids(out_root: Path) -> frozenset[str]:
    """Run ids that appear in more than one scored row on disk, compared exactly by polars;
    each day's ids from the score stage's Arrow list when it describes the day's scored file
    (the ledger's sha256), else parsed from the day's file; reused while the files stay
    the same."""
    import polars as pl

    from distill_assets.lib.publishing.trace import scored_list
    from distill_assets.lib.records.receipts import read_ledger

    # a day's by-task file holds the same runs as its scored file: read one of the two
    chosen: list[tuple[Any, str]] = []
    for day in layout.days_on_disk(out_root, C.SCORED_DIR, C.SCORED_FILE):
        for relpath in (layout.scored_by_task(day), layout.scored_runs(day)):
            if (out_root / relpath).exists():
                chosen.append((day, relpath))
                break
    fingerprint = tuple(
        (relpath, stat.st_size, stat.st_mtime_ns)
        for _, relpath in chosen
        for stat in [(out_root / relpath).stat()]
    )
    cached = _REPEATED.get(out_root)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    ledger = read_ledger(out_root)
    pieces = []
    for day, relpath in chosen:
        listed = scored_list(out_root, day, ledger, same_file=True)
        if listed is None:
            pieces.append(pl.Series(list(_file_run_ids(out_root / relpath)), dtype=pl.String))
        else:  # only the run id column is copied (into polars) from the mapped list
            pieces.append(pl.Series(listed.column("run_id"), dtype=pl.String).rechunk())
    ids = pl.concat(pieces) if pieces else pl.Series([], dtype=pl.String)
    repeated = frozenset(ids.filter(ids.is_duplicated()).unique().to_list())
    _REPEATED.clear()
    _REPEATED[out_root] = (fingerprint, repeated)
    return repeated


def _file_run_ids(path: Path) -> Iterator[str]:
    """The run ids of a scored file or by-task file, line by line."""
    by_task = path.name == C.BY_TASK_FILE
    loads = orjson.loads
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                row = loads(raw)
                yield row[4] if by_task else row["run_id"]
