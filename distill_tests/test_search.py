"""The search index as a library: byte-identical builds, atomic replacement, query parsing,
ranking and ties, and the checks that tell a foreign or stale index apart."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.infra.io import sha256_file, write_jsonl
from distill_assets.lib.playbooks import search as S

SETTINGS = S.IndexSettings()


def row(number: int, title: str, text: str, tools: list[str] | None = None) -> dict:
    return {
        "id": f"pb-{number:04d}",
        "task_id": f"T-{number}",
        "title": title,
        "text": text,
        "source_run_ids": [f"r-{number}"],
        "quality": C.QUALITY_ACCEPTED,
        "score": 1.0,
        "failed_run_ids": [],
        "tags": {"category": "ops", "agents": ["bot"], "tools": tools or []},
    }


ROWS = [
    row(1, "Rotate TLS certificates", "Issued a certificate and attached it to the balancer."),
    row(2, "Restore a dropped table", "Restored invoices from the nightly backup.", ["run_sql"]),
    row(3, "Scale the checkout service", "Scaled the deployment to 14 replicas."),
    row(4, "Rotate the API keys", "Revoked the leaked key and created a new one."),
]


@pytest.fixture
def playbooks(tmp_path: Path) -> Path:
    write_jsonl(tmp_path, "playbooks.jsonl", ROWS)
    return tmp_path / "playbooks.jsonl"


def test_builds_are_byte_identical_and_read_only(tmp_path, playbooks):
    first = S.write_index(playbooks, tmp_path / "a" / "index.sqlite", SETTINGS)
    second = S.write_index(playbooks, tmp_path / "b" / "index.sqlite", SETTINGS)
    assert first.sha256 == second.sha256 == sha256_file(tmp_path / "a" / "index.sqlite")
    assert first.rows == 4 and first.left_out == []
    assert (tmp_path / "a" / "index.sqlite").stat().st_mode & 0o222 == 0
    other = S.write_index(playbooks, tmp_path / "c.sqlite", S.IndexSettings(title_weight=5))
    assert other.sha256 != first.sha256  # the weights are part of what was built


def test_a_failed_build_leaves_the_old_index_and_no_temporary_file(tmp_path, playbooks):
    target = tmp_path / "index.sqlite"
    S.write_index(playbooks, target, SETTINGS)
    before = sha256_file(target)
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(orjson.dumps(ROWS[0]) + b"\n" + orjson.dumps({"id": "pb-x"}) + b"\n")
    with pytest.raises(KeyError):
        S.write_index(broken, target, SETTINGS)
    assert sha256_file(target) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_search_ranks_by_bm25_with_the_title_weighted(tmp_path, playbooks):
    index = tmp_path / "index.sqlite"
    S.write_index(playbooks, index, SETTINGS)
    hits = S.search(index, "how do I rotate the TLS certificate?", k=5)
    assert [h.task_id for h in hits] == ["T-1", "T-4"]  # "rotate" also matches the keys
    assert hits[0].score > hits[1].score > 0
    assert hits[0].as_dict()["source_run_ids"] == ["r-1"]
    assert [h.task_id for h in S.search(index, "run_sql", k=5)] == ["T-2"]  # tags are indexed
    assert S.search(index, "kubernetes", k=5) == []


def test_ties_keep_file_order(tmp_path):
    same = [row(n, "Identical title", "identical body") for n in (3, 1, 2)]
    write_jsonl(tmp_path, "p.jsonl", same)
    S.write_index(tmp_path / "p.jsonl", tmp_path / "i.sqlite", SETTINGS)
    hits = S.search(tmp_path / "i.sqlite", "identical", k=3)
    assert [h.id for h in hits] == ["pb-0003", "pb-0001", "pb-0002"]
    assert len({h.score for h in hits}) == 1


@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ("How do I rotate the TLS certs?", ["rotate", "tls", "certs"]),
        ('NOT "quoted" AND (x OR y) NEAR z*', ["quoted", "x", "y", "near", "z"]),
        ("search_direct_flight", ["search", "direct", "flight"]),
        ("the and of", ["the", "and", "of"]),  # nothing but stopwords: keep them
        ("Überweisung prüfen", ["überweisung", "prüfen"]),
        ("?!", []),
    ],
)
def test_query_terms(query, terms):
    assert S.query_terms(query) == terms


def test_operators_and_quotes_are_searched_as_words(tmp_path, playbooks):
    index = tmp_path / "index.sqlite"
    S.write_index(playbooks, index, SETTINGS)
    assert S.search(index, 'rotate" OR NEAR(', k=5)  # no FTS5 syntax error
    assert S.match_expression(["a", 'b"c']) == '"a" OR "b""c"'
    with pytest.raises(S.SearchError, match="no words"):
        S.search(index, "?!")
    with pytest.raises(S.SearchError, match="unknown search mode"):
        S.search(index, "rotate", mode="magic")


def test_duplicate_ids_are_left_out(tmp_path):
    write_jsonl(tmp_path, "p.jsonl", [ROWS[0], ROWS[1], {**ROWS[0], "title": "again"}])
    built = S.write_index(tmp_path / "p.jsonl", tmp_path / "i.sqlite", SETTINGS)
    assert built.rows == 2
    assert [(r["title"], reasons) for r, reasons in built.left_out] == [
        ("again", [C.R_DUPLICATE_PLAYBOOK])
    ]
    assert S.index_problems(tmp_path / "i.sqlite", tmp_path / "p.jsonl") == ([], [])


def _offset_problems_row_by_row(index: Path, playbooks: Path) -> list[str]:
    """The consistency check's offset and membership rules, line by line (the reference)."""
    with sqlite3.connect(index) as db:
        indexed = dict(db.execute("SELECT id, offset FROM playbooks").fetchall())
    problems, seen, offset = [], set(), 0
    for raw in playbooks.read_bytes().splitlines(keepends=True):
        row_id = orjson.loads(raw).get("id")
        if row_id not in seen:
            seen.add(row_id)
            if row_id in indexed and indexed[row_id] != offset:
                problems.append(
                    f"{row_id}: offset {indexed[row_id]} in the index, {offset} on disk"
                )
        offset += len(raw)
    missing, extra = len(seen - set(indexed)), len(set(indexed) - seen)
    if missing or extra:
        problems.append(f"{missing} playbook(s) not indexed, {extra} indexed but gone")
    return problems


