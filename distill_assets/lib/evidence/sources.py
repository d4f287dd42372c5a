"""Which sources an output directory was built from (``sources.json``), so they never mix.

The exports read every scored day in the output directory, so a run with other sources into an
output built from a first set would publish datasets of both. The output records the sources it
was built from; a run whose sources do not include all of them is refused with one line naming
both and the ways out (``--output NEW``, or ``--replace`` to rebuild it from the new sources
only). Sources that extend the recorded ones (the same plus more) are accepted and recorded.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.infra.io import write_json_atomic


def source_names(source_dir: Path | None, imports: Sequence[object] = ()) -> list[str]:
    """The sources of a run as the output records them: ``dir:<absolute path>`` for the evidence
    directory, ``<kind>:<absolute path>`` for each import source; sorted."""
    names = [] if source_dir is None else [f"dir:{Path(source_dir).resolve()}"]
    for spec in imports:
        names.append(f"{spec.kind}:{Path(spec.path).resolve()}")  # type: ignore[attr-defined]
    return sorted(set(names))


def recorded_sources(out_root: Path) -> list[str] | None:
    """The sources the output was built from (None: not recorded, a new or older output)."""
    path = out_root / C.SOURCES_PATH
    if not path.exists():
        return None
    return list(orjson.loads(path.read_bytes())["sources"])


def sources_conflict(out_root: Path, names: Sequence[str]) -> str | None:
    """One line refusing ``names`` as the sources of a run into ``out_root``, or None when they
    are the recorded ones, extend them, or nothing is recorded."""
    old = recorded_sources(out_root)
    if old is None or set(names) >= set(old):
        return None
    return (
        f"output {out_root} was built from {', '.join(old) or 'no source'}; this run reads "
        f"{', '.join(names) or 'no source'}: its datasets would mix both. Give a new output "
        "(--output NEW) or rebuild this one from the new sources only (--replace)"
    )


def record_sources(out_root: Path, names: Sequence[str]) -> None:
    """Note ``names`` as the output's sources (they passed ``sources_conflict``)."""
    if recorded_sources(out_root) != sorted(names):
        write_json_atomic(out_root / C.SOURCES_PATH, {"sources": sorted(names)})


def replace_sources(out_root: Path) -> list[str]:
    """Forget what the output was built from: remove its evidence, scored runs and the record
    of its sources (reports, receipts and published versions stay); the relative paths
    removed."""
    removed = []
    for relpath in (C.EVIDENCE_DIR, C.SCORED_DIR):
        if (out_root / relpath).is_dir():
            shutil.rmtree(out_root / relpath)
            removed.append(relpath)
    if (out_root / C.SOURCES_PATH).exists():
        (out_root / C.SOURCES_PATH).unlink()
        removed.append(C.SOURCES_PATH)
    return removed
