"""StageReceipt v1: what a stage read, wrote, counted and checked, built by one function.

Receipts live at ``reports/<run_id>/<stage>.json``. Input files carry the run and stage that
produced them (from the output ledger, ``reports/ledger.json``), so the run summary can verify
every link of the chain of custody against the producer's own receipt.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from distill_assets.lib import constants as C
from distill_assets.lib.infra.io import (
    WrittenFile,
    canonical_json,
    sha256_bytes,
    sha256_file,
    write_json_atomic,
)
from distill_assets.lib.records.accounting import StageResult

PACKAGE_VERSION = "0.1.0"
# the distill_assets package: code_version hashes every module of it
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_Strict):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    record_count: int = Field(ge=0)
    producer_run_id: str | None = None
    producer_stage: str | None = None


class FileSet(_Strict):
    files: list[FileEntry]
    record_count: int = Field(ge=0)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class Stats(_Strict):
    accepted: int = Field(ge=0)
    rejected: int = Field(ge=0)
    quarantined: int = Field(ge=0)
    skipped: int = Field(ge=0)
    records_in: int = Field(ge=0)
    records_out: int = Field(ge=0)
    reasons: dict[str, int]


class Validation(_Strict):
    passed: bool
    errors: list[str]
    warnings: list[str]


class StageReceipt(_Strict):
    schema_version: Literal[1]
    run_id: str
    stage: str
    timestamp: str
    git_commit: str | None
    code_version: str
    partitions: list[str] | None
    inputs: FileSet
    outputs: FileSet
    stats: Stats
    validation: Validation
    duration_ms: int = Field(ge=0)
    extra: dict[str, Any]


def aggregate_hash(files: list[FileEntry] | list[WrittenFile]) -> str:
    """Order-independent hash of (path, sha256) pairs; changes with any path or any byte."""
    lines = sorted(f"{f.path}\t{f.sha256}\n" for f in files)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


@functools.cache
def code_version() -> str:
    """The package version plus a digest of its source, so any code change shows."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return f"{PACKAGE_VERSION}+{digest.hexdigest()[:12]}"


@functools.cache
def checkout_commit() -> str | None:
    """The commit of the checkout the package runs from (None: not a git checkout)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(PACKAGE_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


@dataclass(frozen=True)
class Provenance:
    """When and from which commit records are stamped (receipts, summaries, failures, alerts,
    the run lock): the pins the edge read (DISTILL_RECORDED_AT, DISTILL_GIT_COMMIT; see
    runtime/resource.py ``provenance``), or, unpinned, the wall clock and the checkout's commit.
    A value, so it travels as an argument, into worker processes too."""

    pinned_at: str | None = None
    pinned_commit: str | None = None

    def recorded_at(self) -> str:
        """The timestamp a record carries: the pinned one, else now (UTC)."""
        if self.pinned_at:
            return self.pinned_at
        return datetime.now(UTC).isoformat().replace("+00:00", "Z")

    def git_commit(self) -> str | None:
        """The commit a receipt names: the pinned one, else the checkout's."""
        return self.pinned_commit or checkout_commit()


# nothing pinned: the wall clock and the checkout's commit
UNPINNED = Provenance()


# --- the output ledger: who wrote each file last ------------------------------------------


