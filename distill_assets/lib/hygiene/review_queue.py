"""Stage ``export-review``: runs scored needs_human_review → ``exports/review/queue.jsonl``.

One row per flagged run, in task order, with the run's texts, the reviews and outcomes that
caused the flag, its reason codes and the question a reviewer answers (docs/review.md maps the
row onto Argilla records and Langfuse annotation queues). Texts are always scrubbed: a reviewer
must see the run, so secrets are replaced by placeholders here rather than quarantined. Verdicts
come back as ``review`` evidence (``distill review import``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.runs import scored_files
from distill_assets.lib.hygiene.secrets import scrub
from distill_assets.lib.infra import layout
from distill_assets.lib.infra.io import AtomicJsonlWriter, WrittenFile
from distill_assets.lib.records.accounting import StageResult, Tally, conservation_errors

QUESTION = {"name": "verdict", "options": list(C.VERDICTS)}
# where an index row's evidence_id sits: {"evidence_id":"<64 hex>",...
_ID_SLICE = slice(16, 80)


@dataclass(frozen=True, slots=True)
class Flagged:
    """A scored run that needs a human, without its texts."""

    run_id: str
    task_id: str
    score: float
    reasons: tuple[str, ...]
    evidence_ids: tuple[str, ...]
    created_at: str
    agent: str | None
    category: str | None
    run_file: str
    run_offset: int


def _flagged(out_root: Path) -> tuple[list[Flagged], list[WrittenFile]]:
    found: list[Flagged] = []
    inputs: list[WrittenFile] = []
    for relpath in scored_files(out_root):
        count = 0
        with open(out_root / relpath, "rb") as fh:
            for raw in fh:
                count += 1
                row = orjson.loads(raw)
                if row["quality_score"] != C.QUALITY_REVIEW:
                    continue
                found.append(
                    Flagged(
                        row["run_id"],
                        row["task_id"],
                        row["score"],
                        tuple(row["reasons"]),
                        tuple(row["evidence_ids"]),
                        row["created_at"],
                        row.get("agent"),
                        row.get("category"),
                        row["run_file"],
                        row["run_offset"],
                    )
                )
        inputs.append(WrittenFile(relpath, "", 0, count))
    found.sort(key=lambda f: (f.task_id, f.created_at, f.run_id))
    return found, inputs


def _locate(out_root: Path, wanted: set[str]) -> tuple[dict[str, tuple[str, int]], list[str]]:
    """evidence_id -> (records file, offset) for the wanted ids, from the index files; only
    lines whose id is wanted are parsed."""
    where: dict[str, tuple[str, int]] = {}
    read: list[str] = []
    if not wanted:
        return where, read
    for day in layout.days_on_disk(out_root, C.EVIDENCE_DIR, "index.jsonl"):
        relpath = layout.evidence_index(day)
        read.append(relpath)
        with open(out_root / relpath, "rb") as fh:
            for raw in fh:
                if raw[_ID_SLICE].decode("ascii", "replace") in wanted:
                    row = orjson.loads(raw)
                    where[row["evidence_id"]] = (layout.evidence_records(day), row["offset"])
    return where, read


class _Records:
    """Reads evidence records by (file, offset), checking the evidence id."""

    def __init__(self, out_root: Path) -> None:
        self.out_root = out_root
        self.handles: dict[str, Any] = {}

    def get(self, relpath: str, offset: int, evidence_id: str) -> dict[str, Any] | None:
        handle = self.handles.get(relpath)
        if handle is None:
            try:
                handle = open(layout.inside(self.out_root, relpath), "rb")
            except (OSError, ValueError):
                return None
            self.handles[relpath] = handle
        try:
            handle.seek(offset)
            line = orjson.loads(handle.readline())
        except (OSError, orjson.JSONDecodeError):
            return None
        return line["record"] if line.get("evidence_id") == evidence_id else None

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def queue_row(flag: Flagged, record: dict[str, Any], evidence: list[dict[str, Any]]) -> dict:
    """The documented queue row (docs/review.md)."""
    return {
        "id": flag.run_id,
        "run_id": flag.run_id,
        "task_id": flag.task_id,
        "quality_score": C.QUALITY_REVIEW,
        "score": flag.score,
        "reasons": list(flag.reasons),
        "created_at": flag.created_at,
        "agent": flag.agent,
        "category": flag.category,
        "instruction": record.get("instruction"),
        "response": record.get("response"),
        "messages": record.get("messages"),
        "evidence": evidence,
        "question": QUESTION,
        "source": {
            "evidence_id": flag.evidence_ids[0],
            "run_file": flag.run_file,
            "run_offset": flag.run_offset,
        },
    }


def _missing_row(flag: Flagged) -> dict[str, Any]:
    return {
        "stage": C.STAGE_EXPORT_REVIEW,
        "disposition": C.DISPOSITION_QUARANTINED,
        "reasons": [C.R_MISSING_SOURCE_RUN_ID],
        "record_type": "run",
        "run_id": flag.run_id,
        "task_id": flag.task_id,
        "evidence_id": flag.evidence_ids[0],
        "quality_score": C.QUALITY_REVIEW,
    }


class ReviewExporter:
    """``export-review`` in the export pass: each task's runs to review, oldest first, with the
    records of their reviews and outcomes, found where the score stage said they are kept.

    Texts are always scrubbed, except a row made only of records collect scanned clean under
    the same rules (lib/datasets/texts.TextStore), which holds no secret by construction. Scored
    files
    from an older version carry no places: the exporter then builds the queue the old way,
    from the scored files and the evidence index (``_export_from_scored``)."""

    stage = C.STAGE_EXPORT_REVIEW

    def __init__(self, out_root: Path, write_root: Path, texts: Any) -> None:
        self.out_root = out_root
        self.write_root = write_root
        self.texts = texts
        self.tally = Tally()
        self.secrets: Counter[str] = Counter()
        self.queue = AtomicJsonlWriter(write_root, C.REVIEW_QUEUE_PATH)
        self.quarantine = AtomicJsonlWriter(write_root, C.quarantine_path(self.stage))
        self.files_read: set[str] = set()
        self.stale = False
        self.seconds = 0.0

    def _fetch(self, relpath: str, offset: int, evidence_id: str) -> Any:
        found = self.texts.fetch_line(relpath, offset, evidence_id, None)
        if self.texts.is_open(relpath):
            self.files_read.add(relpath)
        return found

    def task(self, task_id: str, runs: list[Any], repeated: frozenset[str]) -> None:
        if self.stale:
            return
        flagged = [key for key in runs if key.quality == C.QUALITY_REVIEW]
        if not flagged:
            return
        if any(key.review is None or key.review[3] is None for key in flagged):
            self.stale = True
            return
        flagged.sort(key=lambda key: (key.created_at, key.run_id))
        for key in flagged:
            agent, reasons, evidence_ids, places = key.review
            flag = Flagged(
                key.run_id,
                key.task_id,
                key.score,
                tuple(reasons),
                (key.evidence_id, *evidence_ids),
                key.created_at,
                agent,
                key.category,
                key.run_file,
                key.run_offset,
            )
            self.tally.records_in += 1
            found = self._fetch(key.run_file, key.run_offset, key.evidence_id)
            if found is None:
                self.tally.leave_out(C.DISPOSITION_QUARANTINED, [C.R_MISSING_SOURCE_RUN_ID])
                self.quarantine.write_row(_missing_row(flag))
                continue
            clean = found.clean
            evidence = []
            for evidence_id, (relpath, offset) in zip(evidence_ids, places, strict=True):
                item = self._fetch(relpath, offset, evidence_id)
                if item is not None:
                    clean = clean and item.clean
                    evidence.append({"evidence_id": evidence_id, **item.record})
            row = queue_row(flag, found.record, evidence)
            if not clean:
                row, findings = scrub(row)
                self.secrets.update(finding.type for finding in findings)
            self.queue.write_row(row)
            self.tally.records_out += 1
            self.tally.accepted += 1

    def part(self) -> dict[str, Any]:
        """What this queue did over a range of tasks in a worker process (see ``absorb``)."""
        queue, quarantine = self.queue.seal(), self.quarantine.seal()
        return {
            "tally": self.tally,
            "secrets": self.secrets,
            "queue": (queue.tmp, queue.written.record_count),
            "quarantine": (quarantine.tmp, quarantine.written.record_count),
            "files_read": self.files_read,
            "stale": self.stale,
            "seconds": self.seconds,
        }

    def absorb(self, part: dict[str, Any]) -> None:
        """Take over a worker's queue rows of the tasks before any this one has seen."""
        self.tally.merge(part["tally"])
        self.secrets.update(part["secrets"])
        for writer, (path, lines) in (
            (self.queue, part["queue"]),
            (self.quarantine, part["quarantine"]),
        ):
            writer.append_file(Path(path), lines)
        self.files_read |= part["files_read"]
        self.stale = self.stale or part["stale"]
        self.seconds += part["seconds"]

    def result(self, stream_inputs: list[WrittenFile]) -> StageResult:
        if self.stale:
            self.abort()
            return _export_from_scored(self.out_root, self.write_root)
        outputs = [self.queue.commit(), self.quarantine.commit()]
        read = stream_inputs + [WrittenFile(p, "", 0, 0) for p in sorted(self.files_read)]
        result = StageResult(self.stage, read, outputs, self.tally)
        result.extra["rows"] = self.queue.lines
        result.extra["secrets"] = dict(sorted(self.secrets.items()))
        result.errors.extend(conservation_errors(self.tally))
        return result

    def abort(self) -> None:
        self.queue.abort()
        self.quarantine.abort()


