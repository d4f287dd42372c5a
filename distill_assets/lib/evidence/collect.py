"""Stage ``collect``: source JSONL files → the evidence index, one folder per day.

Every source line is attributed to exactly one day bucket: its own ``created_at`` day when that
can be read and lies in the partition range (a timestamp before it or in the future names a day
no partition will ever cover), otherwise the day of the nearest such line before it in the same
file (or after it, when none comes before); lines of a file with no such day at all, and
whole-file problems, go to the ``undated`` bucket, which every collect run reports. A run
handles the buckets of the days it was asked for, so a single run over a date range and one run
per day write the same bytes.

Per day it writes ``records.jsonl`` (each usable record with provenance), ``index.jsonl`` (a
compact row per record with the fields scoring needs and the record's byte offset) and
``quarantine.jsonl`` (every line left out, with reason codes, never the line's content).

Every line is parsed, validated, re-serialized with sorted keys and hashed, so the Python work
per line is kept to a minimum (docs/performance.md, *Collect*): a clean line takes a quick way
whose rows are filled into byte templates, its texts are hashed a stretch at a time, and only the
lines the native secret prefilter flags are scrubbed; anything else takes the full checks.

Length: the stage's fast path (one pass per file in worker processes) and the exact per-line
path share the day bucketing, the duplicate set and the parts' merge; the fast path is measured
line by line (docs/performance.md), so it stays in one place.
"""

from __future__ import annotations

import binascii
import gc
import hashlib
import io
import itertools
import mmap
import os
import shutil
import tempfile
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.format import (
    ParseSettings,
    QuickCheck,
    Record,
    Rejected,
    parse_line,
    strip_line,
    text_hashes,
    validate_object,
)
from distill_assets.lib.hygiene.secrets import safe_identifier, scrub_record
from distill_assets.lib.infra import layout, progress
from distill_assets.lib.infra.digests import DigestTable
from distill_assets.lib.infra.io import AtomicJsonlWriter, WrittenFile, sha256_file
from distill_assets.lib.infra.layout import source_date_range
from distill_assets.lib.infra.parallel import process_pool
from distill_assets.lib.records.accounting import StageResult, Tally, conservation_errors

try:  # a native scan saying which lines may hold a secret; without it every line may
    from distill_assets.lib.hygiene.prefilter import flag_lines as _flag_lines
except ImportError:
    _flag_lines = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from distill_assets.lib.evidence.importers.base import ImportBatch


@dataclass(frozen=True)
class SourceFile:
    """A file found under a source root, or a reason it cannot be read."""

    root: Path
    relpath: str  # as it appears in provenance
    path: Path
    problem: str | None = None


def list_source_files(root: Path, prefix: str = "", suffix: str = ".jsonl") -> list[SourceFile]:
    """Every ``*.jsonl`` (or ``*<suffix>``) under ``root``, recursively, in path order.

    Symbolic links are followed only while they stay inside ``root``; a link that leads out is
    reported with reason ``outside_source_dir`` rather than read.
    """
    real_root = root.resolve()
    found: list[SourceFile] = []
    seen_dirs: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        current = Path(dirpath)
        real_dir = current.resolve()
        if not real_dir.is_relative_to(real_root) or real_dir in seen_dirs:
            rel = current.relative_to(root).as_posix()
            if not real_dir.is_relative_to(real_root):
                found.append(SourceFile(root, prefix + rel, current, C.R_OUTSIDE_SOURCE_DIR))
            dirnames[:] = []
            continue
        seen_dirs.add(real_dir)
        dirnames.sort()
        for name in filenames:
            if not name.endswith(suffix):
                continue
            path = current / name
            rel = prefix + path.relative_to(root).as_posix()
            if not path.resolve().is_relative_to(real_root):
                found.append(SourceFile(root, rel, path, C.R_OUTSIDE_SOURCE_DIR))
            else:
                found.append(SourceFile(root, rel, path))
    found.sort(key=lambda source: source.relpath)
    return found


INDEX_FIELDS = (
    "evidence_id",
    "kind",
    "run_id",
    "created_at",
    "offset",
    "task_id",
    "category",
    "agent",
    "instruction_hash",
    "response_hash",
    "response_empty",
    "has_messages",
    "sft_eligible",
    "verdict",
    "score",
    "outcome",
    "reward",
    "signals",
)

# Rows are written from byte templates, filled with ``bytes % (...)`` instead of building a dict
# per record for orjson: the templates are orjson's own bytes of a row whose values are markers.
_TEXT = "\x01"  # a string value whose text is filled in as it is (hex digests only)
_VALUE = "\x02"  # a JSON value, filled in as orjson wrote it
_OFFSET = "\x03"  # an index row's offset, known only when the row is written: a NUL byte
_HASH = "\x04"  # a run's text hash, known once the texts of a stretch are hashed together
_HASH_PLACEHOLDER = b"0" * 64


def _template(row: dict[str, Any]) -> bytes:
    """orjson's bytes of ``row`` with every marker value replaced (see above)."""
    data = orjson.dumps(row)
    assert b"%" not in data and b"\x00" not in data
    return (
        data.replace(b'"\\u0002"', b"%b").replace(b"\\u0001", b"%b").replace(b'"\\u0003"', b"\x00")
    )


