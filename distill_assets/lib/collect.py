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
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
import tempfile
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib import layout, progress
from distill_assets.lib.accounting import StageResult, Tally, conservation_errors
from distill_assets.lib.digests import DigestTable
from distill_assets.lib.evidence import (
    ParseSettings,
    Record,
    Rejected,
    parse_line,
    strip_line,
    text_hash,
    validate_object,
)
from distill_assets.lib.hygiene.secrets import Finding, safe_identifier, scrub_record
from distill_assets.lib.io import AtomicJsonlWriter, WrittenFile, sha256_file
from distill_assets.lib.parallel import process_pool

if TYPE_CHECKING:
    from distill_assets.lib.importers.base import ImportBatch


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


# the runs of a task repeat its instruction: a few recent ones are remembered with their hash
_instruction_hash = functools.lru_cache(maxsize=256)(text_hash)


def index_row(record: Record, offset: int) -> dict[str, Any]:
    """The compact row scoring reads instead of the full record; every kind has every field."""
    obj = record.obj
    row: dict[str, Any] = dict.fromkeys(INDEX_FIELDS)
    row["evidence_id"] = record.evidence_id
    row["kind"] = record.kind
    row["run_id"] = record.run_id
    row["created_at"] = record.created_at
    row["offset"] = offset
    if record.kind == C.KIND_RUN:
        meta = obj.get("meta")
        row["task_id"] = obj["task_id"]
        row["category"] = obj.get("category")
        row["agent"] = obj.get("agent")
        row["instruction_hash"] = _instruction_hash(obj["instruction"])
        row["response_hash"] = text_hash(obj["response"])
        row["response_empty"] = not obj["response"].strip()
        row["has_messages"] = bool(obj.get("messages"))
        row["sft_eligible"] = not (isinstance(meta, dict) and meta.get("sft_eligible") is False)
    elif record.kind == C.KIND_REVIEW:
        row["verdict"] = obj["verdict"]
        row["score"] = obj.get("score")
    else:
        row["outcome"] = obj["outcome"]
        row["reward"] = obj.get("reward")
        row["signals"] = _partial_signals(obj)
    return row


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


def _records_line(
    record: Record,
    source_path: str,
    line: int | None,
    sha: str,
    imported: tuple[str, int] | None = None,
    findings: list[Finding] | None = None,
) -> bytes:
    head: dict[str, Any] = {
        "evidence_id": record.evidence_id,
        "kind": record.kind,
        "run_id": record.run_id,
        "task_id": record.obj.get("task_id") if record.kind == C.KIND_RUN else None,
        "created_at": record.created_at,
        "source_path": source_path,
        "line": line,
        "source_sha256": sha,
    }
    if imported is not None:
        # an imported object's provenance: the importer, and the record number in source_path
        head["importer"], head["source_record"] = imported
    if findings:
        # what was redacted in this record (type, field, preview; never the secret)
        head["secrets"] = [finding.as_dict() for finding in findings]
    return orjson.dumps(head)[:-1] + b',"record":' + record.canonical + b"}\n"


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
_OFFSET_KEY = b',"offset":0,'
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


@dataclass
class DayPart:
    """What a stretch of one source file contributes to one day bucket, in line order.

    Kept records and left-out lines carry sequence numbers, so a record that turns out to
    duplicate one from an earlier file can be put back among the left-out lines in order. A
    record whose identifier holds a secret is ``held``: quarantined (``secret_detected``) unless
    it duplicates a record of an earlier file, which only the writer knows.
    """

    records: list[bytes] = field(default_factory=list)  # joined into ``data`` when handed over
    data: bytes = b""  # the records lines, one after the other
    offsets: list[int] = field(default_factory=list)  # of each record within ``data``
    index_heads: list[bytes] = field(default_factory=list)  # index line up to its offset
    index_tails: list[bytes] = field(default_factory=list)  # index line after its offset
    digests: list[bytes] = field(default_factory=list)
    keep_seq: list[int] = field(default_factory=list)
    # (kind, run_id, line, size, source path) of each kept record
    keep_meta: list[tuple[str, str, int | None, int | None, str]] = field(default_factory=list)
    # secret types found in a kept record (by its position among the kept ones)
    keep_secrets: dict[int, tuple[str, ...]] = field(default_factory=dict)
    held_digests: list[bytes] = field(default_factory=list)
    held_seq: list[int] = field(default_factory=list)
    # (kind, run_id, line, size, source path) of each held record
    held_meta: list[tuple[str, str, int | None, int | None, str]] = field(default_factory=list)
    held_secrets: list[tuple[str, ...]] = field(default_factory=list)
    quarantine: list[bytes] = field(default_factory=list)
    quarantine_seq: list[int] = field(default_factory=list)
    size: int = 0
    seq: int = 0
    tally: Tally = field(default_factory=Tally)


