"""``distill trace``: where a dataset row, a run, a task or an evidence record came from, and
what happened to it on the way.

The publish stage builds a small lookup beside the datasets it publishes (``build_lookup``):
Arrow tables in ``.versions/<run_id>/trace/`` and ``.versions/<run_id>/trace.sqlite``, which
says what the lookup is and names the files it points into. It holds keys and byte offsets, not
texts: each scored run's verdict and the places of its scored line and evidence records; each
dataset row's id, place and digest (from the row lists the exports write beside their datasets,
``exports/.trace/<stage>.arrow``, so no dataset text is read again); the places of every dataset
row and quarantine line naming a run. Keyed tables are ordered by their keys' hashes; a query
maps them, bisects a hash column and reads a handful of lines by offset (``trace``), never
scanning a dataset or evidence file.

Length: the lookup's build (schema 3), its reader and the answers of ``distill trace`` share the
table layout; the builder could move to a module of its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.infra import layout
from distill_assets.lib.infra.io import BlankLineError, jsonl_fields

LOOKUP_SCHEMA_VERSION = 3
# the datasets a row id can come from (lib/S.DATASETS): name -> (stage writing it, train
# path, holdout path), in the order the lookup numbers them
DATASETS: dict[str, tuple[str, str, str]] = {
    name: S.DATASETS[name] for name in ("sft", "preference", "kto", "rag", "rag_extracted")
}
SPLITS = ("train", "holdout")
QUARANTINE_STAGES = (C.STAGE_COLLECT, C.STAGE_SCORE, *S.PUBLISHED_QUARANTINES)
PLACE_BITS = 40
# the fields of each stage's quarantine lines that name what a line is about (an export's
# line names its run's record too, but the run is the key there)
_QUARANTINE_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    C.STAGE_COLLECT: (("run_id", "evidence_id"), ("reasons",)),
    C.STAGE_SCORE: (("run_id", "evidence_id"), ("reasons",)),
    C.STAGE_EXPORT_PREFERENCE: (("run_id", "chosen_run_id", "rejected_run_id"), ()),
    C.STAGE_EXTRACT_PLAYBOOKS: (("run_id", "playbook_id"), ("source_run_ids",)),
    C.STAGE_EXPORT_RAG: (("run_id", "playbook_id"), ("source_run_ids",)),
    C.STAGE_INDEX: (("run_id", "playbook_id"), ("source_run_ids",)),
}
_SEP = "\x1f"
_EVIDENCE_ID = re.compile(r"[0-9a-f]{64}")
_REDACTED = re.compile(r"\[REDACTED:([a-z0-9_]+)\]")
# how many lines of one kind a trace shows per run and stage before "N more"
SHOWN = 20

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE files (file INTEGER PRIMARY KEY, path TEXT, role TEXT, name TEXT, split TEXT,
                    bytes INTEGER, mtime_ns INTEGER, producer TEXT);
CREATE TABLE reasons (stage TEXT, reason TEXT, n INTEGER)
"""


def row_runs(row: dict[str, Any]) -> str:
    """The runs a dataset row was made from, joined by a unit separator."""
    found = row.get("source_run_id")
    if found is not None:
        return str(found)
    if "chosen_run_id" in row:
        return f"{row['chosen_run_id']}\x1f{row.get('rejected_run_id')}"
    return "\x1f".join(str(r) for r in row.get("source_run_ids") or ())


class TraceError(Exception):
    """A trace or diff the lookup cannot answer; one line for the user."""


# --- what the score stage leaves for the lookup -----------------------------------------


def scored_trace(runs: Any, attached: Any) -> Any:
    """Per scored run, in the order of its scored lines: its verdict and where each of its
    evidence records is (id by its first 16 hex digits, the day's records file by day ordinal,
    the byte offset), from the columns the score stage already holds (``runs``: one row per
    run, ``ri`` its number; ``attached``: its reviews and outcomes in order)."""
    import polars as pl

    # an evidence id's first 16 hex digits name it here (the record read back confirms it)
    evidence = attached.group_by("ri", maintain_order=True).agg(
        e_ids=pl.col("evidence_id").cast(pl.String).str.slice(0, 16),
        e_days=pl.col("day").cast(pl.Int32),
        e_offsets=pl.col("offset").cast(pl.Int64),
    )
    # (casts: a column of an empty or all-null frame comes typed Null)
    frame = runs.select(
        "ri",
        pl.col("run_id").cast(pl.String),
        pl.col("task_id").cast(pl.String),
        pl.col("quality")
        .replace_strict(list(range(len(C.QUALITIES))), list(C.QUALITIES), return_dtype=pl.String)
        .alias("quality"),
        pl.col("score").cast(pl.Float64),
        pl.col("reasons_json").cast(pl.String).str.replace_all(r'[\[\]"]', "").alias("reasons"),
        pl.col("evidence_id").cast(pl.String).str.slice(0, 16),
        pl.col("day").cast(pl.Int32),
        pl.col("offset").cast(pl.Int64),
    ).join(evidence, on="ri", how="left", maintain_order="left")
    alone = pl.col("e_ids").is_null()
    return frame.select(
        "run_id",
        "task_id",
        "quality",
        "score",
        "reasons",
        pl.when(alone)
        .then(pl.concat_list("evidence_id"))
        .otherwise(pl.concat_list("evidence_id", "e_ids"))
        .alias("evidence_ids"),
        pl.when(alone)
        .then(pl.concat_list("day"))
        .otherwise(pl.concat_list("day", "e_days"))
        .alias("evidence_days"),
        pl.when(alone)
        .then(pl.concat_list("offset"))
        .otherwise(pl.concat_list("offset", "e_offsets"))
        .alias("evidence_offsets"),
    )


def write_scored_trace(out_root: Path, day: Any, part: Any, lines: Any, sha256: str) -> None:
    """The day's ``scored_trace`` rows with each scored line's byte offset, as an Arrow file
    beside the scored runs, naming the sha256 of the scored file it describes (the lookup uses
    it only while the ledger names the same)."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.ipc as ipc

    widths = lines.str.len_bytes().cast(pl.Int64)
    frame = part.with_columns(offset=(widths.cum_sum() - widths))
    # a fresh copy: a slice's buffers would be written with whatever surrounds it, and the
    # bytes must not depend on how the days were cut into blocks
    table = frame.to_arrow()
    table = table.take(pa.array(range(table.num_rows), type=pa.int64()))
    table = table.replace_schema_metadata({"scored_sha256": sha256})
    target = out_root / layout.scored_trace(day)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- building ---------------------------------------------------------------------------


def _offsets(path: Path) -> Any:
    """The byte offset of each line of a JSONL file we wrote (no blank lines): its newlines
    found by numpy, 16 MiB at a time, so memory holds one piece and the offsets."""
    import numpy as np
    import polars as pl

    starts = [np.zeros(1, dtype=np.int64)]
    done = 0
    with open(path, "rb") as fh:
        while piece := fh.read(1 << 24):
            ends = np.flatnonzero(np.frombuffer(piece, dtype=np.uint8) == 10)
            starts.append(ends.astype(np.int64) + done + 1)
            done += len(piece)
    offsets = np.concatenate(starts)
    if offsets[-1] == done:  # the last line ends with a newline: no line starts there
        offsets = offsets[:-1]
    if len(offsets) > 1 and (np.diff(offsets) < 2).any():
        raise TraceError(f"{path}: blank lines, its lines cannot be indexed")
    return pl.DataFrame({"offset": offsets})


def _jsonl(path: Path, schema: dict[str, Any], with_offsets: bool = True) -> Any:
    """The named fields of every line (others are skipped by the native reader), with each
    line's byte offset."""
    import polars as pl

    if path.stat().st_size == 0:
        return pl.DataFrame(schema={**schema, "offset": pl.Int64})
    frame = pl.read_ndjson(path, schema=schema)
    if with_offsets:
        frame = frame.with_columns(_offsets(path)["offset"])
    return frame


