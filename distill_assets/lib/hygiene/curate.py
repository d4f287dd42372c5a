"""The one object an export talks to about hygiene (docs/safety.md).

``Curation.screen`` scrubs a row the export is about to write and says whether it must be
quarantined (``secret_detected``, ``contaminated_eval``); ``Curation.keep`` spools a row that
passed, with the runs it accounts for and its MinHash band hashes; ``Curation.finish`` drops the
near-duplicates (``near_duplicate``, naming the kept row) and writes the rest to the train file or
the holdout file by task. Only band hashes and references to the export's run keys stay in
memory; the rows wait in a spool file under the run's write root.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.accounting import Tally
from distill_assets.lib.hygiene.decontam import EvalSet
from distill_assets.lib.hygiene.holdout import in_holdout
from distill_assets.lib.hygiene.neardup import BandCache, NearDupIndex
from distill_assets.lib.hygiene.prefilter import flag_objects, flag_texts
from distill_assets.lib.hygiene.secrets import Finding, scrub
from distill_assets.lib.io import AtomicJsonlWriter, WrittenFile

FINDINGS_PER_ROW = 20


def _spooled(segments: list[tuple[Path, Path]]) -> Iterator[tuple[bytes, bytes]]:
    """(row line, units line) of every spooled row, segment after segment."""
    for spool, units in segments:
        with open(spool, "rb") as rows, open(units, "rb") as kept:
            yield from zip(rows, kept, strict=True)


def _task_groups(
    lines: Iterable[tuple[bytes, bytes]],
) -> Iterator[list[tuple[bytes, list[Any]]]]:
    """Spooled (row, units) lines in runs of one task (a task's rows are spooled together)."""
    group: list[tuple[bytes, list[Any]]] = []
    task = None
    for raw, spooled in lines:
        units = orjson.loads(spooled)
        unit_task = units[1][1]
        if group and unit_task != task:
            yield group
            group = []
        task = unit_task
        group.append((raw, units))
    if group:
        yield group


@dataclass(frozen=True)
class HygieneSettings:
    """The configurable parts of the hygiene rules (defaults in docs/safety.md)."""

    secret_action: str = C.SECRET_ACTION_QUARANTINE
    holdout_fraction: float = 0.1
    near_dup_threshold: float | None = 0.8
    eval_set_path: str | None = None
    decontam_ngram: int = 13
    decontam_min_overlap: float = 0.0

    def errors(self) -> list[str]:
        problems = []
        if self.secret_action not in C.SECRET_ACTIONS:
            problems.append(
                f"secret_action={self.secret_action!r} is not one of {', '.join(C.SECRET_ACTIONS)}"
            )
        if not 0.0 <= self.holdout_fraction < 1.0:
            problems.append(f"holdout_fraction={self.holdout_fraction!r} must be in [0, 1)")
        if self.near_dup_threshold is not None and not 0.0 < self.near_dup_threshold <= 1.0:
            problems.append(f"near_dup_threshold={self.near_dup_threshold!r} must be in (0, 1]")
        if self.decontam_ngram < 1:
            problems.append(f"decontam_ngram={self.decontam_ngram!r} must be at least 1")
        if not 0.0 <= self.decontam_min_overlap < 1.0:
            problems.append(f"decontam_min_overlap={self.decontam_min_overlap!r} must be in [0, 1)")
        return problems


@dataclass
class Screened:
    """A row after screening: the row to write (scrubbed when secrets are redacted), the reasons
    it must be quarantined instead (none: write it) and what the quarantine row should say."""

    row: dict[str, Any]
    reasons: list[str]
    details: dict[str, Any] = field(default_factory=dict)


def finding_rows(findings: list[Finding]) -> list[dict[str, str]]:
    return [f.as_dict() for f in findings[:FINDINGS_PER_ROW]]


def _flagged(texts: Sequence[str]) -> bool:
    """Whether the native prefilter says any of ``texts`` may hold a secret."""
    if not texts:
        return False
    return bool(flag_texts(list(texts)).any())


def _row_flagged(row: dict[str, Any]) -> bool:
    """Whether the native prefilter says the row (keys included) may hold a secret."""
    return bool(flag_objects([row])[0])


class Curation:
    """Hygiene for one export: screening, spooling, near-duplicates and the holdout split."""

    def __init__(
        self,
        stage: str,
        settings: HygieneSettings,
        eval_set: EvalSet | None,
        write_root: Path,
        train_path: str,
        holdout_path: str,
        band_cache: BandCache | None = None,
    ) -> None:
        self.stage = stage
        self.settings = settings
        self.eval_set = eval_set
        self.write_root = write_root
        self.train_path = train_path
        self.holdout_path = holdout_path
        self.secrets: Counter[str] = Counter()
        self.contamination: Counter[str] = Counter()
        target = write_root / train_path
        target.parent.mkdir(parents=True, exist_ok=True)
        # band hashes of full blocks wait in a scratch file beside the spool (memory stays flat)
        self.index = (
            NearDupIndex(settings.near_dup_threshold, scratch_dir=target.parent, cache=band_cache)
            if settings.near_dup_threshold
            else None
        )
        # a dot-name ending in .tmp: a killed run's spool is swept like any temporary file
        fd, spool = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".spool.tmp", dir=target.parent
        )
        self._spool_path = Path(spool)
        self._spool = os.fdopen(fd, "wb")
        # one line per spooled row: [pair?, unit, unit, ...], the runs (or playbooks) it accounts
        # for; read back at the end, so memory holds no key of a kept row
        fd, units = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".units.tmp", dir=target.parent
        )
        self._units_path = Path(units)
        self._units = os.fdopen(fd, "wb")
        # spools of the same export made by worker processes over earlier tasks (``absorb``),
        # read before this one's own
        self._absorbed: list[tuple[Path, Path]] = []
        self.dropped = 0
        self.pairs_dropped = 0
        self.train_rows = 0
        self.holdout_rows = 0

    # --- per row ---------------------------------------------------------------------------

    def screen(
        self,
        row: dict[str, Any],
        task_id: str,
        prompts: list[str],
        trusted: bool = False,
        composed: Sequence[str] = (),
    ) -> Screened:
        """Scrub ``row`` and test its prompts against the evaluation set.

        ``trusted``: every string of the row is a string of evidence records that collect
        scanned clean under the same rules (lib/exports.TextStore), or made here from fixed words
        and ids, except the ``composed`` ones (joined or encoded from such strings), which the
        native prefilter reads. An untrusted row is read whole by the prefilter. Only what the
        prefilter flags is scanned by the exact rules."""
        if (trusted and not _flagged(composed)) or not _row_flagged(row):
            scrubbed, findings = row, []
        else:
            scrubbed, findings = scrub(row)
        reasons: list[str] = []
        details: dict[str, Any] = {}
        if findings:
            self.secrets.update(f.type for f in findings)
            details["findings"] = finding_rows(findings)
            if self.settings.secret_action == C.SECRET_ACTION_QUARANTINE:
                reasons.append(C.R_SECRET_DETECTED)
        if self.eval_set is not None:
            why = self.eval_set.reason(task_id, prompts)
            if why is not None:
                self.contamination[why] += 1
                reasons.append(C.R_CONTAMINATED_EVAL)
                details["contamination"] = why
        return Screened(scrubbed, reasons, details)

    def keep(self, row: dict[str, Any], units: tuple[Any, ...], text: str, pair: bool) -> None:
        """Spool a row that passed screening. ``units`` are the run keys it accounts for (the
        export has counted them as out); ``text`` is what near-duplicates are judged on."""
        self._spool.write(orjson.dumps(row) + b"\n")
        self._units.write(orjson.dumps([pair, *map(list, units)]) + b"\n")
        if self.index is not None:
            self.index.add(text)

    # --- at the end -----------------------------------------------------------------------

    def finish(
        self,
        tally: Tally,
        quarantine: AtomicJsonlWriter,
        quarantine_row: Callable[..., dict[str, Any]],
        unit_type: Callable[..., Any] | None = None,
    ) -> list[WrittenFile]:
        """Write the train and holdout files; quarantine near-duplicates, adjusting ``tally``.
        ``unit_type`` rebuilds a unit from its spooled fields (a NamedTuple's ``_make``)."""
        self._spool.close()
        self._units.close()
        make = unit_type or tuple
        reps = self.index.representatives() if self.index is not None else None
        kept_ids: dict[int, str] = {}
        if reps is not None:
            kept_ids = {int(r): "" for r in np.unique(reps[reps != np.arange(len(reps))])}
        train = AtomicJsonlWriter(self.write_root, self.train_path)
        holdout = AtomicJsonlWriter(self.write_root, self.holdout_path)
        fraction = self.settings.holdout_fraction
        try:
            number = 0
            for group in _task_groups(_spooled([*self._absorbed, self._own()])):
                # a run counts as out while any written row of its task still holds it
                uses: Counter[str] = Counter(
                    unit[0] for _, spooled in group for unit in spooled[1:]
                )
                for raw, spooled in group:
                    pair, parts = spooled[0], [make(unit) for unit in spooled[1:]]
                    rep = number if reps is None else int(reps[number])
                    if rep != number:
                        self._drop(
                            pair, parts, uses, kept_ids[rep], tally, quarantine, quarantine_row
                        )
                    else:
                        if number in kept_ids:
                            kept_ids[number] = orjson.loads(raw)["id"]
                        if in_holdout(parts[0].task_id, fraction):
                            holdout.write_raw(raw)
                        else:
                            train.write_raw(raw)
                    number += 1
            outputs = [train.commit(), holdout.commit()]
        except BaseException:
            train.abort()
            holdout.abort()
            raise
        finally:
            self._remove_spools()
        self.train_rows, self.holdout_rows = train.lines, holdout.lines
        return outputs

    def _drop(
        self,
        pair: bool,
        units: list[Any],
        uses: Counter[str],
        kept_id: str,
        tally: Tally,
        quarantine: AtomicJsonlWriter,
        quarantine_row: Callable[..., dict[str, Any]],
    ) -> None:
        self.dropped += 1
        reasons = [C.R_NEAR_DUPLICATE]
        if pair:
            self.pairs_dropped += 1
            tally.reasons[C.R_NEAR_DUPLICATE] += 1
            row = quarantine_row(self.stage, reasons, pair=(units[0], units[1]))
            quarantine.write_row({**row, "kept_id": kept_id})
        for unit in units:
            uses[unit.run_id] -= 1
            if uses[unit.run_id]:
                continue  # still in another written row
            tally.records_out -= 1
            if unit.quality == C.QUALITY_REJECTED:
                tally.rejected -= 1
            else:
                tally.accepted -= 1
            tally.leave_out(C.DISPOSITION_QUARANTINED, reasons)
            row = quarantine_row(self.stage, reasons, key=unit)
            quarantine.write_row({**row, "kept_id": kept_id})

    def _own(self) -> tuple[Path, Path]:
        return self._spool_path, self._units_path

    def _remove_spools(self) -> None:
        for spool, units in [*self._absorbed, self._own()]:
            spool.unlink(missing_ok=True)
            units.unlink(missing_ok=True)
        if self.index is not None:
            self.index.close()

    # --- worker processes ------------------------------------------------------------------

    def part(self) -> dict[str, Any]:
        """What this curation did in a worker process, for the step's process to ``absorb``:
        its spools (left on disk), its near-duplicate signatures and its counts."""
        self._spool.close()
        self._units.close()
        index = None
        if self.index is not None:
            index = self.index.part()
            self.index.close()
        return {
            "spools": [*self._absorbed, self._own()],
            "index": index,
            "secrets": self.secrets,
            "contamination": self.contamination,
        }

    def absorb(self, part: dict[str, Any]) -> None:
        """Take over a worker's curation of earlier tasks (before any row of this one)."""
        self._absorbed.extend(part["spools"])
        if self.index is not None and part["index"] is not None:
            self.index.absorb(part["index"])
        self.secrets.update(part["secrets"])
        self.contamination.update(part["contamination"])

    def abort(self) -> None:
        for handle in (self._spool, self._units):
            if not handle.closed:
                handle.close()
        self._remove_spools()

    def extra(self) -> dict[str, Any]:
        """What the receipt records of this export's hygiene."""
        extra: dict[str, Any] = {
            "holdout_rows": self.holdout_rows,
            "near_duplicates": self.dropped,
            "secrets": dict(sorted(self.secrets.items())),
        }
        if self.index is not None:
            extra["near_dup_lsh"] = {"bands": self.index.bands, "rows": self.index.rows}
        if self.eval_set is not None:
            extra["contamination"] = dict(sorted(self.contamination.items()))
            extra["eval_set"] = {
                "sha256": self.eval_set.source_sha256,
                "prompts": self.eval_set.prompts,
                "task_ids": len(self.eval_set.task_ids),
            }
        return extra
