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

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.accounting import StageResult
from distill_assets.lib.exports import (
    RunKey,
    TaskStream,
    _Export,
    stable_id,
)
from distill_assets.lib.firewall import FirewallReport, scored_lookup
from distill_assets.lib.hygiene.curate import HygieneSettings
from distill_assets.lib.hygiene.decontam import EvalSet
from distill_assets.lib.playbooks import (
    Call,
    PlaybookSettings,
    divergence,
    steps_of,
    tags_of,
    title_of,
    tool_calls,
)

TRUSTED = (C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL)


@dataclass
class _Task:
    """What one task contributes, decided from its keys before any text is read."""

    sources: list[RunKey]
    failed: list[RunKey]


def _sort_task(job: _Export, runs: list[RunKey]) -> _Task:
    """Count every run in and leave out the ones that can be neither a source nor a contrast."""
    task = _Task([], [])
    for key in runs:
        job.tally.records_in += 1
        if key.quality == C.QUALITY_REVIEW:
            job.leave_out(key, [C.R_NEEDS_HUMAN_REVIEW])
        elif key.quality == C.QUALITY_REJECTED:
            task.failed.append(key)
        elif key.response_empty:
            job.leave_out(key, [C.R_EMPTY_RESPONSE])
        elif not key.sft_eligible:
            job.leave_out(key, [C.R_INSTRUCTION_UNAVAILABLE])
        else:
            task.sources.append(key)
    return task


def extract_playbooks(
    out_root: Path,
    settings: PlaybookSettings,
    write_root: Path | None = None,
    hygiene: HygieneSettings | None = None,
    eval_set: EvalSet | None = None,
) -> StageResult:
    """Write the extracted playbooks (train and holdout) and their quarantine under
    ``write_root``. Every playbook is screened for secrets (it quotes tool arguments and
    results) and split by task like the datasets; near-duplicates are judged on the rendered
    RAG playbooks, not here."""
    stream = TaskStream(out_root)
    rules = replace(hygiene or HygieneSettings(), near_dup_threshold=None)
    job = _Export(
        out_root,
        write_root or out_root,
        C.STAGE_EXTRACT_PLAYBOOKS,
        C.EXTRACTED_PATH,
        rules,
        eval_set,
    )
    counts = {"steps": 0, "divergences": 0, "tasks_with_failures": 0}
    try:
        for task_id, runs in job.admit(stream):
            task = _sort_task(job, runs)
            sources: list[tuple[RunKey, dict[str, Any]]] = []
            best: dict[str, Any] | None = None
            for key in task.sources:
                record = job.texts.fetch(key)
                if record is None:
                    job.leave_out(key, [C.R_MISSING_SOURCE_RUN_ID])
                    continue
                if best is None:
                    best = record
                sources.append((key, {"agent": record.get("agent")}))
            if best is None:
                for key in task.failed:
                    job.leave_out(key, [C.R_QUALITY_REJECTED])
                continue
            row, failed = _playbook(job, task_id, best, sources, task.failed, settings)
            units = tuple(key for key, _ in sources) + tuple(failed)
            screened = job.curation.screen(row, task_id, [row["problem"]])
            if screened.reasons:
                for key in units:
                    job.leave_out(key, screened.reasons, **screened.details)
                continue
            job.tally.records_out += len(units)
            job.tally.accepted += len(sources)
            job.tally.rejected += len(failed)
            row = screened.row
            job.curation.keep(row, units, "", pair=False)
            counts["steps"] += len(row["steps"])
            counts["divergences"] += len(row["divergences"])
            counts["tasks_with_failures"] += bool(row["failed_run_ids"])
        result = job.finish(stream.inputs)
    except BaseException:
        job.abort()
        raise
    finally:
        stream.close()
    result.extra["playbooks"] = job.curation.train_rows
    result.extra.update(counts)
    return result


def _playbook(
    job: _Export,
    task_id: str,
    best: dict[str, Any],
    sources: list[tuple[RunKey, dict[str, Any]]],
    failed: list[RunKey],
    settings: PlaybookSettings,
) -> tuple[dict[str, Any], list[RunKey]]:
    """The playbook of a task and the failed runs it compares (those whose text was found)."""
    lead = sources[0][0]
    calls: list[Call] = tool_calls(best.get("messages"))
    failed_ids: list[str] = []
    compared: list[RunKey] = []
    divergences: list[dict[str, Any]] = []
    for key in failed:
        record = job.texts.fetch(key)
        if record is None:
            job.leave_out(key, [C.R_MISSING_SOURCE_RUN_ID])
            continue
        failed_ids.append(key.run_id)
        compared.append(key)
        if len(divergences) < settings.max_divergences:
            found = divergence(
                calls, tool_calls(record.get("messages")), record.get("response") or "", settings
            )
            divergences.append({"run_id": key.run_id, **found})
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


def verify_extracted(
    out_root: Path, root: Path | None = None, lookup: dict[str, Any] | None = None
) -> FirewallReport:
    """Sources are verified runs of the task with an answer; failed runs are rejected runs of
    the task; no run needing human review appears at all."""
    lookup = scored_lookup(out_root) if lookup is None else lookup
    report = FirewallReport()
    base = root or out_root
    for number, row in _train_and_holdout(base / C.EXTRACTED_PATH, base / C.EXTRACTED_HOLDOUT_PATH):
        report.rows += 1
        task_id = row.get("task_id")
        for run_id in row.get("source_run_ids") or []:
            known = lookup.get(run_id)
            if known is None:
                report.add(number, "source_run_unknown", run_id=run_id)
            elif known.quality not in TRUSTED:
                report.add(number, "untrusted_source", run_id=run_id, quality=known.quality)
            elif known.task_id != task_id:
                report.add(number, "task_mismatch", run_id=run_id)
            elif known.response_empty:
                report.add(number, C.R_EMPTY_RESPONSE, run_id=run_id)
        failed = list(row.get("failed_run_ids") or [])
        listed = [d.get("run_id") for d in row.get("divergences") or []]
        for run_id in failed + [r for r in listed if r not in failed]:
            known = lookup.get(run_id)
            if known is None:
                report.add(number, "source_run_unknown", run_id=run_id)
            elif known.quality != C.QUALITY_REJECTED:
                report.add(number, "failed_run_not_rejected", run_id=run_id)
            elif known.task_id != task_id:
                report.add(number, "task_mismatch", run_id=run_id)
    return report


def _train_and_holdout(train: Path, holdout: Path):
    """(row number, row) of the train file, then the holdout file (numbered on)."""
    number = 0
    for path in (train, holdout):
        if not path.exists():
            continue
        with open(path, "rb") as fh:
            for raw in fh:
                number += 1
                if raw.strip():
                    yield number, orjson.loads(raw)
