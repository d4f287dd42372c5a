"""``distill trace``: where a dataset row, a run, a task or an evidence record came from, and
what happened to it on the way.

The publish stage builds a small SQLite lookup beside the datasets it publishes
(``.versions/<run_id>/trace.sqlite``, beside the version's ``exports``; ``build_lookup``). It holds keys and
byte offsets, not texts: each evidence record's place in the evidence store, each scored run's
verdict and place, each dataset row's id, place and digest, and each quarantine line's place
under the ids it names. It is built from id columns that polars decodes natively and inserted
with ``executemany`` in one transaction, indexes created last, so it costs a fraction of the
floor; a query then reads a handful of lines by offset (``trace``), never scanning a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib import layout

LOOKUP_SCHEMA_VERSION = 1
# the datasets a row id can come from: name -> (stage writing it, train path, holdout path)
DATASETS: dict[str, tuple[str, str, str]] = {
    "sft": (C.STAGE_EXPORT_SFT, C.SFT_PATH, C.SFT_HOLDOUT_PATH),
    "preference": (C.STAGE_EXPORT_PREFERENCE, C.PREFERENCE_PATH, C.PREFERENCE_HOLDOUT_PATH),
    "kto": (C.STAGE_EXPORT_KTO, C.KTO_PATH, C.KTO_HOLDOUT_PATH),
    "rag": (C.STAGE_EXPORT_RAG, C.RAG_PATH, C.RAG_HOLDOUT_PATH),
    "rag_extracted": (C.STAGE_EXTRACT_PLAYBOOKS, C.EXTRACTED_PATH, C.EXTRACTED_HOLDOUT_PATH),
}
SPLITS = ("train", "holdout")
QUARANTINE_STAGES = (C.STAGE_COLLECT, C.STAGE_SCORE, *C.PUBLISHED_QUARANTINES)
# the fields of a quarantine line that name what it is about
_QUARANTINE_KEYS = ("run_id", "chosen_run_id", "rejected_run_id", "playbook_id", "evidence_id")
_RUN_KEYS = ("run_id", "chosen_run_id", "rejected_run_id", "playbook_id")
_SEP = "\x1f"
_EVIDENCE_ID = re.compile(r"[0-9a-f]{64}")
_REDACTED = re.compile(r"\[REDACTED:([a-z0-9_]+)\]")
# how many lines of one kind a trace shows per run and stage before "N more"
SHOWN = 20

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE files (file INTEGER PRIMARY KEY, path TEXT, role TEXT, name TEXT, split TEXT,
                    bytes INTEGER, mtime_ns INTEGER, producer TEXT);
CREATE TABLE runs (run_id TEXT, task_id TEXT, quality TEXT, score REAL, reasons TEXT,
                   file INTEGER, offset INTEGER, evidence TEXT, places TEXT);
CREATE TABLE rows (id TEXT, file INTEGER, offset INTEGER, runs TEXT, digest INTEGER);
CREATE TABLE refs (key TEXT, file INTEGER, offset INTEGER)
"""
_INDEXES = """
CREATE INDEX runs_run ON runs (run_id);
CREATE INDEX runs_task ON runs (task_id);
CREATE INDEX rows_id ON rows (id);
CREATE INDEX refs_key ON refs (key)
"""


class TraceError(Exception):
    """A trace or diff the lookup cannot answer; one line for the user."""


def eid_of(evidence_id: str) -> int:
    """The lookup's integer key of an evidence id (its first 60 bits)."""
    return int(evidence_id[:15], 16)


# --- building ---------------------------------------------------------------------------


def _offsets(path: Path) -> Any:
    """The byte offset of each line of a JSONL file we wrote (no blank lines), natively."""
    import polars as pl

    frame = pl.read_csv(
        path,
        has_header=False,
        separator="\x1f",  # a JSON line never holds a raw control character: one column
        quote_char=None,
        new_columns=["line"],
        schema={"line": pl.String},
    )
    width = pl.col("line").str.len_bytes().cast(pl.Int64) + 1
    offsets = frame.select((width.cum_sum() - width).alias("offset"))
    size = path.stat().st_size
    total = int(frame["line"].str.len_bytes().sum() or 0) + frame.height
    if total not in (size, size + 1):
        raise TraceError(f"{path}: blank lines or stray bytes, its lines cannot be indexed")
    return offsets


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


