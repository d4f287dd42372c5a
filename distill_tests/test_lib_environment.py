"""lib/ reads no environment variable (issue 17): the environment is read at the edges
(runtime/resource.py and runtime/settings.py for Dagster, the CLI for its verbs) and lib/ takes
values as arguments, so a lib function's result depends only on what it is given.

The scan looks for the os module's ``environ``/``environb``/``getenv``/``getenvb``/``putenv``/
``unsetenv``, however os was imported. One use is allowed, a write with its reason in
``ALLOWED``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "distill_assets" / "lib"
ENVIRONMENT = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
SEARCH = "distill_assets/lib/playbooks/search.py"
# (module, variable) a module may set. The optional dense model's libraries (huggingface_hub,
# transformers) take their offline mode only from the environment, read when they are
# imported; the model's files are in its package and the hub must never be asked, so the
# Encoder sets both before importing the model. A write for a library, not a setting read.
ALLOWED = {(SEARCH, "HF_HUB_OFFLINE"), (SEARCH, "TRANSFORMERS_OFFLINE")}


def _os_names(tree: ast.Module) -> set[str]:
    """The names the module binds to the os module (``import os``, ``import os as o``)."""
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name == "os"
    }


def _allowed_writes(tree: ast.Module, name: str, os_names: set[str]) -> set[int]:
    """ids of the ``os.environ`` nodes of the allowed writes (``os.environ["X"] = ...``)."""
    allowed = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if (
                isinstance(target, ast.Subscript)
                and isinstance(target.value, ast.Attribute)
                and isinstance(target.value.value, ast.Name)
                and target.value.value.id in os_names
                and target.value.attr == "environ"
                and isinstance(target.slice, ast.Constant)
                and (name, target.slice.value) in ALLOWED
            ):
                allowed.add(id(target.value))
    return allowed


def environment_uses(source: str, name: str) -> list[str]:
    """Where a module uses the environment (``name:line: what``), but for the allowed writes."""
    tree = ast.parse(source)
    os_names = _os_names(tree)
    allowed = _allowed_writes(tree, name, os_names)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [
                f"{name}:{node.lineno}: from os import {alias.name}"
                for alias in node.names
                if alias.name in ENVIRONMENT
            ]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in os_names
            and node.attr in ENVIRONMENT
            and id(node) not in allowed
        ):
            found.append(f"{name}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_lib_reads_no_environment_variable() -> None:
    found = [
        use
        for path in sorted(LIB.rglob("*.py"))
        for use in environment_uses(
            path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix()
        )
    ]
    assert not found, "read the environment at the edge and pass the value in:\n" + "\n".join(found)


def test_the_allowed_writes_are_still_there() -> None:
    # an exception nobody needs any more is removed, so the list stays short and true
    for module, variable in sorted(ALLOWED):
        source = (ROOT / module).read_text(encoding="utf-8")
        assert f'os.environ["{variable}"] = ' in source, f"{module} no longer sets {variable}"
        assert environment_uses(source.replace(variable, "SOMETHING_ELSE"), module), module


def test_the_scan_can_fail() -> None:
    assert environment_uses('import os\nx = os.environ.get("X")\n', "m.py") == [
        "m.py:2: os.environ"
    ]
    assert environment_uses('import os as o\nx = o.getenv("X")\n', "m.py") == ["m.py:2: o.getenv"]
    assert environment_uses("from os import environ\n", "m.py") == [
        "m.py:1: from os import environ"
    ]
    assert environment_uses('import os\nx = os.environ["X"]\n', "m.py") == ["m.py:2: os.environ"]
    # the allowed write only in its module, only for its variables
    write = 'import os\nos.environ["HF_HUB_OFFLINE"] = "1"\n'
    assert environment_uses(write, SEARCH) == []
    assert environment_uses(write, "m.py") == ["m.py:2: os.environ"]
    other = 'import os\nos.environ["DISTILL_OUTPUT_DIR"] = "x"\n'
    assert environment_uses(other, SEARCH) == [f"{SEARCH}:2: os.environ"]
    # a mapping handed in by the caller (read at the edge) is not the environment
    assert environment_uses('def f(environ):\n    return environ.get("X")\n', "m.py") == []
    assert environment_uses("import os\nos.path.join('a')\n", "m.py") == []