def test_index_problems_name_each_moved_missing_or_gone_playbook(tmp_path, playbooks):
    index = tmp_path / "index.sqlite"
    S.write_index(playbooks, index, SETTINGS)
    rows = [orjson.loads(line) for line in playbooks.read_bytes().splitlines()]
    # reordered (every offset moves), one dropped, one new, a duplicate of the first
    changed = [*reversed(rows[1:]), {**rows[0], "id": "pb-new"}, rows[-1]]
    write_jsonl(tmp_path, "playbooks.jsonl", changed)
    _, consistency = S.index_problems(index, playbooks)
    expected = _offset_problems_row_by_row(index, playbooks)
    assert (
        any("offset" in p for p in expected)
        and "1 playbook(s) not indexed, 1 indexed but gone" in expected
    )
    assert consistency[1:] == expected  # after "the playbooks file differs"
    assert "differs from the one the index was built from" in consistency[0]
    # a line without an id is named, not a crash; blank lines are an error, not a shift
    write_jsonl(tmp_path, "playbooks.jsonl", [*rows, {"title": "no id"}])
    assert "1 playbook line(s) without an id" in S.index_problems(index, playbooks)[1]
    playbooks.write_bytes(playbooks.read_bytes().replace(b"\n", b"\n\n", 1))
    assert any("cannot be read line by line" in p for p in S.index_problems(index, playbooks)[1])


