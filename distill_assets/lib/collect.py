"""Stage ``collect``: source JSONL files → the evidence index, one folder per day.

Every source line is attributed to exactly one day bucket: its own ``created_at`` day when that
can be read, otherwise the day of the nearest readable line before it in the same file (or after
it, when none comes before); lines of a file with no readable day at all, and whole-file problems,
go to the ``undated`` bucket, which every collect run reports. A run handles the buckets of the
days it was asked for, so a single run over a date range and one run per day write the same bytes.

Per day it writes ``records.jsonl`` (each usable record with provenance), ``index.jsonl`` (a
compact row per record with the fields scoring needs and the record's byte offset) and
``quarantine.jsonl`` (every line left out, with reason codes, never the line's content).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib import layout, progress
from distill_assets.lib.accounting import StageResult, Tally, conservation_errors
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


@dataclass
class _Bucket:
    """Writers and counters for one day (or the undated bucket)."""

    records: AtomicJsonlWriter | None
    index: AtomicJsonlWriter | None
    quarantine: AtomicJsonlWriter
    tally: Tally
    seen: set[bytes]


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
        row["instruction_hash"] = text_hash(obj["instruction"])
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


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes, int]]:
    """(line number, stripped line, raw length) for each line of a file."""
    with open(path, "rb", buffering=1 << 20) as fh:
        for number, raw in enumerate(fh, start=1):
            yield number, strip_line(raw, number == 1), len(raw)


@dataclass
class _Pending:
    line: int
    rejected: Rejected
    size: int


class Collector:
    """Runs the collect stage over a set of source files for a set of days."""

    def __init__(
        self,
        out_root: Path,
        days: Iterable[date] | None,
        settings: ParseSettings,
    ) -> None:
        self.out_root = out_root
        self.days = None if days is None else set(days)
        self.settings = settings
        self.buckets: dict[date | None, _Bucket] = {}
        self.inputs: list[WrittenFile] = []
        self.warnings: list[str] = []
        self.imports: list[dict[str, Any]] = []
        self.secrets: Counter[str] = Counter()

    def _bucket(self, day: date | None) -> _Bucket | None:
        if day is not None and self.days is not None and day not in self.days:
            return None
        bucket = self.buckets.get(day)
        if bucket is None:
            quarantine = AtomicJsonlWriter(self.out_root, layout.evidence_quarantine(day))
            records = index = None
            if day is not None:
                records = AtomicJsonlWriter(self.out_root, layout.evidence_records(day))
                index = AtomicJsonlWriter(self.out_root, layout.evidence_index(day))
            bucket = _Bucket(records, index, quarantine, Tally(), set())
            self.buckets[day] = bucket
        return bucket

    def _leave_out(
        self,
        day: date | None,
        rejected: Rejected,
        source: str,
        line: int | None,
        size: int | None,
        detail: str | None = None,
    ) -> None:
        bucket = self._bucket(day)
        if bucket is None:
            return
        bucket.tally.records_in += 1
        bucket.tally.leave_out(rejected.disposition, rejected.reasons)
        bucket.quarantine.write_row(_quarantine_row(rejected, source, line, size, detail))

    def _keep(
        self,
        record: Record,
        source_path: str,
        line: int | None,
        sha: str,
        size: int | None,
        imported: tuple[str, int] | None = None,
    ) -> None:
        bucket = self._bucket(record.day)
        if bucket is None:
            return
        bucket.tally.records_in += 1
        digest = bytes.fromhex(record.evidence_id)
        if digest in bucket.seen:
            duplicate = Rejected(
                C.DISPOSITION_SKIPPED,
                (C.R_DUPLICATE,),
                record.day,
                record.kind,
                record.run_id,
                record.evidence_id,
            )
            bucket.tally.leave_out(duplicate.disposition, duplicate.reasons)
            bucket.quarantine.write_row(_quarantine_row(duplicate, source_path, line, size))
            return
        bucket.seen.add(digest)
        # the evidence store never holds a secret: it keeps the record with placeholders
        scrubbed, findings = scrub_record(record)
        self.secrets.update(finding.type for finding in findings)
        if scrubbed is None:
            rejected = Rejected(
                C.DISPOSITION_QUARANTINED,
                (C.R_SECRET_DETECTED,),
                record.day,
                record.kind,
                None,
                record.evidence_id,
            )
            bucket.tally.leave_out(rejected.disposition, rejected.reasons)
            bucket.quarantine.write_row(_quarantine_row(rejected, source_path, line, size))
            return
        record = scrubbed
        assert bucket.records is not None and bucket.index is not None
        offset = bucket.records.position
        bucket.records.write_raw(_records_line(record, source_path, line, sha, imported, findings))
        bucket.index.write_row(index_row(record, offset))
        bucket.tally.records_out += 1
        bucket.tally.accepted += 1

    def read_file(self, source: SourceFile) -> None:
        if source.problem is not None:
            self._leave_out(
                None, Rejected(C.DISPOSITION_SKIPPED, (source.problem,)), source.relpath, None, None
            )
            return
        try:
            size = source.path.stat().st_size
            sha = sha256_file(source.path)
        except OSError:
            self._leave_out(
                None,
                Rejected(C.DISPOSITION_SKIPPED, (C.R_UNREADABLE_FILE,)),
                source.relpath,
                None,
                None,
            )
            return
        lines = 0
        pending: list[_Pending] = []
        last_day: date | None = None
        settings = self.settings
        try:
            for number, raw, raw_len in _iter_lines(source.path):
                lines = number
                parsed = parse_line(raw, settings)
                day = parsed.day
                if day is None:
                    if last_day is None:
                        assert isinstance(parsed, Rejected)
                        pending.append(_Pending(number, parsed, raw_len))
                    else:
                        assert isinstance(parsed, Rejected)
                        self._leave_out(last_day, parsed, source.relpath, number, raw_len)
                    continue
                if last_day is None and pending:
                    for item in pending:
                        self._leave_out(day, item.rejected, source.relpath, item.line, item.size)
                    pending.clear()
                last_day = day
                if isinstance(parsed, Record):
                    self._keep(parsed, source.relpath, number, sha, raw_len)
                else:
                    self._leave_out(day, parsed, source.relpath, number, raw_len)
        except OSError:
            self._leave_out(
                None,
                Rejected(C.DISPOSITION_SKIPPED, (C.R_UNREADABLE_FILE,)),
                source.relpath,
                None,
                None,
            )
        for item in pending:
            self._leave_out(None, item.rejected, source.relpath, item.line, item.size)
        if size == 0:
            self._leave_out(
                None, Rejected(C.DISPOSITION_SKIPPED, (C.R_EMPTY_FILE,)), source.relpath, None, 0
            )
        self.inputs.append(WrittenFile(source.relpath, sha, size, lines))

    def read_imported(self, batch: ImportBatch) -> None:
        """Account for one import source exactly like source lines: every object is validated
        as evidence format v1, bucketed by its own day, deduplicated, and kept with provenance
        (the original file and record number) or left out with reasons; every file or record
        the importer could not use is left out with its reason and a message saying why."""
        for failure in batch.failures:
            rejected = Rejected(failure.disposition, (failure.reason,), failure.day)
            self._leave_out(failure.day, rejected, failure.path, None, None, failure.message)
            if failure.disposition == C.DISPOSITION_SKIPPED:
                self.warnings.append(failure.message)
        self.warnings.extend(batch.warnings)
        settings = self.settings
        for item in batch.objects:
            origin = item.origin
            parsed = validate_object(item.obj, settings)
            if isinstance(parsed, Record):
                imported = (batch.spec.kind, origin.record)
                self._keep(parsed, origin.path, origin.line, origin.sha256, None, imported)
            else:
                self._leave_out(parsed.day, parsed, origin.path, origin.line, None)
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
        for bucket in self.buckets.values():
            for writer in (bucket.records, bucket.index, bucket.quarantine):
                if writer is not None:
                    writer.abort()


def collect(
    sources: list[SourceFile],
    out_root: Path,
    days: Iterable[date] | None,
    settings: ParseSettings,
    imported: Iterable[ImportBatch] = (),
) -> StageResult:
    """Read ``sources`` and ``imported`` batches; write the buckets of ``days`` (all when None)."""
    collector = Collector(out_root, days, settings)
    tick = progress.current()
    tick.begin(len(sources), "files")
    try:
        for source in sources:
            collector.read_file(source)
            tick.advance(detail=source.relpath)
        for batch in imported:
            collector.read_imported(batch)
        return collector.finish()
    except BaseException:
        collector.abort()
        raise
