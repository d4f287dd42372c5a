"""Where each stage's files live under the output directory (the layout is a user contract)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from distill_assets.lib import constants as C


def day_dir(day: date) -> str:
    return f"{day.year:04d}/{day.month:02d}/{day.day:02d}"


def _iso_setting(name: str, raw: str) -> date:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise ValueError(f"invalid setting {name}={raw!r}: not an ISO date (YYYY-MM-DD)") from None


def partition_start(raw: str | None) -> date:
    """The first daily partition: ``raw`` (DISTILL_PARTITION_START, an ISO date) or the
    default 2020-01-01. Records dated before it are quarantined (timestamp_out_of_range)."""
    if not raw:
        return date.fromisoformat(C.PARTITION_START)
    return _iso_setting(C.ENV_PARTITION_START, raw)


def partition_end(raw: str | None, start: date) -> date | None:
    """The last daily partition, inclusive: ``raw`` (DISTILL_PARTITION_END, an ISO date, not
    before ``start``) or None, for partitions up to tomorrow (UTC) as the days go by. Never later
    than tomorrow either way; unlike the start it quarantines nothing: a later day is one no run
    of these partitions asks for."""
    if not raw:
        return None
    end = _iso_setting(C.ENV_PARTITION_END, raw)
    if end < start:
        raise ValueError(
            f"invalid setting {C.ENV_PARTITION_END}={raw!r}: before the first partition "
            f"{start.isoformat()} ({C.ENV_PARTITION_START})"
        )
    return end


def day_from_key(key: str) -> date:
    return date.fromisoformat(key)


def evidence_records(day: date) -> str:
    return f"{C.EVIDENCE_DIR}/{day_dir(day)}/records.jsonl"


def evidence_index(day: date) -> str:
    return f"{C.EVIDENCE_DIR}/{day_dir(day)}/index.jsonl"


def evidence_quarantine(day: date | None) -> str:
    bucket = C.UNDATED_BUCKET if day is None else day_dir(day)
    return f"{C.EVIDENCE_DIR}/{bucket}/{C.PART_QUARANTINE_FILE}"


def scored_runs(day: date) -> str:
    return f"{C.SCORED_DIR}/{day_dir(day)}/{C.SCORED_FILE}"


def scored_by_task(day: date) -> str:
    return f"{C.SCORED_DIR}/{day_dir(day)}/{C.BY_TASK_FILE}"


def scored_trace(day: date) -> str:
    """The score stage's Arrow list of the day's runs for the trace lookup
    (lib/publishing/trace.py)."""
    return f"{C.SCORED_DIR}/{day_dir(day)}/{C.SCORED_TRACE_FILE}"


def scored_quarantine(day: date) -> str:
    return f"{C.SCORED_DIR}/{day_dir(day)}/{C.PART_QUARANTINE_FILE}"


def days_on_disk(root: Path, top: str, filename: str) -> list[date]:
    """Every day under ``root/top/YYYY/MM/DD/`` that holds ``filename``, in date order."""
    found: list[date] = []
    base = root / top
    if not base.is_dir():
        return found
    for path in base.glob(f"[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/{filename}"):
        year, month, dom = path.parent.relative_to(base).parts
        try:
            found.append(date(int(year), int(month), int(dom)))
        except ValueError:
            continue
    return sorted(found)


def evidence_days(out_root: Path) -> tuple[date, date] | None:
    """The first and last day of the evidence index on disk under ``out_root`` (every day a
    collect run covered, empty days included), or None before the first run."""
    days = days_on_disk(out_root, C.EVIDENCE_DIR, "index.jsonl")
    return (days[0], days[-1]) if days else None


def day_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def inside(root: Path, relpath: str) -> Path:
    """``root/relpath``, refusing a relative path that escapes ``root``."""
    candidate = (root / relpath).resolve()
    if not candidate.is_relative_to(root.resolve()):
        raise ValueError(f"path {relpath!r} escapes {root}")
    return candidate


# --- versioned exports ----------------------------------------------------------------------
# A run writes its exports into its own version directory, ``.versions/<run_id>/exports/``,
# seeded with hard links to the files currently published. The publish stage swaps the
# ``exports`` symlink to that directory in one rename, so every dataset, quarantine and the
# manifest become visible together, and a killed or blocked run leaves the previous ones alone.


def version_root(out_root: Path, run_id: str) -> Path:
    """The root a run's export files are written under (it holds ``exports/...``)."""
    return out_root / C.VERSIONS_DIR / run_id


def version_relroot(run_id: str) -> str:
    return f"{C.VERSIONS_DIR}/{run_id}"


def published_exports(out_root: Path) -> Path | None:
    """The directory ``exports`` points at, or None before anything was published."""
    link = out_root / C.EXPORTS_DIR
    if link.is_symlink() or link.is_dir():
        return link.resolve()
    return None


def relroot(out_root: Path, root: Path) -> str:
    """``root`` relative to the output directory ("" for the directory itself)."""
    try:
        relative = root.resolve().relative_to(out_root.resolve()).as_posix()
    except ValueError:
        return ""
    return "" if relative == "." else relative


def records_elsewhere(root: Path, days: Iterable[date]) -> bool:
    """Whether a day of the evidence store other than ``days`` holds a record."""
    asked = set(days)
    return any(
        (root / evidence_records(day)).stat().st_size > 0
        for day in days_on_disk(root, C.EVIDENCE_DIR, "records.jsonl")
        if day not in asked
    )


def run_ids(out_root: Path) -> list[str]:
    """Runs in the order their first receipt was recorded (the run index, which
    lib/records/reports.py
    appends to); read here, without the reports' libraries, for the CLI's summary."""
    import orjson

    path = out_root / C.RUN_INDEX_PATH
    if not path.exists():
        return []
    rows = (orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip())
    return list(dict.fromkeys(row["run_id"] for row in rows))


def as_ledger_says(out_root: Path, relpath: str, ledger: dict[str, dict[str, Any]]) -> bool:
    """The file is the one the ledger recorded: it names a sha256, and the file's size and
    modification time on disk are those it recorded (a file changed since is not)."""
    known = ledger.get(relpath) or {}
    if not known.get("sha256"):
        return False
    try:
        stat = (out_root / relpath).stat()
    except OSError:
        return False
    return stat.st_size == known.get("bytes") and stat.st_mtime_ns == known.get("mtime_ns")


_DATE_RE = re.compile(rb'"created_at"\s*:\s*"(\d{4}-\d{2}-\d{2})')


def source_date_range(source: Path) -> tuple[date, date] | None:
    """First and last created_at date in the sources, from a fast byte scan (no JSON parsing)."""
    first = last = None
    for path in sorted(source.rglob("*.jsonl")):
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    chunk += fh.readline()
                    for match in _DATE_RE.finditer(chunk):
                        try:
                            found = date.fromisoformat(match.group(1).decode())
                        except ValueError:
                            continue
                        first = found if first is None or found < first else first
                        last = found if last is None or found > last else last
        except OSError:
            continue
    return None if first is None or last is None else (first, last)
