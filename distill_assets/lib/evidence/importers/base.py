"""What every importer shares: the source it was given, the batch it returns, provenance.

An importer never writes. It reads one configured source (a kind and a path) and returns an
``ImportBatch``: evidence-format v1 objects (runs, reviews, outcomes as dicts), each with the
original file and record it came from, the original files it read (with their sha256), and
every problem it met. Work is done in all-or-nothing units (a result file, a SWE-bench system
folder): a unit that cannot be used as a whole contributes a failure and none of its objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypedDict, Unpack

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.format import format_timestamp, parse_timestamp
from distill_assets.lib.infra.io import WrittenFile, sha256_bytes

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CREATED_AT_OPTION = "option"
CREATED_AT_MTIME = "file_mtime"


@dataclass(frozen=True)
class ImportSpec:
    """One configured import source: which importer, where, and its options."""

    kind: str
    path: Path
    name: str
    system: str | None = None
    domain: str | None = None
    created_at: datetime | None = None

    def label(self, relpath: str) -> str:
        """How a file of this source is named in provenance, receipts and the quarantine."""
        return f"{self.name}:{relpath}"


class SpecOptions(TypedDict, total=False):
    """An import source's options besides its kind and path, as given (text or None): its
    ``name`` (default: the kind), ``system`` and ``domain`` (default: read from the files) and
    ``created_at`` (default: read from the files, else their modification time)."""

    name: str | None
    system: str | None
    domain: str | None
    created_at: str | None


def make_spec(kind: str, path: str | Path, **options: Unpack[SpecOptions]) -> ImportSpec:
    """Validate options into an ImportSpec; raises ValueError naming the bad option."""
    name, created_at = options.get("name"), options.get("created_at")
    system, domain = options.get("system"), options.get("domain")
    if kind not in C.IMPORT_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(C.IMPORT_KINDS)}")
    chosen = kind if name is None else name
    if not _NAME_RE.match(chosen):
        raise ValueError(f"name {chosen!r} must be letters, digits, '.', '_' or '-'")
    for option, value in (("system", system), ("domain", domain)):
        if value is not None and not _NAME_RE.match(value):
            raise ValueError(f"{option} {value!r} must be letters, digits, '.', '_' or '-'")
    moment = None
    if created_at is not None:
        moment = parse_timestamp(created_at)
        if moment is None:
            raise ValueError(f"created_at {created_at!r} is not an ISO 8601 timestamp")
    source = Path(path)
    if not source.exists():
        raise ValueError(f"path {str(source)!r} does not exist")
    return ImportSpec(kind, source, chosen, system, domain, moment)


def parse_specs(raw: str) -> list[ImportSpec]:
    """Import sources from JSON text (a list of objects with kind, path and options)."""
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError("expected a JSON list of objects with kind and path")
    specs = []
    for number, item in enumerate(items):
        unknown = set(item) - {"kind", "path", "name", "system", "domain", "created_at"}
        if unknown:
            raise ValueError(f"source {number}: unknown option(s) {', '.join(sorted(unknown))}")
        if not isinstance(item.get("kind"), str) or not isinstance(item.get("path"), str):
            raise ValueError(f"source {number}: kind and path must be given as text")
        options = {key: item.get(key) for key in ("name", "system", "domain", "created_at")}
        if any(value is not None and not isinstance(value, str) for value in options.values()):
            raise ValueError(f"source {number}: name, system, domain, created_at must be text")
        try:
            specs.append(make_spec(item["kind"], item["path"], **options))
        except ValueError as exc:
            raise ValueError(f"source {number}: {exc}") from None
    check_distinct(specs)
    return specs


def check_distinct(specs: list[ImportSpec]) -> None:
    """Provenance names files ``<name>:<path>``, so two sources may not share a name."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"two import sources are named {spec.name!r}; give each a name")
        seen.add(spec.name)


@dataclass(frozen=True)
class Provenance:
    """Where an imported object came from: a file of the source and a record in it."""

    path: str  # "<source name>:<path relative to the configured path>"
    record: int  # 1-based record number in that file
    sha256: str
    line: int | None = None  # set when records are lines (JSONL)

    def as_meta(self) -> dict[str, Any]:
        """Provenance kept inside the object itself (so ``distill import`` output keeps it too);
        without the source's name, so one file imported under two names dedupes."""
        relpath = self.path.split(":", 1)[1]  # source names cannot hold ":"
        return {"path": relpath, "record": self.record, "sha256": self.sha256}


@dataclass(frozen=True)
class ImportedObject:
    """An evidence-format v1 object (not yet validated) and its provenance."""

    obj: dict[str, Any]
    origin: Provenance


@dataclass(frozen=True)
class ImportFailure:
    """Something an importer could not use: a whole file (skipped) or one record (quarantined).

    ``message`` names the file and says what is wrong; it never quotes input text.
    """

    path: str
    reason: str
    message: str
    disposition: str = C.DISPOSITION_SKIPPED
    record: int | None = None
    day: date | None = None


