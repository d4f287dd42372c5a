"""The vocabulary stays closed: stage names, reason codes, drift severities and firewall
violations are written once, in lib/constants.py, and used through its constants everywhere
else (issue 17). A string literal with one of their values elsewhere is a second spelling of
a name users and tools rely on: this test finds it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S

PACKAGE = Path(__file__).resolve().parent.parent / "distill_assets"

# values that are also ordinary words of another vocabulary; a literal of these is not a stray
# stage name or reason code
AMBIGUOUS = {
    "score": "a run's score field (and the score stage's name)",
    "index": "a column or key named index (and the index stage's name)",
    "success": "an outcome value (C.OUTCOMES) as well as the reason code",
}
# (module, value): a literal that belongs to something else
ALLOWED = {
    ("lib/playbooks/search.py", "ok"): "SQLite's answer to PRAGMA quick_check",
}


def _vocabulary() -> dict[str, str]:
    return {
        member.value: f"{enum.__name__}.{member.name}" for enum in C.VOCABULARIES for member in enum
    }


def stray_literals(source: str, vocabulary: dict[str, str]) -> list[tuple[int, str]]:
    """(line, value) of each string literal of ``source`` that spells a vocabulary value,
    docstrings left aside."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and node.value in vocabulary
    )


def test_each_vocabulary_is_closed_and_unambiguous() -> None:
    seen: dict[str, str] = {}
    for enum in C.VOCABULARIES:
        # the functional StrEnum makes a repeated value an alias: none may exist
        assert len(enum.__members__) == len(enum), f"{enum.__name__} has a value twice"
        for member in enum:
            assert isinstance(member.value, str) and member.value
            where = f"{enum.__name__}.{member.name}"
            assert member.value not in seen, f"{where} and {seen[member.value]} share a value"
            seen[member.value] = where
    assert C.Stage.EXPORT_KTO == C.STAGE_EXPORT_KTO
    assert C.Reason.SECRET_DETECTED == C.R_SECRET_DETECTED
    assert set(C.Severity) == set(C.SEVERITY_ORDER)
    assert set(C.Stage) == set(S.STAGES)


def test_the_scan_finds_a_stray_literal() -> None:
    source = (
        '"""Module docstring: near_duplicate here is prose."""\n'
        "def f(rows):\n"
        '    """quarantined as near_duplicate"""\n'
        '    return [r for r in rows if r["reason"] == "near_duplicate"]\n'
    )
    assert stray_literals(source, _vocabulary()) == [(4, "near_duplicate")]


def test_no_stray_vocabulary_literals() -> None:
    vocabulary = {value: name for value, name in _vocabulary().items() if value not in AMBIGUOUS}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "lib/constants.py":
            continue
        for line, value in stray_literals(path.read_text(encoding="utf-8"), vocabulary):
            if (relative, value) not in ALLOWED:
                found.append(f"{relative}:{line}: {value!r} is {vocabulary[value]}")
    assert not found, "use the constants of lib/constants.py:\n" + "\n".join(found)


@pytest.mark.parametrize("key", sorted(ALLOWED))
def test_allowed_literals_are_still_there(key: tuple[str, str]) -> None:
    # an exception nobody needs any more is removed, so the list stays short and true
    relative, value = key
    source = (PACKAGE / relative).read_text(encoding="utf-8")
    assert stray_literals(source, {value: "allowed"}), f"{relative} no longer writes {value!r}"
