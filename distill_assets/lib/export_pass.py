"""The export pass: every export of a run in one read of the scored runs and the evidence.

``extract-playbooks``, ``export-rag``, ``export-sft``, ``export-preference``, ``export-kto``
and ``export-review`` all read the same stream (the scored runs, task by task, best first) and
the same texts (each run's record in the evidence store). The pass reads that stream once and
hands each task to every selected export; a run's record is read and parsed once, when the
first export of the task asks for it, and shared with the others (lib/exports.TextStore). Each
export keeps its own rules, tally, quarantine, hygiene and files, and ends in its own
StageResult, exactly as if it had run alone: the bytes written do not depend on which other
exports share the pass (the tests compare them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_assets.lib import constants as C
from distill_assets.lib import progress
from distill_assets.lib.accounting import StageResult
from distill_assets.lib.exports import (
    ExportSettings,
    PreferenceExporter,
    RagExporter,
    SftExporter,
    TaskStream,
    TextStore,
)
from distill_assets.lib.hygiene.curate import HygieneSettings
from distill_assets.lib.hygiene.decontam import EvalSet
from distill_assets.lib.playbooks import PlaybookSettings


@dataclass
class ExportPlan:
    """Which exports the pass runs, with their settings; ``None`` leaves an export out."""

    write_root: Path
    extract: tuple[PlaybookSettings, HygieneSettings | None, EvalSet | None] | None = None
    rag: tuple[ExportSettings, EvalSet | None] | None = None
    sft: tuple[ExportSettings, EvalSet | None] | None = None
    preference: tuple[ExportSettings, EvalSet | None] | None = None
    kto: tuple[ExportSettings, EvalSet | None] | None = None
    review: bool = False

    @property
    def stages(self) -> list[str]:
        chosen = {
            C.STAGE_EXTRACT_PLAYBOOKS: self.extract,
            C.STAGE_EXPORT_RAG: self.rag,
            C.STAGE_EXPORT_SFT: self.sft,
            C.STAGE_EXPORT_PREFERENCE: self.preference,
            C.STAGE_EXPORT_KTO: self.kto,
            C.STAGE_EXPORT_REVIEW: self.review or None,
        }
        return [stage for stage, part in chosen.items() if part is not None]


def _exporters(out_root: Path, plan: ExportPlan, texts: TextStore) -> list[Any]:
    """The selected exports, in stage order (the extraction hands its playbooks to export-rag,
    so export-rag is built first and finishes after it)."""
    from distill_assets.lib.extraction import ExtractExporter
    from distill_assets.lib.hygiene.review_queue import ReviewExporter
    from distill_assets.lib.kto import KtoExporter

    root = plan.write_root
    made: list[Any] = []
    rag = None
    if plan.rag is not None:
        rag = RagExporter(out_root, root, plan.rag[0], plan.rag[1], texts)
    try:
        if plan.extract is not None:
            settings, hygiene, eval_set = plan.extract
            made.append(ExtractExporter(out_root, root, settings, hygiene, eval_set, texts, rag))
        if rag is not None:
            made.append(rag)
        for part, kind in (
            (plan.sft, SftExporter),
            (plan.preference, PreferenceExporter),
            (plan.kto, KtoExporter),
        ):
            if part is not None:
                made.append(kind(out_root, root, part[0], part[1], texts))
        if plan.review:
            made.append(ReviewExporter(out_root, root, texts))
    except BaseException:
        for exporter in [*made, *([rag] if rag is not None and rag not in made else [])]:
            exporter.abort()
        raise
    return made


def run_exports(out_root: Path, plan: ExportPlan) -> dict[str, StageResult]:
    """Run the selected exports in one pass over the scored runs; their results by stage.

    export-rag without the extraction renders the playbooks an earlier extraction wrote under
    the write root. Each result's ``extra["pass_ms"]`` is the whole pass; its duration share
    (``extra["own_ms"]``) is the time spent in that export's own code plus an equal part of
    the shared reading."""
    started = time.perf_counter()
    texts = TextStore(out_root)
    stream = TaskStream(out_root)
    exporters = _exporters(out_root, plan, texts)
    streaming = [e for e in exporters if e.stage != C.STAGE_EXPORT_RAG]
    results: dict[str, StageResult] = {}
    try:
        if streaming:
            _stream(stream, streaming, texts)
        for exporter in exporters:
            if exporter.stage == C.STAGE_EXPORT_RAG and plan.extract is None:
                began = time.perf_counter()
                exporter.read_files(plan.write_root)
                exporter.seconds += time.perf_counter() - began
            began = time.perf_counter()
            results[exporter.stage] = exporter.result(list(stream.inputs))
            exporter.seconds += time.perf_counter() - began
    except BaseException:
        for exporter in exporters:
            if exporter.stage not in results:
                exporter.abort()
        raise
    finally:
        stream.close()
        texts.close()
    total = time.perf_counter() - started
    shared = max(0.0, total - sum(e.seconds for e in exporters)) / max(1, len(exporters))
    for exporter in exporters:
        extra = results[exporter.stage].extra
        extra["pass_ms"] = int(total * 1000)
        extra["own_ms"] = int((exporter.seconds + shared) * 1000)
        if len(exporters) > 1:
            extra["pass_stages"] = [e.stage for e in exporters]
    return results


def _stream(stream: TaskStream, exporters: list[Any], texts: TextStore) -> None:
    """Hand every task of the stream to every export, reading each run's record once."""
    repeated = stream.repeated_run_ids()
    tick = progress.current()
    tick.begin(stream.run_count(), "runs", check_every=64)
    clock = time.perf_counter
    for task_id, runs in stream.tasks():
        for exporter in exporters:
            began = clock()
            exporter.task(task_id, runs, repeated)
            exporter.seconds += clock() - began
        texts.next_task()
        tick.advance(len(runs))