class SourceProblem(Exception):
    """Raised inside a unit: the unit cannot be used and contributes nothing but this."""

    def __init__(self, path: str, reason: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.reason = reason
        self.detail = detail
        self.message = f"{path}: {detail}"


@dataclass
class Unit:
    """What one all-or-nothing unit of an import produced so far."""

    objects: list[ImportedObject] = field(default_factory=list)
    failures: list[ImportFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: dict[str, list[Any]] = field(default_factory=dict)  # label -> [sha256, bytes, records]

    def read(self, path: Path, label: str) -> tuple[bytes, str]:
        """A file's bytes and sha256, noted as an input of the import."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SourceProblem(
                label, C.R_UNREADABLE_FILE, f"cannot be read ({exc.strerror})"
            ) from None
        sha = sha256_bytes(data)
        self.files[label] = [sha, len(data), 0]
        return data, sha

    def count(self, label: str, records: int) -> None:
        self.files[label][2] = records

    def add(self, obj: dict[str, Any], origin: Provenance) -> None:
        self.objects.append(ImportedObject(obj, origin))

    def quarantine(self, path: str, record: int, detail: str, day: date | None) -> None:
        """One record of a file breaks the layout: leave it out, keep the others."""
        self.failures.append(
            ImportFailure(
                path,
                C.R_IMPORT_MALFORMED,
                f"{path}: record {record}: {detail}",
                C.DISPOSITION_QUARANTINED,
                record,
                day,
            )
        )

    def skip(self, path: str, reason: str, detail: str) -> None:
        """A secondary file (a trajectory, a log) cannot be used; the unit goes on without it."""
        self.failures.append(ImportFailure(path, reason, f"{path}: {detail}"))


@dataclass
class ImportBatch:
    """Everything one import source produced, in a deterministic order."""

    spec: ImportSpec
    objects: list[ImportedObject] = field(default_factory=list)
    failures: list[ImportFailure] = field(default_factory=list)
    files: list[WrittenFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    units: int = 0

    def run_unit(self, work: Callable[[Unit], None]) -> bool:
        """Run one unit; keep all it made, or (on a SourceProblem) only the failure."""
        unit = Unit()
        self.units += 1
        try:
            work(unit)
        except SourceProblem as problem:
            self.files.extend(_written(unit, keep_counts=False))
            self.failures.append(ImportFailure(problem.path, problem.reason, problem.message))
            return False
        self.files.extend(_written(unit, keep_counts=True))
        self.objects.extend(unit.objects)
        self.failures.extend(unit.failures)
        self.warnings.extend(unit.warnings)
        return True

    def fail(self, path: str, reason: str, detail: str) -> None:
        self.units += 1
        self.failures.append(ImportFailure(path, reason, f"{path}: {detail}"))

    def summary(self) -> dict[str, Any]:
        """What the receipt says about this source."""
        kinds = {kind: 0 for kind in C.KINDS}
        for item in self.objects:
            kind = item.obj.get("kind")
            if kind in kinds:
                kinds[kind] += 1
        return {
            "name": self.spec.name,
            "kind": self.spec.kind,
            "path": str(self.spec.path),
            "files": len(self.files),
            "objects": kinds,
            "skipped": [f.message for f in self.failures if f.disposition == "skipped"],
            "quarantined_records": sum(
                1 for f in self.failures if f.disposition == C.DISPOSITION_QUARANTINED
            ),
        }


def _written(unit: Unit, keep_counts: bool) -> list[WrittenFile]:
    return [
        WrittenFile(label, sha, size, records if keep_counts else 0)
        for label, (sha, size, records) in unit.files.items()
    ]


def parse_json(data: bytes, label: str, line: int | None = None) -> Any:
    """Decode a JSON document (or one JSONL ``line``) or raise a SourceProblem saying where it
    breaks."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        where = f"line {exc.lineno} " if line is None else f"line {line}: "
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            detail = "not UTF-8 text" if line is None else f"{where}not UTF-8 text"
            raise SourceProblem(label, C.R_IMPORT_INVALID_JSON, detail) from None
        detail = (
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            if line is None
            else f"line {line}: not valid JSON: {exc.msg} at column {exc.colno}"
        )
        raise SourceProblem(label, C.R_IMPORT_INVALID_JSON, detail) from None


def json_type(value: Any) -> str:
    """A JSON value's type as a reader of the file would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def created_at(spec: ImportSpec, fallback: Path) -> tuple[str, str]:
    """The option when given, else the file's modification time; and which of them it was."""
    if spec.created_at is not None:
        return format_timestamp(spec.created_at), CREATED_AT_OPTION
    return mtime_timestamp(fallback), CREATED_AT_MTIME


def mtime_timestamp(path: Path) -> str:
    moment = datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(microsecond=0)
    return format_timestamp(moment)


def text_of(content: Any) -> str:
    """A chat message's text: plain content, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return ""


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def safe_name(value: Any) -> bool:
    """True for a name that can be used as one path component (no separators, not . or ..)."""
    return isinstance(value, str) and bool(_NAME_RE.match(value)) and value not in (".", "..")


def left_out_summary(failures: list[ImportFailure], invalid: int = 0) -> str:
    """One line saying what an import left out and why: skipped files and quarantined records
    counted by reason code, most frequent first; empty when nothing was left out."""
    parts = []
    for disposition, what in (
        (C.DISPOSITION_SKIPPED, "file(s) or folder(s) skipped"),
        (C.DISPOSITION_QUARANTINED, "record(s) quarantined"),
    ):
        reasons: dict[str, int] = {}
        for failure in failures:
            if failure.disposition == disposition:
                reasons[failure.reason] = reasons.get(failure.reason, 0) + 1
        if reasons:
            ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
            why = ", ".join(f"{reason} {n}" for reason, n in ranked)
            parts.append(f"{sum(reasons.values())} {what} ({why})")
    if invalid:
        parts.append(
            f"{invalid} record(s) that break the evidence format (collect quarantines them)"
        )
    return "; ".join(parts)
