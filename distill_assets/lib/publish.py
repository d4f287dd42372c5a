"""Stage ``publish``: the manifest of the datasets that passed their checks, written last.

The three exports and every stage's quarantine are listed with the sha256 their producers'
receipts recorded, re-verified on disk. It is the asset downstream of the exports, so it runs
only when their blocking checks passed: a reader that follows ``exports/MANIFEST.json`` sees a
set of datasets that were checked together. Its bytes hold no run ids or times.
"""

from __future__ import annotations

from pathlib import Path

from distill_assets.lib import constants as C
from distill_assets.lib.accounting import StageResult, Tally
from distill_assets.lib.io import WrittenFile, count_lines, sha256_file, write_json_atomic
from distill_assets.lib.receipts import read_ledger

DATASETS = {"rag": C.RAG_PATH, "sft": C.SFT_PATH, "preference": C.PREFERENCE_PATH}


def manifest_files() -> list[str]:
    return list(DATASETS.values()) + [C.quarantine_path(stage) for stage in C.STAGES[:-1]]


def publish(out_root: Path) -> StageResult:
    ledger = read_ledger(out_root)
    tally = Tally()
    errors: list[str] = []
    inputs: list[WrittenFile] = []
    listed = []
    for relpath in manifest_files():
        path = out_root / relpath
        if not path.exists():
            errors.append(f"{relpath} is missing")
            continue
        sha = sha256_file(path)
        known = ledger.get(relpath)
        if known is None or known["sha256"] != sha:
            errors.append(f"{relpath} differs from what its producer recorded")
        rows = count_lines(path)
        inputs.append(WrittenFile(relpath, sha, path.stat().st_size, rows))
        listed.append({"path": relpath, "sha256": sha, "bytes": path.stat().st_size, "rows": rows})
        if relpath in DATASETS.values():
            tally.records_in += rows
            tally.records_out += rows
            tally.accepted += rows
    manifest = {
        "schema_version": 1,
        "datasets": {name: rel for name, rel in DATASETS.items()},
        "files": listed,
    }
    sha = write_json_atomic(out_root / C.MANIFEST_PATH, manifest)
    written = WrittenFile(
        C.MANIFEST_PATH, sha, (out_root / C.MANIFEST_PATH).stat().st_size, len(listed)
    )
    result = StageResult(C.STAGE_PUBLISH, inputs, [written], tally, errors=errors)
    result.extra["rows"] = len(listed)
    return result