def test_index_problems_find_a_stale_or_foreign_index(tmp_path, playbooks):
    index = tmp_path / "index.sqlite"
    S.write_index(playbooks, index, SETTINGS)
    assert S.index_problems(index, playbooks) == ([], [])
    write_jsonl(tmp_path, "playbooks.jsonl", ROWS[:3])  # the playbooks changed after the build
    schema, consistency = S.index_problems(index, playbooks)
    assert schema == []
    assert any("differs from the one the index was built from" in p for p in consistency)
    assert any("1 indexed but gone" in p for p in consistency)

    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute(f"PRAGMA user_version={C.INDEX_SCHEMA_VERSION}")
        db.execute("CREATE TABLE something(x)")
    schema, _ = S.index_problems(foreign, playbooks)
    assert schema and "tables" in schema[0]

    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute("PRAGMA user_version=0")
    with pytest.raises(S.SearchError, match="schema version 0"):
        S.search(old, "rotate")
    (tmp_path / "garbage.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(S.SearchError, match="cannot read"):
        S.search(tmp_path / "garbage.sqlite", "rotate")


def test_dense_needs_its_package(tmp_path, playbooks):
    index = tmp_path / "index.sqlite"
    S.write_index(playbooks, index, SETTINGS)
    with pytest.raises(S.SearchError, match="no embeddings"):
        S.search(index, "rotate", mode="dense")
    problems = S.IndexSettings(dense=True, dense_package="no-such-embedding-package").errors()
    assert problems and "not installed" in problems[0]
    assert (
        "not a Python package name" in S.IndexSettings(dense=True, dense_package="../x").errors()[0]
    )


def test_readers_never_write_the_file(tmp_path, playbooks):
    index = tmp_path / "index.sqlite"
    S.write_index(playbooks, index, SETTINGS)
    before = (sha256_file(index), os.stat(index).st_mtime_ns, sorted(os.listdir(tmp_path)))
    S.search(index, "rotate")
    assert (sha256_file(index), os.stat(index).st_mtime_ns, sorted(os.listdir(tmp_path))) == before


def test_terms_in_most_playbooks_are_left_out_without_changing_the_ranking(tmp_path):
    corpus = [
        row(n, f"Shared title {n}", "shared words " * n + ("needle" if n in (2, 5) else ""))
        for n in range(1, 7)
    ]
    write_jsonl(tmp_path, "p.jsonl", corpus)
    S.write_index(tmp_path / "p.jsonl", tmp_path / "i.sqlite", SETTINGS)
    db = S.open_index(tmp_path / "i.sqlite")
    try:
        assert S.informative_terms(db, ["sharing", "needle"]) == ["needle"]  # shar(e) is common
        assert S.informative_terms(db, ["shared", "words"]) == ["shared", "words"]  # all common
        assert S.informative_terms(db, ["unknown"]) == ["unknown"]
        full = db.execute(
            "SELECT rowid FROM playbooks_fts WHERE playbooks_fts MATCH ? "
            "ORDER BY bm25(playbooks_fts, 2.0, 1.0, 1.0), rowid LIMIT 2",
            (S.match_expression(["shared", "needle"]),),
        ).fetchall()
        hits = S.search(db, "shared needle", k=2)
    finally:
        db.close()
    assert [h.id for h in hits] == [f"pb-{rowid:04d}" for (rowid,) in full]
    assert [h.task_id for h in hits] == ["T-2", "T-5"]


def _index_stage(root: Path, settings: S.IndexSettings = SETTINGS):
    return S.build_index(root, settings, root)


@pytest.fixture
def version(tmp_path: Path) -> Path:
    """A write root holding RAG playbooks where the index stage expects them."""
    write_jsonl(tmp_path, C.RAG_PATH, ROWS)
    return tmp_path


def test_an_index_built_ahead_is_adopted_byte_for_byte(tmp_path, version):
    assert S.build_ahead(version / C.RAG_PATH, version / C.INDEX_PATH, SETTINGS)
    adopted = _index_stage(version)
    assert adopted.extra["built_ahead"] is True
    alone = tmp_path / "alone"
    write_jsonl(alone, C.RAG_PATH, ROWS)
    built = _index_stage(alone)
    assert built.extra["built_ahead"] is False
    assert adopted.outputs[0] == built.outputs[0]  # same sha256, bytes and rows
    assert sha256_file(version / C.INDEX_PATH) == built.outputs[0].sha256
    assert not list(version.rglob(".*.tmp"))


@pytest.mark.parametrize("change", ["playbooks", "settings"])
def test_an_index_built_ahead_of_other_inputs_is_not_adopted(tmp_path, version, change):
    S.build_ahead(version / C.RAG_PATH, version / C.INDEX_PATH, SETTINGS)
    settings = SETTINGS
    if change == "playbooks":  # rewritten once that build is done: the index must follow
        S._AHEAD[version / C.INDEX_PATH][0].join()
        write_jsonl(version, C.RAG_PATH, ROWS[:2])
    else:
        settings = S.IndexSettings(title_weight=5)
    result = _index_stage(version, settings)
    assert result.extra["built_ahead"] is False
    assert S.indexed_source(version / C.INDEX_PATH) == sha256_file(version / C.RAG_PATH)
    assert result.extra["rows"] == (2 if change == "playbooks" else 4)
    assert not list(version.rglob(".*.tmp"))