def _index_row(kind: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(INDEX_FIELDS)
    row.update(evidence_id=_TEXT, kind=kind, run_id=_VALUE, created_at=_VALUE, offset=_OFFSET)
    row.update(values)
    return row


# index rows of reviews and outcomes, filled with (evidence id, run id, created_at, values...)
_INDEX_ROWS = {
    C.KIND_REVIEW: _template(_index_row(C.KIND_REVIEW, verdict=_VALUE, score=_VALUE)) + b"\n",
    C.KIND_OUTCOME: _template(
        _index_row(C.KIND_OUTCOME, outcome=_VALUE, reward=_VALUE, signals=_VALUE)
    )
    + b"\n",
}


def _run_index_templates() -> tuple[bytes, dict[tuple[bool, bool, bool], bytes], int]:
    """A run's index row in two: up to its instruction hash (filled with evidence id, run id,
    created_at, task id, category, agent), and the rest for each (response_empty, has_messages,
    sft_eligible), with placeholders for both hashes; and where the response hash starts in
    that rest."""
    tails = {}
    for flags in itertools.product((False, True), repeat=3):
        row = _index_row(
            C.KIND_RUN, task_id=_VALUE, category=_VALUE, agent=_VALUE,
            instruction_hash=_HASH, response_hash=_HASH,
            response_empty=flags[0], has_messages=flags[1], sft_eligible=flags[2],
        )  # fmt: skip
        head, between, end = _template(row).split(b"\\u0004")
        tails[flags] = _HASH_PLACEHOLDER + between + _HASH_PLACEHOLDER + end + b"\n"
    return head, tails, len(_HASH_PLACEHOLDER + between)


_RUN_INDEX_HEAD, _RUN_INDEX_TAILS, _RESPONSE_HASH_AT = _run_index_templates()
# a records row up to its record: evidence id, run id, (a run's task id,) created_at, source
# path, line, source sha256, then optional fields (importer, secrets), then the record itself
_RECORD_HEADS = {
    kind: _template(
        {
            "evidence_id": _TEXT,
            "kind": kind,
            "run_id": _VALUE,
            "task_id": _VALUE if kind == C.KIND_RUN else None,
            "created_at": _VALUE,
            "source_path": _VALUE,
            "line": _VALUE,
            "source_sha256": _VALUE,
        }
    )[:-1]
    + b'%b,"record":'
    for kind in C.KINDS
}
_RECORD_END = b"}\n"
_SORT_KEYS = orjson.OPT_SORT_KEYS


def _partial_signals(obj: dict[str, Any]) -> dict[str, float] | None:
    """Named partial-credit signals an outcome may carry in ``meta.signals`` (e.g. r_actions)."""
    meta = obj.get("meta")
    if not isinstance(meta, dict):
        return None
    signals = meta.get("signals")
    if not isinstance(signals, dict):
        return None
    kept = {
        str(name): float(value)
        for name, value in signals.items()
        if isinstance(value, int | float)  # a bool counts as 1.0 / 0.0
    }
    return kept or None


def _quarantine_row(
    rejected: Rejected,
    source_path: str,
    line: int | None,
    size: int | None,
    detail: str | None = None,
) -> dict[str, Any]:
    row = {
        "stage": C.STAGE_COLLECT,
        "disposition": rejected.disposition,
        "reasons": list(rejected.reasons),
        "source_path": source_path,
        "line": line,
        "bytes": size,
        "kind": rejected.kind,
        "run_id": safe_identifier(rejected.run_id),
        "evidence_id": rejected.evidence_id,
    }
    if detail is not None:
        # import problems say what is wrong with the file (never its content)
        row["detail"] = detail
    return row


_OUT_OF_RANGE = frozenset({C.R_FUTURE_TIMESTAMP, C.R_TIMESTAMP_OUT_OF_RANGE})
# files up to this size are read whole and may go to a worker process; larger ones are streamed
WHOLE_FILE_BYTES = 64 * 1024 * 1024
# a streamed file hands what it scanned to the writers every this many bytes
_STREAM_FLUSH_BYTES = 16 * 1024 * 1024
# below this many source bytes a worker pool is not worth starting
POOL_MIN_BYTES = 32 * 1024 * 1024
# day buckets whose written ids stay in memory at once (the others wait in the scratch folder)
RESIDENT_DAYS = 8


def _outside(rejected: Rejected) -> bool:
    """Whether a rejected line's own day is one no partition covers."""
    return not _OUT_OF_RANGE.isdisjoint(rejected.reasons)


def _lines_to_scrub(data: bytes) -> set[int] | None:
    """Indices of the lines of ``data.split(b"\\n")`` that may hold a secret (the native
    prefilter, a superset of what ``scrub_record`` finds); None: every line may."""
    if _flag_lines is None:
        return None
    return set(_flag_lines(data).tolist())


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: scanning makes millions of short-lived dicts and no
    reference cycles, so its collections would only walk them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(slots=True)
class DayPart:
    """What a stretch of one source file contributes to one day bucket, in line order.

    Kept records and left-out lines carry sequence numbers (a file's line numbers), so a record
    that turns out to duplicate one from an earlier file can be put back among the left-out
    lines in order; its kind, run id, path and line are read back from its records row. A
    record whose identifier holds a secret is ``held``: quarantined (``secret_detected``) unless
    it duplicates a record of an earlier file, which only the writer knows.

    Rows accumulate in byte buffers rather than as one object per row: fewer objects to
    allocate, pickle and join.
    """

    # the records rows; in the writer, possibly a view of the file a worker spilled them to
    records: bytearray | memoryview = field(default_factory=bytearray)
    spilled: tuple[int, int] | None = None  # (start, length) of ``records`` in that file
    offsets: list[int] = field(default_factory=list)  # of each record within ``records``
    # the index rows, a NUL byte in place of each offset (the writer knows where they land)
    index: bytearray = field(default_factory=bytearray)
    # (where in ``index``, instruction text, response text) of each run until take()
    hash_slots: list[tuple[int, int, int]] = field(default_factory=list)
    digests: bytearray = field(default_factory=bytearray)  # 32 bytes a kept record
    keep_seq: list[int] = field(default_factory=list)
    keep_sizes: list[int | None] = field(default_factory=list)
    # secret types found in a kept record (by its position among the kept ones)
    keep_secrets: dict[int, tuple[str, ...]] = field(default_factory=dict)
    held_digests: list[bytes] = field(default_factory=list)
    held_seq: list[int] = field(default_factory=list)
    # (kind, run_id, line, size, source path) of each held record
    held_meta: list[tuple[str, str, int | None, int | None, str]] = field(default_factory=list)
    held_secrets: list[tuple[str, ...]] = field(default_factory=list)
    quarantine: list[bytes] = field(default_factory=list)
    quarantine_seq: list[int] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)

    def __len__(self) -> int:
        """Records kept."""
        return len(self.offsets)

    def record_row(self, i: int) -> bytes:
        end = self.offsets[i + 1] if i + 1 < len(self.offsets) else len(self.records)
        return bytes(self.records[self.offsets[i] : end])

    def kept_meta(self, i: int) -> tuple[str, str, int | None, int | None, str]:
        """(kind, run_id, line, size, source path) of the i-th kept record."""
        row = orjson.loads(self.record_row(i))
        return row["kind"], row["run_id"], row["line"], self.keep_sizes[i], row["source_path"]


