"""The trace lookup's build streams its sources (lib/publishing/trace.py, schema 2): quarantine
files are
read piece by piece, and the lookup built from small pieces is the one built from whole files."""

from __future__ import annotations

import shutil
import sqlite3

import orjson
import polars as pl
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.infra import layout
from distill_assets.lib.publishing import trace as T

SCHEMA = {"run_id": pl.String, "playbook_id": pl.String, "source_run_ids": pl.List(pl.String)}


def _lines(n: int) -> list[bytes]:
    # lines of uneven widths (some longer than the smallest piece), fields missing on some
    return [
        orjson.dumps(
            {
                "run_id": f"run-{i:03d}" if i % 4 else None,
                "padding": "x" * (i * 37 % 300),
                "source_run_ids": [f"run-{j:03d}" for j in range(i % 3)],
                **({"playbook_id": f"pb-{i}"} if i % 5 == 0 else {}),
            }
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("newline_at_end", [True, False])
def test_pieces_are_the_whole_file_read_at_once(tmp_path, newline_at_end):
    path = tmp_path / "q.jsonl"
    body = b"\n".join(_lines(200))
    path.write_bytes(body + (b"\n" if newline_at_end else b""))
    whole = T._jsonl(path, SCHEMA)
    assert whole.height == 200
    for piece_bytes in (64, 500, 4096, 1 << 20):  # 64: most lines are longer than a piece
        pieces = list(T._jsonl_pieces(path, SCHEMA, piece_bytes))
        if piece_bytes == 500:
            assert len(pieces) > 10
        assert pl.concat(pieces).equals(whole), piece_bytes
    # each offset is where its line starts
    raw = path.read_bytes()
    for offset, run_id in whole.select("offset", "run_id").iter_rows():
        assert orjson.loads(raw[offset:].split(b"\n", 1)[0]).get("run_id") == run_id


def test_a_blank_line_is_an_error_not_a_shifted_offset(tmp_path):
    path = tmp_path / "q.jsonl"
    lines = _lines(50)
    path.write_bytes(b"\n".join(lines[:30]) + b"\n\n" + b"\n".join(lines[30:]) + b"\n")
    with pytest.raises(T.TraceError, match="blank lines"):
        list(T._jsonl_pieces(path, SCHEMA, 256))
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert list(T._jsonl_pieces(empty, SCHEMA)) == []


def _tables(path) -> dict[str, list]:
    """Every table of a lookup: its SQLite tables and its Arrow tables, as rows."""
    db = sqlite3.connect(path)
    try:
        found: dict[str, list] = {
            table: db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
            for table in ("reasons", "files", "meta")
        }
    finally:
        db.close()
    for name in ("runs", "run_keys", "rows", "refs", "places"):
        found[name] = pl.read_ipc(path.parent / C.TRACE_TABLES_DIR / f"{name}.arrow").rows()
    return found


def test_a_lookup_built_from_small_pieces_is_the_same(fixture_run, tmp_path, monkeypatch):
    result, out, _ = fixture_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    root = layout.published_exports(copy).parent
    built = _tables(root / C.TRACE_FILE)
    # every scored run the quarantines and datasets name has its places, sorted by run
    runs = [run for run, _ in built["places"]]
    assert runs and runs == sorted(runs)
    # the keyed tables are ordered by their keys' hashes (a reader bisects them), every run
    # has its key, and every key is found where it is, by hash or by the slow scan alike
    for name in ("run_keys", "rows", "refs"):
        hashes = [r[-1] for r in built[name]]
        assert hashes == sorted(hashes), name
    assert sorted(r[1] for r in built["run_keys"]) == list(range(1, len(built["runs"]) + 1))
    lookup = T.open_lookup(copy)
    try:
        for name, column in (("run_keys", "run_id"), ("rows", "id"), ("refs", "key")):
            for at, row in enumerate(built[name]):
                if row[0] is not None:
                    assert at in lookup._find(name, column, row[0]), (name, row[0])
        lookup.polars_version = "another"  # a reader whose polars hashes otherwise: scans
        for at, row in enumerate(built["rows"]):
            assert at in lookup._find("rows", "id", row[0])
        assert len(lookup._find("rows", "id", "no-such-row")) == 0
    finally:
        lookup.close()
    monkeypatch.setattr(T, "_PIECE_BYTES", 300)  # every quarantine file in many pieces
    figures = T.build_lookup(copy, root, result.run_id)
    assert figures.rows["runs"] == len(built["runs"])
    again = _tables(root / C.TRACE_FILE)
    tables = {table: rows for table, rows in again.items() if table != "files"}
    assert tables == {table: rows for table, rows in built.items() if table != "files"}
    # (the files table names the same files; their times are those of the copy)
    assert [r[:6] for r in again["files"]] == [r[:6] for r in built["files"]]
    # no staging left behind
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []
