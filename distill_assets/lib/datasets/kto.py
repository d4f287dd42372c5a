"""Stage ``export-kto``: scored runs → unpaired preference rows for KTO-style training.

Each accepted run becomes a desirable row (``label`` true) and each rejected run an undesirable
one (``label`` false): ``prompt`` the run's instruction, ``completion`` its final answer. The
firewall is the SFT one on the desirable side (accepted only, SFT-eligible, allowed category, an
answer) and keeps unreviewed and partially accepted runs out on both sides; a rejected run whose
answer is the same text as an accepted run of its task would teach both labels for one
completion, so it is left out (``identical_text``). Rows go through the same hygiene as every
export (secrets, decontamination, near-duplicates, the holdout split), and every run left out
gets a quarantine row saying why.
"""

from __future__ import annotations

from pathlib import Path

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import (
    ExportSettings,
    TrainingExporter,
    category_denied,
    category_reason,
    stable_id,
)
from distill_assets.lib.datasets.formats import plain_text, unpaired_columns
from distill_assets.lib.datasets.runs import RunKey
from distill_assets.lib.hygiene.decontam import EvalSet
from distill_assets.lib.records.accounting import StageResult


def kto_reasons(key: RunKey, settings: ExportSettings, accepted_texts: set[str]) -> list[str]:
    """Why a scored run may not be a KTO row (empty: it may, labelled by its quality)."""
    if key.quality == C.QUALITY_REVIEW:
        return [C.R_NEEDS_HUMAN_REVIEW]
    if key.quality == C.QUALITY_PARTIAL:
        return [C.R_PARTIALLY_ACCEPTED]
    reasons: list[str] = []
    if key.response_empty:
        reasons.append(C.R_EMPTY_RESPONSE)
    if not key.sft_eligible:
        reasons.append(C.R_NOT_SFT_ELIGIBLE)
    if key.quality == C.QUALITY_ACCEPTED:
        unsafe = category_reason(key.category, settings)
        if unsafe:
            reasons.append(unsafe)
    else:
        # the deny-list keeps a run out of every published artifact, negatives included (as
        # either side of a preference pair); the allow-list only guards what is desirable
        if category_denied(key.category, settings.denied):
            reasons.append(C.R_DENIED_CATEGORY)
        if key.response_hash in accepted_texts:
            reasons.append(C.R_IDENTICAL_TEXT)
    return reasons


class KtoExporter(TrainingExporter):
    """``export-kto``: accepted runs (label true) and rejected runs (label false), unpaired."""

    stage = C.STAGE_EXPORT_KTO
    dataset_path = C.KTO_PATH

    @staticmethod
    def format_of(settings: ExportSettings) -> str:
        return settings.formats.preference_format

    def task(self, task_id: str, runs: list[RunKey], repeated: frozenset[str]) -> None:
        runs = self.admit(runs, repeated)
        tally = self.tally
        accepted_texts = {
            key.response_hash
            for key in runs
            if key.quality == C.QUALITY_ACCEPTED and not key.response_empty
        }
        for key in runs:
            tally.records_in += 1
            reasons = kto_reasons(key, self.settings, accepted_texts)
            if reasons:
                self.leave_out(key, reasons)
                continue
            found = self.fetch(key)
            if found is None:
                self.leave_out(key, [C.R_MISSING_SOURCE_RUN_ID])
                continue
            record = found.record
            label = C.KTO_DESIRABLE if key.quality == C.QUALITY_ACCEPTED else C.KTO_UNDESIRABLE
            screened = self.curation.screen(
                {
                    **unpaired_columns(record["instruction"], record["response"], label, self.fmt),
                    "id": stable_id("kto", key.run_id),
                    "source_run_id": key.run_id,
                    "task_id": key.task_id,
                    "quality": key.quality,
                    "score": key.score,
                    "category": key.category,
                },
                key.task_id,
                [record["instruction"]],
                trusted=found.clean,
            )
            if screened.reasons:
                self.leave_out(key, screened.reasons, **screened.details)
                continue
            row = screened.row
            text = f"{plain_text(row['prompt'])}\n{plain_text(row['completion'])}"
            self.curation.keep(row, (key,), text, pair=False)
            tally.records_out += 1
            if label:
                tally.accepted += 1
            else:
                tally.rejected += 1


def export_kto(
    out_root: Path,
    settings: ExportSettings,
    write_root: Path | None = None,
    eval_set: EvalSet | None = None,
) -> StageResult:
    """Write the unpaired dataset, its holdout and its quarantine under ``write_root``."""
    from distill_assets.lib.datasets.export_pass import ExportPlan, run_exports

    plan = ExportPlan(write_root=write_root or out_root, kto=(settings, eval_set))
    return run_exports(out_root, plan)[C.STAGE_EXPORT_KTO]