@dataclass
class FileScan:
    """Day parts of (a stretch of) one source file; ``info`` is set once the file is done."""

    relpath: str
    parts: dict[date | None, DayPart]
    info: WrittenFile | None = None


class _Scanner:
    """Turns the lines of one source file into day parts; touches no output file."""

    def __init__(
        self,
        source: SourceFile,
        sha: str,
        days: frozenset[date] | None,
        settings: ParseSettings,
    ) -> None:
        self.source = source
        self.sha = sha
        self.days = days
        self.settings = settings
        self.parts: dict[date | None, DayPart] = {}
        self.seen: dict[date, set[bytes]] = {}
        self.pending: list[tuple[int, Rejected, int]] = []
        self.last_day: date | None = None
        self.lines = 0
        self.scanned = 0

    def _part(self, day: date | None) -> DayPart | None:
        if day is not None and self.days is not None and day not in self.days:
            return None
        part = self.parts.get(day)
        if part is None:
            part = self.parts[day] = DayPart()
        return part

    def leave(
        self,
        day: date | None,
        rejected: Rejected,
        line: int | None,
        size: int | None,
        relpath: str | None = None,
        detail: str | None = None,
    ) -> None:
        part = self._part(day)
        if part is None:
            return
        part.tally.records_in += 1
        part.tally.leave_out(rejected.disposition, rejected.reasons)
        row = _quarantine_row(rejected, relpath or self.source.relpath, line, size, detail)
        part.quarantine.append(orjson.dumps(row) + b"\n")
        part.quarantine_seq.append(part.seq)
        part.seq += 1

    def keep(
        self,
        record: Record,
        line: int | None,
        size: int | None,
        relpath: str | None = None,
        sha: str | None = None,
        imported: tuple[str, int] | None = None,
    ) -> None:
        day = record.day
        part = self._part(day)
        if part is None:
            return
        relpath = relpath or self.source.relpath
        digest = bytes.fromhex(record.evidence_id)
        seen = self.seen.get(day)
        if seen is None:
            seen = self.seen[day] = set()
        if digest in seen:
            self.leave(day, _duplicate(record), line, size, relpath)
            return
        seen.add(digest)
        # the evidence store never holds a secret: it keeps the record with placeholders
        scrubbed, findings = scrub_record(record)
        if scrubbed is None:
            part.held_digests.append(digest)
            part.held_seq.append(part.seq)
            part.held_meta.append((record.kind, record.run_id, line, size, relpath))
            part.held_secrets.append(tuple(finding.type for finding in findings))
            part.seq += 1
            return
        if findings:
            part.keep_secrets[len(part.digests)] = tuple(finding.type for finding in findings)
        record = scrubbed
        tally = part.tally
        tally.records_in += 1
        tally.records_out += 1
        tally.accepted += 1
        rec = _records_line(record, relpath, line, sha or self.sha, imported, findings)
        part.offsets.append(part.size)
        part.size += len(rec)
        part.records.append(rec)
        index_line = orjson.dumps(index_row(record, 0))
        cut = index_line.index(_OFFSET_KEY)
        part.index_heads.append(index_line[:cut])
        part.index_tails.append(index_line[cut + len(_OFFSET_KEY) :] + b"\n")
        part.digests.append(digest)
        part.keep_seq.append(part.seq)
        part.keep_meta.append((record.kind, record.run_id, line, size, relpath))
        part.seq += 1

    def scan(self, number: int, raw: bytes) -> None:
        """One raw line of the file (line end included), numbered from 1."""
        self.lines = number
        size = len(raw)
        self.scanned += size
        parsed = parse_line(strip_line(raw, number == 1), self.settings)
        day = parsed.day
        if day is not None and type(parsed) is Rejected and _outside(parsed):
            day = None
        if day is None:
            assert isinstance(parsed, Rejected)
            if self.last_day is None:
                self.pending.append((number, parsed, size))
            else:
                self.leave(self.last_day, parsed, number, size)
            return
        if self.last_day is None and self.pending:
            for line, rejected, pending_size in self.pending:
                self.leave(day, rejected, line, pending_size)
            self.pending.clear()
        self.last_day = day
        if type(parsed) is Record:
            self.keep(parsed, number, size)
        else:
            self.leave(day, parsed, number, size)

    def take(self) -> dict[date | None, DayPart]:
        """The parts scanned so far; scanning goes on into fresh ones."""
        parts, self.parts = self.parts, {}
        for part in parts.values():
            # one block pickles and writes faster than many small lines
            part.data, part.records = b"".join(part.records), []
        self.scanned = 0
        return parts

    def unreadable(self) -> None:
        self.leave(None, Rejected(C.DISPOSITION_SKIPPED, (C.R_UNREADABLE_FILE,)), None, None)

    def finish(self, size: int) -> None:
        """Lines that never found a day, and an empty file, go to the undated bucket."""
        for line, rejected, pending_size in self.pending:
            self.leave(None, rejected, line, pending_size)
        self.pending.clear()
        if size == 0:
            self.leave(None, Rejected(C.DISPOSITION_SKIPPED, (C.R_EMPTY_FILE,)), None, 0)