@dataclass
class BuildFigures:
    """What building the lookup cost and holds (the publish receipt records them)."""

    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)


class _Files:
    """The files the lookup points into, numbered, with their size, time and producer."""

    def __init__(self, out_root: Path) -> None:
        from distill_assets.lib.receipts import read_ledger

        self.ledger = read_ledger(out_root)
        self.rows: list[tuple[Any, ...]] = []

    def add(self, base: Path, relpath: str, role: str, name: str = "", split: str = "") -> int:
        stat = (base / relpath).stat()
        producer = (self.ledger.get(relpath) or {}).get("run_id")
        number = len(self.rows) + 1
        self.rows.append(
            (number, relpath, role, name, split, stat.st_size, stat.st_mtime_ns, producer)
        )
        return number


def _place(file: Any, offset: Any) -> Any:
    import polars as pl

    return pl.concat_str(file.cast(pl.String), pl.lit(":"), offset.cast(pl.String))


def build_lookup(out_root: Path, root: Path, run_id: str) -> BuildFigures:
    """Write ``root/trace.sqlite`` for the version ``root`` of run ``run_id`` (renamed into
    place when complete).

    One row per scored run (its verdict, where its scored line and evidence records are, and
    where every dataset row and quarantine line naming it is), one per dataset row (id,
    place, runs, CRC-32 of its bytes, from the exports' own row lists, not their texts), and
    one per quarantine line about anything else (a run never scored, a playbook, an
    evidence record). Decoding, joins and grouping are polars'; SQLite gets whole columns."""
    import polars as pl

    began = time.perf_counter()
    figures = BuildFigures()
    files = _Files(out_root)

    # every evidence record's place, from each day's index
    evidence = []
    for day in layout.days_on_disk(out_root, C.EVIDENCE_DIR, "index.jsonl"):
        index = out_root / layout.evidence_index(day)
        if index.stat().st_size == 0 or not (out_root / layout.evidence_records(day)).exists():
            continue
        number = files.add(out_root, layout.evidence_records(day), "records")
        frame = _jsonl(index, {"evidence_id": pl.String, "offset": pl.Int64}, False)
        place = _place(pl.lit(number), pl.col("offset")).alias("place")
        evidence.append(frame.select("evidence_id", place))

    # the scored runs: verdicts are kept here, as the scored files are rewritten by later runs
    scored = []
    for day in layout.days_on_disk(out_root, C.SCORED_DIR, C.SCORED_FILE):
        relpath = layout.scored_runs(day)
        if (out_root / relpath).stat().st_size == 0:
            continue
        number = files.add(out_root, relpath, "scored")
        schema = {
            "run_id": pl.String,
            "task_id": pl.String,
            "quality_score": pl.String,
            "score": pl.Float64,
            "reasons": pl.List(pl.String),
            "evidence_ids": pl.List(pl.String),
        }
        frame = _jsonl(out_root / relpath, schema)
        scored.append(frame.with_columns(pl.lit(number, dtype=pl.Int64).alias("file")))
    runs = (
        pl.concat(scored)
        if scored
        else pl.DataFrame(
            schema={
                "run_id": pl.String,
                "task_id": pl.String,
                "quality_score": pl.String,
                "score": pl.Float64,
                "reasons": pl.List(pl.String),
                "evidence_ids": pl.List(pl.String),
                "offset": pl.Int64,
                "file": pl.Int64,
            }
        )
    )
    known = (
        pl.concat(evidence)
        if evidence
        else pl.DataFrame(schema={"evidence_id": pl.String, "place": pl.String})
    )
    places_of_evidence = (
        runs.select(pl.col("evidence_ids").alias("evidence_id"))
        .with_row_index("_run")
        .explode("evidence_id")
        .drop_nulls("evidence_id")
        .join(known, on="evidence_id", how="left")
        .select(
            "_run",
            pl.concat_str(
                pl.col("evidence_id").str.slice(0, 16), pl.lit("@"), pl.col("place").fill_null("")
            ).alias("evidence"),
        )
        .group_by("_run", maintain_order=True)
        .agg(pl.col("evidence").str.join(","))
    )

    # the dataset rows, from the row lists the exports wrote beside them
    rows: list[Any] = []
    named: list[Any] = []
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
            number = files.add(root, relpath, "dataset", name, split)
            rows.append(
                part.select(
                    "id",
                    pl.lit(number, dtype=pl.Int64).alias("file"),
                    "offset",
                    "runs",
                    pl.col("crc").alias("digest"),
                )
            )
            named.append(
                part.select(
                    pl.col("runs").str.split(_SEP).alias("key"),
                    _place(pl.lit(number), pl.col("offset")).alias("place"),
                ).explode("key")
            )

    # quarantine lines, under every id each names
    for stage in QUARANTINE_STAGES:
        relpath = C.quarantine_path(stage)
        if not (root / relpath).exists():
            continue
        number = files.add(root, relpath, "quarantine", stage)
        schema = {key: pl.String for key in _QUARANTINE_KEYS}
        frame = _jsonl(root / relpath, {**schema, "source_run_ids": pl.List(pl.String)})
        place = _place(pl.lit(number), pl.col("offset")).alias("place")
        # an export's quarantine line names its run's record too: the run is the key there
        keys = _QUARANTINE_KEYS if stage in (C.STAGE_COLLECT, C.STAGE_SCORE) else _RUN_KEYS
        for key in keys:
            named.append(frame.select(pl.col(key).alias("key"), place))
        named.append(frame.select(pl.col("source_run_ids").alias("key"), place).explode("key"))
    keyed = (
        pl.concat(named).drop_nulls("key").unique(maintain_order=True)
        if named
        else pl.DataFrame(schema={"key": pl.String, "place": pl.String})
    )
    by_run = keyed.join(runs.select(pl.col("run_id").alias("key")).unique(), on="key", how="semi")
    others = keyed.join(by_run.select("key").unique(), on="key", how="anti")
    by_run = by_run.group_by("key", maintain_order=True).agg(pl.col("place").str.join(","))

    table = (
        runs.with_row_index("_run")
        .join(places_of_evidence, on="_run", how="left")
        .join(by_run.rename({"key": "run_id", "place": "places"}), on="run_id", how="left")
        .select(
            "run_id",
            "task_id",
            "quality_score",
            "score",
            pl.col("reasons").list.join(","),
            "file",
            "offset",
            "evidence",
            "places",
        )
    )
    other_refs = others.select(
        "key",
        pl.col("place").str.split_exact(":", 1).struct.field("field_0").cast(pl.Int64),
        pl.col("place").str.split_exact(":", 1).struct.field("field_1").cast(pl.Int64),
    )
    all_rows = pl.concat(rows) if rows else None

    target = root / C.TRACE_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        # a new file renamed into place when complete: no journal needed
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("BEGIN")
        for statement in _SCHEMA.split(";"):
            db.execute(statement)
        db.executemany("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?)", table.iter_rows())
        if all_rows is not None:
            db.executemany("INSERT INTO rows VALUES (?,?,?,?,?)", all_rows.iter_rows())
        db.executemany("INSERT INTO refs VALUES (?,?,?)", other_refs.iter_rows())
        db.executemany("INSERT INTO files VALUES (?,?,?,?,?,?,?,?)", files.rows)
        meta = {"schema_version": str(LOOKUP_SCHEMA_VERSION), "run_id": run_id}
        db.executemany("INSERT INTO meta VALUES (?,?)", sorted(meta.items()))
        for statement in _INDEXES.split(";"):
            db.execute(statement)
        db.execute("COMMIT")
    except BaseException:
        db.close()
        tmp.unlink(missing_ok=True)
        raise
    db.close()
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    figures.rows = {
        "runs": table.height,
        "rows": all_rows.height if all_rows is not None else 0,
        "refs": other_refs.height,
    }
    figures.seconds = time.perf_counter() - began
    return figures
