"""The task-level holdout split, and its re-verification from the written files.

A task is in the holdout when the first 8 bytes of ``sha256("distill-holdout" 0x1f task_id)``,
read as a fraction of 2**64, fall below the configured fraction. The decision depends on the task
id alone, so every row of a task lands on the same side, a task never changes side when other
tasks arrive, and raising the fraction only moves tasks from train into the holdout.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

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


class TaskSides:
    """The tasks seen on each side of a dataset, piece after piece: only each piece's distinct
    (side, task) pairs are kept, so memory follows the tasks, not the rows."""

    def __init__(self, train: int = 0, holdout: int = 1) -> None:
        self.train, self.holdout = train, holdout
        self.rows = {train: 0, holdout: 0}
        self.tasks: list[pl.DataFrame] = []

    def add(self, frame: pl.DataFrame) -> None:
        """A frame with ``_file`` and ``task_id`` (a missing task id is the task "None")."""
        import polars as pl

        from distill_assets.lib.verify.schemas import FILE

        part = frame.select(FILE, pl.col("task_id").cast(pl.String).fill_null("None"))
        for side in self.rows:
            self.rows[side] += part.filter(pl.col(FILE) == side).height
        self.tasks.append(part.unique())

    def report(self) -> SplitReport:
        return _disjoint(self.tasks, self.rows, self.train, self.holdout)


def verify_disjoint_frames(
    frames: Iterable[pl.DataFrame], train: int = 0, holdout: int = 1
) -> SplitReport:
    """No task has rows in both files, over frames ``read_jsonl``, ``iter_jsonl`` or
    ``read_columns`` read (each with ``_file`` and ``task_id``): ``train`` and ``holdout`` are
    the files' indexes in ``_file``. A missing task id counts as the task "None", as it always
    has."""
    sides = TaskSides(train, holdout)
    for frame in frames:
        sides.add(frame)
    return sides.report()


def _disjoint(
    tasks: list[pl.DataFrame], rows: dict[int, int], train: int, holdout: int
) -> SplitReport:
    import polars as pl  # not at module level: the exports import in_holdout, not the checks

    from distill_assets.lib.verify.schemas import FILE

    both = (
        pl.concat(tasks).unique()
        if tasks
        else pl.DataFrame(schema={FILE: pl.UInt32, "task_id": pl.String})
    )
    sides = [both.filter(pl.col(FILE) == side).get_column("task_id") for side in (train, holdout)]
    shared = sides[0].filter(sides[0].is_in(sides[1].implode())).sort()
    return SplitReport(rows[train], rows[holdout], shared.head(20).to_list(), len(shared))


def verify_disjoint_frame(frame: pl.DataFrame, train: int = 0, holdout: int = 1) -> SplitReport:
    """``verify_disjoint_frames`` on one frame."""
    return verify_disjoint_frames([frame], train, holdout)


def verify_disjoint(train: Path, holdout: Path) -> SplitReport:
    """No task has rows in both files (read back from disk, the task ids only)."""
    import polars as pl

    from distill_assets.lib.verify.schemas import read_columns

    return verify_disjoint_frame(read_columns([train, holdout], {"task_id": pl.String}))
