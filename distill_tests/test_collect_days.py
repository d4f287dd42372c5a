"""Collect: every line lands in a bucket some partition covers, whatever its timestamp says."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.collect import collect, list_source_files
from distill_assets.lib.evidence.format import ParseSettings, Rejected, parse_line
from distill_assets.lib.infra import layout


def test_too_deep_json_is_named_as_such() -> None:
    parsed = parse_line(
        b'{"kind":"run","meta":' + b"[" * 1100 + b"]" * 1100 + b"}", ParseSettings()
    )
    assert isinstance(parsed, Rejected)
    assert parsed.reasons == (C.R_JSON_TOO_DEEP,)
    shallow = parse_line(b'{"kind":"run"', ParseSettings())
    assert isinstance(shallow, Rejected) and shallow.reasons == (C.R_INVALID_JSON,)


def _line(created_at: str, run_id: str = "r1") -> bytes:
    return orjson.dumps(
        {"kind": "outcome", "run_id": run_id, "outcome": "success", "created_at": created_at}
    )


def test_out_of_range_and_future_lines_go_to_their_neighbours_day(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    lines = [
        _line("2999-01-01T00:00:00Z", "future"),
        _line("2024-05-02T10:00:00Z", "ok-1"),
        _line("2019-06-30T23:00:00Z", "ancient"),
        _line("2024-05-03T10:00:00Z", "ok-2"),
    ]
    (source / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (source / "b.jsonl").write_bytes(_line("2999-01-01T00:00:00Z", "alone") + b"\n")
    out = tmp_path / "out"
    days = [date(2024, 5, 2), date(2024, 5, 3)]
    result = collect(list_source_files(source), out, days, ParseSettings())
    assert result.tally.records_in == 5  # nothing is lost to a day no partition covers
    assert result.tally.records_out == 2
    assert result.tally.quarantined == 3

    def quarantined(day: date | None) -> list[str]:
        path = out / layout.evidence_quarantine(day)
        return [orjson.loads(raw)["run_id"] for raw in path.read_bytes().splitlines()]

    assert quarantined(date(2024, 5, 2)) == ["future", "ancient"]
    assert quarantined(date(2024, 5, 3)) == []
    assert quarantined(None) == ["alone"]
