"""Where each stage's files live under the output directory (the layout is a user contract)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from distill_assets.lib import constants as C


def day_dir(day: date) -> str:
    return f"{day.year:04d}/{day.month:02d}/{day.day:02d}"


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


def day_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def inside(root: Path, relpath: str) -> Path:
    """``root/relpath``, refusing a relative path that escapes ``root``."""
    candidate = (root / relpath).resolve()
    if not candidate.is_relative_to(root.resolve()):
        raise ValueError(f"path {relpath!r} escapes {root}")
    return candidate
