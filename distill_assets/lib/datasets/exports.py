"""Stages ``export-rag``, ``export-sft`` and ``export-preference``: scored runs → datasets.

The exports read every scored-runs partition on disk, keep only keys, grades and text hashes in
memory, decide what goes where (the contamination firewall is enforced here, and re-verified
from the written files by blocking asset checks), and fetch each run's texts from the evidence
index by byte offset only when writing its row. Every run an export leaves out gets a quarantine
row saying why; preference candidate pairs that fail a rule get one too. ``export-rag`` renders
the playbooks that ``extract-playbooks`` (lib/playbooks/extraction.py) built from the same runs.

Length: still the hub of the scored-run reader (``TaskStream``, ``TextStore``), the export
skeleton and three exports (RAG, SFT, preference); issue 17's ``lib/datasets/`` package is to
split it (docs/architecture.md, *What is not there yet*).
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.formats import (
    FormatSettings,
    pair_columns,
    plain_text,
    sft_columns,
)
from distill_assets.lib.hygiene.curate import Curation, HygieneSettings, Screened
from distill_assets.lib.hygiene.decontam import EvalSet
from distill_assets.lib.hygiene.neardup import BandCache
from distill_assets.lib.infra import layout
from distill_assets.lib.infra.io import AtomicJsonlWriter, WrittenFile, count_lines, iter_jsonl
from distill_assets.lib.playbooks.playbook import render_text, tags_of_sources
from distill_assets.lib.records.accounting import StageResult, Tally, conservation_errors
from distill_assets.lib.scoring import task_entry


@dataclass(frozen=True)
class ExportSettings:
    """The configurable parts of the export rules (defaults documented in docs/datasets.md)."""

    sft_allow_categories: tuple[str, ...] | None = None
    sft_deny_categories: tuple[str, ...] = C.DEFAULT_UNSAFE_SFT_CATEGORIES
    min_margin: float = 0.2
    max_pairs_per_task: int | None = None
    rag_include_partial: bool = True
    hygiene: HygieneSettings = HygieneSettings()
    formats: FormatSettings = FormatSettings()

    @functools.cached_property
    def denied(self) -> frozenset[str]:
        """The deny-list, lower-cased."""
        return frozenset(c.lower() for c in self.sft_deny_categories)

    def denies(self, category: str | None) -> bool:
        """Whether the deny-list keeps a run of this category out (case and surrounding
        whitespace ignored); one set lookup per distinct category, remembered."""
        return category_denied(category, self.denied)

    @functools.cached_property
    def allowed(self) -> frozenset[str] | None:
        """The allow-list, lower-cased (None: every category not denied)."""
        if self.sft_allow_categories is None:
            return None
        return frozenset(c.lower() for c in self.sft_allow_categories)

    def errors(self) -> list[str]:
        problems = self.hygiene.errors() + self.formats.errors()
        if not 0.0 <= self.min_margin <= 1.0:
            problems.append(f"min_margin={self.min_margin!r} must be between 0 and 1")
        if self.max_pairs_per_task is not None and self.max_pairs_per_task < 1:
            problems.append(f"max_pairs_per_task={self.max_pairs_per_task!r} must be at least 1")
        return problems


def recorded_settings(recorded: dict[str, Any]) -> ExportSettings:
    """The export settings a stage's receipt recorded (``extra.settings``: the fields of the
    run's export config), rebuilt as the run built them, without Dagster: what a check in a
    worker process judges the rows by. A field not recorded takes its default."""
    hygiene = {k: recorded[k] for k in HygieneSettings.__dataclass_fields__ if k in recorded}
    formats = {k: recorded[k] for k in FormatSettings.__dataclass_fields__ if k in recorded}
    allow = recorded.get("sft_allow_categories")
    deny = recorded.get("sft_deny_categories")
    defaults = ExportSettings()
    return ExportSettings(
        sft_allow_categories=None if allow is None else tuple(allow),
        sft_deny_categories=defaults.sft_deny_categories if deny is None else tuple(deny),
        min_margin=recorded.get("min_margin", defaults.min_margin),
        max_pairs_per_task=recorded.get("max_pairs_per_task", defaults.max_pairs_per_task),
        rag_include_partial=recorded.get("rag_include_partial", defaults.rag_include_partial),
        hygiene=HygieneSettings(**hygiene),
        formats=FormatSettings(**formats),
    )


@functools.lru_cache(maxsize=4096)
def category_denied(category: str | None, denied: frozenset[str]) -> bool:
    """The exports' reading of the deny-list: a category matches when it equals a denied one
    after stripping surrounding whitespace and lower-casing (a run without one never does).
    Cached: a corpus has few distinct categories, so a run costs one dict lookup."""
    return category is not None and category.strip().lower() in denied


class RunKey(NamedTuple):
    """What the exports keep in memory of a scored run: no texts."""

    run_id: str
    task_id: str
    quality: str
    score: float
    created_at: str
    category: str | None
    run_file: str
    run_offset: int
    evidence_id: str
    response_hash: str
    response_empty: bool
    sft_eligible: bool
    # a run to review: [agent, reasons, its evidence ids, their places or None] (task_entry)
    review: list[Any] | None = None

    @property
    def rank(self) -> int:
        return C.QUALITY_RANK.get(self.quality, -1)

    def order(self) -> tuple[Any, ...]:
        """Best first: quality, then score, then age, then id (deterministic)."""
        return (-self.rank, -self.score, self.created_at, self.run_id)


def scored_files(out_root: Path) -> list[str]:
    return [
        layout.scored_runs(day)
        for day in layout.days_on_disk(out_root, C.SCORED_DIR, C.SCORED_FILE)
    ]


_SPILL_BLOCK = 2048  # entries per spilled line


_new = tuple.__new__


def _run_key(entry: list[Any]) -> RunKey:
    (task_id, _rank, neg_score, created_at, run_id, run_file, run_offset, quality, category,
     evidence_id, response_hash, response_empty, sft_eligible) = entry[:13]  # fmt: skip
    return _new(
        RunKey,
        (
            run_id,
            task_id,
            quality,
            -neg_score,
            created_at,
            category,
            run_file,
            run_offset,
            evidence_id,
            response_hash,
            response_empty,
            sft_eligible,
            entry[13] if len(entry) > 13 else None,
        ),
    )


def _read_spill(path: Path) -> Iterator[list[Any]]:
    loads = orjson.loads
    with open(path, "rb") as fh:
        for line in fh:
            yield from loads(line)


def _read_entries(path: Path, start: int = 0, stop: str | None = None) -> Iterator[list[Any]]:
    """The entries of a by-task file from byte ``start``, up to the first of task ``stop``."""
    loads = orjson.loads
    with open(path, "rb") as fh:
        fh.seek(start)
        for line in fh:
            entry = loads(line)
            if stop is not None and entry[0] >= stop:
                return
            yield entry


def _line_start(fh: Any, position: int) -> int:
    """The first line start at or after ``position``."""
    if position == 0:
        return 0
    fh.seek(position - 1)
    fh.readline()
    return int(fh.tell())


def _task_at(fh: Any, start: int) -> str:
    fh.seek(start)
    return str(orjson.loads(fh.readline())[0])


def _first_of(fh: Any, size: int, task: str) -> int:
    """Byte offset of the first entry of a by-task file whose task is ``task`` or later
    (``size`` when there is none): a bisection over line starts, entries being sorted."""
    low, high = 0, size
    while low < high:
        middle = (low + high) // 2
        start = _line_start(fh, middle)
        if start >= size or _task_at(fh, start) >= task:
            high = middle
        else:
            low = middle + 1
    return _line_start(fh, low)


class TaskStream:
    """Every scored run on disk, grouped by task in task order, each group best first.

    Each scored day comes with its runs already sorted by task (``runs_by_task.jsonl``,
    written by the score stage); the days are merged, so memory holds one entry per day, never
    the whole corpus, and the order is the one an in-memory sort would give. A day without that
    file (written by an older version) is sorted and spilled to a scratch folder first.
    """

    def __init__(self, out_root: Path, low: str | None = None, high: str | None = None) -> None:
        self.out_root = out_root
        # the tasks this stream gives: low <= task_id < high (None: no bound)
        self.low = low
        self.high = high
        self.inputs: list[WrittenFile] = []
        self._scratch: Path | None = None
        self._opened: list[Iterator[list[Any]]] | None = None
        self._by_task: list[Path] = []

    def __enter__(self) -> TaskStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            try:
                self._scratch.parent.rmdir()  # unless another stage is using it
            except OSError:
                pass
            self._scratch = None

    def _spill(self, relpath: str, scratch: Path) -> Path | None:
        loads = orjson.loads
        with open(self.out_root / relpath, "rb") as fh:
            entries = [task_entry(loads(raw)) for raw in fh if raw.strip()]
        self.inputs.append(WrittenFile(relpath, "", 0, len(entries)))
        if not entries:
            return None
        entries.sort()
        path = scratch / f"{len(self.inputs):06d}.spill"
        with open(path, "wb") as out:
            for start in range(0, len(entries), _SPILL_BLOCK):
                out.write(orjson.dumps(entries[start : start + _SPILL_BLOCK]) + b"\n")
        return path

    def _sources(self) -> list[Iterator[list[Any]]]:
        sources = []
        for day in layout.days_on_disk(self.out_root, C.SCORED_DIR, C.SCORED_FILE):
            relpath = layout.scored_by_task(day)
            path = self.out_root / relpath
            if path.exists():
                count = count_lines(path)
                self.inputs.append(WrittenFile(relpath, "", 0, count))
                self._by_task.append(path)
                start = 0
                if self.low is not None:
                    with open(path, "rb") as fh:
                        start = _first_of(fh, path.stat().st_size, self.low)
                sources.append(_read_entries(path, start, self.high))
                continue
            if self.low is not None or self.high is not None:
                raise ValueError(f"{relpath} is missing: a task range needs every by-task file")
            if self._scratch is None:
                scratch_root = self.out_root / C.SCRATCH_DIR
                scratch_root.mkdir(parents=True, exist_ok=True)
                self._scratch = Path(tempfile.mkdtemp(prefix="tasks-", dir=scratch_root))
            spill = self._spill(layout.scored_runs(day), self._scratch)
            if spill is not None:
                sources.append(_read_spill(spill))
        return sources

    def _opened_sources(self) -> list[Iterator[list[Any]]]:
        """The day sources, found (and counted into ``inputs``) once."""
        if self._opened is None:
            self._opened = self._sources()
        return self._opened

    def run_count(self) -> int:
        """How many scored runs the streams of all ranges give (for progress reports)."""
        self._opened_sources()
        return sum(f.record_count for f in self.inputs)

    def split(self, parts: int) -> list[tuple[str | None, str | None]]:
        """Task ranges ``[low, high)`` that cut the stream into about ``parts`` pieces of equal
        bytes, at task boundaries; one range (everything) when the days cannot be cut (a day
        without its by-task file) or there is too little to cut."""
        self._opened_sources()
        if parts <= 1 or len(self._by_task) != len(self.inputs) or not self._by_task:
            return [(None, None)]
        sizes = {path: path.stat().st_size for path in self._by_task}
        total = sum(sizes.values())
        handles = {path: open(path, "rb") for path in self._by_task}  # noqa: SIM115
        try:
            candidates: set[str] = set()
            for path, fh in handles.items():
                for eighth in range(1, 8):
                    start = _line_start(fh, sizes[path] * eighth // 8)
                    if start < sizes[path]:
                        candidates.add(_task_at(fh, start))
            ordered = sorted(candidates)

            def below(task: str) -> int:
                return sum(_first_of(fh, sizes[path], task) for path, fh in handles.items())

            cuts: list[str] = []
            for part in range(1, parts):
                goal = total * part // parts
                low, high = 0, len(ordered)
                while low < high:  # the first candidate with at least ``goal`` bytes below
                    middle = (low + high) // 2
                    if below(ordered[middle]) >= goal:
                        high = middle
                    else:
                        low = middle + 1
                if low < len(ordered) and (not cuts or ordered[low] > cuts[-1]):
                    cuts.append(ordered[low])
        finally:
            for fh in handles.values():
                fh.close()
        bounds: list[str | None] = [None, *cuts, None]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    def tasks(self) -> Iterator[tuple[str, list[RunKey]]]:
        """(task_id, runs best first) for every task, in task order."""
        merged = heapq.merge(*self._opened_sources())
        for task_id, entries in groupby(merged, key=itemgetter(0)):
            yield task_id, [_run_key(entry) for entry in entries]

    def repeated_run_ids(self) -> frozenset[str]:
        """Run ids scored more than once across all days on disk (conflicting duplicates the
        score stage could not see: further apart than its evidence window)."""
        return repeated_run_ids(self.out_root)


_REPEATED: dict[Path, tuple[tuple[tuple[str, int, int], ...], frozenset[str]]] = {}


def repeated_run_ids(out_root: Path) -> frozenset[str]:
    """Run ids that appear in more than one scored row on disk, compared exactly by polars;
    each day's ids from the score stage's Arrow list when it describes the day's scored file
    (the ledger's sha256), else parsed from the day's file; reused while the files stay
    the same."""
    import polars as pl

    from distill_assets.lib.publishing.trace import scored_list
    from distill_assets.lib.records.receipts import read_ledger

    # a day's by-task file holds the same runs as its scored file: read one of the two
    chosen: list[tuple[Any, str]] = []
    for day in layout.days_on_disk(out_root, C.SCORED_DIR, C.SCORED_FILE):
        for relpath in (layout.scored_by_task(day), layout.scored_runs(day)):
            if (out_root / relpath).exists():
                chosen.append((day, relpath))
                break
    fingerprint = tuple(
        (relpath, stat.st_size, stat.st_mtime_ns)
        for _, relpath in chosen
        for stat in [(out_root / relpath).stat()]
    )
    cached = _REPEATED.get(out_root)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    ledger = read_ledger(out_root)
    pieces = []
    for day, relpath in chosen:
        listed = scored_list(out_root, day, ledger, same_file=True)
        if listed is None:
            pieces.append(pl.Series(list(_file_run_ids(out_root / relpath)), dtype=pl.String))
        else:  # only the run id column is copied (into polars) from the mapped list
            pieces.append(pl.Series(listed.column("run_id"), dtype=pl.String).rechunk())
    ids = pl.concat(pieces) if pieces else pl.Series([], dtype=pl.String)
    repeated = frozenset(ids.filter(ids.is_duplicated()).unique().to_list())
    _REPEATED.clear()
    _REPEATED[out_root] = (fingerprint, repeated)
    return repeated


def _file_run_ids(path: Path) -> Iterator[str]:
    """The run ids of a scored file or by-task file, line by line."""
    by_task = path.name == C.BY_TASK_FILE
    loads = orjson.loads
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                row = loads(raw)
                yield row[4] if by_task else row["run_id"]


class TextStore:
    """Fetches run records from the evidence index by (file, offset), checking their identity.

    The export pass shares one store between its exports and keeps the records of the current
    task, so each run's record is read and parsed once per run whatever number of exports use
    it. A record is ``clean`` when collect found no secret in it (its records line carries no
    ``secrets`` field) under the secret rules this code applies, which the store checks per
    records file against the collect receipt that wrote it (``trusted_file``)."""

    def __init__(self, out_root: Path) -> None:
        self.out_root = out_root
        self._handles: dict[str, Any] = {}
        self.files_read: set[str] = set()
        self._task: dict[tuple[str, int], Fetched | None] = {}
        self._trusted: dict[str, bool] = {}
        self._ledger: dict[str, dict[str, Any]] | None = None
        # the exports of a pass also share the near-duplicate band hashes of recent texts
        self.band_cache = BandCache()

    def is_open(self, run_file: str) -> bool:
        return run_file in self._handles

    def fetch(self, key: RunKey) -> dict[str, Any] | None:
        found = self.fetch_line(key.run_file, key.run_offset, key.evidence_id, key.run_id)
        return None if found is None else found.record

    def fetch_line(
        self, run_file: str, offset: int, evidence_id: str, run_id: str | None
    ) -> Fetched | None:
        """The record at ``offset`` of ``run_file`` if it is the one named, with its verdict;
        kept until ``next_task``."""
        slot = (run_file, offset)
        if slot in self._task:
            found = self._task[slot]
            if found is None or found.evidence_id != evidence_id:
                return None
            return found
        handle = self._handles.get(run_file)
        if handle is None:
            try:
                handle = open(layout.inside(self.out_root, run_file), "rb")
            except (OSError, ValueError):
                return None
            self._handles[run_file] = handle
            self.files_read.add(run_file)
        try:
            handle.seek(offset)
            row = orjson.loads(handle.readline())
        except (OSError, orjson.JSONDecodeError):
            self._task[slot] = None
            return None
        if row.get("evidence_id") != evidence_id or (
            run_id is not None and row.get("run_id") != run_id
        ):
            return None
        found = Fetched(
            row["record"], evidence_id, "secrets" not in row and self.trusted_file(run_file)
        )
        self._task[slot] = found
        return found

    def next_task(self) -> None:
        """Forget the records of the task just done (memory holds one task's records)."""
        self._task.clear()

    def trusted_file(self, run_file: str) -> bool:
        """Whether the records of ``run_file`` were scanned for secrets by this code's rules:
        its producer's collect receipt names the same rules version."""
        known = self._trusted.get(run_file)
        if known is None:
            known = self._trusted[run_file] = self._rules_of(run_file) == C.SECRET_RULES_VERSION
        return known

    def _rules_of(self, run_file: str) -> int | None:
        if self._ledger is None:
            from distill_assets.lib.records.receipts import read_ledger

            self._ledger = read_ledger(self.out_root)
        entry = self._ledger.get(run_file)
        if entry is None or entry.get("stage") != C.STAGE_COLLECT:
            return None
        path = self.out_root / C.REPORTS_DIR / entry["run_id"] / f"{C.STAGE_COLLECT}.json"
        try:
            receipt = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        rules = (receipt.get("extra") or {}).get("secret_rules")
        return rules if isinstance(rules, int) else None

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._task.clear()


class Fetched(NamedTuple):
    """A run's (or a review's, an outcome's) evidence record and collect's secret verdict."""

    record: dict[str, Any]
    evidence_id: str
    clean: bool


def stable_id(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:24]
    return f"{prefix}-{digest}"


def quarantine_row(
    stage: str,
    reasons: list[str],
    key: RunKey | None = None,
    pair: tuple[RunKey, RunKey] | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "stage": stage,
        "disposition": C.DISPOSITION_QUARANTINED,
        "reasons": reasons,
        "record_type": "pair" if pair else "run",
    }
    if pair is not None:
        chosen, rejected = pair
        row.update(
            run_id=None,
            task_id=chosen.task_id,
            chosen_run_id=chosen.run_id,
            rejected_run_id=rejected.run_id,
            margin=round(chosen.score - rejected.score, 6),
        )
    elif key is not None:
        row.update(
            run_id=key.run_id,
            task_id=key.task_id,
            evidence_id=key.evidence_id,
            quality_score=key.quality,
        )
    return row


def sft_messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    """TRL conversational messages: the run's own chat without system turns, or user/assistant."""
    messages = record.get("messages")
    if not messages:
        return [
            {"role": "user", "content": record["instruction"]},
            {"role": "assistant", "content": record["response"]},
        ]
    kept: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") in ("system", "developer"):
            continue
        clean: dict[str, Any] = {"role": message["role"], "content": message.get("content")}
        for name in ("tool_calls", "tool_call_id", "name"):
            if message.get(name) is not None:
                clean[name] = message[name]
        kept.append(clean)
    final = _last_answer(kept)
    if final is None:
        kept.append({"role": "assistant", "content": record["response"]})
    else:
        del kept[final + 1 :]  # turns after the final answer (e.g. a user's goodbye) teach nothing
    if kept[0]["role"] != "user":
        kept.insert(0, {"role": "user", "content": record["instruction"]})
    return kept


def _last_answer(messages: list[dict[str, Any]]) -> int | None:
    """Index of the last assistant message that answers in text (no tool call)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message["role"] == "assistant" and not message.get("tool_calls"):
            content = message.get("content")
            if (
                isinstance(content, str)
                and content.strip()
                or isinstance(content, list)
                and content
            ):
                return index
    return None


def _texts_of(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
    return []


def user_texts(messages: list[dict[str, Any]]) -> list[str]:
    """The user turns of a conversation: its prompts, for decontamination."""
    return [t for m in messages if m.get("role") == "user" for t in _texts_of(m.get("content"))]


def conversation_text(messages: list[dict[str, Any]]) -> str:
    """Every turn's text and tool-call arguments, one per line: what near-duplicates compare."""
    parts: list[str] = []
    for message in messages:
        parts.extend(_texts_of(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                parts.append(f"{function.get('name', '')} {function.get('arguments', '')}")
    return "\n".join(parts)


class Exporter:
    """What every export of the pass shares: its stage, the hygiene (which writes the train and
    holdout files), one quarantine writer, a tally, the records files it read and its share of
    the pass's time. Subclasses handle one task's runs at a time (``task``)."""

    stage: str = ""
    dataset_path: str = ""
    # rebuilds what a row accounts for from the hygiene's spool (near-duplicates' quarantine)
    unit_type: Callable[..., Any] = RunKey._make

    def __init__(
        self,
        out_root: Path,
        write_root: Path,
        hygiene: HygieneSettings,
        eval_set: EvalSet | None,
        texts: TextStore,
    ) -> None:
        self.out_root = out_root
        self.write_root = write_root
        self.tally = Tally()
        self.quarantine = AtomicJsonlWriter(write_root, C.quarantine_path(self.stage))
        self.curation = Curation(self.stage, hygiene, eval_set, write_root, texts.band_cache)
        self.texts = texts
        self.files_read: set[str] = set()
        self.seconds = 0.0

    def fetch(self, key: RunKey) -> Fetched | None:
        """The run's record (shared with the other exports of the pass) and its verdict."""
        found = self.texts.fetch_line(key.run_file, key.run_offset, key.evidence_id, key.run_id)
        if self.texts.is_open(key.run_file):
            self.files_read.add(key.run_file)
        return found

    def admit(self, runs: list[RunKey], repeated: frozenset[str]) -> list[RunKey]:
        """The task's runs whose id is unique across all partitions; the others are
        conflicting duplicates (the same run_id scored on days further apart than the evidence
        window), left out as their task comes up."""
        if not repeated:
            return runs
        kept = []
        for key in runs:
            if key.run_id in repeated:
                self.tally.records_in += 1
                self.leave_out(key, [C.R_CONFLICTING_DUPLICATE])
            else:
                kept.append(key)
        return kept

    def task(self, task_id: str, runs: list[RunKey], repeated: frozenset[str]) -> None:
        raise NotImplementedError

    def leave_out(self, key: RunKey, reasons: list[str], **details: Any) -> None:
        self.tally.leave_out(C.DISPOSITION_QUARANTINED, reasons)
        self.quarantine.write_row({**quarantine_row(self.stage, reasons, key=key), **details})

    def leave_out_playbook(
        self, playbook: dict[str, Any], reasons: list[str], **details: Any
    ) -> None:
        self.tally.leave_out(C.DISPOSITION_QUARANTINED, reasons)
        self.quarantine.write_row(
            {**playbook_quarantine_row(self.stage, reasons, playbook), **details}
        )

    def read_inputs(self, stream_inputs: list[WrittenFile]) -> list[WrittenFile]:
        """What the export read: the scored runs by task and the records files it used."""
        return stream_inputs + [WrittenFile(p, "", 0, 0) for p in sorted(self.files_read)]

    def finish(
        self,
        inputs: list[WrittenFile],
        row_for: Callable[..., dict[str, Any]] | None = None,
    ) -> StageResult:
        """Write the train and holdout files (``row_for`` builds a near-duplicate's quarantine
        row from its unit: a run key by default)."""
        outputs = self.curation.finish(
            self.tally, self.quarantine, row_for or quarantine_row, self.unit_type
        )
        outputs.append(self.quarantine.commit())
        result = StageResult(self.stage, inputs, outputs, self.tally)
        result.extra["rows"] = self.curation.train_rows
        result.extra.update(self.curation.extra())
        result.errors.extend(conservation_errors(self.tally))
        return result

    def result(self, stream_inputs: list[WrittenFile]) -> StageResult:
        """Finish the export once the pass has given it every task."""
        return self.finish(self.read_inputs(stream_inputs))

    def abort(self) -> None:
        self.curation.abort()
        self.quarantine.abort()

    # --- worker processes: each takes a range of tasks, the step's process the rest ---------

    def part(self) -> dict[str, Any]:
        """What this export did over a range of tasks in a worker process, for ``absorb``: its
        counts, its quarantine rows and hygiene spools (left on disk), its own figures."""
        sealed = self.quarantine.seal()
        return {
            "tally": self.tally,
            "quarantine": (sealed.tmp, sealed.written.record_count),
            "curation": self.curation.part(),
            "files_read": self.files_read,
            "seconds": self.seconds,
            "extra": self.part_extra(),
        }

    def absorb(self, part: dict[str, Any]) -> None:
        """Take over what a worker did over the tasks before any this export has seen."""
        self.tally.merge(part["tally"])
        path, lines = part["quarantine"]
        self.quarantine.append_file(Path(path), lines)
        self.curation.absorb(part["curation"])
        self.files_read |= part["files_read"]
        self.seconds += part["seconds"]
        self.absorb_extra(part["extra"])

    def part_extra(self) -> dict[str, Any]:
        """An export's own figures, summed over the parts (``absorb_extra``)."""
        return {}

    def absorb_extra(self, extra: dict[str, Any]) -> None:
        for name, value in extra.items():
            setattr(self, name, getattr(self, name) + value)


def _common_reasons(key: RunKey) -> list[str] | None:
    if key.quality == C.QUALITY_REVIEW:
        return [C.R_NEEDS_HUMAN_REVIEW]
    if key.quality == C.QUALITY_REJECTED:
        return [C.R_QUALITY_REJECTED]
    return None


class RagExporter(Exporter):
    """``export-rag``: each extracted playbook (train rows first, then holdout rows, as the
    extraction wrote them) rendered as one retrieval document. The unit is the playbook."""

    stage = C.STAGE_EXPORT_RAG
    dataset_path = C.RAG_PATH
    unit_type = staticmethod(lambda fields: PlaybookUnit._make(fields))

    def __init__(
        self,
        out_root: Path,
        write_root: Path,
        settings: ExportSettings,
        eval_set: EvalSet | None,
        texts: TextStore,
    ) -> None:
        super().__init__(out_root, write_root, settings.hygiene, eval_set, texts)
        self.settings = settings
        self.allowed = (C.QUALITY_ACCEPTED,)
        if settings.rag_include_partial:
            self.allowed = (C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL)
        self.counts = {C.EXTRACTED_PATH: 0, C.EXTRACTED_HOLDOUT_PATH: 0}
        # playbooks the extraction put in its holdout, rendered after all of its train rows
        # (those of worker processes first, in task order; a dot-name swept if killed)
        target = write_root / C.RAG_PATH
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, later = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".later.tmp", dir=target.parent
        )
        self._later_path = Path(later)
        self._later: Any = os.fdopen(fd, "w+b")
        self._earlier: list[Path] = []

    def task(self, task_id: str, runs: list[RunKey], repeated: frozenset[str]) -> None:
        """The extraction hands the playbooks over (``extracted``); runs are not read here."""

    def extracted(self, playbook: dict[str, Any], holdout: bool) -> None:
        """A playbook the extraction wrote to its train (now) or holdout (later) file."""
        if holdout:
            self._later.write(orjson.dumps(playbook) + b"\n")
        else:
            self.render(playbook, C.EXTRACTED_PATH)

    def render(self, extracted: dict[str, Any], relpath: str) -> None:
        self.counts[relpath] += 1
        self.tally.records_in += 1
        if self.settings.denies((extracted.get("tags") or {}).get("category")):
            self.leave_out_playbook(extracted, [C.R_DENIED_CATEGORY])
            return
        kept = [s for s in extracted["sources"] if s["quality"] in self.allowed]
        if not kept:
            self.leave_out_playbook(extracted, [C.R_PARTIALLY_ACCEPTED])
            return
        playbook = {
            **extracted,
            "quality": kept[0]["quality"],
            "score": kept[0]["score"],
            "source_run_ids": [s["run_id"] for s in kept],
            "tags": tags_of_sources(extracted["tags"], kept),
        }
        screened = self.curation.screen(
            {
                "id": extracted["id"],
                "task_id": extracted["task_id"],
                "title": extracted["title"],
                "text": render_text(playbook),
                "source_run_ids": playbook["source_run_ids"],
                "quality": playbook["quality"],
                "score": playbook["score"],
                "failed_run_ids": extracted["failed_run_ids"],
                "tags": playbook["tags"],
            },
            extracted["task_id"],
            [extracted["problem"]],
        )
        if screened.reasons:
            self.leave_out_playbook(extracted, screened.reasons, **screened.details)
            return
        unit = PlaybookUnit(extracted["id"], extracted["task_id"], playbook["quality"])
        self.curation.keep(screened.row, (unit,), screened.row["text"], pair=False)
        self.tally.records_out += 1
        self.tally.accepted += 1

    def read_files(self, root: Path) -> None:
        """Render the playbooks an earlier extraction wrote under ``root`` (train, holdout)."""
        for relpath in (C.EXTRACTED_PATH, C.EXTRACTED_HOLDOUT_PATH):
            if (root / relpath).exists():
                for extracted in iter_jsonl(root / relpath):
                    self.render(extracted, relpath)

    def part_extra(self) -> dict[str, Any]:
        self._later.close()
        return {"counts": self.counts, "later": [*self._earlier, self._later_path]}

    def absorb_extra(self, extra: dict[str, Any]) -> None:
        for relpath, count in extra["counts"].items():
            self.counts[relpath] += count
        self._earlier.extend(extra["later"])

    def result(self, stream_inputs: list[WrittenFile]) -> StageResult:
        self._later.flush()
        for path in [*self._earlier, self._later_path]:
            with open(path, "rb") as fh:
                for raw in fh:
                    self.render(orjson.loads(raw), C.EXTRACTED_HOLDOUT_PATH)
        self._close_later()
        read = [
            WrittenFile(relpath, "", 0, count)
            for relpath, count in self.counts.items()
            if (self.write_root / relpath).exists()
        ]
        result = self.finish(read, row_for=playbook_unit_row)
        result.input_root = layout.relroot(self.out_root, self.write_root)
        result.extra["playbooks"] = self.curation.train_rows
        return result

    def _close_later(self) -> None:
        self._later.close()
        for path in [*self._earlier, self._later_path]:
            path.unlink(missing_ok=True)

    def abort(self) -> None:
        self._close_later()
        super().abort()


class PlaybookUnit(NamedTuple):
    """What the hygiene accounts a playbook by (it stands where a run key would)."""

    run_id: str  # the playbook's id
    task_id: str
    quality: str


def playbook_unit_row(
    stage: str, reasons: list[str], key: PlaybookUnit | None = None, pair: Any = None
) -> dict[str, Any]:
    assert key is not None
    return playbook_quarantine_row(stage, reasons, {"id": key.run_id, "task_id": key.task_id})


def playbook_quarantine_row(
    stage: str, reasons: list[str], playbook: dict[str, Any]
) -> dict[str, Any]:
    """A playbook left out of a later stage: named by its id, task and source runs."""
    return {
        "stage": stage,
        "disposition": C.DISPOSITION_QUARANTINED,
        "reasons": reasons,
        "record_type": "playbook",
        "run_id": None,
        "playbook_id": playbook.get("id"),
        "task_id": playbook.get("task_id"),
        "source_run_ids": [
            s["run_id"] if isinstance(s, dict) else s
            for s in playbook.get("source_run_ids") or playbook.get("sources") or []
        ],
    }


def category_reason(category: str | None, settings: ExportSettings) -> str | None:
    if category is None:
        return None if settings.sft_allow_categories is None else C.R_CATEGORY_DISALLOWED
    normalized = category.strip().lower()
    if normalized in settings.denied:
        return C.R_UNSAFE_SFT_CATEGORY
    if settings.allowed is not None and normalized not in settings.allowed:
        return C.R_CATEGORY_DISALLOWED
    return None


class TrainingExporter(Exporter):
    """An export of training rows in a TRL format (SFT, preference, KTO): its settings, the
    format its rows are written in (``format_of``), recorded in its receipt."""

    def __init__(
        self,
        out_root: Path,
        write_root: Path,
        settings: ExportSettings,
        eval_set: EvalSet | None,
        texts: TextStore,
    ) -> None:
        super().__init__(out_root, write_root, settings.hygiene, eval_set, texts)
        self.settings = settings
        self.fmt = self.format_of(settings)

    @staticmethod
    def format_of(settings: ExportSettings) -> str:
        raise NotImplementedError

    def figures(self) -> dict[str, Any]:
        """The export's own figures for its receipt (before the format)."""
        return {}

    def result(self, stream_inputs: list[WrittenFile]) -> StageResult:
        result = super().result(stream_inputs)
        result.extra.update(self.figures())
        result.extra["format"] = self.fmt
        return result


class SftExporter(TrainingExporter):
    """``export-sft``: accepted runs in allowed categories, with an answer, as TRL rows."""

    stage = C.STAGE_EXPORT_SFT
    dataset_path = C.SFT_PATH

    @staticmethod
    def format_of(settings: ExportSettings) -> str:
        return settings.formats.sft_format

    def task(self, task_id: str, runs: list[RunKey], repeated: frozenset[str]) -> None:
        tally = self.tally
        for key in self.admit(runs, repeated):
            tally.records_in += 1
            reasons = _common_reasons(key) or []
            if key.quality == C.QUALITY_PARTIAL:
                reasons.append(C.R_PARTIALLY_ACCEPTED)
            unsafe = category_reason(key.category, self.settings)
            if unsafe:
                reasons.append(unsafe)
            if key.response_empty:
                reasons.append(C.R_EMPTY_RESPONSE)
            if not key.sft_eligible:
                reasons.append(C.R_NOT_SFT_ELIGIBLE)
            if reasons:
                self.leave_out(key, reasons)
                continue
            found = self.fetch(key)
            if found is None:
                self.leave_out(key, [C.R_MISSING_SOURCE_RUN_ID])
                continue
            record = found.record
            messages = sft_messages(record)
            composed: list[str] = []
            screened = self.curation.screen(
                {
                    **sft_columns(messages, record, self.fmt, composed),
                    "id": stable_id("sft", key.run_id),
                    "source_run_id": key.run_id,
                    "task_id": key.task_id,
                    "category": key.category,
                },
                key.task_id,
                user_texts(messages),
                trusted=found.clean,
                composed=composed,
            )
            if screened.reasons:
                self.leave_out(key, screened.reasons, **screened.details)
                continue
            if "messages" in screened.row:
                text = conversation_text(screened.row["messages"])
            else:
                text = f"{screened.row['prompt']}\n{screened.row['completion']}"
            self.curation.keep(screened.row, (key,), text, pair=False)
            tally.records_out += 1
            tally.accepted += 1


def candidate_pairs(
    runs: list[RunKey], settings: ExportSettings
) -> Iterator[tuple[RunKey, RunKey, list[str]]]:
    """Every ordered (chosen, rejected) pair in one task where chosen is strictly better.

    ``runs`` are sorted best first and exclude needs_human_review. Yields the reasons a pair
    breaks a rule (empty when it is valid). A rejected run is never on the chosen side.
    """
    for i, chosen in enumerate(runs):
        if chosen.quality not in (C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL):
            continue
        for rejected in runs[i + 1 :]:
            if (chosen.rank, chosen.score) <= (rejected.rank, rejected.score):
                continue
            reasons = []
            if chosen.run_id == rejected.run_id:
                reasons.append(C.R_SELF_PAIR)
            if chosen.response_hash == rejected.response_hash:
                reasons.append(C.R_IDENTICAL_TEXT)
            if round(chosen.score - rejected.score, 6) < settings.min_margin:
                reasons.append(C.R_BELOW_MARGIN)
            if chosen.response_empty:
                reasons.append(C.R_EMPTY_RESPONSE)
            if not (chosen.sft_eligible or rejected.sft_eligible):
                reasons.append(C.R_INSTRUCTION_UNAVAILABLE)
            yield chosen, rejected, reasons


def _taint(screened: Screened, owners: dict[str, RunKey], tainted: dict[str, list[str]]) -> None:
    """Note the runs whose own text kept a pair out: a secret in the field that is theirs
    (``owners``: prompt, chosen, rejected), or an evaluation prompt (both runs)."""
    for finding in screened.details.get("findings", []):
        owner = owners.get(finding["field"].split(".")[0].split("[")[0])
        if owner is not None:
            tainted[owner.run_id] = [C.R_SECRET_DETECTED]
    if C.R_CONTAMINATED_EVAL in screened.reasons:
        for run in (owners["chosen"], owners["rejected"]):
            tainted.setdefault(run.run_id, [C.R_CONTAMINATED_EVAL])


class PreferenceExporter(TrainingExporter):
    """``export-preference``: chosen/rejected pairs within a task, chosen strictly better."""

    stage = C.STAGE_EXPORT_PREFERENCE
    dataset_path = C.PREFERENCE_PATH

    def __init__(
        self,
        out_root: Path,
        write_root: Path,
        settings: ExportSettings,
        eval_set: EvalSet | None,
        texts: TextStore,
    ) -> None:
        super().__init__(out_root, write_root, settings, eval_set, texts)
        self.tasks_without_pair = 0
        self.pairs_quarantined = 0

    @staticmethod
    def format_of(settings: ExportSettings) -> str:
        return settings.formats.preference_format

    def _quarantine_pair(
        self, chosen: RunKey, rejected: RunKey, reasons: list[str], **details: Any
    ) -> None:
        self.pairs_quarantined += 1
        for reason in reasons:
            self.tally.reasons[reason] += 1
        self.quarantine.write_row(
            {**quarantine_row(self.stage, reasons, pair=(chosen, rejected)), **details}
        )

    def task(self, task_id: str, runs: list[RunKey], repeated: frozenset[str]) -> None:
        ranked = self._ranked(runs, repeated)
        # runs whose own text kept their pairs out (a secret, an evaluation prompt): that is
        # their reason when they end in no pair, rather than no_valid_pair
        tainted: dict[str, list[str]] = {}
        written = self._write_pairs(self._valid_pairs(ranked), tainted)
        self._account(ranked, written, tainted)

    def _ranked(self, runs: list[RunKey], repeated: frozenset[str]) -> list[RunKey]:
        """The task's runs that may be paired (best first); the others left out."""
        tally = self.tally
        settings = self.settings
        ranked: list[RunKey] = []
        for key in self.admit(runs, repeated):
            tally.records_in += 1
            if key.quality == C.QUALITY_REVIEW:
                self.leave_out(key, [C.R_NEEDS_HUMAN_REVIEW])
            elif settings.denies(key.category):
                self.leave_out(key, [C.R_DENIED_CATEGORY])
            else:
                ranked.append(key)
        return ranked

    def _valid_pairs(self, ranked: list[RunKey]) -> list[tuple[RunKey, RunKey]]:
        """The task's pairs that keep every rule (the widest margins first when capped); the
        others quarantined."""
        settings = self.settings
        valid: list[tuple[RunKey, RunKey]] = []
        for chosen, rejected, reasons in candidate_pairs(ranked, settings):
            if reasons:
                self._quarantine_pair(chosen, rejected, reasons)
            else:
                valid.append((chosen, rejected))
        if settings.max_pairs_per_task is not None:
            valid.sort(key=lambda p: (-(p[0].score - p[1].score), p[0].order(), p[1].order()))
            valid = valid[: settings.max_pairs_per_task]
        return valid

    def _write_pairs(
        self, valid: list[tuple[RunKey, RunKey]], tainted: dict[str, list[str]]
    ) -> list[tuple[RunKey, RunKey]]:
        """Fetch, screen and keep each valid pair; those written. A pair the hygiene kept out
        is quarantined, and the runs whose text did it are ``tainted``."""
        written: list[tuple[RunKey, RunKey]] = []
        for chosen, rejected in valid:
            chosen_found, rejected_found = self.fetch(chosen), self.fetch(rejected)
            if chosen_found is None or rejected_found is None:
                self._quarantine_pair(chosen, rejected, [C.R_MISSING_SOURCE_RUN_ID])
                continue
            prompt_run = chosen if chosen.sft_eligible else rejected
            prompt_found = chosen_found if chosen.sft_eligible else rejected_found
            instruction = prompt_found.record["instruction"]
            screened = self.curation.screen(
                {
                    "id": stable_id("pair", chosen.run_id, rejected.run_id),
                    **pair_columns(
                        instruction,
                        chosen_found.record["response"],
                        rejected_found.record["response"],
                        self.fmt,
                    ),
                    "chosen_run_id": chosen.run_id,
                    "rejected_run_id": rejected.run_id,
                    "task_id": chosen.task_id,
                    "margin": round(chosen.score - rejected.score, 6),
                    "chosen_quality": chosen.quality,
                    "rejected_quality": rejected.quality,
                },
                chosen.task_id,
                [instruction],
                trusted=chosen_found.clean and rejected_found.clean,
            )
            if screened.reasons:
                self._quarantine_pair(chosen, rejected, screened.reasons, **screened.details)
                _taint(
                    screened,
                    {"prompt": prompt_run, "chosen": chosen, "rejected": rejected},
                    tainted,
                )
                continue
            row = screened.row
            text = f"{plain_text(row['prompt'])}\n{plain_text(row['chosen'])}"
            self.curation.keep(row, (chosen, rejected), text, pair=True)
            written.append((chosen, rejected))
        return written

    def _account(
        self,
        ranked: list[RunKey],
        written: list[tuple[RunKey, RunKey]],
        tainted: dict[str, list[str]],
    ) -> None:
        """Count out the runs of a written pair; leave out the others, with their taint or
        no_valid_pair."""
        tally = self.tally
        used = {key.run_id for pair in written for key in pair}
        if ranked and not written:
            self.tasks_without_pair += 1
        for key in ranked:
            if key.run_id in used:
                tally.records_out += 1
                if key.quality == C.QUALITY_REJECTED:
                    tally.rejected += 1
                else:
                    tally.accepted += 1
            else:
                self.leave_out(key, tainted.get(key.run_id, [C.R_NO_PAIR]))

    def part_extra(self) -> dict[str, Any]:
        return {
            "tasks_without_pair": self.tasks_without_pair,
            "pairs_quarantined": self.pairs_quarantined,
        }

    def figures(self) -> dict[str, Any]:
        return {
            "pairs": self.curation.train_rows,
            "pairs_quarantined": self.pairs_quarantined + self.curation.pairs_dropped,
            "tasks_without_pair": self.tasks_without_pair,
        }


# --- the exports one at a time (the library API the tests and the benchmark call) ------------


def _one(stage: str, out_root: Path, plan: Any) -> StageResult:
    from distill_assets.lib.datasets.export_pass import run_exports

    return run_exports(out_root, plan)[stage]


def export_rag(
    out_root: Path,
    settings: ExportSettings,
    write_root: Path | None = None,
    eval_set: EvalSet | None = None,
) -> StageResult:
    """Render each extracted playbook (``extract-playbooks``, train and holdout, read from
    ``write_root``) as one retrieval document; write the dataset, its holdout and its quarantine
    under ``write_root``."""
    from distill_assets.lib.datasets.export_pass import ExportPlan

    root = write_root or out_root
    if not (root / C.EXTRACTED_PATH).exists():
        return StageResult(
            C.STAGE_EXPORT_RAG,
            [],
            [],
            Tally(),
            errors=[f"{C.EXTRACTED_PATH} is missing: materialize extracted_playbooks first"],
        )
    plan = ExportPlan(write_root=root, rag=(settings, eval_set))
    return _one(C.STAGE_EXPORT_RAG, out_root, plan)


def export_sft(
    out_root: Path,
    settings: ExportSettings,
    write_root: Path | None = None,
    eval_set: EvalSet | None = None,
) -> StageResult:
    """Write the dataset and its quarantine under ``write_root`` (default: ``out_root``)."""
    from distill_assets.lib.datasets.export_pass import ExportPlan

    plan = ExportPlan(write_root=write_root or out_root, sft=(settings, eval_set))
    return _one(C.STAGE_EXPORT_SFT, out_root, plan)


def export_preference(
    out_root: Path,
    settings: ExportSettings,
    write_root: Path | None = None,
    eval_set: EvalSet | None = None,
) -> StageResult:
    """Write the dataset and its quarantine under ``write_root`` (default: ``out_root``)."""
    from distill_assets.lib.datasets.export_pass import ExportPlan

    plan = ExportPlan(write_root=write_root or out_root, preference=(settings, eval_set))
    return _one(C.STAGE_EXPORT_PREFERENCE, out_root, plan)
