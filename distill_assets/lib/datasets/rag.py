"""Stage ``export-rag``: each extracted playbook rendered as one retrieval document.

``extract-playbooks`` (lib/playbooks/extraction.py) builds the playbooks from the scored runs
and hands each one to ``RagExporter`` in the same pass: its train rows as it writes them, its
holdout rows after all of them. A playbook of a denied category, or without a source run of an
allowed quality, gets a quarantine row saying why; what the hygiene accounts a playbook by is
its ``PlaybookUnit``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import Exporter, ExportSettings, playbook_quarantine_row
from distill_assets.lib.datasets.runs import RunKey
from distill_assets.lib.datasets.texts import TextStore
from distill_assets.lib.hygiene.decontam import EvalSet
from distill_assets.lib.infra import layout
from distill_assets.lib.infra.io import WrittenFile, iter_jsonl
from distill_assets.lib.playbooks.playbook import render_text, tags_of_sources
from distill_assets.lib.records.accounting import StageResult, Tally


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


# --- the export alone (the library API the tests and the benchmark call) --------------------------


def export_rag(
    out_root: Path,
    settings: ExportSettings,
    write_root: Path | None = None,
    eval_set: EvalSet | None = None,
) -> StageResult:
    """Render each extracted playbook (``extract-playbooks``, train and holdout, read from
    ``write_root``) as one retrieval document; write the dataset, its holdout and its quarantine
    under ``write_root``."""
    from distill_assets.lib.datasets.export_pass import ExportPlan, run_exports

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
    return run_exports(out_root, plan)[C.STAGE_EXPORT_RAG]
