"""Decontamination: keep evaluation prompts and tasks out of the training exports.

The evaluation set is a file the user names (``ExportConfig.eval_set_path``): JSON lines, each a
string (a prompt) or an object with ``prompt`` and/or ``task_id``; a ``.json`` file may instead
hold one list of such items. An export row is contaminated when its task id is listed, when one
of its prompts equals a listed prompt after normalization (Unicode NFKC, case folded, words only),
or when it shares more than ``min_overlap`` of a listed prompt's word n-grams (13 words by
default, the n-gram test of GPT-3's contamination study; ``min_overlap`` 0 means any shared
n-gram).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

_WORD = re.compile(r"\w+")
MAX_EVAL_FILE_BYTES = 512 * 1024 * 1024


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def normalized(text: str) -> str:
    """The form two prompts are compared in: NFKC, case folded, words joined by one space."""
    return " ".join(words(text))


def _ngram_hashes(tokens: list[str], n: int) -> set[bytes]:
    return {
        hashlib.blake2b("\x1f".join(tokens[i : i + n]).encode("utf-8"), digest_size=8).digest()
        for i in range(len(tokens) - n + 1)
    }


def resolve_eval_path(raw: str, base: Path | None) -> Path:
    """An absolute path as given; a relative one under ``base`` (the source directory), refused
    when it climbs out of it (``..``) or there is no base to resolve it against."""
    path = Path(raw)
    if path.is_absolute():
        return path
    if base is None:
        raise ValueError("a relative path needs a source directory to resolve against")
    if ".." in PurePosixPath(raw).parts or ".." in path.parts:
        raise ValueError("a relative path must not contain '..'")
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(base.resolve()):
        raise ValueError(f"the path leads out of {base}")
    return resolved


@dataclass
class EvalSet:
    """The evaluation prompts and task ids, indexed for the three tests."""

    task_ids: frozenset[str]
    exact: frozenset[str]
    index: dict[bytes, list[int]]
    sizes: list[int]
    n: int
    min_overlap: float
    source_sha256: str

    def reason(self, task_id: str, prompts: list[str]) -> str | None:
        """Why a row with this task and these prompts is contaminated (``task_id``, ``exact``
        or ``ngram``), or None."""
        if task_id in self.task_ids:
            return "task_id"
        shared: Counter[int] = Counter()
        for prompt in prompts:
            tokens = words(prompt)
            if " ".join(tokens) in self.exact:
                return "exact"
            if self.index and len(tokens) >= self.n:
                for gram in _ngram_hashes(tokens, self.n):
                    for item in self.index.get(gram, ()):
                        shared[item] += 1
        for item, count in shared.items():
            if count / self.sizes[item] > self.min_overlap:
                return "ngram"
        return None

    @property
    def prompts(self) -> int:
        return len(self.sizes)


def _items(path: Path) -> list[tuple[int, Any]]:
    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            whole = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path.name} is not valid JSON ({exc.msg})") from None
        if not isinstance(whole, list):
            raise ValueError(f"{path.name} must hold a JSON list")
        return list(enumerate(whole, start=1))
    items = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            items.append((number, orjson.loads(raw)))
        except orjson.JSONDecodeError:
            raise ValueError(f"{path.name} line {number} is not valid JSON") from None
    return items


def _prompt_and_task(item: Any, where: str) -> tuple[str | None, str | None]:
    """An evaluation item's prompt and task id: a string is a prompt, an object may give
    both; a ValueError says what is wrong (``where``: the file and item)."""
    if isinstance(item, str):
        return item, None
    prompt = task_id = None
    if isinstance(item, dict):
        prompt, task_id = item.get("prompt"), item.get("task_id")
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"{where}: prompt must be a string")
        if task_id is not None and not isinstance(task_id, str):
            raise ValueError(f"{where}: task_id must be a string")
    if prompt is None and task_id is None:
        raise ValueError(f"{where}: expected a string or an object with prompt and/or task_id")
    return prompt, task_id


def load_eval_set(path: Path, n: int = 13, min_overlap: float = 0.0) -> EvalSet:
    """Read and index an evaluation file; a clear ValueError names the first bad line."""
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    if path.stat().st_size > MAX_EVAL_FILE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_EVAL_FILE_BYTES} bytes")
    task_ids: set[str] = set()
    exact: set[str] = set()
    index: dict[bytes, list[int]] = {}
    sizes: list[int] = []
    for number, item in _items(path):
        prompt, task_id = _prompt_and_task(item, f"{path.name} item {number}")
        if task_id:
            task_ids.add(task_id)
        if prompt and prompt.strip():
            tokens = words(prompt)
            if tokens:
                exact.add(" ".join(tokens))
            grams = _ngram_hashes(tokens, n)
            if grams:
                position = len(sizes)
                sizes.append(len(grams))
                for gram in grams:
                    index.setdefault(gram, []).append(position)
    from distill_assets.lib.infra.io import sha256_file

    return EvalSet(
        frozenset(task_ids), frozenset(exact), index, sizes, n, min_overlap, sha256_file(path)
    )
