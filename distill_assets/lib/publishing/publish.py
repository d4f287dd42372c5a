"""Stage ``publish``: assemble the run's exports and make them visible in one step.

It writes the merged quarantine views of ``collect`` and ``score`` (from the per-day parts on
disk) and ``MANIFEST.json`` into the run's version directory, verifies every listed file against
the sha256 its producer recorded, and then repoints ``exports`` at the version with one rename.
It runs after the exports' blocking checks, so only checked datasets are ever published. The
manifest's bytes hold no run ids or times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.datasets.formats import parquet_rows
from distill_assets.lib.infra import layout
from distill_assets.lib.infra.io import (
    WrittenFile,
    concat_files,
    count_lines,
    sha256_file,
    write_json_atomic,
)
from distill_assets.lib.playbooks.search import indexed_rows, indexed_source
from distill_assets.lib.publishing.trace import build_lookup
from distill_assets.lib.publishing.versions import open_version
from distill_assets.lib.publishing.versions import publish as swap_in
from distill_assets.lib.records.accounting import StageResult, Tally
from distill_assets.lib.records.receipts import read_ledger, receipt_relpath

# the datasets (lib/S.DATASETS), in the order the manifest's files are listed and read
_ORDER = ("rag", "rag_extracted", "sft", "preference", "kto")
DATASETS = {name: S.DATASETS[name][1] for name in _ORDER}
HOLDOUTS = {name: S.DATASETS[name][2] for name in _ORDER}
# the dataset cards: listed by path only (a card names the run that built its dataset, and the
# manifest's bytes hold no run ids), never verified against the ledger's hash
CARDS = {kind: C.card_path(kind) for kind in S.DATASET_KINDS}
# published beside the datasets, not a JSONL table: its rows are the playbooks it indexes
INDEXES = {"rag_index": C.INDEX_PATH}


def _quarantine_views(out_root: Path, root: Path) -> tuple[list[WrittenFile], list[WrittenFile]]:
    """The merged collect and score quarantines, and the part files they were built from."""
    collect_parts = [layout.evidence_quarantine(None)] + [
        layout.evidence_quarantine(day)
        for day in layout.days_on_disk(out_root, C.EVIDENCE_DIR, C.PART_QUARANTINE_FILE)
    ]
    score_parts = [
        layout.scored_quarantine(day)
        for day in layout.days_on_disk(out_root, C.SCORED_DIR, C.PART_QUARANTINE_FILE)
    ]
    views, read = [], []
    for stage, parts in ((C.STAGE_COLLECT, collect_parts), (C.STAGE_SCORE, score_parts)):
        present = [part for part in parts if (out_root / part).exists()]
        views.append(concat_files(out_root, present, C.quarantine_path(stage), target_root=root))
        read.extend(WrittenFile(part, "", 0, count_lines(out_root / part)) for part in present)
    return views, read


class _RecordCounts:
    """Row counts of the files a stage wrote, as its receipt recorded them."""

    def __init__(self, out_root: Path) -> None:
        self.out_root = out_root
        self._receipts: dict[tuple[str, str], dict[str, int]] = {}

    def of(self, run_id: str, stage: str, relpath: str) -> int | None:
        key = (run_id, stage)
        if key not in self._receipts:
            path = self.out_root / receipt_relpath(run_id, stage)
            try:
                receipt = orjson.loads(path.read_bytes())
                files = receipt["outputs"]["files"]
                self._receipts[key] = {f["path"]: int(f["record_count"]) for f in files}
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                self._receipts[key] = {}
        return self._receipts[key].get(relpath)


def _unchanged(
    path: Path, relpath: str, known: dict[str, Any] | None, counts: _RecordCounts
) -> tuple[str | None, int]:
    """The sha256 and rows its producer recorded for a file it has not touched since (same
    size and modification time, the test the receipts' chain of custody applies); (None, 0)
    for any other file, which is then read again."""
    if known is None:
        return None, 0
    stat = path.stat()
    if known.get("bytes") != stat.st_size or known.get("mtime_ns") != stat.st_mtime_ns:
        return None, 0
    rows = counts.of(known["run_id"], known["stage"], relpath)
    return (known["sha256"], rows) if rows is not None else (None, 0)


def publish(out_root: Path, run_id: str) -> StageResult:
    root = open_version(out_root, run_id)
    relroot = layout.version_relroot(run_id)
    ledger = read_ledger(out_root)
    tally = Tally()
    errors: list[str] = []
    inputs: list[WrittenFile] = []
    outputs, parts = _quarantine_views(out_root, root)
    listed = []
    dataset_files = list(DATASETS.values()) + list(HOLDOUTS.values())
    # Parquet copies are published when the run wrote them (the exports remove stale ones)
    parquet = [C.parquet_path(p) for p in dataset_files if (root / C.parquet_path(p)).exists()]
    published = dataset_files + parquet + [C.REVIEW_QUEUE_PATH] + list(INDEXES.values())
    counts = _RecordCounts(out_root)
    for relpath in published + [C.quarantine_path(s) for s in S.PUBLISHED_QUARANTINES]:
        path = root / relpath
        if not path.exists():
            errors.append(f"{relpath} is missing: its export has never run")
            continue
        known = ledger.get(relpath)
        sha, rows = _unchanged(path, relpath, known, counts)
        if sha is None:  # touched since its producer wrote it (or unknown): read it again
            sha = sha256_file(path)
            if relpath in INDEXES.values():
                rows = indexed_rows(path)
            elif relpath in parquet:
                rows = parquet_rows(path)
            else:
                rows = count_lines(path)
        if known is None or known["sha256"] != sha:
            errors.append(f"{relpath} differs from what its producer recorded")
        inputs.append(WrittenFile(relpath, sha, path.stat().st_size, rows))
        if relpath == C.INDEX_PATH and (root / C.RAG_PATH).exists():
            # a run may rebuild the playbooks without the index: never publish such a pair
            rag = _unchanged(root / C.RAG_PATH, C.RAG_PATH, ledger.get(C.RAG_PATH), counts)[0]
            if indexed_source(path) != (rag or sha256_file(root / C.RAG_PATH)):
                errors.append(
                    f"{relpath} was built from other playbooks than {C.RAG_PATH}: "
                    "materialize playbook_index"
                )
        if relpath in dataset_files:
            tally.records_in += rows
            tally.records_out += rows
            tally.accepted += rows
    for entry in sorted(inputs + outputs, key=lambda f: f.path):
        listed.append(
            {
                "path": entry.path,
                "sha256": entry.sha256,
                "bytes": entry.bytes,
                "rows": entry.record_count,
            }
        )
    manifest = {
        "schema_version": 1,
        "datasets": dict(DATASETS),
        "holdout": dict(HOLDOUTS),
        "review_queue": C.REVIEW_QUEUE_PATH,
        "indexes": dict(INDEXES),
        "cards": {kind: path for kind, path in CARDS.items() if (root / path).exists()},
        "files": listed,
    }
    sha = write_json_atomic(root / C.MANIFEST_PATH, manifest)
    outputs.append(
        WrittenFile(C.MANIFEST_PATH, sha, (root / C.MANIFEST_PATH).stat().st_size, len(listed))
    )
    result = StageResult(C.STAGE_PUBLISH, inputs + parts, outputs, tally, errors=errors)
    result.input_root = result.output_root = relroot
    result.extra["rows"] = len(listed)
    if not errors:
        built = build_lookup(out_root, root, run_id)
        result.extra["trace_lookup"] = {
            "ms": int(built.seconds * 1000),
            **built.rows,
            "phases_ms": built.phases,
        }
        swap_in(out_root, run_id)
        result.extra["published"] = True
    return result
