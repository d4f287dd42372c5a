"""What the exports share: their settings and category rules, row ids, quarantine rows and the
``Exporter`` skeleton.

The exports (RAG, SFT, preference, KTO, the extraction and the review queue) run in one pass
over the scored runs (lib/datasets/export_pass.py) and decide what goes where: the
contamination firewall is enforced in them, and re-verified from the written files by blocking
asset checks. ``Exporter`` is what each of them shares: its stage, the hygiene that writes its
train and holdout files, one quarantine (every run an export leaves out gets a row saying why),
a tally and the records files it read; ``TrainingExporter`` adds the TRL format of the training
exports. ``ExportSettings`` holds the configurable rules, and ``recorded_settings`` rebuilds
them from a receipt for the checks.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.formats import FormatSettings
from distill_assets.lib.datasets.runs import RunKey
from distill_assets.lib.datasets.texts import Fetched, TextStore
from distill_assets.lib.hygiene.curate import Curation, HygieneSettings
from distill_assets.lib.hygiene.decontam import EvalSet
from distill_assets.lib.infra.io import AtomicJsonlWriter, WrittenFile
from distill_assets.lib.records.accounting import StageResult, Tally, conservation_errors


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