@contextmanager
def reports_lock(out_root: Path) -> Iterator[None]:
    """Serialize updates of shared report files (ledger, run index, summaries)."""
    reports = out_root / C.REPORTS_DIR
    reports.mkdir(parents=True, exist_ok=True)
    with open(reports / ".lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _ledger_path(out_root: Path) -> Path:
    return out_root / C.REPORTS_DIR / "ledger.json"


def read_ledger(out_root: Path) -> dict[str, dict[str, Any]]:
    path = _ledger_path(out_root)
    if not path.exists():
        return {}
    return orjson.loads(path.read_bytes())


def update_ledger(
    out_root: Path, run_id: str, stage: str, outputs: list[WrittenFile], root: str = ""
) -> None:
    """Record who wrote each output; ``root`` is where a versioned export actually lives."""
    with reports_lock(out_root):
        ledger = read_ledger(out_root)
        for written in outputs:
            stat = (out_root / root / written.path).stat()
            ledger[written.path] = {
                "sha256": written.sha256,
                "bytes": written.bytes,
                "mtime_ns": stat.st_mtime_ns,
                "run_id": run_id,
                "stage": stage,
                "root": root,
            }
        write_json_atomic(_ledger_path(out_root), ledger)


def resolve_inputs(
    out_root: Path, inputs: list[WrittenFile], read_root: Path | None = None
) -> list[FileEntry]:
    """Describe files a stage read from the output directory, naming their producer.

    Files are looked up under ``read_root`` (a run's version directory) first, then under
    ``out_root``.

    A file whose size and mtime match the ledger keeps the ledger's sha256 (the file was not
    touched since its producer wrote it); any other file is hashed again, and it has a producer
    only if that hash matches what the ledger recorded.
    """
    ledger = read_ledger(out_root)
    entries: list[FileEntry] = []
    for item in inputs:
        path = (read_root or out_root) / item.path
        if not path.exists():
            path = out_root / item.path
        stat = path.stat()
        known = ledger.get(item.path)
        if known and known["bytes"] == stat.st_size and known["mtime_ns"] == stat.st_mtime_ns:
            sha = known["sha256"]
        else:
            sha = sha256_file(path)
        producer = known if known and known["sha256"] == sha else None
        entries.append(
            FileEntry(
                path=item.path,
                sha256=sha,
                bytes=stat.st_size,
                record_count=item.record_count,
                producer_run_id=producer["run_id"] if producer else None,
                producer_stage=producer["stage"] if producer else None,
            )
        )
    return entries


def _file_set(entries: list[FileEntry], settings: dict[str, Any] | None = None) -> FileSet:
    """A receipt's file block; an input block's hash also covers the stage's settings, so a
    changed configuration is a changed input, not a determinism violation. Dataset cards are
    listed but not hashed into the block: they name the run that wrote them."""
    hashed: list[FileEntry] = [e for e in entries if not C.is_card(e.path)]
    if settings is not None:
        hashed.append(
            FileEntry(
                path="<settings>",
                sha256=sha256_bytes(canonical_json(settings)),
                bytes=0,
                record_count=0,
            )
        )
    return FileSet(
        files=sorted(entries, key=lambda e: e.path),
        record_count=sum(e.record_count for e in entries),
        hash=aggregate_hash(hashed),
    )


def build_receipt(
    result: StageResult,
    run_id: str,
    input_entries: list[FileEntry],
    duration_ms: int,
    provenance: Provenance,
) -> StageReceipt:
    """The one place a StageReceipt is made; ``provenance`` stamps its time and commit."""
    tally = result.tally
    errors = list(result.errors)
    return StageReceipt(
        schema_version=C.RECEIPT_SCHEMA_VERSION,
        run_id=run_id,
        stage=result.stage,
        timestamp=provenance.recorded_at(),
        git_commit=provenance.git_commit(),
        code_version=code_version(),
        partitions=result.partitions,
        inputs=_file_set(input_entries, result.extra.get("settings")),
        outputs=_file_set([FileEntry(**f.as_dict()) for f in result.outputs]),
        stats=Stats(
            accepted=tally.accepted,
            rejected=tally.rejected,
            quarantined=tally.quarantined,
            skipped=tally.skipped,
            records_in=tally.records_in,
            records_out=tally.records_out,
            reasons=dict(sorted(tally.reasons.items())),
        ),
        validation=Validation(passed=not errors, errors=errors, warnings=list(result.warnings)),
        duration_ms=max(0, duration_ms),
        extra=result.extra,
    )


def receipt_relpath(run_id: str, stage: str) -> str:
    return f"{C.REPORTS_DIR}/{run_id}/{stage}.json"


def write_receipt(out_root: Path, receipt: StageReceipt) -> Path:
    path = out_root / receipt_relpath(receipt.run_id, receipt.stage)
    write_json_atomic(path, receipt.model_dump(mode="json"))
    return path


def load_receipt(path: Path) -> StageReceipt:
    return StageReceipt.model_validate(orjson.loads(path.read_bytes()))


def receipt_metadata(
    receipt: StageReceipt, receipt_path: Path | str, drift_severity: str
) -> dict[str, Any]:
    """The receipt's figures as materialization metadata (plain values; counts are ints)."""
    stats = receipt.stats
    metadata: dict[str, Any] = {
        C.MD_ROW_COUNT: int(receipt.extra.get("rows", stats.records_out)),
        C.MD_INPUT_HASH: receipt.inputs.hash,
        C.MD_OUTPUT_HASH: receipt.outputs.hash,
        C.MD_RECORDS_IN: stats.records_in,
        C.MD_ACCEPTED: stats.accepted,
        C.MD_REJECTED: stats.rejected,
        C.MD_QUARANTINED: stats.quarantined,
        C.MD_SKIPPED: stats.skipped,
        C.MD_RECEIPT_PATH: str(receipt_path),
        C.MD_DRIFT_SEVERITY: drift_severity,
        C.MD_STAGE: receipt.stage,
        C.MD_RUN_ID: receipt.run_id,
        C.MD_DURATION_MS: receipt.duration_ms,
        C.MD_VALIDATION_PASSED: receipt.validation.passed,
    }
    for code, count in sorted(stats.reasons.items()):
        metadata[f"{C.MD_REASON_PREFIX}{code}"] = count
    # secret findings per type (counts only: a finding's text never leaves the quarantine file)
    for kind, count in sorted((receipt.extra.get("secrets") or {}).items()):
        metadata[f"{C.MD_SECRETS_PREFIX}{kind}"] = int(count)
    if "holdout_rows" in receipt.extra:
        metadata[C.MD_HOLDOUT_ROWS] = int(receipt.extra["holdout_rows"])
    return metadata