def _duplicate_of(kind: str, run_id: str, digest: bytes) -> Rejected:
    return Rejected(C.DISPOSITION_SKIPPED, (C.R_DUPLICATE,), None, kind, run_id, digest.hex())


def _duplicate(record: Record) -> Rejected:
    return Rejected(
        C.DISPOSITION_SKIPPED,
        (C.R_DUPLICATE,),
        record.day,
        record.kind,
        record.run_id,
        record.evidence_id,
    )


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
    scanner = _Scanner(source, "", days, settings)
    if source.problem is not None:
        scanner.leave(None, Rejected(C.DISPOSITION_SKIPPED, (source.problem,)), None, None)
        yield FileScan(source.relpath, scanner.take())
        return
    try:
        size = source.path.stat().st_size
        if size <= whole_file_bytes:
            data = source.path.read_bytes()
            size = len(data)
            scanner.sha = hashlib.sha256(data).hexdigest()
        else:
            data = None
            scanner.sha = sha256_file(source.path)
    except OSError:
        scanner.unreadable()
        yield FileScan(source.relpath, scanner.take())
        return
    scan = scanner.scan
    flush_bytes = min(_STREAM_FLUSH_BYTES, max(1, whole_file_bytes))
    try:
        if data is not None:
            for number, raw in enumerate(io.BytesIO(data), start=1):
                scan(number, raw)
            del data
        else:
            with open(source.path, "rb", buffering=1 << 20) as fh:
                for number, raw in enumerate(fh, start=1):
                    scan(number, raw)
                    if scanner.scanned >= flush_bytes:
                        yield FileScan(source.relpath, scanner.take())
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
) -> list[FileScan]:
    """``scan_file`` collected into a list: the unit of work of a worker process."""
    return list(scan_file(source, days, settings, whole_file_bytes))


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
            root = self.out_root / C.SCRATCH_DIR
            root.mkdir(parents=True, exist_ok=True)
            self.scratch = Path(tempfile.mkdtemp(prefix="collect-", dir=root))
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
            shutil.rmtree(self.scratch, ignore_errors=True)
            try:
                self.scratch.parent.rmdir()  # unless another stage is using it
            except OSError:
                pass
            self.scratch = None


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
        count = len(part.digests)
        found = seen.find(part.digests + part.held_digests)
        dup_at = [i for i, at in enumerate(found[:count]) if at >= 0]
        held_dup = [at >= 0 for at in found[count:]]
        for i, types in part.keep_secrets.items():
            if found[i] < 0:
                self.secrets.update(types)
        if not dup_at and not part.held_digests:
            kept: list[int] | range = range(count)
            records_data = part.data
            offsets = part.offsets
            quarantine_data = b"".join(part.quarantine)
            quarantine_rows = len(part.quarantine)
            bucket.tally.merge(part.tally)
        else:
            # records already seen in an earlier file: skipped as duplicates, in line order
            dups = set(dup_at)
            ends = [*part.offsets[1:], len(part.data)]
            kept = [i for i in range(count) if i not in dups]
            lines = [part.data[part.offsets[i] : ends[i]] for i in kept]
            records_data = b"".join(lines)
            offsets, position = [], 0
            for line in lines:
                offsets.append(position)
                position += len(line)
            rows: list[tuple[int, bytes | dict[str, Any]]] = list(
                zip(part.quarantine_seq, part.quarantine, strict=True)
            )
            tally = part.tally
            for i in dup_at:
                kind, run_id, line, size, relpath = part.keep_meta[i]
                rejected = _duplicate_of(kind, run_id, part.digests[i])
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
            quarantine_data = b"".join(
                row if isinstance(row, bytes) else orjson.dumps(row) + b"\n" for _, row in rows
            )
            quarantine_rows = len(rows)
            bucket.tally.merge(tally)
            seen.add(
                [
                    d
                    for d, duplicate in zip(part.held_digests, held_dup, strict=True)
                    if not duplicate
                ]
            )
        if kept:
            assert bucket.records is not None and bucket.index is not None
            base = bucket.records.position
            heads, tails = part.index_heads, part.index_tails
            index_data = b"".join(
                [
                    b'%b,"offset":%d,%b' % (heads[i], base + offset, tails[i])
                    for i, offset in zip(kept, offsets, strict=True)
                ]
            )
            bucket.records.write_block(records_data, len(kept))
            bucket.index.write_block(index_data, len(kept))
            seen.add([part.digests[i] for i in kept])
        if quarantine_rows:
            bucket.quarantine.write_block(quarantine_data, quarantine_rows)

    def read_imported(self, batch: ImportBatch) -> None:
        """Account for one import source exactly like source lines: every object is validated
        as evidence format v1, bucketed by its own day, deduplicated, and kept with provenance
        (the original file and record number) or left out with reasons; every file or record
        the importer could not use is left out with its reason and a message saying why."""
        name = f"import:{batch.spec.name}"
        scanner = _Scanner(SourceFile(Path(), name, Path()), "", self.days, self.settings)
        for failure in batch.failures:
            rejected = Rejected(failure.disposition, (failure.reason,), failure.day)
            scanner.leave(failure.day, rejected, None, None, failure.path, failure.message)
            if failure.disposition == C.DISPOSITION_SKIPPED:
                self.warnings.append(failure.message)
        self.warnings.extend(batch.warnings)
        settings = self.settings
        for item in batch.objects:
            origin = item.origin
            parsed = validate_object(item.obj, settings)
            if isinstance(parsed, Record):
                imported = (batch.spec.kind, origin.record)
                scanner.keep(parsed, origin.line, None, origin.path, origin.sha256, imported)
            else:
                scanner.leave(parsed.day, parsed, origin.line, None, origin.path)
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
        if self.days is not None:
            result.partitions = sorted(day.isoformat() for day in self.days)
        return result

    def abort(self) -> None:
        self.seen.close()
        for bucket in self.buckets.values():
            for writer in (bucket.records, bucket.index, bucket.quarantine):
                if writer is not None:
                    writer.abort()