@dataclass
class FileScan:
    """Day parts of (a stretch of) one source file; ``info`` is set once the file is done."""

    relpath: str
    parts: dict[date | None, DayPart]
    info: WrittenFile | None = None


# where a line left out lies: (its sequence number, line number, size); (0, None, None) for a
# whole file. Source lines are numbered by their line; an import batch's records by their place.
Place = tuple[int, int | None, int | None]


class _Imported(NamedTuple):
    """Where an imported record being kept comes from: its line in the original file (when
    records are lines), that file's provenance name, the records row's (source path, source
    sha256) as JSON, and the row's importer fields."""

    line: int | None
    relpath: str
    where: tuple[bytes, bytes]
    fields: bytes


class _Scanner:
    """Turns the lines of one source file into day parts; touches no output file.

    Most lines take the quick way in ``scan_block``: parsed, recognized as clean by
    ``QuickCheck`` and kept by ``keep``, which writes their rows from byte templates. Any other
    line goes through ``parse_line`` and its full checks. The texts of a stretch's runs are
    hashed together (``text_hashes``) when its parts are taken.
    """

    def __init__(
        self, source: SourceFile, days: frozenset[date] | None, settings: ParseSettings
    ) -> None:
        self.source = source
        self.days = days
        self.settings = settings
        self.quick = QuickCheck(settings)
        self.parts: dict[date | None, DayPart] = {}
        self.seen: dict[date | None, set[bytes]] = {}
        self.pending: list[tuple[int, Rejected, int]] = []
        self.last_day: date | None = None
        self.lines = 0
        # texts waiting for their hashes, and the last instruction of each task with its slot
        self.texts: list[str] = []
        self.instructions: dict[str, tuple[str, int]] = {}
        # set while an import batch's record is being kept (``keep_imported``), with the
        # records row's provenance (``where``) and importer fields
        self.imported: _Imported | None = None
        self.fields = b""
        self.set_sha("")

    def set_sha(self, sha: str) -> None:
        """The source file's sha256, which its records rows carry (with its path: ``where``)."""
        self.sha = sha
        self.where = (orjson.dumps(self.source.relpath), orjson.dumps(sha))

    def _part(self, day: date | None) -> DayPart | None:
        if day is not None and self.days is not None and day not in self.days:
            return None
        part = self.parts.get(day)
        if part is None:
            part = self.parts[day] = DayPart()
            self.seen.setdefault(day, set())
        return part

    def _relpath(self) -> str:
        """The provenance name of what is being kept or left out: the source file's, or the
        original file's of an imported record."""
        return self.source.relpath if self.imported is None else self.imported.relpath

    def leave(
        self,
        day: date | None,
        rejected: Rejected,
        place: Place,
        relpath: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Leave out a line (or a whole file, or an import's record or file) at ``place``, of
        the file being read unless ``relpath`` names another; ``detail``: what is wrong."""
        part = self._part(day)
        if part is None:
            return
        seq, line, size = place
        part.tally.records_in += 1
        part.tally.leave_out(rejected.disposition, rejected.reasons)
        row = _quarantine_row(rejected, relpath or self._relpath(), line, size, detail)
        part.quarantine.append(orjson.dumps(row) + b"\n")
        part.quarantine_seq.append(seq)

    def keep(
        self, found: tuple[date, str], obj: dict[str, Any], seq: int, size: int | None, scrub: bool
    ) -> None:
        """Keep a valid record unless it repeats one of this file: ``found`` is its day and
        normalized ``created_at`` (as ``QuickCheck.check`` gives them), ``seq`` its line (its
        place in the file's order), ``scrub``: it may hold a secret (else the prefilter found it
        clean). While ``imported`` is set, the record is that import's (``seq``: its place in
        the batch)."""
        day = found[0]
        part = self.parts.get(day)
        if part is None:
            part = self._part(day)
            if part is None:
                return
        kind, dumps = obj["kind"], orjson.dumps
        canonical = dumps(obj, option=_SORT_KEYS)
        digest = hashlib.sha256(canonical).digest()
        line = seq if self.imported is None else self.imported.line
        seen = self.seen[day]
        if digest in seen:
            self.leave(day, _duplicate_of(kind, obj["run_id"], digest), (seq, line, size))
            return
        seen.add(digest)
        evidence_id = binascii.hexlify(digest)
        created_at, extra = found[1], self.fields
        if scrub:
            # the evidence store never holds a secret: it keeps the record with placeholders
            scrubbed = self._scrub(
                part,
                Record(kind, obj["run_id"], created_at, day, evidence_id.decode(), canonical, obj),
                digest,
                (seq, line, size),
            )
            if scrubbed is None:
                return
            obj, canonical, extra = scrubbed
        run_id, stamp = dumps(obj["run_id"]), dumps(created_at)
        path, sha = self.where
        number = b"%d" % line if line is not None else b"null"
        records, index = part.records, part.index
        part.offsets.append(len(records))
        if kind == C.KIND_RUN:
            task_id, instruction, response = obj["task_id"], obj["instruction"], obj["response"]
            task = dumps(task_id)
            records += _RECORD_HEADS[kind] % (
                evidence_id, run_id, task, stamp, path, number, sha, extra
            )  # fmt: skip
            instruction_slot = self._instruction_slot(task_id, instruction)
            self.texts.append(response)
            meta = obj.get("meta")
            flags = (
                not response or response.isspace(),
                bool(obj.get("messages")),
                not (isinstance(meta, dict) and meta.get("sft_eligible") is False),
            )
            category, agent = dumps(obj.get("category")), dumps(obj.get("agent"))
            index += _RUN_INDEX_HEAD % (evidence_id, run_id, stamp, task, category, agent)
            part.hash_slots.append((len(index), instruction_slot, len(self.texts) - 1))
            index += _RUN_INDEX_TAILS[flags]
        else:
            records += _RECORD_HEADS[kind] % (evidence_id, run_id, stamp, path, number, sha, extra)
            if kind == C.KIND_REVIEW:
                values: tuple[bytes, ...] = (dumps(obj["verdict"]), dumps(obj.get("score")))
            else:
                signals = None if obj.get("meta") is None else _partial_signals(obj)
                values = (dumps(obj["outcome"]), dumps(obj.get("reward")), dumps(signals))
            index += _INDEX_ROWS[kind] % (evidence_id, run_id, stamp, *values)
        records += canonical
        records += _RECORD_END
        part.digests += digest
        part.keep_seq.append(seq)
        part.keep_sizes.append(size)

    def _scrub(
        self, part: DayPart, record: Record, digest: bytes, place: Place
    ) -> tuple[dict[str, Any], bytes, bytes] | None:
        """A record that may hold a secret, scrubbed: its object, its canonical bytes and the
        records row's optional fields, with ``secrets`` (what was redacted: type, field,
        preview; never the secret). None when its identifier holds a secret: the record is held
        (quarantined, unless it duplicates a record of an earlier file, which only the writer
        knows)."""
        scrubbed, findings = scrub_record(record)
        types = tuple(finding.type for finding in findings)
        if scrubbed is None:
            seq, line, size = place
            part.held_digests.append(digest)
            part.held_seq.append(seq)
            part.held_meta.append((record.kind, record.run_id, line, size, self._relpath()))
            part.held_secrets.append(types)
            return None
        if not findings:
            return record.obj, record.canonical, self.fields
        part.keep_secrets[len(part.offsets)] = types
        secrets = b',"secrets":' + orjson.dumps([finding.as_dict() for finding in findings])
        return scrubbed.obj, scrubbed.canonical, self.fields + secrets

    def _instruction_slot(self, task_id: str, instruction: str) -> int:
        """Where a run's instruction waits among ``texts`` for its hash: the slot of its task's
        last instruction when it is the same text (a task's runs usually share it), else a new
        one."""
        known = self.instructions.get(task_id)
        if known is not None and known[0] == instruction:
            return known[1]
        slot = len(self.texts)
        self.texts.append(instruction)
        self.instructions[task_id] = (instruction, slot)
        return slot

    def keep_imported(self, record: Record, seq: int, imported: _Imported) -> None:
        """Keep a valid record of an import batch (``seq``: its place in the batch); an
        imported record is always scanned for secrets."""
        where, self.where = self.where, imported.where
        self.imported, self.fields = imported, imported.fields
        self.keep((record.day, record.created_at), record.obj, seq, None, True)
        self.imported, self.fields, self.where = None, b"", where

    def scan_block(self, data: bytes, first: int) -> int:
        """Scan the lines of ``data`` (whole lines, numbered from ``first``; only a file's last
        line may lack its line end); returns the number of the next line."""
        flagged = _lines_to_scrub(data)
        every = flagged is None
        loads, check, keep, full = orjson.loads, self.quick.check, self.keep, self._line
        limit = self.settings.max_line_bytes
        last_day = self.last_day
        number = first - 1
        # line by line, not split() at once: each line's memory is reused by the next one
        for raw in io.BytesIO(data):
            number += 1
            size = len(raw)
            scrub = every or (number - first) in flagged  # type: ignore[operator]
            obj = None
            if size <= limit:  # a longer line may be too long: the full checks say
                try:
                    obj = loads(raw)
                except orjson.JSONDecodeError:
                    pass
                if type(obj) is dict:
                    found = check(obj)
                    if found is not None:
                        day = found[0]
                        if day is not last_day:
                            if self.pending:
                                self._place_pending(day)
                            self.last_day = last_day = day
                        keep(found, obj, number, size, scrub)
                        continue
            full(raw, number, size, scrub, obj)
            last_day = self.last_day
        self.lines = number
        return number + 1

    def _place_pending(self, day: date) -> None:
        """The undated lines before a file's first dated line take its day."""
        for line, rejected, pending_size in self.pending:
            self.leave(day, rejected, (line, line, pending_size))
        self.pending.clear()

    def _line(self, raw: bytes, number: int, size: int, scrub: bool, obj: Any) -> None:
        """One line (with its line end) through the full checks; ``obj`` is what orjson made
        of it, if anything."""
        if type(obj) is dict:
            parsed = validate_object(obj, self.settings)
        else:
            parsed = parse_line(strip_line(raw, number == 1), self.settings)
        day = parsed.day
        if day is not None and type(parsed) is Rejected and _outside(parsed):
            day = None
        if day is None:
            assert isinstance(parsed, Rejected)
            if self.last_day is None:
                self.pending.append((number, parsed, size))
            else:
                self.leave(self.last_day, parsed, (number, number, size))
            return
        if self.last_day is None and self.pending:
            self._place_pending(day)
        self.last_day = day
        if type(parsed) is Record:
            self.keep((day, parsed.created_at), parsed.obj, number, size, scrub)
        else:
            self.leave(day, parsed, (number, number, size))

    def take(self) -> dict[date | None, DayPart]:
        """The parts scanned so far, with their runs' text hashes; scanning goes on into fresh
        ones."""
        parts, self.parts = self.parts, {}
        hashes = text_hashes(self.texts) if self.texts else []
        self.texts, self.instructions = [], {}
        for part in parts.values():
            index = part.index
            for at, instruction, response in part.hash_slots:
                index[at : at + 64] = hashes[instruction]
                index[at + _RESPONSE_HASH_AT : at + _RESPONSE_HASH_AT + 64] = hashes[response]
            part.hash_slots = []
            kept = len(part)
            part.tally.records_in += kept
            part.tally.records_out += kept
            part.tally.accepted += kept
        return parts

    def unreadable(self) -> None:
        self.leave(None, Rejected(C.DISPOSITION_SKIPPED, (C.R_UNREADABLE_FILE,)), (0, None, None))

    def finish(self, size: int) -> None:
        """Lines that never found a day, and an empty file, go to the undated bucket."""
        for line, rejected, pending_size in self.pending:
            self.leave(None, rejected, (line, line, pending_size))
        self.pending.clear()
        if size == 0:
            self.leave(None, Rejected(C.DISPOSITION_SKIPPED, (C.R_EMPTY_FILE,)), (0, None, 0))


def _duplicate_of(kind: str, run_id: str, digest: bytes) -> Rejected:
    return Rejected(C.DISPOSITION_SKIPPED, (C.R_DUPLICATE,), None, kind, run_id, digest.hex())


def scan_file(
    source: SourceFile,
    days: frozenset[date] | None,
    settings: ParseSettings,
    whole_file_bytes: int = WHOLE_FILE_BYTES,
) -> Iterator[FileScan]:
    """Scan one source file, yielding its day parts in stretches (the last one has ``info``).

    A file up to ``whole_file_bytes`` is read and hashed at once; a larger one is hashed first and
    then streamed, handing its parts over every _STREAM_FLUSH_BYTES so memory stays bounded.
    """
    scanner = _Scanner(source, days, settings)
    if source.problem is not None:
        scanner.leave(None, Rejected(C.DISPOSITION_SKIPPED, (source.problem,)), (0, None, None))
        yield FileScan(source.relpath, scanner.take())
        return
    try:
        size = source.path.stat().st_size
        if size <= whole_file_bytes:
            data = source.path.read_bytes()
            size = len(data)
            sha = hashlib.sha256(data).hexdigest()
        else:
            data = None
            sha = sha256_file(source.path)
    except OSError:
        scanner.unreadable()
        yield FileScan(source.relpath, scanner.take())
        return
    scanner.set_sha(sha)
    flush_bytes = min(_STREAM_FLUSH_BYTES, max(1, whole_file_bytes))
    try:
        if data is not None:
            scanner.scan_block(data, 1)
            del data
        else:
            with open(source.path, "rb") as fh:
                number = 1
                pieces: list[bytes] = []  # of a line not ended yet
                while block := fh.read(flush_bytes):
                    cut = block.rfind(b"\n") + 1
                    if not cut:
                        pieces.append(block)
                        continue
                    number = scanner.scan_block(b"".join([*pieces, block[:cut]]), number)
                    pieces = [block[cut:]]
                    yield FileScan(source.relpath, scanner.take())
                rest = b"".join(pieces)
                if rest:
                    scanner.scan_block(rest, number)
    except OSError:
        scanner.unreadable()
    scanner.finish(size)
    yield FileScan(
        source.relpath,
        scanner.take(),
        WrittenFile(source.relpath, scanner.sha, size, scanner.lines),
    )


def scan_whole_file(
    source: SourceFile,
    days: frozenset[date] | None,
    settings: ParseSettings,
    whole_file_bytes: int,
    spill: Path | None = None,
) -> list[FileScan]:
    """``scan_file`` collected into a list: the unit of work of a worker process. With
    ``spill``, the records rows (most of the bytes) are written to that file for the writer to
    map, rather than pickled through a pipe (four copies of them, each in fresh memory)."""
    with _no_gc():
        scans = list(scan_file(source, days, settings, whole_file_bytes))
    parts = [part for scan in scans for part in scan.parts.values() if part.records]
    if spill is not None and parts:
        with open(spill, "wb") as fh:
            start = 0
            for part in parts:
                fh.write(part.records)
                part.spilled = (start, len(part.records))
                start += len(part.records)
                part.records = bytearray()
    return scans


def _unspill(scans: list[FileScan], spill: Path) -> None:
    """Point the parts' records at the file ``scan_whole_file`` spilled them to, mapped into
    memory; the file is removed at once (the mapping lasts while its views do)."""
    parts = [part for scan in scans for part in scan.parts.values() if part.spilled is not None]
    if not parts:
        return
    try:
        with open(spill, "rb") as fh:
            view = memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
    finally:
        spill.unlink(missing_ok=True)
    for part in parts:
        assert part.spilled is not None
        start, length = part.spilled
        part.records, part.spilled = view[start : start + length], None


def _scratch(out_root: Path) -> Path:
    """A new folder for one collect run's temporary files, under the output's scratch folder."""
    root = out_root / C.SCRATCH_DIR
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="collect-", dir=root))


