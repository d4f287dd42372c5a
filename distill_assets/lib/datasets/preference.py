"""Stage ``export-preference``: chosen/rejected pairs within a task, chosen strictly better.

``candidate_pairs`` gives every ordered pair of a task's runs with the rules it breaks (a margin
below the minimum, identical texts, no instruction on either side...); a pair that breaks one
gets a quarantine row saying why. The valid pairs (the widest margins first when capped) are
fetched, screened by the hygiene and written; a run in no written pair is left out with the
reason its own text gave (a secret, an evaluation prompt) or ``no_valid_pair``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import (
    ExportSettings,
    TrainingExporter,
    quarantine_row,
    stable_id,
)
from distill_assets.lib.datasets.formats import pair_columns, plain_text
from distill_assets.lib.datasets.runs import RunKey
from distill_assets.lib.datasets.texts import TextStore
from distill_assets.lib.hygiene.curate import Screened
from distill_assets.lib.hygiene.decontam import EvalSet
from distill_assets.lib.records.accounting import StageResult


def candidate_pairs(
    runs: list[RunKey], settings: ExportSettings
) -> Iterator[tuple[RunKey, RunKey, list[str]]]:
    """Every ordered (chosen, rejected) pair in one task where chosen is strictly better.

    ``runs`` are sorted best first and exclude needs_human_review. Yields the reasons a pair
    breaks a rule (empty when it is valid). A rejected run is never on the chosen side.
    """
    for i, chosen in enumerate(runs):
        if chosen.quality not in (C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL):
            continue
        for rejected in runs[i + 1 :]:
            if (chosen.rank, chosen.score) <= (rejected.rank, rejected.score):
                continue
            reasons = []
            if chosen.run_id == rejected.run_id:
                reasons.append(C.R_SELF_PAIR)
            if chosen.response_hash == rejected.response_hash:
                reasons.append(C.R_IDENTICAL_TEXT)
            if round(chosen.score - rejected.score, 6) < settings.min_margin:
                reasons.append(C.R_BELOW_MARGIN)
            if chosen.response_empty:
                reasons.append(C.R_EMPTY_RESPONSE)
            if not (chosen.sft_eligible or rejected.sft_eligible):
                reasons.append(C.R_INSTRUCTION_UNAVAILABLE)
            yield chosen, rejected, reasons


def _taint(screened: Screened, owners: dict[str, RunKey], tainted: dict[str, list[str]]) -> None:
    """Note the runs whose own text kept a pair out: a secret in the field that is theirs
    (``owners``: prompt, chosen, rejected), or an evaluation prompt (both runs)."""
    for finding in screened.details.get("findings", []):
        owner = owners.get(finding["field"].split(".")[0].split("[")[0])
        if owner is not None:
            tainted[owner.run_id] = [C.R_SECRET_DETECTED]
    if C.R_CONTAMINATED_EVAL in screened.reasons:
        for run in (owners["chosen"], owners["rejected"]):
            tainted.setdefault(run.run_id, [C.R_CONTAMINATED_EVAL])


class PreferenceExporter(TrainingExporter):
    """``export-preference``: chosen/rejected pairs within a task, chosen strictly better."""

    stage = C.STAGE_EXPORT_PREFERENCE
    dataset_path = C.PREFERENCE_PATH

    def __init__(
        self,
        out_root: Path,
        write_root: Path,
        settings: ExportSettings,
        eval_set: EvalSet | None,
        texts: TextStore,
    ) -> None:
        super().__init__(out_root, write_root, settings, eval_set, texts)
        self.tasks_without_pair = 0
        self.pairs_quarantined = 0

    @staticmethod
    def format_of(settings: ExportSettings) -> str:
        return settings.formats.preference_format

    def _quarantine_pair(
        self, chosen: RunKey, rejected: RunKey, reasons: list[str], **details: Any
    ) -> None:
        self.pairs_quarantined += 1
        for reason in reasons:
            self.tally.reasons[reason] += 1
        self.quarantine.write_row(
            {**quarantine_row(self.stage, reasons, pair=(chosen, rejected)), **details}
        )

    def task(self, task_id: str, runs: list[RunKey], repeated: frozenset[str]) -> None:
        ranked = self._ranked(runs, repeated)
        # runs whose own text kept their pairs out (a secret, an evaluation prompt): that is
        # their reason when they end in no pair, rather than no_valid_pair
        tainted: dict[str, list[str]] = {}
        written = self._write_pairs(self._valid_pairs(ranked), tainted)
        self._account(ranked, written, tainted)

    def _ranked(self, runs: list[RunKey], repeated: frozenset[str]) -> list[RunKey]:
        """The task's runs that may be paired (best first); the others left out."""
        tally = self.tally
        settings = self.settings
        ranked: list[RunKey] = []
        for key in self.admit(runs, repeated):
            tally.records_in += 1
            if key.quality == C.QUALITY_REVIEW:
                self.leave_out(key, [C.R_NEEDS_HUMAN_REVIEW])
            elif settings.denies(key.category):
                self.leave_out(key, [C.R_DENIED_CATEGORY])
            else:
                ranked.append(key)
        return ranked

    def _valid_pairs(self, ranked: list[RunKey]) -> list[tuple[RunKey, RunKey]]:
        """The task's pairs that keep every rule (the widest margins first when capped); the
        others quarantined."""
        settings = self.settings
        valid: list[tuple[RunKey, RunKey]] = []
        for chosen, rejected, reasons in candidate_pairs(ranked, settings):
            if reasons:
                self._quarantine_pair(chosen, rejected, reasons)
            else:
                valid.append((chosen, rejected))
        if settings.max_pairs_per_task is not None:
            valid.sort(key=lambda p: (-(p[0].score - p[1].score), p[0].order(), p[1].order()))
            valid = valid[: settings.max_pairs_per_task]
        return valid

    def _write_pairs(
        self, valid: list[tuple[RunKey, RunKey]], tainted: dict[str, list[str]]
    ) -> list[tuple[RunKey, RunKey]]:
        """Fetch, screen and keep each valid pair; those written. A pair the hygiene kept out
        is quarantined, and the runs whose text did it are ``tainted``."""
        written: list[tuple[RunKey, RunKey]] = []
        for chosen, rejected in valid:
            chosen_found, rejected_found = self.fetch(chosen), self.fetch(rejected)
            if chosen_found is None or rejected_found is None:
                self._quarantine_pair(chosen, rejected, [C.R_MISSING_SOURCE_RUN_ID])
                continue
            prompt_run = chosen if chosen.sft_eligible else rejected
            prompt_found = chosen_found if chosen.sft_eligible else rejected_found
            instruction = prompt_found.record["instruction"]
            screened = self.curation.screen(
                {
                    "id": stable_id("pair", chosen.run_id, rejected.run_id),
                    **pair_columns(
                        instruction,
                        chosen_found.record["response"],
                        rejected_found.record["response"],
                        self.fmt,
                    ),
                    "chosen_run_id": chosen.run_id,
                    "rejected_run_id": rejected.run_id,
                    "task_id": chosen.task_id,
                    "margin": round(chosen.score - rejected.score, 6),
                    "chosen_quality": chosen.quality,
                    "rejected_quality": rejected.quality,
                },
                chosen.task_id,
                [instruction],
                trusted=chosen_found.clean and rejected_found.clean,
            )
            if screened.reasons:
                self._quarantine_pair(chosen, rejected, screened.reasons, **screened.details)
                _taint(
                    screened,
                    {"prompt": prompt_run, "chosen": chosen, "rejected": rejected},
                    tainted,
                )
                continue
            row = screened.row
            text = f"{plain_text(row['prompt'])}\n{plain_text(row['chosen'])}"
            self.curation.keep(row, (chosen, rejected), text, pair=True)
            written.append((chosen, rejected))
        return written

    def _account(
        self,
        ranked: list[RunKey],
        written: list[tuple[RunKey, RunKey]],
        tainted: dict[str, list[str]],
    ) -> None:
        """Count out the runs of a written pair; leave out the others, with their taint or
        no_valid_pair."""
        tally = self.tally
        used = {key.run_id for pair in written for key in pair}
        if ranked and not written:
            self.tasks_without_pair += 1
        for key in ranked:
            if key.run_id in used:
                tally.records_out += 1
                if key.quality == C.QUALITY_REJECTED:
                    tally.rejected += 1
                else:
                    tally.accepted += 1
            else:
                self.leave_out(key, tainted.get(key.run_id, [C.R_NO_PAIR]))

    def part_extra(self) -> dict[str, Any]:
        return {
            "tasks_without_pair": self.tasks_without_pair,
            "pairs_quarantined": self.pairs_quarantined,
        }

    def figures(self) -> dict[str, Any]:
        return {
            "pairs": self.curation.train_rows,
            "pairs_quarantined": self.pairs_quarantined + self.curation.pairs_dropped,
            "tasks_without_pair": self.tasks_without_pair,
        }


# --- the export alone (the library API the tests and the benchmark call) --------------------------


def export_preference(
    out_root: Path,
    settings: ExportSettings,
    write_root: Path | None = None,
    eval_set: EvalSet | None = None,
) -> StageResult:
    """Write the dataset and its quarantine under ``write_root`` (default: ``out_root``)."""
    from distill_assets.lib.datasets.export_pass import ExportPlan, run_exports

    plan = ExportPlan(write_root=write_root or out_root, preference=(settings, eval_set))
    return run_exports(out_root, plan)[C.STAGE_EXPORT_PREFERENCE]