def export_review(out_root: Path, write_root: Path | None = None) -> StageResult:
    """Write the review queue and its quarantine under ``write_root`` (default ``out_root``).

    Records in = the runs scored needs_human_review; each is queued, or quarantined as
    ``missing_source_run_id`` when its record cannot be read.
    """
    from distill_assets.lib.datasets.export_pass import ExportPlan, run_exports

    plan = ExportPlan(write_root=write_root or out_root, review=True)
    return run_exports(out_root, plan)[C.STAGE_EXPORT_REVIEW]


def _export_from_scored(out_root: Path, write_root: Path | None = None) -> StageResult:
    """The queue built from the scored files and the evidence index (scored files written
    before the score stage recorded where each run's evidence is kept)."""
    root = write_root or out_root
    flagged, inputs = _flagged(out_root)
    wanted = {eid for flag in flagged for eid in flag.evidence_ids}
    where, index_files = _locate(out_root, wanted)
    tally = Tally()
    secrets: Counter[str] = Counter()
    queue = AtomicJsonlWriter(root, C.REVIEW_QUEUE_PATH)
    quarantine = AtomicJsonlWriter(root, C.quarantine_path(C.STAGE_EXPORT_REVIEW))
    records = _Records(out_root)
    try:
        for flag in flagged:
            tally.records_in += 1
            record = records.get(flag.run_file, flag.run_offset, flag.evidence_ids[0])
            if record is None:
                tally.leave_out(C.DISPOSITION_QUARANTINED, [C.R_MISSING_SOURCE_RUN_ID])
                quarantine.write_row(_missing_row(flag))
                continue
            evidence = []
            for evidence_id in flag.evidence_ids[1:]:
                found = where.get(evidence_id)
                item = records.get(*found, evidence_id) if found else None
                if item is not None:
                    evidence.append({"evidence_id": evidence_id, **item})
            row, findings = scrub(queue_row(flag, record, evidence))
            secrets.update(finding.type for finding in findings)
            queue.write_row(row)
            tally.records_out += 1
            tally.accepted += 1
        outputs = [queue.commit(), quarantine.commit()]
    except BaseException:
        queue.abort()
        quarantine.abort()
        raise
    finally:
        records.close()
    read = inputs + [WrittenFile(path, "", 0, 0) for path in index_files]
    read += [WrittenFile(path, "", 0, 0) for path in sorted(records.handles)]
    result = StageResult(C.STAGE_EXPORT_REVIEW, read, outputs, tally)
    result.extra["rows"] = queue.lines
    result.extra["secrets"] = dict(sorted(secrets.items()))
    result.errors.extend(conservation_errors(tally))
    return result