def _remove_scratch(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()  # unless another stage is using it
    except OSError:
        pass


@dataclass
class _Bucket:
    """Writers, counters and written evidence ids for one day (or the undated bucket)."""

    records: AtomicJsonlWriter | None
    index: AtomicJsonlWriter | None
    quarantine: AtomicJsonlWriter
    tally: Tally
    seen: DigestTable | None  # None while saved to the scratch folder


class _SeenTables:
    """The written-id tables of the day buckets, at most ``resident`` of them in memory.

    A single run over many days would otherwise hold the ids of every day until the last source
    file is read; tables not used lately are saved to a scratch folder and read back when a file
    brings more lines of their day (rare with logs rotated by day)."""

    def __init__(self, out_root: Path, resident: int) -> None:
        self.out_root = out_root
        self.resident = resident
        self.order: dict[date | None, None] = {}  # resident days, least recently used first
        self.scratch: Path | None = None

    def _path(self, day: date | None) -> Path:
        if self.scratch is None:
            self.scratch = _scratch(self.out_root)
        return self.scratch / f"{C.UNDATED_BUCKET if day is None else day.isoformat()}.npy"

    def use(self, day: date | None, bucket: _Bucket, buckets: dict[date | None, _Bucket]):
        if bucket.seen is None:
            bucket.seen = DigestTable.load(self._path(day))
        self.order.pop(day, None)
        self.order[day] = None
        while len(self.order) > self.resident:
            old = next(iter(self.order))
            del self.order[old]
            table = buckets[old].seen
            assert table is not None
            table.save(self._path(old))
            buckets[old].seen = None
        return bucket.seen

    def close(self) -> None:
        if self.scratch is not None:
            _remove_scratch(self.scratch)
            self.scratch = None


def _without(part: DayPart, dup_at: list[int]) -> tuple[bytearray, list[int], bytearray, bytearray]:
    """The part's records rows, their offsets, index rows and digests without the kept records
    at ``dup_at``."""
    dups = set(dup_at)
    kept = [i for i in range(len(part)) if i not in dups]
    rows_of = [part.record_row(i) for i in kept]
    records = bytearray(b"".join(rows_of))
    offsets = list(itertools.accumulate(map(len, rows_of[:-1]), initial=0))[: len(kept)]
    lines = part.index.split(b"\n")
    index = bytearray(b"".join(lines[i] + b"\n" for i in kept))
    digests = bytearray(b"".join(part.digests[32 * i : 32 * i + 32] for i in kept))
    return records, offsets, index, digests


class Collector:
    """Runs the collect stage over a set of source files for a set of days.

    Source files are scanned (possibly in worker processes) into day parts, which are written
    in source path order, so the output bytes do not depend on how many processes scanned.
    """

    def __init__(
        self,
        out_root: Path,
        days: Iterable[date] | None,
        settings: ParseSettings,
        resident_days: int = RESIDENT_DAYS,
    ) -> None:
        self.out_root = out_root
        self.days = None if days is None else frozenset(days)
        self.settings = settings
        self.buckets: dict[date | None, _Bucket] = {}
        self.inputs: list[WrittenFile] = []
        self.seen = _SeenTables(out_root, resident_days)
        self.warnings: list[str] = []
        self.imports: list[dict[str, Any]] = []
        self.secrets: Counter[str] = Counter()

    def _bucket(self, day: date | None) -> _Bucket:
        bucket = self.buckets.get(day)
        if bucket is None:
            quarantine = AtomicJsonlWriter(self.out_root, layout.evidence_quarantine(day))
            records = index = None
            if day is not None:
                records = AtomicJsonlWriter(self.out_root, layout.evidence_records(day))
                index = AtomicJsonlWriter(self.out_root, layout.evidence_index(day))
            bucket = _Bucket(records, index, quarantine, Tally(), DigestTable())
            self.buckets[day] = bucket
        return bucket

    def read_file(self, source: SourceFile) -> None:
        """Scan one source file in this process and write what it holds."""
        for scan in scan_file(source, self.days, self.settings):
            self.apply(scan)

    def apply(self, scan: FileScan) -> None:
        """Write one stretch of a scanned file into the day buckets."""
        for day, part in scan.parts.items():
            bucket = self._bucket(day)
            self._apply_part(bucket, self.seen.use(day, bucket, self.buckets), part)
        if scan.info is not None:
            self.inputs.append(scan.info)

    def _apply_part(self, bucket: _Bucket, seen: DigestTable, part: DayPart) -> None:
        count = len(part)
        found = seen.find(part.digests + b"".join(part.held_digests))
        dup_at = [i for i, at in enumerate(found[:count]) if at >= 0]
        for i, types in part.keep_secrets.items():
            if found[i] < 0:
                self.secrets.update(types)
        records, offsets, index, digests = part.records, part.offsets, part.index, part.digests
        if not dup_at and not part.held_digests:
            quarantine_data = b"".join(part.quarantine)
            quarantine_rows = len(part.quarantine)
        else:
            # records already seen in an earlier file: skipped as duplicates, in line order
            records, offsets, index, digests = _without(part, dup_at)
            held_dup = [at >= 0 for at in found[count:]]
            quarantine_data, quarantine_rows = self._left_out(part, dup_at, held_dup)
            seen.add(
                [
                    d
                    for d, duplicate in zip(part.held_digests, held_dup, strict=True)
                    if not duplicate
                ]
            )
        bucket.tally.merge(part.tally)
        if offsets:
            assert bucket.records is not None and bucket.index is not None
            index_data = _index_block(index, offsets, bucket.records.position)
            bucket.records.write_block(records, len(offsets))
            bucket.index.write_block(index_data, len(offsets))
            seen.add(digests)
        if quarantine_rows:
            bucket.quarantine.write_block(quarantine_data, quarantine_rows)

    def _left_out(
        self, part: DayPart, dup_at: list[int], held_dup: list[bool]
    ) -> tuple[bytes, int]:
        """The part's quarantine rows (and their count) with its kept records at ``dup_at``
        skipped as duplicates and its held records quarantined (``secret_detected``) unless
        ``held_dup`` says they were seen before, in line order; its tally is adjusted."""
        rows: list[tuple[int, bytes | dict[str, Any]]] = list(
            zip(part.quarantine_seq, part.quarantine, strict=True)
        )
        tally = part.tally
        for i in dup_at:
            kind, run_id, line, size, relpath = part.kept_meta(i)
            rejected = _duplicate_of(kind, run_id, part.digests[32 * i : 32 * i + 32])
            rows.append((part.keep_seq[i], _quarantine_row(rejected, relpath, line, size)))
        tally.records_out -= len(dup_at)
        tally.accepted -= len(dup_at)
        tally.skipped += len(dup_at)
        tally.reasons[C.R_DUPLICATE] += len(dup_at)
        # records whose identifier holds a secret: quarantined, unless seen before
        for j, duplicate in enumerate(held_dup):
            kind, run_id, line, size, relpath = part.held_meta[j]
            evidence_id = part.held_digests[j].hex()
            if duplicate:
                rejected = _duplicate_of(kind, run_id, part.held_digests[j])
            else:
                self.secrets.update(part.held_secrets[j])
                rejected = Rejected(
                    C.DISPOSITION_QUARANTINED,
                    (C.R_SECRET_DETECTED,),
                    None,
                    kind,
                    None,
                    evidence_id,
                )
            tally.records_in += 1
            tally.leave_out(rejected.disposition, rejected.reasons)
            rows.append((part.held_seq[j], _quarantine_row(rejected, relpath, line, size)))
        rows.sort(key=lambda item: item[0])
        data = b"".join(
            row if isinstance(row, bytes) else orjson.dumps(row) + b"\n" for _, row in rows
        )
        return data, len(rows)

    def read_imported(self, batch: ImportBatch) -> None:
        """Account for one import source exactly like source lines: every object is validated
        as evidence format v1, bucketed by its own day, deduplicated, and kept with provenance
        (the original file and record number) or left out with reasons; every file or record
        the importer could not use is left out with its reason and a message saying why."""
        name = f"import:{batch.spec.name}"
        scanner = _Scanner(SourceFile(Path(), name, Path()), self.days, self.settings)
        seq = 0
        for failure in batch.failures:
            rejected = Rejected(failure.disposition, (failure.reason,), failure.day)
            scanner.leave(failure.day, rejected, (seq, None, None), failure.path, failure.message)
            seq += 1
            if failure.disposition == C.DISPOSITION_SKIPPED:
                self.warnings.append(failure.message)
        self.warnings.extend(batch.warnings)
        settings = self.settings
        importer = orjson.dumps(batch.spec.kind)
        for item in batch.objects:
            origin = item.origin
            parsed = validate_object(item.obj, settings)
            if isinstance(parsed, Record):
                where = (orjson.dumps(origin.path), orjson.dumps(origin.sha256))
                fields = b',"importer":%b,"source_record":%b' % (
                    importer,
                    orjson.dumps(origin.record),
                )
                scanner.keep_imported(
                    parsed, seq, _Imported(origin.line, origin.path, where, fields)
                )
            else:
                scanner.leave(parsed.day, parsed, (seq, origin.line, None), origin.path)
            seq += 1
        self.apply(FileScan(name, scanner.take()))
        self.inputs.extend(batch.files)
        self.imports.append(batch.summary())

    def finish(self) -> StageResult:
        """Write every bucket (empty files for asked-for days without data) and account."""
        if self.days is not None:
            for day in sorted(self.days):
                self._bucket(day)
        self._bucket(None)
        outputs: list[WrittenFile] = []
        total = Tally()
        per_day: dict[str, dict[str, int]] = {}
        for day in sorted(self.buckets, key=lambda d: (d is not None, d)):
            bucket = self.buckets[day]
            for writer in (bucket.records, bucket.index, bucket.quarantine):
                if writer is not None:
                    outputs.append(writer.commit())
            total.merge(bucket.tally)
            per_day[C.UNDATED_BUCKET if day is None else day.isoformat()] = {
                "records_in": bucket.tally.records_in,
                "records_out": bucket.tally.records_out,
                "quarantined": bucket.tally.quarantined,
                "skipped": bucket.tally.skipped,
            }
        self.seen.close()
        result = StageResult(C.STAGE_COLLECT, self.inputs, outputs, total)
        result.warnings.extend(self.warnings)
        if self.imports:
            result.extra["imports"] = self.imports
        result.extra["rows"] = total.records_out
        result.extra["secrets"] = dict(sorted(self.secrets.items()))
        result.errors.extend(conservation_errors(total))
        result.extra["per_partition"] = per_day
        # the exports trust this run's "no secret here" verdicts only under the same rules
        result.extra["secret_rules"] = C.SECRET_RULES_VERSION
        if self.days is not None:
            result.partitions = sorted(day.isoformat() for day in self.days)
        return result

    def abort(self) -> None:
        self.seen.close()
        for bucket in self.buckets.values():
            for writer in (bucket.records, bucket.index, bucket.quarantine):
                if writer is not None:
                    writer.abort()


def _index_block(index: bytes | bytearray, offsets: list[int], base: int) -> bytes:
    """Index rows with their offsets filled in (each NUL byte of ``index`` stands for one),
    moved by ``base``, where the records block starts in the day's file; assembled by slices
    and joins rather than row by row."""
    pieces = index.split(b"\x00")
    numbers = " ".join(map(str, np.add(offsets, base).tolist())).encode().split(b" ")
    assert len(pieces) == len(numbers) + 1
    joined: list[bytes | bytearray] = [b""] * (2 * len(numbers) + 1)
    joined[0::2] = pieces
    joined[1::2] = numbers
    return b"".join(joined)


@dataclass(frozen=True)
class CollectOptions:
    """What a collect run reads besides the source files, and how it reads them.

    ``imported`` batches are read after the source files. With ``workers`` > 1 and at least
    ``pool_min_bytes`` in files no larger than ``whole_file_bytes``, those files are scanned in
    worker processes (larger ones are streamed); ``resident_days`` day buckets keep their
    written ids in memory. The bytes written are the same with any of the last four.
    """

    imported: Iterable[ImportBatch] = ()
    workers: int = 1
    whole_file_bytes: int = WHOLE_FILE_BYTES
    pool_min_bytes: int = POOL_MIN_BYTES
    resident_days: int = RESIDENT_DAYS


def _scans(
    sources: list[SourceFile],
    days: frozenset[date] | None,
    settings: ParseSettings,
    options: CollectOptions,
    out_root: Path,
) -> Iterator[FileScan]:
    """Every source file's scans in path order; whole files go to ``options.workers`` processes.

    At most ``workers`` files are scanned ahead of the writer, which bounds memory; they hand
    their records rows over through spill files in the output's scratch folder.
    """
    workers, whole_file_bytes = options.workers, options.whole_file_bytes
    sizes = [_size(source) for source in sources]
    whole = [
        source.problem is None and size <= whole_file_bytes
        for source, size in zip(sources, sizes, strict=True)
    ]
    pooled_bytes = sum(size for size, w in zip(sizes, whole, strict=True) if w)
    if workers <= 1 or pooled_bytes < options.pool_min_bytes or sum(whole) < 2:
        for source in sources:
            yield from scan_file(source, days, settings, whole_file_bytes)
        return
    scratch = _scratch(out_root)
    try:
        with process_pool(workers) as pool:
            ahead: deque[tuple[SourceFile, Path, Future[list[FileScan]] | None]] = deque()
            queue = iter(enumerate(zip(sources, whole, strict=True)))

            def top_up() -> None:
                while sum(future is not None for _, _, future in ahead) < workers:
                    item = next(queue, None)
                    if item is None:
                        return
                    number, (source, is_whole) = item
                    spill = scratch / f"{number}.records"
                    future = (
                        pool.submit(
                            scan_whole_file, source, days, settings, whole_file_bytes, spill
                        )
                        if is_whole
                        else None
                    )
                    ahead.append((source, spill, future))

            top_up()
            while ahead:
                source, spill, future = ahead.popleft()
                if future is None:
                    top_up()
                    yield from scan_file(source, days, settings, whole_file_bytes)
                else:
                    scans = future.result()
                    top_up()
                    _unspill(scans, spill)
                    yield from scans
                    del scans
    finally:
        _remove_scratch(scratch)


def _size(source: SourceFile) -> int:
    try:
        return source.path.stat().st_size
    except OSError:
        return 0


def collect(
    sources: list[SourceFile],
    out_root: Path,
    days: Iterable[date] | None,
    settings: ParseSettings,
    options: CollectOptions = CollectOptions(),
) -> StageResult:
    """Read ``sources`` and ``options.imported`` batches; write the buckets of ``days`` (all
    when None), reading as ``options`` say (the bytes written are the same either way)."""
    collector = Collector(out_root, days, settings, options.resident_days)
    scans = _scans(sources, collector.days, settings, options, out_root)
    tick = progress.current()
    tick.begin(len(sources), "files")
    try:
        with _no_gc():
            for scan in scans:
                collector.apply(scan)
                if scan.info is not None:  # a file's last scan (a large one comes in stretches)
                    tick.advance(detail=scan.relpath)
        for batch in options.imported:
            collector.read_imported(batch)
        return collector.finish()
    except BaseException:
        scans.close()
        collector.abort()
        raise


def dated_beyond(source: Path | None, days: Iterable[date]) -> bool:
    """Whether the source directory holds lines dated outside ``days`` (a byte scan: only
    called when a collect kept nothing, to tell a day without data from a useless source)."""
    if source is None:
        return False
    span = source_date_range(source)
    if span is None:
        return False
    asked = set(days)
    return span[0] not in asked or span[1] not in asked