# bytes of a JSONL file parsed at once while building (memory holds one piece)
_PIECE_BYTES = 1 << 25


def _jsonl_pieces(path: Path, schema: dict[str, Any], piece_bytes: int = _PIECE_BYTES) -> Any:
    """``_jsonl`` piece by piece (``io.jsonl_fields``): frames of the named fields and each
    line's byte offset, so memory holds one piece."""
    try:
        yield from jsonl_fields(path, schema, piece_bytes)
    except BlankLineError as exc:
        raise TraceError(str(exc)) from exc


@dataclass
class BuildFigures:
    """What building the lookup cost and holds (the publish receipt records them)."""

    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    # milliseconds per phase (docs/performance.md)
    phases: dict[str, int] = field(default_factory=dict)

    def lap(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.phases[phase] = int((now - since) * 1000)
        return now


# the roles of the files under the output root (the evidence store's records, the scored runs);
# the others (datasets, quarantines) are under the version's root
_STORE_ROLES = ("records", "scored")


class _Files:
    """The files the lookup points into, numbered, with their size, time and producer."""

    def __init__(self, out_root: Path, root: Path) -> None:
        from distill_assets.lib.records.receipts import read_ledger

        self.out_root = out_root
        self.root = root
        self.ledger = read_ledger(out_root)
        self.rows: list[tuple[Any, ...]] = []

    def add(
        self,
        relpath: str,
        role: str,
        name: str = "",
        split: str = "",
        producer: str | None = None,
    ) -> int:
        """Number the file ``relpath`` (under the output root or the version's, by its role)."""
        known = self.ledger.get(relpath) or {}
        base = self.out_root if role in _STORE_ROLES else self.root
        try:
            stat = (base / relpath).stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # a step working on a copy of an object-store output: not pulled here
            size, mtime = int(known.get("bytes", 0)), int(known.get("mtime_ns", 0))
        producer = producer or known.get("run_id")
        number = len(self.rows) + 1
        self.rows.append((number, relpath, role, name, split, size, mtime, producer))
        return number


def _receipt_reasons(out_root: Path, producer: str | None, stage: str) -> list[tuple[str, int]]:
    """The reason counts of a stage's receipt (the run that wrote the file)."""
    if producer is None:
        return []
    try:
        receipt = orjson.loads((out_root / C.REPORTS_DIR / producer / f"{stage}.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return []
    found = (receipt.get("stats") or {}).get("reasons") or {}
    return [(str(code), int(n)) for code, n in sorted(found.items())]


def _place(file: int, offset: Any) -> Any:
    """A line's place as one integer: the file's number above bit 40, the byte offset below."""
    import polars as pl

    return pl.lit(file << PLACE_BITS, dtype=pl.Int64) + offset.cast(pl.Int64)


def scored_list(
    out_root: Path, day: Any, ledger: dict[str, dict[str, Any]], same_file: bool = False
) -> Any:
    """The score stage's list of a day's runs (``write_scored_trace``), memory-mapped, when it
    describes the scored file the ledger names (the sha256 it recorded); with ``same_file``,
    only if the scored file on disk is that one too (``layout.as_ledger_says``: a copy of an
    object-store output may hold the list without the file). None otherwise."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    relpath = layout.scored_runs(day)
    sidecar = out_root / layout.scored_trace(day)
    known = (ledger.get(relpath) or {}).get("sha256")
    if not known or not sidecar.exists():
        return None
    if same_file and not layout.as_ledger_says(out_root, relpath, ledger):
        return None
    # (the table's buffers keep the map open; nothing is read until a column is used)
    reader = ipc.open_file(pa.memory_map(str(sidecar), "r"))
    if (reader.schema.metadata or {}).get(b"scored_sha256") != known.encode():
        return None
    return reader.read_all()


def _scored_days(out_root: Path, files: _Files, figures: BuildFigures) -> Any:
    """Per day with scored runs on disk, its runs (the ``scored_trace`` columns, as Arrow) and
    its scored file's number, from the score stage's Arrow file when it describes the scored
    file on disk (the ledger's sha256), else from the scored file and the index: one day in
    memory at a time."""
    # the days with scored runs: their scored files, or only the score stage's lists on a copy
    # of an object-store output (which holds what the publish stage reads)
    days = sorted(
        set(layout.days_on_disk(out_root, C.SCORED_DIR, C.SCORED_FILE))
        | set(layout.days_on_disk(out_root, C.SCORED_DIR, C.SCORED_TRACE_FILE))
    )
    figures.rows["days_read_again"] = 0
    index = None
    for day in days:
        relpath = layout.scored_runs(day)
        path = out_root / relpath
        if path.exists() and path.stat().st_size == 0:
            continue
        number = files.add(relpath, "scored")
        table = scored_list(out_root, day, files.ledger)
        if table is not None:
            yield table, number
            continue
        figures.rows["days_read_again"] += 1
        if path.exists():
            if index is None:
                index = _evidence_index(out_root)
            yield _parsed_runs(out_root, [(number, relpath)], index).to_arrow(), number


def _runs_schema() -> Any:
    """The columns of the lookup's ``runs`` table."""
    import pyarrow as pa

    return pa.schema(
        [
            ("run_id", pa.large_string()),
            ("task_id", pa.large_string()),
            ("quality", pa.large_string()),
            ("score", pa.float64()),
            ("reasons", pa.large_string()),
            ("file", pa.int64()),
            ("offset", pa.int64()),
            ("evidence_ids", pa.large_list(pa.large_string())),
            ("evidence_days", pa.large_list(pa.int32())),
            ("evidence_offsets", pa.large_list(pa.int64())),
        ]
    )


def _run_rows(runs: Any, number: int, records: dict[int, int], files: _Files) -> Any:
    """A day's runs as the lookup's ``runs`` columns (Arrow, no copy of what is already so):
    evidence ids by their first 16 hex digits (as ``scored_trace`` and ``_parsed_runs`` give
    them), each with its records file's day ordinal and byte offset; the records files are
    numbered in ``records`` by day ordinal, on first sight."""
    import pyarrow as pa
    import pyarrow.compute as pc

    days = pc.unique(pc.list_flatten(runs.column("evidence_days"))).drop_null()
    for o in sorted(days.to_pylist()):
        if o and int(o) not in records:
            day = date.fromordinal(int(o))
            relpath = layout.evidence_records(day)
            records[int(o)] = files.add(relpath, "records", day.isoformat())
    schema = _runs_schema()
    columns = [
        pa.array([number] * runs.num_rows, type=pa.int64())
        if name == "file"
        else runs.column(name).cast(schema.field(name).type)
        for name in schema.names
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _evidence_index(out_root: Path) -> Any:
    """Every evidence id of the store with its day (ordinal) and byte offset in the day's
    records file (the slow way of ``_parsed_runs``)."""
    import polars as pl

    index = []
    for day in layout.days_on_disk(out_root, C.EVIDENCE_DIR, "index.jsonl"):
        path = out_root / layout.evidence_index(day)
        if path.stat().st_size:
            frame = _jsonl(path, {"evidence_id": pl.String, "offset": pl.Int64}, False)
            index.append(frame.with_columns(day=pl.lit(day.toordinal(), dtype=pl.Int32)))
    if not index:
        return pl.DataFrame(schema={"evidence_id": pl.String, "offset": pl.Int64, "day": pl.Int32})
    return pl.concat(index)


def _parsed_runs(out_root: Path, days: list[tuple[int, str]], known: Any) -> Any:
    """The ``scored_trace`` columns read back from scored files and the evidence index
    (``known``: days scored by an older version of distill, or rewritten since): the slow
    way, kept correct."""
    import polars as pl

    schema = {
        "run_id": pl.String,
        "task_id": pl.String,
        "quality_score": pl.String,
        "score": pl.Float64,
        "reasons": pl.List(pl.String),
        "evidence_ids": pl.List(pl.String),
    }
    frames = [
        _jsonl(out_root / relpath, schema).with_columns(file=pl.lit(number, dtype=pl.Int64))
        for number, relpath in days
    ]
    runs = pl.concat(frames).with_row_index("_run")
    places = (
        runs.select("_run", pl.col("evidence_ids").alias("evidence_id"))
        .explode("evidence_id")
        .join(known, on="evidence_id", how="left", maintain_order="left")
        .group_by("_run", maintain_order=True)
        .agg(
            evidence_days=pl.col("day").fill_null(0),
            evidence_offsets=pl.col("offset").fill_null(0),
        )
    )
    return runs.join(places, on="_run", how="left", maintain_order="left").select(
        "run_id",
        "task_id",
        pl.col("quality_score").alias("quality"),
        "score",
        pl.col("reasons").list.join(",").alias("reasons"),
        pl.col("evidence_ids").list.eval(pl.element().str.slice(0, 16)),
        "evidence_days",
        "evidence_offsets",
        "offset",
        "file",
    )


# the seed of the key hashes a keyed table is ordered by (polars' hash: stable within one
# polars version, which the lookup records; a reader with another version scans instead)
_KEY_SEED = 0x64697374


class _Tables:
    """The lookup's tables, written as Arrow IPC files into a directory that is renamed into
    place when complete (one record batch each: a reader maps a file and searches it)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True)

    def write(self, name: str, frame: Any, key: str | None = None) -> int:
        """Write ``frame``; with ``key``, ordered by the 64-bit hash of that column (a stable
        sort: rows of one hash keep their order), the hash kept as column ``hash``. A reader
        finds a key by bisecting the hashes: no string sort at build time."""
        import polars as pl
        import pyarrow as pa
        import pyarrow.ipc as ipc

        if key is not None:
            frame = frame.with_columns(pl.col(key).hash(_KEY_SEED).alias("hash")).sort(
                "hash", maintain_order=True
            )
        table = frame.to_arrow().combine_chunks()
        with (
            pa.OSFile(str(self.directory / f"{name}.arrow"), "wb") as sink,
            ipc.new_file(sink, table.schema) as writer,
        ):
            writer.write_table(table)
        return int(table.num_rows)


# (id, place) pairs numbered by one join with the run ids (about 60 bytes a pending pair)
_PAIRS_PER_JOIN = 1_000_000


class _Pairs:
    """(id, place) pairs from the dataset rows and quarantine lines, streamed: those naming a
    scored run kept as two integer columns (the run's number, the place: 12 bytes a pair)
    and written last sorted by run (``places``); the rest kept with their id (``refs``,
    sorted by id)."""

    def __init__(self, scored: Any) -> None:
        # (a run id scored on two days: its places are listed under both numbers)
        self.scored = scored
        self.runs: list[Any] = []
        self.places: list[Any] = []
        self.refs: list[Any] = []
        self.pending: list[Any] = []
        self.pending_rows = 0
        self.counts = {"run_places": 0, "refs": 0}

    def add(self, frame: Any) -> None:
        frame = frame.drop_nulls("key")
        if frame.is_empty():
            return
        self.pending.append(frame)
        self.pending_rows += frame.height
        if self.pending_rows >= _PAIRS_PER_JOIN:
            self._join()

    def _join(self) -> None:
        """Number the pending pairs: one join with the run ids for many sources (each join
        hashes every scored run id once)."""
        import polars as pl

        if not self.pending:
            return
        frame = pl.concat(self.pending)
        self.pending, self.pending_rows = [], 0
        joined = frame.join(
            self.scored, left_on="key", right_on="run_id", how="left", maintain_order="left"
        )
        del frame
        named = joined.filter(pl.col("run").is_not_null())
        self.runs.append(named["run"].cast(pl.Int32))
        self.places.append(named["place"].cast(pl.Int64))
        other = joined.filter(pl.col("run").is_null()).select("key", "place")
        if other.height:
            self.refs.append(other)
        self.counts["run_places"] += named.height
        self.counts["refs"] += other.height

    def finish(self, tables: _Tables) -> None:
        import polars as pl

        self._join()
        places = pl.DataFrame(
            {
                "run": pl.concat(self.runs) if self.runs else pl.Series([], dtype=pl.Int32),
                "place": pl.concat(self.places) if self.places else pl.Series([], dtype=pl.Int64),
            }
        )
        self.runs, self.places = [], []
        # a run's places in the order they were found (a reader takes their set)
        tables.write("places", places.sort("run", maintain_order=True))
        del places
        refs = (
            pl.concat(self.refs)
            if self.refs
            else pl.DataFrame(schema={"key": pl.String, "place": pl.Int64})
        )
        self.refs = []
        tables.write("refs", refs, key="key")


def _polars_version() -> str:
    import polars as pl

    return str(pl.__version__)


def build_lookup(out_root: Path, root: Path, run_id: str) -> BuildFigures:
    """Write the lookup of the version ``root`` of run ``run_id``: its tables as Arrow files
    in ``root/trace/``, then ``root/trace.sqlite`` naming them (each renamed into place when
    complete; a reader opens the SQLite file first).

    Tables: ``runs`` (one row per scored run, numbered from 1 in row order: its verdict,
    where its scored line and evidence records are), ``run_keys`` (run ids sorted, with their
    numbers), ``rows`` (every dataset row's id, place and CRC-32, sorted by id, from the
    exports' own row lists, not their texts), ``places`` (the places of the dataset rows and
    quarantine lines naming a scored run, sorted by its number) and ``refs`` (quarantine lines
    about anything else: a run never scored, a playbook, an evidence record; sorted by id).
    The SQLite file holds the files the places point into, the reason counts and what the
    lookup is. Each source (a scored day, a dataset's row list, a quarantine file piece by
    piece) is decoded by polars and reduced to integers and keys before the next is read."""
    import shutil

    began = time.perf_counter()
    figures = BuildFigures()
    files = _Files(out_root, root)
    target = root / C.TRACE_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    staging = root / f".{C.TRACE_TABLES_DIR}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        build = _Build(out_root, root, run_id, _Tables(staging), files, figures)
        with ThreadPoolExecutor(1, thread_name_prefix="trace-quarantines") as reader:
            reasons, counts = _write_tables(build, reader)
        figures.rows |= counts
        clock = time.perf_counter()
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute("BEGIN")
            for statement in _SCHEMA.split(";"):
                db.execute(statement)
            db.executemany("INSERT INTO files VALUES (?,?,?,?,?,?,?,?)", files.rows)
            db.executemany("INSERT INTO reasons VALUES (?,?,?)", sorted(reasons))
            meta = {
                "schema_version": str(LOOKUP_SCHEMA_VERSION),
                "run_id": run_id,
                "polars_version": _polars_version(),
            }
            meta |= {f"rows.{name}": str(n) for name, n in sorted(figures.rows.items())}
            db.executemany("INSERT INTO meta VALUES (?,?)", sorted(meta.items()))
            db.execute("COMMIT")
        finally:
            db.close()
        os.chmod(tmp, 0o644)
        # the tables first (a lookup file never names tables that are not there), then the file
        final = root / C.TRACE_TABLES_DIR
        old = root / f".{C.TRACE_TABLES_DIR}.{os.getpid()}.old"
        if final.exists():
            os.replace(final, old)
        os.replace(staging, final)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    figures.lap("files and commit", clock)
    figures.seconds = time.perf_counter() - began
    return figures


def _quarantine_keys(path: Path, stage: str) -> tuple[list[Any], dict[str, int]]:
    """The ids a stage's quarantine file names (frames of ``key`` and line ``offset``, one per
    id field) and, for the collect and score views, its reason codes counted."""
    import polars as pl

    # only the fields this stage's lines have (reading fewer is what makes it cheap)
    strings, lists = _QUARANTINE_FIELDS.get(stage, (("run_id",), ()))
    fields = {key: pl.String for key in strings}
    fields |= {key: pl.List(pl.String) for key in lists}
    named: dict[str, list[Any]] = {key: [] for key in (*strings, *lists) if key != "reasons"}
    counted: dict[str, int] = {}
    for frame in _jsonl_pieces(path, fields, _PIECE_BYTES):
        if stage in (C.STAGE_COLLECT, C.STAGE_SCORE):
            codes = frame.select(pl.col("reasons").explode()).drop_nulls()
            for code, n in codes.group_by("reasons").len().iter_rows():
                counted[str(code)] = counted.get(str(code), 0) + int(n)
        for key in strings:
            named[key].append(frame.select(pl.col(key).alias("key"), "offset"))
        for key in lists:
            if key != "reasons":
                named[key].append(frame.select(pl.col(key).alias("key"), "offset").explode("key"))
        del frame
    return [pl.concat(frames) for frames in named.values() if frames], counted


@dataclass(frozen=True)
class _Build:
    """A lookup being written: the output root and the version's root it reads, the run
    building it, its tables, the files it numbers and what it costs."""

    out_root: Path
    root: Path
    run_id: str
    tables: _Tables
    files: _Files
    figures: BuildFigures


def _write_tables(
    build: _Build, reader: ThreadPoolExecutor
) -> tuple[list[tuple[str, str, int]], dict[str, int]]:
    """The lookup's tables, source by source (``build_lookup``); the reason counts of the
    quarantine files, and the tables' row counts."""
    began = time.perf_counter()
    root = build.root
    # the quarantine files are read in a thread meanwhile (polars parses them without the GIL)
    quarantines = [
        (stage, reader.submit(_quarantine_keys, root / C.quarantine_path(stage), stage))
        for stage in QUARANTINE_STAGES
        if (root / C.quarantine_path(stage)).exists()
    ]
    pairs, count = _write_runs(build)
    clock = build.figures.lap("scored runs", began)
    rows = _write_rows(build, pairs)
    counts = {"runs": count, "rows": rows}
    clock = build.figures.lap("dataset rows", clock)
    reasons = _add_quarantines(build, quarantines, pairs)
    clock = build.figures.lap("quarantines", clock)
    pairs.finish(build.tables)
    build.figures.lap("run places", clock)
    return reasons, {**counts, **pairs.counts}


def _write_runs(build: _Build) -> tuple[_Pairs, int]:
    """The ``runs`` and ``run_keys`` tables: the scored runs, day by day, numbered in order (a
    run's number is its row + 1); the pairs to come, numbered by those runs, and their count."""
    import numpy as np
    import polars as pl
    import pyarrow as pa
    import pyarrow.ipc as ipc

    records: dict[int, int] = {}
    numbered: list[Any] = []
    count = 0
    with (
        pa.OSFile(str(build.tables.directory / "runs.arrow"), "wb") as sink,
        ipc.new_file(sink, _runs_schema()) as writer,
    ):
        for day, number in _scored_days(build.out_root, build.files, build.figures):
            table = _run_rows(day, number, records, build.files)
            del day
            numbered.append(
                pl.DataFrame(
                    {
                        "run_id": pl.Series(table.column("run_id"), dtype=pl.String),
                        "run": np.arange(count + 1, count + 1 + table.num_rows, dtype=np.int64),
                    }
                )
            )
            count += table.num_rows
            writer.write_table(table)
    scored = (
        pl.concat(numbered)
        if numbered
        else pl.DataFrame(schema={"run_id": pl.String, "run": pl.Int64})
    )
    del numbered
    build.tables.write("run_keys", scored, key="run_id")
    return _Pairs(scored), count


def _write_rows(build: _Build, pairs: _Pairs) -> int:
    """The ``rows`` table: the dataset rows, from the row lists the exports wrote beside them
    (their runs' places go to ``pairs``); its row count."""
    import polars as pl

    root, files = build.root, build.files
    written: list[Any] = []
    for name, (stage, train, holdout) in DATASETS.items():
        sidecar = root / C.trace_rows_path(stage)
        if not sidecar.exists():
            continue
        listed = pl.read_ipc(sidecar)
        for side, (split, relpath) in enumerate(zip(SPLITS, (train, holdout), strict=True)):
            part = listed.filter(pl.col("side") == side)
            path = root / relpath
            if not path.exists() or int(part["length"].sum() or 0) != path.stat().st_size:
                continue  # a dataset this row list does not describe: left out, not guessed
            number = files.add(relpath, "dataset", name, split)
            place = _place(number, pl.col("offset")).alias("place")
            written.append(part.select("id", place, pl.col("crc").alias("digest")))
            pairs.add(
                part.select(pl.col("runs").str.split(_SEP).alias("key"), place).explode("key")
            )
            del part
        del listed
    rows = (
        pl.concat(written)
        if written
        else pl.DataFrame(schema={"id": pl.String, "place": pl.Int64, "digest": pl.Int64})
    )
    del written
    build.tables.write("rows", rows, key="id")
    return rows.height


def _add_quarantines(
    build: _Build, quarantines: list[tuple[str, Any]], pairs: _Pairs
) -> list[tuple[str, str, int]]:
    """The quarantine lines, under every id each names (to ``pairs``); their reason codes
    counted (diff)."""
    import polars as pl

    files = build.files
    reasons: list[tuple[str, str, int]] = []
    for stage, read in quarantines:
        relpath = C.quarantine_path(stage)
        # the collect and score views are assembled by this publish stage
        made_here = stage in (C.STAGE_COLLECT, C.STAGE_SCORE)
        number = files.add(
            relpath, "quarantine", stage, producer=build.run_id if made_here else None
        )
        named, counted = read.result()
        if made_here:
            reasons += [(stage, code, n) for code, n in counted.items()]
        else:  # an export's own count of the reasons it left records out for
            producer = files.rows[-1][-1]
            reasons += [
                (stage, code, n) for code, n in _receipt_reasons(build.out_root, producer, stage)
            ]
        # (a line naming one id twice is listed twice: the reader takes the set of places)
        for frame in named:
            pairs.add(frame.select("key", _place(number, pl.col("offset")).alias("place")))
        del named
    return reasons


# --- reading ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    path: str
    role: str
    name: str
    split: str
    bytes: int
    mtime_ns: int
    producer: str | None


class Lookup:
    """An open trace lookup of one version, and the files it points into: the SQLite file
    (what the lookup is, the files, the reason counts) and its Arrow tables, memory-mapped."""

    def __init__(self, out_root: Path, root: Path) -> None:
        self.out_root = out_root
        self.root = root
        self.path = root / C.TRACE_FILE
        self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            meta = {}
        if meta.get("schema_version") != str(LOOKUP_SCHEMA_VERSION):
            self.db.close()
            raise TraceError(
                f"{self.path} was built by another version of distill: materialize again"
            )
        self.run_id = meta.get("run_id", root.name)
        self.polars_version = meta.get("polars_version")
        self.files = {
            int(row[0]): FileInfo(*row[1:]) for row in self.db.execute("SELECT * FROM files")
        }
        # a records file by its day's ordinal (the runs table names evidence by day and offset)
        self.records = {
            date.fromisoformat(info.name).toordinal(): number
            for number, info in self.files.items()
            if info.role == "records" and info.name
        }
        self._handles: dict[int, Any] = {}
        self._receipts: dict[tuple[str, str], dict[str, Any]] = {}
        self._tables: dict[str, Any] = {}
        self._maps: list[Any] = []

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._tables.clear()
        for mapped in self._maps:
            mapped.close()
        self._maps.clear()
        self.db.close()

    # --- the tables ------------------------------------------------------------------------

    def table(self, name: str) -> Any:
        """One of the lookup's tables (``build_lookup``), memory-mapped (no copy)."""
        found = self._tables.get(name)
        if found is None:
            import pyarrow as pa
            import pyarrow.ipc as ipc

            path = self.root / C.TRACE_TABLES_DIR / f"{name}.arrow"
            try:
                mapped = pa.memory_map(str(path), "r")
            except OSError as exc:
                raise TraceError(
                    f"{path} is missing: the lookup is incomplete, materialize again"
                ) from exc
            self._maps.append(mapped)
            found = self._tables[name] = ipc.open_file(mapped).read_all()
        return found

    def _column(self, name: str, column: str) -> Any:
        import pyarrow as pa

        chunked = self.table(name).column(column)
        if chunked.num_chunks == 1:
            return chunked.chunk(0)
        if chunked.num_chunks == 0:
            return pa.array([], type=chunked.type)
        return chunked.combine_chunks()

    def _find(self, name: str, column: str, key: str) -> Any:
        """Row numbers (ascending) of a keyed table (``_Tables.write``) whose ``column`` is
        ``key``: the key's hash bisected in the table's hash column, then the key compared;
        a full comparison when this polars hashes otherwise than the one that built it."""
        import numpy as np
        import polars as pl
        import pyarrow.compute as pc

        keys = self._column(name, column)
        if self.polars_version == _polars_version():
            hashes = self._column(name, "hash").to_numpy()
            wanted = pl.Series([key], dtype=pl.String).hash(_KEY_SEED).to_numpy()[0]
            low = int(np.searchsorted(hashes, wanted, side="left"))
            high = int(np.searchsorted(hashes, wanted, side="right"))
            same = pc.equal(keys.slice(low, high - low), key).fill_null(False)
            return np.flatnonzero(same.to_numpy(zero_copy_only=False)) + low
        return np.flatnonzero(pc.equal(keys, key).fill_null(False).to_numpy(zero_copy_only=False))

    def _values(self, name: str, column: str, found: Any) -> list[Any]:
        return self._column(name, column).take(found).to_pylist() if len(found) else []

    def row_places(self, row_id: str) -> list[int]:
        """Places of the dataset rows with this id, in order."""
        return sorted(self._values("rows", "place", self._find("rows", "id", row_id)))

    def ref_places(self, key: str) -> list[int]:
        """Places of the quarantine lines naming ``key`` that is not a scored run."""
        return self._values("refs", "place", self._find("refs", "key", key))

    def run_numbers(self, run_id: str) -> list[int]:
        """Numbers of the scored runs with this run id (one, unless scored on two days)."""
        return sorted(self._values("run_keys", "run", self._find("run_keys", "run_id", run_id)))

    def run_row(self, run: int) -> dict[str, Any]:
        """The ``runs`` row of the scored run numbered ``run``."""
        return dict(self.table("runs").slice(run - 1, 1).to_pylist()[0])

    def runs_where(self, column: str, value: str) -> list[int]:
        """Numbers of the scored runs whose ``column`` (a string, or a list of strings) holds
        ``value``: one vectorised pass over the mapped column."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        values = self._column("runs", column)
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            hits = np.flatnonzero(pc.equal(values.flatten(), value).fill_null(False))
            offsets = values.offsets.to_numpy()[: len(values) + 1] - values.offsets[0].as_py()
            rows = np.searchsorted(offsets, hits, side="right") - 1
        else:
            rows = np.flatnonzero(pc.equal(values, value).fill_null(False))
        return sorted({int(r) + 1 for r in rows})

    def run_places(self, run: int) -> list[int]:
        """Places of every dataset row and quarantine line naming the scored run ``run``."""
        import numpy as np

        numbers = self._column("places", "run").to_numpy()
        low, high = np.searchsorted(numbers, [run, run + 1])
        return self._column("places", "place").slice(int(low), int(high - low)).to_pylist()

    def evidence_places(self, row: dict[str, Any]) -> list[tuple[str, int | None, int]]:
        """A ``runs`` row's evidence: (16 hex digits of the id, records file, byte offset)."""
        return [
            (prefix, self.records.get(int(day or 0)), int(offset or 0))
            for prefix, day, offset in zip(
                row.get("evidence_ids") or [],
                row.get("evidence_days") or [],
                row.get("evidence_offsets") or [],
                strict=False,
            )
        ]

    # --- the files ---------------------------------------------------------------------------

    def base(self, file: int) -> Path:
        role = self.files[file].role
        return self.out_root if role in _STORE_ROLES else self.root

    def changed(self, file: int) -> bool:
        """The file is not the one the lookup was built from (a later run rewrote it)."""
        info = self.files[file]
        try:
            stat = (self.base(file) / info.path).stat()
        except OSError:
            return True
        return stat.st_size != info.bytes or stat.st_mtime_ns != info.mtime_ns

    def line(self, file: int, offset: int) -> dict[str, Any] | None:
        """The JSON line at ``offset`` of a file the lookup points into (None if unreadable)."""
        handle = self._handles.get(file)
        if handle is None:
            try:
                handle = open(layout.inside(self.base(file), self.files[file].path), "rb")
            except (OSError, ValueError):
                return None
            self._handles[file] = handle
        try:
            handle.seek(offset)
            value = orjson.loads(handle.readline())
        except (OSError, orjson.JSONDecodeError):
            return None
        return value if isinstance(value, dict) else None

    def settings(self, producer: str | None, stage: str) -> dict[str, Any] | None:
        """The settings a stage's receipt recorded for the run that produced a file."""
        if producer is None:
            return None
        key = (producer, stage)
        if key not in self._receipts:
            path = self.out_root / C.REPORTS_DIR / producer / f"{stage}.json"
            try:
                self._receipts[key] = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                self._receipts[key] = {}
        settings = (self._receipts[key].get("extra") or {}).get("settings")
        return settings if isinstance(settings, dict) else None


def open_lookup(out_root: Path, run_id: str | None = None) -> Lookup:
    """The lookup of the published version, or of the kept version of ``run_id``."""
    if run_id is None:
        published = layout.published_exports(out_root)
        if published is None:
            raise TraceError(f"nothing is published under {out_root}: run distill materialize")
        root = published.parent
        if not (root / C.TRACE_FILE).exists():
            raise TraceError(
                f"the version published by run {root.name} has no trace lookup (it was "
                "published before distill built one): run distill materialize again"
            )
        return Lookup(out_root, root)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", run_id):
        raise TraceError(f"not a run id: {run_id!r}")
    root = layout.version_root(out_root, run_id)
    if not (root / C.TRACE_FILE).exists():
        kept = ", ".join(traced_versions(out_root)) or "none"
        raise TraceError(f"run {run_id} has no kept version with a trace lookup (kept: {kept})")
    return Lookup(out_root, root)


def traced_versions(out_root: Path) -> list[str]:
    """Run ids of the kept versions that have a lookup, oldest first (by the run index)."""
    base = out_root / C.VERSIONS_DIR
    found = {p.parent.name for p in base.glob(f"*/{C.TRACE_FILE}")} if base.is_dir() else set()
    ordered: list[str] = []
    index = out_root / C.RUN_INDEX_PATH
    if index.exists():
        for raw in index.read_bytes().splitlines():
            try:
                run = orjson.loads(raw).get("run_id")
            except orjson.JSONDecodeError:
                continue
            if run in found and run not in ordered:
                ordered.append(run)
    rest = sorted(found - set(ordered), key=lambda r: (base / r / C.TRACE_FILE).stat().st_mtime_ns)
    return [*rest, *ordered]


def redactions(value: Any, path: str = "") -> list[dict[str, str]]:
    """Where a published row holds redaction placeholders: type and field path, no text."""
    if isinstance(value, str):
        return [{"type": kind, "field": path} for kind in _REDACTED.findall(value)]
    if isinstance(value, dict):
        return [
            found
            for key, item in value.items()
            for found in redactions(item, f"{path}.{key}" if path else str(key))
        ]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in redactions(item, f"{path}[{i}]")]
    return []


def split_place(place: int) -> tuple[int, int]:
    """(file number, byte offset) of a place."""
    return place >> PLACE_BITS, place & ((1 << PLACE_BITS) - 1)


def run_places(lookup: Lookup, run: int) -> list[tuple[int, int]]:
    """(file number, byte offset) of every dataset row and quarantine line naming the scored
    run numbered ``run``."""
    return [split_place(place) for place in lookup.run_places(run)]


def _findings(line: dict[str, Any]) -> list[dict[str, str]]:
    """A quarantine line's secret findings: type and field only, never a value or preview."""
    return [
        {"type": str(f.get("type")), "field": str(f.get("field"))}
        for f in line.get("findings") or []
        if isinstance(f, dict)
    ]


def left_out(stage: str, line: dict[str, Any], run_id: str | None) -> dict[str, Any]:
    """A quarantine line as a trace shows it: the stage, its disposition and reasons, the pair
    or playbook it is about, and any secret findings by type and field only."""
    item: dict[str, Any] = {
        "stage": stage,
        "status": line.get("disposition", C.DISPOSITION_QUARANTINED),
        "reasons": line.get("reasons") or [],
        "record_type": line.get("record_type"),
    }
    if line.get("record_type") == "pair":
        item["pair"] = {
            "chosen_run_id": line.get("chosen_run_id"),
            "rejected_run_id": line.get("rejected_run_id"),
            "margin": line.get("margin"),
        }
        item["side"] = "chosen" if line.get("chosen_run_id") == run_id else "rejected"
    if line.get("playbook_id"):
        item["playbook_id"] = line["playbook_id"]
    if line.get("kept_id"):
        item["kept_id"] = line["kept_id"]
    if line.get("findings"):
        item["secrets"] = _findings(line)
    if line.get("contamination"):
        item["contamination"] = line["contamination"]
    return item


def evidence_of(lookup: Lookup, where: list[tuple[str, int | None, int]]) -> list[dict[str, Any]]:
    """The evidence records of a run (``Lookup.evidence_places``), read where they are."""
    found = []
    for prefix, file, offset in where:
        entry: dict[str, Any] = {"evidence_id": prefix}
        if file is None or file not in lookup.files:
            entry["problem"] = "not in the evidence store"
            found.append(entry)
            continue
        record = lookup.line(file, offset)
        if record is None or not str(record.get("evidence_id", "")).startswith(prefix):
            entry["problem"] = f"{lookup.files[file].path} changed since this version"
            found.append(entry)
            continue
        body = record.get("record")
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        entry.update(
            evidence_id=record["evidence_id"],
            kind=record.get("kind"),
            source_path=record.get("source_path"),
            line=record.get("line"),
            sha256=digest,
            source_sha256=record.get("source_sha256"),
            created_at=record.get("created_at"),
            store=f"{lookup.files[file].path}@{offset}",
        )
        if isinstance(body, dict) and record.get("kind") == C.KIND_REVIEW:
            entry["verdict"] = body.get("verdict")
            if body.get("reviewer"):
                entry["reviewer"] = body.get("reviewer")
        if isinstance(body, dict) and record.get("kind") == C.KIND_OUTCOME:
            entry["outcome"] = body.get("outcome")
        if digest != record["evidence_id"]:
            entry["problem"] = "the record does not hash to its evidence id"
        found.append(entry)
    return found


def _run(lookup: Lookup, run_id: str) -> dict[str, Any]:
    """Everything the lookup knows of one run."""
    out: dict[str, Any] = {"run_id": run_id}
    numbers = lookup.run_numbers(run_id)
    places = [split_place(p) for p in lookup.ref_places(run_id)]
    if numbers:
        number = numbers[0]
        row = lookup.run_row(number)
        file = int(row["file"])
        info = lookup.files[file]
        out["task_id"] = row["task_id"]
        out["verdict"] = {
            "quality": row["quality"],
            "score": row["score"],
            "reasons": [r for r in (row["reasons"] or "").split(",") if r],
            "scored_file": info.path,
            "scored_by_run": info.producer,
            "policy": lookup.settings(info.producer, C.STAGE_SCORE),
        }
        if lookup.changed(file):
            out["verdict"]["note"] = f"{info.path} was rewritten by a later run"
        out["evidence"] = evidence_of(lookup, lookup.evidence_places(row))
        places = run_places(lookup, number) + places
    else:
        out["verdict"] = None
        out["evidence"] = []
    collect: list[dict[str, Any]] = []
    score: list[dict[str, Any]] = []
    exports: list[dict[str, Any]] = []
    for file, offset in sorted(set(places)):
        info = lookup.files[file]
        line = lookup.line(file, offset)
        if line is None:
            continue
        if info.role == "dataset":
            item = {
                "stage": DATASETS[info.name][0],
                "dataset": info.name,
                "status": "published",
                "split": info.split,
                "row_id": line.get("id"),
                "file": info.path,
            }
            if line.get("chosen_run_id"):
                item["side"] = "chosen" if line["chosen_run_id"] == run_id else "rejected"
            hidden = redactions(line)
            if hidden:
                item["secrets_redacted"] = hidden
            exports.append(item)
        elif info.name == C.STAGE_COLLECT:
            collect.append(
                {
                    "status": line.get("disposition"),
                    "reasons": line.get("reasons") or [],
                    "kind": line.get("kind"),
                    "source_path": line.get("source_path"),
                    "line": line.get("line"),
                }
            )
        elif info.name == C.STAGE_SCORE:
            score.append(
                {
                    "status": line.get("disposition"),
                    "reasons": line.get("reasons") or [],
                    "kind": line.get("kind"),
                    "evidence_id": line.get("evidence_id"),
                }
            )
        else:
            exports.append(left_out(info.name, line, run_id))
    order = {stage: n for n, stage in enumerate(S.STAGES)}
    exports.sort(key=lambda e: (order.get(e["stage"], 99), e["status"] != "published"))
    out[C.STAGE_COLLECT] = collect
    out[C.STAGE_SCORE] = score
    out["exports"] = exports
    return out


@dataclass
class _Matches:
    """What an id was found to be (in the order found) and the runs behind it."""

    matched: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)


def _dataset_rows(lookup: Lookup, ident: str, found: _Matches) -> list[dict[str, Any]]:
    """The dataset rows with id ``ident``, read where the lookup says they are."""
    rows: list[dict[str, Any]] = []
    for place in lookup.row_places(ident):
        file, offset = split_place(place)
        info = lookup.files[file]
        line = lookup.line(file, offset)
        if line is None or line.get("id") != ident:
            continue  # the lookup and the file disagree: the file wins
        named = row_runs(line).split(_SEP)
        found.matched.append(f"{info.name} row ({info.split})")
        rows.append(
            {
                "dataset": info.name,
                "split": info.split,
                "file": info.path,
                "offset": offset,
                "run_ids": [r for r in named if r],
            }
        )
        found.runs += [r for r in named if r]
    return rows


def _scored_matches(lookup: Lookup, ident: str, found: _Matches) -> None:
    """``ident`` as a scored run's id, a task id or an evidence id of a scored run."""
    if lookup.run_numbers(ident):
        found.matched.append("run id")
        found.runs.append(ident)
    of_task = [lookup.run_row(n)["run_id"] for n in lookup.runs_where("task_id", ident)]
    if of_task:
        found.matched.append(f"task id ({len(of_task)} scored runs)")
        found.runs += sorted(of_task)
    if _EVIDENCE_ID.fullmatch(ident):
        for number in lookup.runs_where("evidence_ids", ident[:16]):
            row = lookup.run_row(number)
            evidence = evidence_of(lookup, lookup.evidence_places(row))
            if any(e.get("evidence_id") == ident for e in evidence):
                found.matched.append("evidence id")
                found.runs.append(row["run_id"])


def _other_lines(lookup: Lookup, ident: str, found: _Matches) -> list[dict[str, Any]]:
    """The quarantine lines naming ``ident`` as something never scored (a run left out
    before scoring, an evidence record, a playbook); what the playbook ones left out."""
    runs, matched = found.runs, found.matched
    unscored: list[dict[str, Any]] = []
    for place in lookup.ref_places(ident):
        file, offset = split_place(place)
        info = lookup.files[file]
        line = lookup.line(file, offset)
        if line is None:
            continue
        if info.name in (C.STAGE_COLLECT, C.STAGE_SCORE):
            named = line.get("run_id")
            if named and named not in runs:
                runs.append(named)
            what = "run id (never scored)" if named == ident else "evidence id"
            if what not in matched:
                matched.append(what)
        else:
            if "playbook id" not in matched:
                matched.append("playbook id")
            unscored.append(left_out(info.name, line, None))
            runs += [r for r in line.get("source_run_ids") or [] if r not in runs]
    return unscored


def trace(lookup: Lookup, ident: str, max_runs: int = 100) -> dict[str, Any]:
    """What ``ident`` is (a dataset row id, a run id, a task id, an evidence id, a playbook
    id) and the trace of every run behind it; ``TraceError`` when the lookup knows none."""
    found = _Matches()
    rows = _dataset_rows(lookup, ident, found)
    _scored_matches(lookup, ident, found)
    unscored = _other_lines(lookup, ident, found)
    if not found.matched:
        raise TraceError(
            f"unknown id {ident!r}: searched the dataset row ids (sft, preference, kto, rag), "
            "run ids, task ids, evidence ids and playbook ids of the version published by run "
            f"{lookup.run_id} ({lookup.path})"
        )
    unique = list(dict.fromkeys(found.runs))
    return {
        "id": ident,
        "matched": found.matched,
        "version": {"run_id": lookup.run_id, "path": layout.relroot(lookup.out_root, lookup.root)},
        "rows": rows,
        "playbook": unscored,
        "runs": [_run(lookup, run_id) for run_id in unique[:max_runs]],
        "runs_not_shown": max(0, len(unique) - max_runs),
    }


# --- the answer as text -----------------------------------------------------------------


def _export_line(item: dict[str, Any]) -> str:
    if item["status"] == "published":
        text = f"{item['stage']}: published {item['split']} {item['dataset']} row {item['row_id']}"
        if item.get("side"):
            text += f" (as {item['side']})"
        for hidden in item.get("secrets_redacted", []):
            text += f"; secret redacted: {hidden['type']} at {hidden['field']}"
        return text
    what = "left out"
    if item.get("pair"):
        pair = item["pair"]
        other = pair["rejected_run_id"] if item.get("side") == "chosen" else pair["chosen_run_id"]
        what = f"pair with {other} (as {item.get('side')}) left out"
    elif item.get("playbook_id"):
        what = f"playbook {item['playbook_id']} left out"
    text = f"{item['stage']}: {what} ({item['status']}): {', '.join(item['reasons'])}"
    if item.get("kept_id"):
        text += f"; near-duplicate of kept row {item['kept_id']}"
    for finding in item.get("secrets", []):
        text += f"; secret found: {finding['type']} at {finding['field']}"
    if item.get("contamination"):
        text += f"; decontamination hit: {item['contamination']}"
    return text


def evidence_detail(item: dict[str, Any]) -> str:
    """What a review or outcome said, for people: ``approve by dave``, ``success``, or empty."""
    detail = item.get("verdict") or item.get("outcome") or ""
    if item.get("reviewer"):
        detail += f" by {item['reviewer']}"
    return detail


def _verdict_lines(verdict: dict[str, Any] | None) -> list[str]:
    """A run's verdict, the scoring policy that gave it and a note when its file changed."""
    if verdict is None:
        return ["  not scored"]
    lines = [
        f"  verdict {verdict['quality']}  score {verdict['score']}  reasons "
        + (", ".join(verdict["reasons"]) or "none")
        + f"  ({verdict['scored_file']}, scored by run {verdict['scored_by_run']})"
    ]
    if verdict.get("policy") is not None:
        policy = "  ".join(f"{k}={v}" for k, v in sorted(verdict["policy"].items()))
        lines.append(f"  policy {policy}")
    if verdict.get("note"):
        lines.append(f"  note: {verdict['note']}")
    return lines


def _evidence_lines(evidence: list[dict[str, Any]]) -> list[str]:
    """The evidence records a run's verdict used: where each is, its hash, what it said."""
    lines = ["  evidence used:"] if evidence else []
    for item in evidence:
        if "kind" not in item:
            lines.append(f"    {item['evidence_id']}: {item['problem']}")
            continue
        detail = evidence_detail(item)
        lines.append(
            f"    {item['kind']:<7} {item['source_path']}:{item['line']}  "
            f"sha256 {item['sha256']}"
            + (f"  {detail}" if detail else "")
            + (f"  PROBLEM: {item['problem']}" if item.get("problem") else "")
        )
    return lines


def _exports_lines(exports: list[dict[str, Any]], shown: int) -> list[str]:
    """What the exports did with a run: ``shown`` lines per stage, then how many more."""
    lines = ["  exports:"] if exports else []
    per_stage: dict[str, int] = {}
    hidden: dict[str, int] = {}
    for item in exports:
        per_stage[item["stage"]] = per_stage.get(item["stage"], 0) + 1
        if per_stage[item["stage"]] > shown:
            hidden[item["stage"]] = hidden.get(item["stage"], 0) + 1
            continue
        lines.append("    " + _export_line(item))
    for stage, n in hidden.items():
        lines.append(f"    {stage}: {n} more (--json lists them all)")
    return lines


def _run_lines(run: dict[str, Any], shown: int) -> list[str]:
    """One run's trace: its verdict, evidence, what collect and score left out, its exports."""
    lines = [
        "",
        f"run {run['run_id']}" + (f"  task {run['task_id']}" if run.get("task_id") else ""),
    ]
    lines += _verdict_lines(run["verdict"])
    lines += _evidence_lines(run["evidence"])
    for item in run[C.STAGE_COLLECT]:
        lines.append(
            f"  collect {item['status']}: {item['source_path']}:{item['line']} "
            f"({item['kind'] or 'unknown kind'}): {', '.join(item['reasons'])}"
        )
    for item in run["score"]:
        lines.append(
            f"  score {item['status']}: {item['kind']} {item['evidence_id']}: "
            + ", ".join(item["reasons"])
        )
    return lines + _exports_lines(run["exports"], shown)


def render_trace(answer: dict[str, Any], shown: int = SHOWN) -> list[str]:
    """The trace as lines of text (no input text: ids, places, hashes, codes, settings)."""
    version = answer["version"]
    lines = [
        f"{answer['id']}: {', '.join(answer['matched'])}",
        f"read from the version published by run {version['run_id']} ({version['path']})",
    ]
    for row in answer["rows"]:
        lines.append(
            f"row of {row['dataset']} ({row['split']}, {row['file']}) made from "
            + ", ".join(row["run_ids"])
        )
    for item in answer["playbook"]:
        lines.append(_export_line(item))
    for run in answer["runs"]:
        lines += _run_lines(run, shown)
    if answer["runs_not_shown"]:
        lines.append(f"{answer['runs_not_shown']} more runs not traced")
    return lines
