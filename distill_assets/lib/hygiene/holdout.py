"""The task-level holdout split, and its re-verification from the written files.

A task is in the holdout when the first 8 bytes of ``sha256("distill-holdout" 0x1f task_id)``,
read as a fraction of 2**64, fall below the configured fraction. The decision depends on the task
id alone, so every row of a task lands on the same side, a task never changes side when other
tasks arrive, and raising the fraction only moves tasks from train into the holdout.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import orjson

_SALT = b"distill-holdout\x1f"


@functools.lru_cache(maxsize=65536)
def holdout_point(task_id: str) -> float:
    """Where the task falls in [0, 1): fixed by its id."""
    digest = hashlib.sha256(_SALT + task_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_holdout(task_id: str, fraction: float) -> bool:
    return fraction > 0 and holdout_point(task_id) < fraction


@dataclass
class SplitReport:
    """What the ``holdout_disjoint`` check found in a dataset's train and holdout files."""

    train_rows: int = 0
    holdout_rows: int = 0
    shared_tasks: list[str] = field(default_factory=list)
    count: int = 0
    sample_limit: int = 20

    @property
    def passed(self) -> bool:
        return self.count == 0


def _tasks(path: Path) -> tuple[set[str], int]:
    tasks: set[str] = set()
    rows = 0
    if not path.exists():
        return tasks, rows
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                rows += 1
                tasks.add(str(orjson.loads(raw).get("task_id")))
    return tasks, rows


def verify_disjoint(train: Path, holdout: Path) -> SplitReport:
    """No task has rows in both files (read back from disk)."""
    train_tasks, train_rows = _tasks(train)
    holdout_tasks, holdout_rows = _tasks(holdout)
    shared = sorted(train_tasks & holdout_tasks)
    return SplitReport(train_rows, holdout_rows, shared[:20], len(shared))