def _scans(
    sources: list[SourceFile],
    days: frozenset[date] | None,
    settings: ParseSettings,
    workers: int,
    whole_file_bytes: int,
    pool_min_bytes: int,
) -> Iterator[FileScan]:
    """Every source file's scans in path order; whole files go to ``workers`` processes.

    At most ``workers`` files are scanned ahead of the writer, which bounds memory.
    """
    sizes = [_size(source) for source in sources]
    whole = [
        source.problem is None and size <= whole_file_bytes
        for source, size in zip(sources, sizes, strict=True)
    ]
    pooled_bytes = sum(size for size, w in zip(sizes, whole, strict=True) if w)
    if workers <= 1 or pooled_bytes < pool_min_bytes or sum(whole) < 2:
        for source in sources:
            yield from scan_file(source, days, settings, whole_file_bytes)
        return
    with process_pool(workers) as pool:
        ahead: deque[tuple[SourceFile, Future[list[FileScan]] | None]] = deque()
        queue = iter(zip(sources, whole, strict=True))

        def top_up() -> None:
            while sum(future is not None for _, future in ahead) < workers:
                item = next(queue, None)
                if item is None:
                    return
                source, is_whole = item
                future = (
                    pool.submit(scan_whole_file, source, days, settings, whole_file_bytes)
                    if is_whole
                    else None
                )
                ahead.append((source, future))

        top_up()
        while ahead:
            source, future = ahead.popleft()
            if future is None:
                top_up()
                yield from scan_file(source, days, settings, whole_file_bytes)
            else:
                scans = future.result()
                top_up()
                yield from scans
                del scans


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
    imported: Iterable[ImportBatch] = (),
    workers: int = 1,
    whole_file_bytes: int = WHOLE_FILE_BYTES,
    pool_min_bytes: int = POOL_MIN_BYTES,
    resident_days: int = RESIDENT_DAYS,
) -> StageResult:
    """Read ``sources`` and ``imported`` batches; write the buckets of ``days`` (all when None).

    With ``workers`` > 1 and at least ``pool_min_bytes`` in files no larger than
    ``whole_file_bytes``, those files are scanned in worker processes; the bytes written are
    the same either way, as they are with any ``resident_days`` (day buckets whose written ids
    stay in memory).
    """
    collector = Collector(out_root, days, settings, resident_days)
    scans = _scans(sources, collector.days, settings, workers, whole_file_bytes, pool_min_bytes)
    tick = progress.current()
    tick.begin(len(sources), "files")
    try:
        for scan in scans:
            collector.apply(scan)
            if scan.info is not None:  # the file's last scan (a large one comes in stretches)
                tick.advance(detail=scan.relpath)
        for batch in imported:
            collector.read_imported(batch)
        return collector.finish()
    except BaseException:
        scans.close()
        collector.abort()
        raise
