"""The progress reporter: a line at most once per interval, with done, total, share and rate."""

from __future__ import annotations

from distill_assets.lib.infra import progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reports_at_most_once_per_interval_with_rate():
    clock, lines = Clock(), []
    tick = progress.Progress("export-sft", lines.append, interval=5.0, clock=clock)
    tick.begin(1000, "runs")
    for _ in range(400):
        clock.now += 0.01  # 100 runs/s
        tick.advance()
    assert lines == []  # 4 s: not yet
    for _ in range(200):
        clock.now += 0.01
        tick.advance()
    assert lines == ["export-sft: 500 of 1,000 runs (50%), 100 runs/s"]
    assert tick.reports == 1


def test_cheap_units_read_the_clock_every_nth_call():
    reads = []

    def clock() -> float:
        reads.append(1)
        return 10.0 * len(reads)

    lines: list[str] = []
    tick = progress.Progress("collect", lines.append, interval=1.0, clock=clock)
    tick.begin(None, "lines", check_every=100)
    before = len(reads)
    for _ in range(1000):
        tick.advance(detail="runs/a.jsonl")
    assert len(reads) - before == 10
    assert lines and lines[-1].startswith("collect: 1,000 lines, ")
    assert lines[-1].endswith("lines/s, runs/a.jsonl")


def test_current_is_quiet_outside_a_stage_and_the_stages_inside():
    assert progress.current().emit("ignored") is None
    lines: list[str] = []
    with progress.reporting("score", lines.append, interval=0.0) as reporter:
        assert progress.current() is reporter
        progress.current().begin(2, "days")
        progress.current().advance()
    assert progress.current() is not reporter
    assert lines and lines[0].startswith("score: 1 of 2 days (50%)")
