"""Each module opens with what it is for, and a long one says why it is long (issue 17): a
reader finds a module's purpose in its first lines, and a module of the package past 400 lines
carries a paragraph starting ``Length:`` in its docstring giving the reason."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "distill_assets"
LONG = 400


def _modules() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *(ROOT / "distill_tests").rglob("*.py")])


def docstring_problem(source: str, name: str, long_needs_reason: bool = True) -> str | None:
    """What is wrong with a module's opening, or None (a test module may be long: its cases)."""
    if not source.strip():
        return None  # an empty package marker
    doc = ast.get_docstring(ast.parse(source))
    if not doc or not doc.strip():
        return f"{name}: no module docstring saying what it is for"
    lines = source.count("\n") + (not source.endswith("\n"))
    if (
        long_needs_reason
        and lines > LONG
        and not any(p.startswith("Length:") for p in doc.split("\n\n"))
    ):
        return f"{name}: {lines} lines and no 'Length:' paragraph saying why"
    return None


def test_every_module_opens_with_its_purpose_and_long_ones_say_why() -> None:
    problems = [
        problem
        for path in _modules()
        if (
            problem := docstring_problem(
                path.read_text(encoding="utf-8"),
                str(path.relative_to(ROOT)),
                long_needs_reason=PACKAGE in path.parents,
            )
        )
    ]
    assert not problems, "\n".join(problems)


def test_the_rule_can_fail() -> None:
    assert (
        docstring_problem("import os\n", "m.py")
        == "m.py: no module docstring saying what it is for"
    )
    long_body = "x = 1\n" * LONG
    assert docstring_problem(f'"""Purpose."""\n{long_body}', "m.py") is not None
    assert docstring_problem(f'"""Purpose.\n\nLength: a reason."""\n{long_body}', "m.py") is None
    assert docstring_problem("", "__init__.py") is None
