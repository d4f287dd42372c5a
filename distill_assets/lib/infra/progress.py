"""Progress of a long stage, reported at an interval so someone watching a run sees it move.

``run_stage`` installs a ``Progress`` whose ``emit`` writes to the Dagster run log for the
duration of a stage (``reporting``); the library stages fetch it with ``current()`` (a quiet one
outside a run), say what they are counting (``begin``) and count it (``advance``). A stage that
counts many cheap units (lines) asks for the clock to be read only every ``check_every`` calls,
so counting costs next to nothing; the clock and the sink are parameters, so the reporter is
tested without a run or a wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

DEFAULT_INTERVAL_S = 5.0


class Progress:
    """Counts units of work and emits ``<stage>: <done> of <total> <unit> (<pct>%), <rate>/s``
    at most once per ``interval`` seconds (never for work that finishes sooner)."""

    def __init__(
        self,
        stage: str,
        emit: Callable[[str], None],
        interval: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage = stage
        self.emit = emit
        self.interval = interval
        self.clock = clock
        self.check_every = 1
        self.unit = "records"
        self.total: int | None = None
        self.done = 0
        self.detail = ""
        self.reports = 0
        self._started = clock()
        self._last = self._started
        self._since_check = 0

    def begin(self, total: int | None, unit: str, check_every: int = 1) -> None:
        """Start counting ``unit``s, ``total`` of them when known (the rate restarts too); the
        clock is read every ``check_every`` calls of ``advance`` (many cheap units: more)."""
        self.unit = unit
        self.total = total
        self.check_every = 1 if self.interval <= 0 else max(1, check_every)
        self.done = 0
        self._since_check = 0
        self._started = self._last = self.clock()

    def advance(self, count: int = 1, detail: str | None = None) -> None:
        """Count ``count`` more units; report if the interval has passed since the last one."""
        self.done += count
        if detail is not None:
            self.detail = detail
        self._since_check += 1
        if self._since_check < self.check_every:
            return
        self._since_check = 0
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self.emit(self.message(now))
            self.reports += 1

    def message(self, now: float | None = None) -> str:
        """The progress line as of ``now`` (default: the clock)."""
        elapsed = (self.clock() if now is None else now) - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            share = self.done * 100 // self.total
            counted = f"{self.done:,} of {self.total:,} {self.unit} ({share}%)"
        else:
            counted = f"{self.done:,} {self.unit}"
        detail = f", {self.detail}" if self.detail else ""
        return f"{self.stage}: {counted}, {rate:,.0f} {self.unit}/s{detail}"


def quiet(stage: str = "") -> Progress:
    """A reporter that never reports (library calls made outside a Dagster run)."""
    return Progress(stage, lambda _line: None, interval=float("inf"))


_CURRENT: ContextVar[Progress | None] = ContextVar("distill_progress", default=None)


def current() -> Progress:
    """The reporter of the stage running in this context (a quiet one when there is none)."""
    return _CURRENT.get() or quiet()


@contextmanager
def reporting(
    stage: str, emit: Callable[[str], None], interval: float = DEFAULT_INTERVAL_S
) -> Iterator[Progress]:
    """Make a reporter for ``stage`` the current one while the block runs."""
    reporter = Progress(stage, emit, interval)
    token = _CURRENT.set(reporter)
    try:
        yield reporter
    finally:
        _CURRENT.reset(token)
