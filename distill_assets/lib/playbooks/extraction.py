"""Stage ``extract-playbooks``: scored runs → one structured playbook per task.

For each task with a verified run (accepted or partially accepted, with an answer and a real
instruction), the best such run gives the problem, the steps it took and its final answer; every
other verified run of the task is listed as a source; every rejected run of the task is
compared with the playbook's steps and the first step where it diverged is recorded. Runs are
read as slim keys and fetched by byte offset one at a time, so memory holds one task's runs'
keys and one transcript, whatever the corpus size. Deterministic, no model calls.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import Exporter, category_denied, stable_id
from distill_assets.lib.datasets.rag import RagExporter
from distill_assets.lib.datasets.runs import RunKey
from distill_assets.lib.datasets.texts import TextStore
from distill_assets.lib.hygiene.curate import HygieneSettings
from distill_assets.lib.hygiene.decontam import EvalSet
from distill_assets.lib.hygiene.holdout import in_holdout
from distill_assets.lib.infra.io import WrittenFile
from distill_assets.lib.playbooks.playbook import (
    Call,
    PlaybookSettings,
    divergence,
    steps_of,
    tags_of,
    title_of,
    tool_calls,
)
from distill_assets.lib.records.accounting import StageResult
from distill_assets.lib.verify.firewall import (
    FirewallReport,
    ScoredTable,
    dataset_pieces,
    scored_lookup,
    verify_extracted_frame,
    verify_pieces,
)

TRUSTED = (C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL)
# what the extraction is given (lib/datasets/export_pass.ExportPlan.extract): its settings, the
# hygiene
# its playbooks get (the datasets' by default) and the eval set they are screened against
Extraction = tuple[PlaybookSettings, HygieneSettings | None, EvalSet | None]


@dataclass
class _Task:
    """What one task contributes, decided from its keys before any text is read."""

    sources: list[RunKey]
    failed: list[RunKey]


class ExtractExporter(Exporter):
    """``extract-playbooks``: one structured playbook per task with a verified run. Every
    playbook is screened for secrets (it quotes tool arguments and results) and split by task
    like the datasets; near-duplicates are judged on the rendered RAG playbooks, not here.
    Each playbook written is handed to ``rag`` (the pass's export-rag) when there is one."""

    stage = C.STAGE_EXTRACT_PLAYBOOKS
    dataset_path = C.EXTRACTED_PATH

    def __init__(
        self,
        out_root: Path,
        write_root: Path,
        extraction: Extraction,
        texts: TextStore,
        rag: RagExporter | None = None,
    ) -> None:
        settings, hygiene, eval_set = extraction
        rules = replace(hygiene or HygieneSettings(), near_dup_threshold=None)
        super().__init__(out_root, write_root, rules, eval_set, texts)
        self.settings = settings
        self.denied = frozenset(c.lower() for c in settings.deny_categories)
        self.holdout_fraction = rules.holdout_fraction
        self.rag = rag
        self.counts = {"steps": 0, "divergences": 0, "tasks_with_failures": 0}

    def _sort_task(self, runs: list[RunKey]) -> _Task:
        """Count every run in; leave out the ones that can be neither a source nor a contrast."""
        task = _Task([], [])
        for key in runs:
            self.tally.records_in += 1
            if key.quality == C.QUALITY_REVIEW:
                self.leave_out(key, [C.R_NEEDS_HUMAN_REVIEW])
            elif category_denied(key.category, self.denied):
                self.leave_out(key, [C.R_DENIED_CATEGORY])
            elif key.quality == C.QUALITY_REJECTED:
                task.failed.append(key)
            elif key.response_empty:
                self.leave_out(key, [C.R_EMPTY_RESPONSE])
            elif not key.sft_eligible:
                self.leave_out(key, [C.R_INSTRUCTION_UNAVAILABLE])
            else:
                task.sources.append(key)
        return task

    def task(self, task_id: str, runs: list[RunKey], repeated: frozenset[str]) -> None:
        runs = self.admit(runs, repeated)
        if not runs:
            return
        task = self._sort_task(runs)
        sources: list[tuple[RunKey, dict[str, Any]]] = []
        best: dict[str, Any] | None = None
        for key in task.sources:
            found = self.fetch(key)
            if found is None:
                self.leave_out(key, [C.R_MISSING_SOURCE_RUN_ID])
                continue
            if best is None:
                best = found.record
            sources.append((key, {"agent": found.record.get("agent")}))
        if best is None:
            for key in task.failed:
                self.leave_out(key, [C.R_QUALITY_REJECTED])
            return
        row, failed = self._playbook(task_id, best, sources, task.failed)
        units = tuple(key for key, _ in sources) + tuple(failed)
        screened = self.curation.screen(row, task_id, [row["problem"]])
        if screened.reasons:
            for key in units:
                self.leave_out(key, screened.reasons, **screened.details)
            return
        self.tally.records_out += len(units)
        self.tally.accepted += len(sources)
        self.tally.rejected += len(failed)
        row = screened.row
        self.curation.keep(row, units, "", pair=False)
        self.counts["steps"] += len(row["steps"])
        self.counts["divergences"] += len(row["divergences"])
        self.counts["tasks_with_failures"] += bool(row["failed_run_ids"])
        if self.rag is not None:
            self.rag.extracted(row, in_holdout(task_id, self.holdout_fraction))

    def _playbook(
        self,
        task_id: str,
        best: dict[str, Any],
        sources: list[tuple[RunKey, dict[str, Any]]],
        failed: list[RunKey],
    ) -> tuple[dict[str, Any], list[RunKey]]:
        """The playbook of a task and the failed runs it compares (those whose text was found)."""
        settings = self.settings
        lead = sources[0][0]
        calls: list[Call] = tool_calls(best.get("messages"))
        failed_ids: list[str] = []
        compared: list[RunKey] = []
        divergences: list[dict[str, Any]] = []
        for key in failed:
            found = self.fetch(key)
            if found is None:
                self.leave_out(key, [C.R_MISSING_SOURCE_RUN_ID])
                continue
            record = found.record
            failed_ids.append(key.run_id)
            compared.append(key)
            if len(divergences) < settings.max_divergences:
                diverged = divergence(
                    calls,
                    tool_calls(record.get("messages")),
                    record.get("response") or "",
                    settings,
                )
                divergences.append({"run_id": key.run_id, **diverged})
        return {
            "id": stable_id("pb", task_id),
            "task_id": task_id,
            "title": title_of(best["instruction"], settings.title_chars),
            "problem": best["instruction"],
            "steps": steps_of(calls, settings),
            "steps_total": len(calls),
            "final_answer": best["response"],
            "failed_run_ids": failed_ids,
            "divergences": divergences,
            "tags": tags_of(lead.category, [meta["agent"] for _, meta in sources], calls),
            "quality": lead.quality,
            "score": lead.score,
            "source_run_ids": [key.run_id for key, _ in sources],
            "sources": [
                {"run_id": key.run_id, "quality": key.quality, "score": key.score, **meta}
                for key, meta in sources
            ],
        }, compared

    def part_extra(self) -> dict[str, Any]:
        return {"counts": self.counts}

    def absorb_extra(self, extra: dict[str, Any]) -> None:
        for name, count in extra["counts"].items():
            self.counts[name] += count

    def result(self, stream_inputs: list[WrittenFile]) -> StageResult:
        result = super().result(stream_inputs)
        result.extra["playbooks"] = self.curation.train_rows
        result.extra.update(self.counts)
        return result


def extract_playbooks(
    out_root: Path,
    settings: PlaybookSettings,
    write_root: Path | None = None,
    hygiene: HygieneSettings | None = None,
    eval_set: EvalSet | None = None,
) -> StageResult:
    """Write the extracted playbooks (train and holdout) and their quarantine under
    ``write_root``."""
    from distill_assets.lib.datasets.export_pass import ExportPlan, run_exports

    plan = ExportPlan(write_root=write_root or out_root, extract=(settings, hygiene, eval_set))
    return run_exports(out_root, plan)[C.STAGE_EXTRACT_PLAYBOOKS]


def verify_extracted(
    out_root: Path,
    root: Path | None = None,
    lookup: ScoredTable | None = None,
    deny: tuple[str, ...] = C.DEFAULT_UNSAFE_SFT_CATEGORIES,
) -> FirewallReport:
    """Sources are verified runs of the task with an answer; failed runs are rejected runs of
    the task; no run needing human review appears at all (``verify_extracted_frame`` on the
    extracted playbooks under ``root``, train then holdout)."""
    table = scored_lookup(out_root) if lookup is None else lookup
    pieces = dataset_pieces(
        C.ASSET_EXTRACTED_PLAYBOOKS, root or out_root, C.EXTRACTED_PATH, C.EXTRACTED_HOLDOUT_PATH
    )
    return verify_pieces(pieces, lambda piece: verify_extracted_frame(piece, table, deny))
