"""The export pass: every export of a run in one read of the scored runs and the evidence.

``extract-playbooks``, ``export-rag``, ``export-sft``, ``export-preference``, ``export-kto``
and ``export-review`` all read the same stream (the scored runs, task by task, best first) and
the same texts (each run's record in the evidence store). The pass reads that stream once and
hands each task to every selected export; a run's record is read and parsed once, when the
first export of the task asks for it, and shared with the others (lib/datasets/texts.TextStore).
Each export keeps its own rules, tally, quarantine, hygiene and files, and ends in its own
StageResult, exactly as if it had run alone: the bytes written do not depend on which other
exports share the pass (the tests compare them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import ExportSettings
from distill_assets.lib.datasets.preference import PreferenceExporter
from distill_assets.lib.datasets.rag import RagExporter
from distill_assets.lib.datasets.runs import TaskStream, repeated_run_ids
from distill_assets.lib.datasets.sft import SftExporter
from distill_assets.lib.datasets.texts import TextStore
from distill_assets.lib.hygiene.decontam import EvalSet
from distill_assets.lib.infra import progress
from distill_assets.lib.infra.parallel import process_pool
from distill_assets.lib.playbooks.playbook import PlaybookSettings
from distill_assets.lib.records.accounting import StageResult

if TYPE_CHECKING:
    from distill_assets.lib.playbooks.extraction import Extraction


@dataclass
class ExportPlan:
    """Which exports the pass runs, with their settings; ``None`` leaves an export out."""

    write_root: Path
    extract: Extraction | None = None
    rag: tuple[ExportSettings, EvalSet | None] | None = None
    sft: tuple[ExportSettings, EvalSet | None] | None = None
    preference: tuple[ExportSettings, EvalSet | None] | None = None
    kto: tuple[ExportSettings, EvalSet | None] | None = None
    review: bool = False

    @classmethod
    def every(
        cls, write_root: Path, export: ExportSettings, playbooks: PlaybookSettings
    ) -> ExportPlan:
        """All six exports with these settings, without an eval set or extraction hygiene."""
        return cls(
            write_root=write_root,
            extract=(playbooks, None, None),
            rag=(export, None),
            sft=(export, None),
            preference=(export, None),
            kto=(export, None),
            review=True,
        )

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
    from distill_assets.lib.datasets.kto import KtoExporter
    from distill_assets.lib.hygiene.review_queue import ReviewExporter
    from distill_assets.lib.playbooks.extraction import ExtractExporter

    root = plan.write_root
    made: list[Any] = []
    rag = None
    if plan.rag is not None:
        rag = RagExporter(out_root, root, plan.rag[0], plan.rag[1], texts)
    try:
        if plan.extract is not None:
            made.append(ExtractExporter(out_root, root, plan.extract, texts, rag))
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


# below this many scored runs the pass runs in the step's process alone
POOL_MIN_RUNS = 20_000


def run_exports(
    out_root: Path,
    plan: ExportPlan,
    workers: int = 1,
    pool_min_runs: int = POOL_MIN_RUNS,
    finished: Callable[[str, StageResult], None] | None = None,
) -> dict[str, StageResult]:
    """Run the selected exports in one pass over the scored runs; their results by stage.

    With ``workers`` > 1 and at least ``pool_min_runs`` scored runs, the tasks are cut into
    ranges of about equal bytes (``TaskStream.split``), each range passed in a worker process;
    the step's process then takes over the workers' parts in task order and finishes every
    export (near-duplicates, the holdout split, the files), so the bytes written are the same
    for any number of workers. export-rag without the extraction renders the playbooks an
    earlier extraction wrote under the write root.

    Each result's ``extra["pass_ms"]`` is the whole pass; its duration (``extra["own_ms"]``)
    is its share of the pass, in proportion to the time spent in its own code. ``finished``
    hears of each export as soon as its files are written (the others may still be writing)."""
    started = time.perf_counter()
    texts = TextStore(out_root)
    stream = TaskStream(out_root)
    exporters = _exporters(out_root, plan, texts)
    streaming = [e for e in exporters if e.stage != C.STAGE_EXPORT_RAG]
    results: dict[str, StageResult] = {}
    try:
        if streaming:
            ranges = stream.split(workers) if stream.run_count() >= pool_min_runs else []
            if len(ranges) > 1:
                _stream_in_workers(out_root, plan, stream, exporters, ranges)
            else:
                _stream(stream, streaming, texts)
        _finish(exporters, plan, list(stream.inputs), results, finished)
    except BaseException:
        for exporter in exporters:
            if exporter.stage not in results:
                exporter.abort()
        raise
    finally:
        stream.close()
        texts.close()
    total = time.perf_counter() - started
    own = sum(e.seconds for e in exporters) or 1.0
    for exporter in exporters:
        extra = results[exporter.stage].extra
        extra["pass_ms"] = int(total * 1000)
        extra["own_ms"] = int(total * exporter.seconds / own * 1000)
        if len(exporters) > 1:
            extra["pass_stages"] = [e.stage for e in exporters]
    return results


# the exports finished in the first thread, in this order (the extraction hands its playbooks
# to export-rag); the others in the second. Measured at 1M runs, the two take about as long:
# 3.6 + 5.6 + 3.3 s against 7.1 + 4.9 s (preference, KTO; the review queue next to nothing)
_FIRST_THREAD = (C.STAGE_EXTRACT_PLAYBOOKS, C.STAGE_EXPORT_RAG, C.STAGE_EXPORT_SFT)


def _finish(
    exporters: list[Any],
    plan: ExportPlan,
    inputs: list[Any],
    results: dict[str, StageResult],
    finished: Callable[[str, StageResult], None] | None,
) -> None:
    """Finish every export (near-duplicates, the holdout split, the files: ``result``) into
    ``results``, in two threads when both have work: the extraction, export-rag and export-sft
    in one, in that order, the other exports in the other. Much of a finish is the kernel's (copying
    byte ranges, hashing, removing spools) and runs beside the other thread's Python; each
    export writes only its own files, so the bytes do not depend on the threads. ``finished``
    hears of each export in stage order, from the calling thread, as soon as it and the ones
    before it are done; the first failure is raised once both threads are done (the exports
    not in ``results`` are then aborted by the caller)."""
    chains = [
        [e for e in exporters if e.stage in _FIRST_THREAD],
        [e for e in exporters if e.stage not in _FIRST_THREAD],
    ]
    chains = [chain for chain in chains if chain]
    futures: dict[str, Future[StageResult]] = {e.stage: Future() for e in exporters}

    def run(chain: list[Any]) -> None:
        for exporter in chain:
            future = futures[exporter.stage]
            try:
                began = time.perf_counter()
                if exporter.stage == C.STAGE_EXPORT_RAG and plan.extract is None:
                    exporter.read_files(plan.write_root)
                result = exporter.result(inputs)
                exporter.seconds += time.perf_counter() - began
                future.set_result(result)
            except BaseException as exc:  # noqa: BLE001 (raised by the caller's thread)
                future.set_exception(exc)
                for rest in chain[chain.index(exporter) + 1 :]:
                    futures[rest.stage].set_exception(exc)
                return

    threads = [
        threading.Thread(target=run, args=(chain,), name=f"finish-{n}", daemon=True)
        for n, chain in enumerate(chains)
    ]
    for thread in threads:
        thread.start()
    failure: BaseException | None = None
    try:
        for exporter in exporters:
            try:
                result = futures[exporter.stage].result()
            except BaseException as exc:  # noqa: BLE001 (raised below, once both are done)
                failure = failure or exc
                continue
            results[exporter.stage] = result
            if finished is not None and failure is None:
                finished(exporter.stage, result)
    finally:
        for thread in threads:
            thread.join()
    if failure is not None:
        raise failure


def _stream(stream: TaskStream, exporters: list[Any], texts: TextStore) -> None:
    """Hand every task of the stream to every export, reading each run's record once."""
    tick = progress.current()
    tick.begin(stream.run_count(), "runs", check_every=64)
    _hand_tasks(stream, exporters, texts, stream.repeated_run_ids(), tick.advance)


