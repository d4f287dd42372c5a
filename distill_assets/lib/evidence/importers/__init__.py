"""Importers for foreign layouts of agent runs, keyed by kind (docs/importers.md).

``run_import(spec)`` returns an ``ImportBatch`` of evidence-format v1 objects with provenance;
the collect stage validates and writes them like source lines (``Collector.read_imported``),
and ``distill import`` writes them as evidence JSONL.
"""

from __future__ import annotations

from collections.abc import Callable

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.importers.base import (
    ImportBatch,
    ImportedObject,
    ImportFailure,
    ImportSpec,
    Provenance,
    check_distinct,
    left_out_summary,
    make_spec,
    parse_specs,
)
from distill_assets.lib.evidence.importers.swe_bench import import_swe_bench
from distill_assets.lib.evidence.importers.tau_bench import import_tau_bench

IMPORTERS: dict[str, Callable[[ImportSpec], ImportBatch]] = {
    C.IMPORT_TAU_BENCH: import_tau_bench,
    C.IMPORT_SWE_BENCH: import_swe_bench,
}


def run_import(spec: ImportSpec) -> ImportBatch:
    """Read one import source with the importer of its kind."""
    return IMPORTERS[spec.kind](spec)


__all__ = [
    "IMPORTERS",
    "ImportBatch",
    "ImportFailure",
    "ImportSpec",
    "ImportedObject",
    "Provenance",
    "check_distinct",
    "left_out_summary",
    "make_spec",
    "parse_specs",
    "run_import",
]
