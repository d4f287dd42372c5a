"""The one object an export talks to about hygiene (docs/safety.md).

``Curation.screen`` scrubs a row the export is about to write and says whether it must be
quarantined (``secret_detected``, ``contaminated_eval``); ``Curation.keep`` writes a row that
passed straight to its side's file (train or holdout, by task), with the runs it accounts for
and its MinHash band hashes; ``Curation.finish`` finds the near-duplicates (``near_duplicate``,
naming the kept row) and puts the files in place without them, copying the kept byte ranges.
Only band hashes (spilled to a scratch file) and a few bytes of offsets per row stay in memory;
the runs a row accounts for wait in a file beside it.

Length: the one object an export talks to about hygiene, with its per-worker parts (spools,
absorption, the near-duplicate finish), which share private state.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.hygiene.decontam import EvalSet
from distill_assets.lib.hygiene.holdout import in_holdout
from distill_assets.lib.hygiene.neardup import BandCache, NearDupIndex
from distill_assets.lib.hygiene.prefilter import flag_objects, flag_texts
from distill_assets.lib.hygiene.secrets import Finding, scrub
from distill_assets.lib.infra.io import (
    AtomicJsonlWriter,
    WrittenFile,
    commit_file,
    copy_ranges,
)
from distill_assets.lib.publishing.trace import row_runs
from distill_assets.lib.records.accounting import Tally

FINDINGS_PER_ROW = 20


@dataclass(frozen=True)
class HygieneSettings:
    """The configurable parts of the hygiene rules (defaults in docs/safety.md)."""

    secret_action: str = C.SECRET_ACTION_QUARANTINE
    holdout_fraction: float = 0.1
    near_dup_threshold: float | None = 0.8
    eval_set_path: str | None = None
    decontam_ngram: int = 13
    decontam_min_overlap: float = 0.0

    def errors(self) -> list[str]:
        problems = []
        if self.secret_action not in C.SECRET_ACTIONS:
            problems.append(
                f"secret_action={self.secret_action!r} is not one of {', '.join(C.SECRET_ACTIONS)}"
            )
        if not 0.0 <= self.holdout_fraction < 1.0:
            problems.append(f"holdout_fraction={self.holdout_fraction!r} must be in [0, 1)")
        if self.near_dup_threshold is not None and not 0.0 < self.near_dup_threshold <= 1.0:
            problems.append(f"near_dup_threshold={self.near_dup_threshold!r} must be in (0, 1]")
        if self.decontam_ngram < 1:
            problems.append(f"decontam_ngram={self.decontam_ngram!r} must be at least 1")
        if not 0.0 <= self.decontam_min_overlap < 1.0:
            problems.append(f"decontam_min_overlap={self.decontam_min_overlap!r} must be in [0, 1)")
        return problems


@dataclass
class Screened:
    """A row after screening: the row to write (scrubbed when secrets are redacted), the reasons
    it must be quarantined instead (none: write it) and what the quarantine row should say."""

    row: dict[str, Any]
    reasons: list[str]
    details: dict[str, Any] = field(default_factory=dict)


def finding_rows(findings: list[Finding]) -> list[dict[str, str]]:
    return [f.as_dict() for f in findings[:FINDINGS_PER_ROW]]


def _flagged(texts: Sequence[str]) -> bool:
    """Whether the native prefilter says any of ``texts`` may hold a secret."""
    if not texts:
        return False
    return bool(flag_texts(list(texts)).any())


def _row_flagged(row: dict[str, Any]) -> bool:
    """Whether the native prefilter says the row (keys included) may hold a secret."""
    return bool(flag_objects([row])[0])


class _Rows:
    """The rows one process wrote to one side (train or holdout) of an export: a temporary file
    beside the dataset, hashed as it is written."""

    def __init__(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        # a dot-name ending in .tmp: a killed run's file is swept like any temporary file
        fd, path = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".rows.tmp", dir=target.parent
        )
        self.path = Path(path)
        self.handle = os.fdopen(fd, "wb", buffering=1 << 20)
        self.hash = hashlib.sha256()
        self.position = 0

    def write(self, line: bytes) -> int:
        """Append one line; returns where it starts."""
        start = self.position
        self.handle.write(line)
        self.hash.update(line)
        self.position += len(line)
        return start

    def close(self) -> None:
        if not self.handle.closed:
            self.handle.close()


def _task_lines(parts: list[dict[str, Any]]) -> Iterator[tuple[int, list[list[Any]]]]:
    """(first row number, rows' stored units) of every task, part after part."""
    done = 0
    for part in parts:
        with open(part["units"], "rb") as fh:
            for line in fh:
                first, rows = orjson.loads(line)
                yield done + first, rows
        done += part["rows"]


def _locate(parts: list[dict[str, Any]], number: int) -> tuple[dict[str, Any], int]:
    """The part holding row ``number`` and the row's index within it."""
    for part in parts:
        if number < len(part["side"]):
            return part, number
        number -= len(part["side"])
    raise IndexError(number)


def _row_id(parts: list[dict[str, Any]], number: int) -> str:
    """The ``id`` of a written row: as ``keep`` listed it for the trace lookup, or read back
    from its side's file (a row listed without one)."""
    part, index = _locate(parts, number)
    listed = part["ids"].get(index)
    if listed:
        return listed
    with open(part["files"][part["side"][index]], "rb") as fh:
        fh.seek(part["start"][index])
        return str(orjson.loads(fh.read(part["length"][index]))["id"])


def _column(values: array, dtype: Any) -> np.ndarray:
    return np.frombuffer(values, dtype=dtype) if len(values) else np.zeros(0, dtype=dtype)


def _assemble(
    root: Path, relpath: str, parts: list[dict[str, Any]], side: int, keep: np.ndarray
) -> WrittenFile:
    """Put one side's file in place: the rows the parts wrote to it, in order, but the ones
    ``keep`` says not to. One part with nothing dropped is renamed as is (its hash was taken
    while writing); otherwise the kept byte ranges are copied by the kernel
    (``os.copy_file_range``) and the result hashed once."""
    rows = 0
    ranges: list[tuple[str, int, int]] = []  # (file, start, end) to copy, in order
    dropped_here = False
    done = 0
    for part in parts:
        sides = _column(part["side"], np.int8)
        mine = sides == side
        kept = keep[done : done + len(sides)][mine]
        rows += int(kept.sum())
        dropped_here = dropped_here or not kept.all()
        starts = _column(part["start"], np.int64)[mine]
        ends = starts + _column(part["length"], np.int64)[mine]
        ranges += _runs(part["files"][side], starts, ends, kept)
        done += len(sides)
    filled = [p for p in parts if p["sizes"][side]]
    if len(filled) <= 1 and not dropped_here:
        part = filled[0] if filled else parts[-1]
        written = WrittenFile(relpath, part["hashes"][side], part["sizes"][side], rows)
        return commit_file(Path(part["files"][side]), root / relpath, written)
    return copy_ranges(root, relpath, ranges, rows)


def _runs(
    path: str, starts: np.ndarray, ends: np.ndarray, keeps: np.ndarray
) -> list[tuple[str, int, int]]:
    """Byte ranges of consecutive kept rows of one file (its rows lie end to end)."""
    if not len(starts):
        return []
    if keeps.all():
        return [(path, int(starts[0]), int(ends[-1]))]
    ranges = []
    edges = np.flatnonzero(np.diff(keeps.astype(np.int8))) + 1
    bounds = [0, *edges.tolist(), len(keeps)]
    for low, high in zip(bounds[:-1], bounds[1:], strict=True):
        if keeps[low]:
            ranges.append((path, int(starts[low]), int(ends[high - 1])))
    return ranges


class _Strings:
    """Strings appended one by one, kept as UTF-8 bytes back to back and their end offsets."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ends = array("q")

    def append(self, text: str) -> None:
        self.data += text.encode("utf-8")
        self.ends.append(len(self.data))

    def get(self, index: int) -> str:
        """The ``index``-th string."""
        start = self.ends[index - 1] if index else 0
        return self.data[start : self.ends[index]].decode("utf-8")

    @staticmethod
    def series(pieces: list[_Strings]) -> Any:
        """One polars String series of every piece's strings, in order (built in Arrow, no
        Python string per row)."""
        import polars as pl
        import pyarrow as pa

        shifts = np.cumsum([0] + [len(piece.data) for piece in pieces[:-1]])
        offsets = np.concatenate(
            [np.zeros(1, dtype=np.int64)]
            + [
                _column(piece.ends, np.int64) + shift
                for piece, shift in zip(pieces, shifts, strict=True)
            ]
        )
        data = b"".join(bytes(piece.data) for piece in pieces)
        array_ = pa.LargeStringArray.from_buffers(
            len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data)
        )
        return pl.Series(pl.from_arrow(array_)).cast(pl.String)


def write_row_places(root: Path, stage: str, parts: list[dict[str, Any]], keep: np.ndarray) -> None:
    """Each written row's id, side, byte offset, length, runs and CRC-32, in file order, as an
    Arrow file beside the datasets (``C.trace_rows_path``): what the publish stage's trace
    lookup is built from without reading the datasets' texts again."""
    import polars as pl

    sides = np.concatenate([_column(p["side"], np.int8) for p in parts])
    lengths = np.concatenate([_column(p["length"], np.int64) for p in parts])
    crcs = np.concatenate([_column(p["crc"], np.uint32) for p in parts])
    ids = _Strings.series([p["ids"] for p in parts])
    runs = _Strings.series([p["runs"] for p in parts])
    offsets = np.zeros(len(sides), dtype=np.int64)
    for side in (0, 1):
        mine = (sides == side) & keep
        widths = lengths[mine]
        offsets[mine] = np.cumsum(widths) - widths
    frame = pl.DataFrame(
        {
            "id": ids.replace("", None),  # a row without an id (none is written so today)
            "side": sides,
            "offset": offsets,
            "length": lengths,
            "runs": runs,
            "crc": crcs.astype(np.int64),
        }
    ).filter(pl.Series(keep))
    target = root / C.trace_rows_path(stage)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        frame.write_ipc(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_CLUSTERING = threading.Lock()


class _Dropping(NamedTuple):
    """Where the near-duplicates an export drops are accounted: its tally, its quarantine, the
    builder of a quarantine row (``quarantine_row(stage, reasons, key=... or pair=...)``) and
    the maker of a unit from its stored fields."""

    tally: Tally
    quarantine: AtomicJsonlWriter
    quarantine_row: Callable[..., dict[str, Any]]
    make: Callable[..., Any]


class Curation:
    """Hygiene for one export: screening, spooling, near-duplicates and the holdout split.

    It writes the stage's train and holdout files (``lib/stages``' paths) under
    ``write_root``."""

    def __init__(
        self,
        stage: str,
        settings: HygieneSettings,
        eval_set: EvalSet | None,
        write_root: Path,
        band_cache: BandCache | None = None,
    ) -> None:
        self.stage = stage
        self.settings = settings
        self.eval_set = eval_set
        self.write_root = write_root
        self.train_path = train_path = S.TRAIN_PATHS[stage]
        self.holdout_path = holdout_path = S.HOLDOUT_PATHS[stage]
        self.secrets: Counter[str] = Counter()
        self.contamination: Counter[str] = Counter()
        target = write_root / train_path
        target.parent.mkdir(parents=True, exist_ok=True)
        # band hashes of full blocks wait in a scratch file beside the spool (memory stays flat)
        self.index = (
            NearDupIndex(settings.near_dup_threshold, scratch_dir=target.parent, cache=band_cache)
            if settings.near_dup_threshold
            else None
        )
        # each kept row goes straight to its side's file; near-duplicates found at the end are
        # cut out by copying the ranges around them (never a Python loop over the kept rows)
        self._train = _Rows(target)
        self._holdout = _Rows(write_root / holdout_path)
        self._side = array("b")  # per row: 0 train, 1 holdout
        self._start = array("q")  # per row: where its line starts in its side's file
        self._length = array("q")
        # per row, for `distill trace`: its id and runs as UTF-8 bytes back to back with their end
        # offsets (a Python string per row would hold about 8 times the memory at 1M runs)
        self._ids = _Strings()
        self._runs = _Strings()
        self._crc = array("I")
        # one line per task: [first row, [[pair?, unit, unit, ...] per row]], the runs (or
        # playbooks) each row accounts for; read back only for tasks with a dropped row
        fd, units = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".units.tmp", dir=target.parent
        )
        self._units_path = Path(units)
        self._units = os.fdopen(fd, "wb", buffering=1 << 20)
        self._task: tuple[str, int, list[Any]] | None = None  # the task whose rows are coming
        self.count = 0
        # what worker processes made over earlier tasks (``absorb``), read before this one's
        self._parts: list[dict[str, Any]] = []
        self.dropped = 0
        self.pairs_dropped = 0
        self.train_rows = 0
        self.holdout_rows = 0

    # --- per row ---------------------------------------------------------------------------

    def screen(
        self,
        row: dict[str, Any],
        task_id: str,
        prompts: list[str],
        trusted: bool = False,
        composed: Sequence[str] = (),
    ) -> Screened:
        """Scrub ``row`` and test its prompts against the evaluation set.

        ``trusted``: every string of the row is a string of evidence records that collect
        scanned clean under the same rules (lib/datasets/texts.TextStore), or made here from
        fixed words
        and ids, except the ``composed`` ones (joined or encoded from such strings), which the
        native prefilter reads. An untrusted row is read whole by the prefilter. Only what the
        prefilter flags is scanned by the exact rules."""
        if (trusted and not _flagged(composed)) or not _row_flagged(row):
            scrubbed, findings = row, []
        else:
            scrubbed, findings = scrub(row)
        reasons: list[str] = []
        details: dict[str, Any] = {}
        if findings:
            self.secrets.update(f.type for f in findings)
            details["findings"] = finding_rows(findings)
            if self.settings.secret_action == C.SECRET_ACTION_QUARANTINE:
                reasons.append(C.R_SECRET_DETECTED)
        if self.eval_set is not None:
            why = self.eval_set.reason(task_id, prompts)
            if why is not None:
                self.contamination[why] += 1
                reasons.append(C.R_CONTAMINATED_EVAL)
                details["contamination"] = why
        return Screened(scrubbed, reasons, details)

    def keep(self, row: dict[str, Any], units: tuple[Any, ...], text: str, pair: bool) -> None:
        """Write a row that passed screening to its side (train or holdout, by its task).
        ``units`` are the run keys it accounts for (the export has counted them as out);
        ``text`` is what near-duplicates are judged on."""
        line = orjson.dumps(row) + b"\n"
        task_id = units[0].task_id
        holdout = in_holdout(task_id, self.settings.holdout_fraction)
        side = self._holdout if holdout else self._train
        self._start.append(side.write(line))
        self._length.append(len(line))
        self._side.append(1 if holdout else 0)
        # what `distill trace` looks a row up by (lib/publishing/trace.py): its id, runs and digest
        self._ids.append(row.get("id") or "")
        self._runs.append(row_runs(row))
        self._crc.append(zlib.crc32(line))
        if self._task is None or self._task[0] != task_id:
            self._flush_task()
            self._task = (task_id, self.count, [])
        self._task[2].append([pair, *map(list, units)])
        self.count += 1
        if self.index is not None:
            self.index.add(text)

    def _flush_task(self) -> None:
        if self._task is not None:
            _, first, rows = self._task
            self._units.write(orjson.dumps([first, rows]) + b"\n")
            self._task = None

    # --- at the end -----------------------------------------------------------------------

    def finish(
        self,
        tally: Tally,
        quarantine: AtomicJsonlWriter,
        quarantine_row: Callable[..., dict[str, Any]],
        unit_type: Callable[..., Any] | None = None,
    ) -> list[WrittenFile]:
        """Write the train and holdout files; quarantine near-duplicates, adjusting ``tally``.
        ``unit_type`` rebuilds a unit from its stored fields (a NamedTuple's ``_make``)."""
        parts = [*self._parts, self._own_part()]
        try:
            dropping = _Dropping(tally, quarantine, quarantine_row, unit_type or tuple)
            reps = None
            if self.index is not None:
                # one export's clusters at a time: the exports of a pass finish in two threads
                # (lib/datasets/export_pass.py), and the band hashes read back are the finish's
                # largest
                # memory (their copying and hashing still overlap)
                with _CLUSTERING:
                    reps = self.index.representatives()
            dropped = np.zeros(0, dtype=np.int64)
            if reps is not None:
                dropped = np.flatnonzero(reps != np.arange(len(reps)))
            if len(dropped):
                self._drop_rows(parts, reps, dropped, dropping)
            keep = np.ones(sum(len(p["side"]) for p in parts), dtype=bool)
            keep[dropped] = False
            outputs = [
                _assemble(self.write_root, relpath, parts, number, keep)
                for number, relpath in ((0, self.train_path), (1, self.holdout_path))
            ]
            write_row_places(self.write_root, self.stage, parts, keep)
        finally:
            self._remove_files(parts)
        self.train_rows, self.holdout_rows = outputs[0].record_count, outputs[1].record_count
        return outputs

    def _drop_rows(
        self,
        parts: list[dict[str, Any]],
        reps: np.ndarray,
        dropped: np.ndarray,
        dropping: _Dropping,
    ) -> None:
        """Quarantine the dropped rows in row order, each naming the row it duplicates; a run
        is out only while another written row of its task still holds it."""
        kept_ids = {int(rep): _row_id(parts, int(rep)) for rep in np.unique(reps[dropped])}
        wanted = set(dropped.tolist())
        for first, rows in _task_lines(parts):
            if not any(first + offset in wanted for offset in range(len(rows))):
                continue
            uses: Counter[str] = Counter(unit[0] for row in rows for unit in row[1:])
            for offset, row in enumerate(rows):
                number = first + offset
                if number in wanted:
                    kept_id = kept_ids[int(reps[number])]
                    units = [dropping.make(unit) for unit in row[1:]]
                    self._drop(row[0], units, uses, kept_id, dropping)

    def _drop(
        self, pair: bool, units: list[Any], uses: Counter[str], kept_id: str, dropping: _Dropping
    ) -> None:
        """Quarantine one dropped row (a pair's own row, then each run no other written row of
        its task holds), naming ``kept_id``."""
        tally, quarantine, quarantine_row, _ = dropping
        self.dropped += 1
        reasons = [C.R_NEAR_DUPLICATE]
        if pair:
            self.pairs_dropped += 1
            tally.reasons[C.R_NEAR_DUPLICATE] += 1
            row = quarantine_row(self.stage, reasons, pair=(units[0], units[1]))
            quarantine.write_row({**row, "kept_id": kept_id})
        for unit in units:
            uses[unit.run_id] -= 1
            if uses[unit.run_id]:
                continue  # still in another written row
            tally.records_out -= 1
            if unit.quality == C.QUALITY_REJECTED:
                tally.rejected -= 1
            else:
                tally.accepted -= 1
            tally.leave_out(C.DISPOSITION_QUARANTINED, reasons)
            row = quarantine_row(self.stage, reasons, key=unit)
            quarantine.write_row({**row, "kept_id": kept_id})

    def _own_part(self) -> dict[str, Any]:
        """What this process wrote (its files closed)."""
        self._flush_task()
        self._units.close()
        self._train.close()
        self._holdout.close()
        return {
            "files": (str(self._train.path), str(self._holdout.path)),
            "hashes": (self._train.hash.hexdigest(), self._holdout.hash.hexdigest()),
            "sizes": (self._train.position, self._holdout.position),
            "side": self._side,
            "start": self._start,
            "length": self._length,
            "units": str(self._units_path),
            "rows": self.count,
            "ids": self._ids,
            "runs": self._runs,
            "crc": self._crc,
        }

    def _remove_files(self, parts: list[dict[str, Any]]) -> None:
        for part in parts:
            for path in (*part["files"], part["units"]):
                Path(path).unlink(missing_ok=True)
        if self.index is not None:
            self.index.close()

    # --- worker processes ------------------------------------------------------------------

    def part(self) -> dict[str, Any]:
        """What this curation did in a worker process, for the step's process to ``absorb``:
        its files (left on disk), its near-duplicate signatures and its counts."""
        own = self._own_part()
        index = None
        if self.index is not None:
            index = self.index.part()
            self.index.close()
        return {
            "parts": [*self._parts, own],
            "index": index,
            "secrets": self.secrets,
            "contamination": self.contamination,
        }

    def absorb(self, part: dict[str, Any]) -> None:
        """Take over a worker's curation of earlier tasks (before any row of this one)."""
        if self.count:
            raise ValueError("absorb before keeping rows")
        self._parts.extend(part["parts"])
        if self.index is not None and part["index"] is not None:
            self.index.absorb(part["index"])
        self.secrets.update(part["secrets"])
        self.contamination.update(part["contamination"])

    def abort(self) -> None:
        self._remove_files([*self._parts, self._own_part()])

    def extra(self) -> dict[str, Any]:
        """What the receipt records of this export's hygiene."""
        extra: dict[str, Any] = {
            "holdout_rows": self.holdout_rows,
            "near_duplicates": self.dropped,
            "secrets": dict(sorted(self.secrets.items())),
        }
        if self.index is not None:
            extra["near_dup_lsh"] = {"bands": self.index.bands, "rows": self.index.rows}
        if self.eval_set is not None:
            extra["contamination"] = dict(sorted(self.contamination.items()))
            extra["eval_set"] = {
                "sha256": self.eval_set.source_sha256,
                "prompts": self.eval_set.prompts,
                "task_ids": len(self.eval_set.task_ids),
            }
        return extra