def _hand_tasks(
    stream: TaskStream,
    exporters: list[Any],
    texts: TextStore,
    repeated: frozenset[str],
    after: Callable[[int], Any] | None = None,
) -> None:
    """Each task of the stream to each export in turn (timing each), then ``after(runs)``."""
    clock = time.perf_counter
    for task_id, runs in stream.tasks():
        for exporter in exporters:
            began = clock()
            exporter.task(task_id, runs, repeated)
            exporter.seconds += clock() - began
        texts.next_task()
        if after is not None:
            after(len(runs))


def _stream_in_workers(
    out_root: Path,
    plan: ExportPlan,
    stream: TaskStream,
    exporters: list[Any],
    ranges: list[tuple[str | None, str | None]],
) -> None:
    """Pass each task range in a worker process and hand the parts, in task order, to the
    step's exporters (which then finish as if they had seen every task themselves)."""
    # in a process of its own: the run ids of every scored day pass through polars, whose
    # allocator keeps the pages it freed (about 140 MiB at 1M runs) while the workers run
    with process_pool(1, fresh=True) as pool:
        repeated = pool.submit(repeated_run_ids, out_root).result()
    tick = progress.current()
    tick.begin(len(ranges), "task ranges")
    parts: list[list[dict[str, Any]] | None] = [None] * len(ranges)
    failure: BaseException | None = None
    with process_pool(len(ranges)) as pool:
        futures = [
            pool.submit(_pass_range, out_root, plan, low, high, repeated) for low, high in ranges
        ]
        for number, future in enumerate(futures):
            try:
                parts[number] = future.result()
                tick.advance()
            except BaseException as exc:  # the other parts' files are removed below
                failure = failure or exc
    if failure is not None:
        for pieces in parts:
            for exporter, piece in zip(exporters, pieces or [], strict=False):
                _discard(exporter, piece)
        raise failure
    for pieces in parts:
        assert pieces is not None
        for exporter, piece in zip(exporters, pieces, strict=True):
            exporter.absorb(piece)


def _pass_range(
    out_root: Path,
    plan: ExportPlan,
    low: str | None,
    high: str | None,
    repeated: frozenset[str],
) -> list[dict[str, Any]]:
    """In a worker process: every selected export over the tasks in ``[low, high)``; the parts
    the step's process absorbs (files left on disk, counts)."""
    texts = TextStore(out_root)
    stream = TaskStream(out_root, low, high)
    exporters = _exporters(out_root, plan, texts)
    streaming = [e for e in exporters if e.stage != C.STAGE_EXPORT_RAG]
    try:
        _hand_tasks(stream, streaming, texts, repeated)
        return [exporter.part() for exporter in exporters]
    except BaseException:
        for exporter in exporters:
            exporter.abort()
        raise
    finally:
        stream.close()
        texts.close()


def _discard(exporter: Any, piece: dict[str, Any]) -> None:
    """Remove the files a worker's part left on disk (the pass failed)."""
    paths = [piece.get("quarantine", (None,))[0], piece.get("queue", (None,))[0]]
    curation = piece.get("curation") or {}
    for spool, units in curation.get("spools", []):
        paths += [spool, units]
    paths += (piece.get("extra") or {}).get("later", [])
    for path in paths:
        if path is not None:
            Path(path).unlink(missing_ok=True)
