"""SWE-bench-style experiment folders → evidence: a run per prediction, an outcome per verdict.

Layout (docs/importers.md): ``ROOT/<system>/all_preds.jsonl`` (one prediction per line),
``ROOT/<system>/results/results.json`` (which instances were resolved, in the newer
``*_ids`` layout or the older ``no_generation``/``generated``/``applied``/... layout), optional
``trajs/<instance_id>.traj`` (a SWE-agent trajectory holding the issue text) and
``logs/<instance_id>/run_instance.log`` (whose first line starts with a timestamp). ``ROOT`` may
also be a single system folder. Each system folder is imported all or nothing: a missing or
malformed predictions or results file skips the whole folder with a message saying why.

Length: the harness's two report layouts and their prediction files, each with the reason codes
of what an import leaves out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.format import format_timestamp, parse_timestamp, strip_line
from distill_assets.lib.evidence.importers.base import (
    CREATED_AT_MTIME,
    CREATED_AT_OPTION,
    ImportBatch,
    ImportFailure,
    ImportSpec,
    Provenance,
    SourceProblem,
    Unit,
    json_type,
    mtime_timestamp,
    parse_json,
    safe_name,
    text_of,
)
from distill_assets.lib.infra.layout import inside

PREDS_FILE = "all_preds.jsonl"
RESULTS_FILE = "results/results.json"
CREATED_AT_LOG = "log"

# what the results say about an instance (meta.status of its outcome, meta.results_status of
# its run), and the evidence each status becomes: (outcome, reward, flagged incomplete)
RESOLVED = "resolved"
UNRESOLVED = "unresolved"
NOT_APPLIED = "patch_not_applied"
EMPTY_PATCH = "empty_patch"
NULL_PATCH = "null_patch"
ERROR = "error"
INCOMPLETE = "incomplete"
CONFLICTING = "conflicting_results"
NO_VERDICT = "no_verdict"
ABSENT = "absent_from_results"
VERDICTS: dict[str, tuple[str, float | None, bool] | None] = {
    RESOLVED: ("success", 1.0, False),
    UNRESOLVED: ("failure", 0.0, False),
    NOT_APPLIED: ("failure", 0.0, False),
    EMPTY_PATCH: ("failure", 0.0, False),
    NULL_PATCH: ("failure", 0.0, False),
    ERROR: ("error", None, False),
    INCOMPLETE: ("error", None, True),
    CONFLICTING: ("error", None, False),
    NO_VERDICT: None,  # no outcome: the run needs human review (no evidence)
    ABSENT: None,
}

# each layout's id lists in order of precedence; the first list holding an id decides its
# status. Lists marked exclusive are verdicts: an id in two of them with different statuses
# is conflicting. Other lists only record progress.
# a layout: its id lists, each as (key, status, whether a listed id may be in no other)
Layout = tuple[tuple[str, str, bool], ...]
NEW_LAYOUT: Layout = (
    ("error_ids", ERROR, True),
    ("resolved", RESOLVED, True),
    ("resolved_ids", RESOLVED, True),
    ("unresolved_ids", UNRESOLVED, True),
    ("empty_patch_ids", EMPTY_PATCH, True),
    ("incomplete_ids", INCOMPLETE, True),
    ("completed_ids", NO_VERDICT, False),
    ("submitted_ids", NO_VERDICT, False),
)
OLD_LAYOUT: Layout = (
    ("resolved", RESOLVED, True),
    ("no_generation", EMPTY_PATCH, True),
    ("no_apply", NOT_APPLIED, True),
    ("install_fail", ERROR, True),
    ("reset_failed", ERROR, True),
    ("test_errored", ERROR, True),
    ("test_timeout", INCOMPLETE, True),
    ("no_logs", INCOMPLETE, True),
    ("applied", UNRESOLVED, False),
    ("with_logs", UNRESOLVED, False),
    ("generated", INCOMPLETE, False),
)
# counts the newer layout carries beside its lists, checked against them
NEW_COUNTS = {
    "submitted_instances": "submitted_ids",
    "completed_instances": "completed_ids",
    "resolved_instances": "resolved_ids",
    "unresolved_instances": "unresolved_ids",
    "empty_patch_instances": "empty_patch_ids",
    "error_instances": "error_ids",
    "incomplete_instances": "incomplete_ids",
}
# other keys the harness report carries (read as counts or housekeeping, never as verdicts):
# the harness adds the docker clean-up lists (``unstopped_containers``, ``unremoved_images``)
# and their counts; any ``*_instances`` count and any ``unremoved_*``/``unstopped_*`` list is
# known too, so a report from a newer harness does not warn for its bookkeeping
NEW_OTHER = {
    "total_instances",
    "schema_version",
    "unstopped_instances",
    "unstopped_containers",
    "unremoved_images",
}
_HOUSEKEEPING = re.compile(r"^(?:unremoved_|unstopped_)\w+$|^\w+_instances$")
_NEW_ONLY = {key for key, _, _ in NEW_LAYOUT} - {"resolved"}
_OLD_ONLY = {key for key, _, _ in OLD_LAYOUT} - {"resolved"}

DEMO_MARKERS = ("--- DEMONSTRATION ---", "Here is a demonstration of how to")
_ISSUE_TAGS = re.compile(r"<pr_description>\s*(.*?)\s*</pr_description>", re.S)
_ISSUE_MARKER = re.compile(r"ISSUE:\s*\n(.*?)(?:\n\s*INSTRUCTIONS:|\Z)", re.S)
_LOG_TIME = re.compile(rb"^\s*\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,6}))?")


def placeholder_instruction(instance_id: str) -> str:
    return (
        f"[placeholder] SWE-bench instance {instance_id}: the issue text is not available "
        "(no trajectory holds it)."
    )


def import_swe_bench(spec: ImportSpec) -> ImportBatch:
    """Import every system folder under ``spec.path`` (or ``spec.path`` itself as one)."""
    batch = ImportBatch(spec)
    root = spec.path
    if not root.is_dir():
        batch.fail(
            spec.label(root.name),
            C.R_IMPORT_MISSING_FILE,
            f"is not a directory (expected ROOT/<system>/{PREDS_FILE})",
        )
        return batch
    real_root = root.resolve()
    systems: list[tuple[str, str]] = []  # (system, folder path relative to root: "" or "x/")
    if (root / PREDS_FILE).exists() or (root / "results").exists():
        systems.append((spec.system or real_root.name, ""))
    else:
        if spec.system is not None:
            batch.warnings.append(
                f"{spec.label('.')}: the system option names a single system folder; "
                "ignored for a folder of systems"
            )
        for child in sorted(root.iterdir(), key=lambda p: p.name):
            if child.name.startswith(".") or not child.is_dir():
                continue
            if not child.resolve().is_relative_to(real_root):
                batch.fail(spec.label(child.name), C.R_OUTSIDE_SOURCE_DIR, f"leads outside {root}")
                continue
            systems.append((child.name, f"{child.name}/"))
        if not systems:
            batch.fail(
                spec.label("."),
                C.R_IMPORT_MISSING_FILE,
                f"holds no system folder (expected ROOT/<system>/{PREDS_FILE})",
            )
    unknown_keys: dict[str, list[str]] = {}  # results key -> the results files holding it
    for system, prefix in systems:
        batch.run_unit(
            lambda unit, system=system, prefix=prefix: _import_system(
                unit, spec, system, prefix, unknown_keys
            )
        )
    for key in sorted(unknown_keys):
        # once per key per import, however many systems' results carry it
        first, *others = unknown_keys[key]
        also = f" (also in {len(others)} other results file(s))" if others else ""
        batch.warnings.append(f"{first}: unknown key {key!r} ignored{also}")
    return batch


@dataclass(frozen=True)
class Prediction:
    instance_id: str
    patch: str | None
    model: str | None
    line: int


@dataclass(frozen=True)
class Verdict:
    status: str
    key: str | None  # the results list that decided it
    position: int  # 1-based position of the id in that list


def _file(spec: ImportSpec, prefix: str, relpath: str) -> tuple[Path, str]:
    """A file of the system folder, refusing one that leads outside the configured path."""
    label = spec.label(prefix + relpath)
    try:
        return inside(spec.path, prefix + relpath), label
    except ValueError:
        raise SourceProblem(
            label, C.R_OUTSIDE_SOURCE_DIR, f"leads outside {spec.path}; not read"
        ) from None


def _import_system(
    unit: Unit, spec: ImportSpec, system: str, prefix: str, unknown_keys: dict[str, list[str]]
) -> None:
    label = spec.label(prefix or ".")
    if not safe_name(system):
        raise SourceProblem(label, C.R_IMPORT_MALFORMED, f"system name {system!r} is not usable")
    preds_path, preds_label = _file(spec, prefix, PREDS_FILE)
    results_path, results_label = _file(spec, prefix, RESULTS_FILE)
    if not preds_path.is_file():
        raise SourceProblem(
            preds_label, C.R_IMPORT_MISSING_FILE, "not found: a system folder needs its predictions"
        )
    if not results_path.is_file():
        raise SourceProblem(
            results_label,
            C.R_IMPORT_MISSING_FILE,
            "not found: a system folder needs its results file",
        )
    preds_data, preds_sha = unit.read(preds_path, preds_label)
    predictions = read_predictions(preds_data, preds_label)
    unit.count(preds_label, len(predictions))
    results_data, results_sha = unit.read(results_path, results_label)
    read = read_results(
        parse_json(results_data, results_label),
        results_label,
        {p.instance_id for p in predictions},
        preds_label,
    )
    verdicts, layout_name = read.verdicts, read.layout
    unit.count(results_label, len(verdicts) + len(read.orphans))
    for key in read.unknown_keys:
        unknown_keys.setdefault(key, []).append(results_label)
    for orphan in read.orphans:
        unit.failures.append(
            ImportFailure(
                results_label,
                C.R_IMPORT_ORPHAN_RESULT,
                f"{results_label}: instance {orphan.instance_id} is listed under {orphan.key} "
                f"but has no prediction in {preds_label}",
                C.DISPOSITION_QUARANTINED,
                orphan.position,
            )
        )
    folder = _SystemFolder(
        spec,
        system,
        prefix,
        (preds_label, preds_sha, preds_path),
        (results_label, results_sha, layout_name),
    )
    for prediction in predictions:
        _import_instance(
            unit,
            folder,
            prediction,
            verdicts.get(prediction.instance_id, Verdict(ABSENT, None, 0)),
        )


def read_predictions(data: bytes, label: str) -> list[Prediction]:
    """Every prediction of all_preds.jsonl, or a SourceProblem naming the first bad line."""
    predictions: list[Prediction] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        line = strip_line(raw, number == 1)
        if not line.strip():
            continue
        obj = parse_json(line, label, number)
        if not isinstance(obj, dict):
            raise SourceProblem(
                label,
                C.R_IMPORT_MALFORMED,
                f"line {number}: expected a JSON object, found a JSON {json_type(obj)}",
            )
        missing = [key for key in ("instance_id", "model_patch") if key not in obj]
        if missing:
            raise SourceProblem(
                label, C.R_IMPORT_MALFORMED, f"line {number}: missing key(s) {', '.join(missing)}"
            )
        instance_id, patch = obj["instance_id"], obj["model_patch"]
        if not safe_name(instance_id):
            raise SourceProblem(
                label,
                C.R_IMPORT_MALFORMED,
                f"line {number}: instance_id must be a name of letters, digits, '.', '_', '-'",
            )
        if patch is not None and not isinstance(patch, str):
            raise SourceProblem(
                label,
                C.R_IMPORT_MALFORMED,
                f"line {number}: model_patch must be text or null, found {json_type(patch)}",
            )
        model = obj.get("model_name_or_path")
        if model is not None and not isinstance(model, str):
            raise SourceProblem(
                label, C.R_IMPORT_MALFORMED, f"line {number}: model_name_or_path must be text"
            )
        if instance_id in seen:
            raise SourceProblem(
                label,
                C.R_IMPORT_MALFORMED,
                f"line {number}: instance {instance_id} was already predicted on line "
                f"{seen[instance_id]}",
            )
        seen[instance_id] = number
        predictions.append(Prediction(instance_id, patch, model, number))
    if not predictions:
        raise SourceProblem(label, C.R_IMPORT_MALFORMED, "holds no predictions")
    return predictions


@dataclass(frozen=True)
class Orphan:
    """An instance id the results list but the predictions do not hold."""

    instance_id: str
    key: str  # the first results list naming it
    position: int  # 1-based position in that list


@dataclass(frozen=True)
class ResultsRead:
    """What a results file says: verdicts of predicted instances, the layout, orphans (ids with
    no prediction, each quarantined alone) and keys no layout knows (warned about)."""

    verdicts: dict[str, Verdict]
    layout: str
    orphans: list[Orphan]
    unknown_keys: list[str]


def read_results(results: Any, label: str, predicted: set[str], preds_label: str) -> ResultsRead:
    """Each listed instance's verdict, the layout's name, orphans and unknown keys; or a
    SourceProblem when the file as a whole cannot be read as results."""
    if not isinstance(results, dict):
        raise SourceProblem(
            label,
            C.R_IMPORT_MALFORMED,
            f"expected a JSON object of id lists, found a JSON {json_type(results)}",
        )
    layout_name, table = _layout_of(set(results), label)
    lists = _id_lists(results, table, label)
    if layout_name == "newer":
        _check_counts(results, lists, label)
    verdicts, orphans = _verdicts(table, lists, predicted)
    return ResultsRead(verdicts, layout_name, orphans, _unknown_keys(set(results), layout_name))


def _layout_of(keys: set[str], label: str) -> tuple[str, Layout]:
    """Which layout a results file's keys are in (its name and table of id lists)."""
    if keys & _NEW_ONLY and keys & _OLD_ONLY:
        raise SourceProblem(
            label,
            C.R_IMPORT_MALFORMED,
            "mixes keys of the newer layout ("
            + ", ".join(sorted(keys & _NEW_ONLY))
            + ") and the older one ("
            + ", ".join(sorted(keys & _OLD_ONLY))
            + ")",
        )
    if keys & _NEW_ONLY:
        if "resolved" not in keys and "resolved_ids" not in keys:
            raise SourceProblem(
                label, C.R_IMPORT_MALFORMED, "missing key resolved (or resolved_ids)"
            )
        return "newer", NEW_LAYOUT
    if keys & _OLD_ONLY:
        if "resolved" not in keys:
            raise SourceProblem(label, C.R_IMPORT_MALFORMED, "missing key resolved")
        return "older", OLD_LAYOUT
    raise SourceProblem(
        label,
        C.R_IMPORT_MALFORMED,
        "missing keys: holds neither layout's id lists (newer: resolved, unresolved_ids, "
        "error_ids, ...; older: resolved, no_generation, generated, applied, ...)",
    )


def _id_lists(results: dict[str, Any], table: Layout, label: str) -> dict[str, list[str]]:
    """The layout's id lists the file holds, each checked to be a list of ids."""
    lists: dict[str, list[str]] = {}
    for key, _status, _exclusive in table:
        if key not in results:
            continue
        value = results[key]
        if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
            raise SourceProblem(
                label, C.R_IMPORT_MALFORMED, f"{key} must be a list of instance ids"
            )
        lists[key] = value
    return lists


def _unknown_keys(keys: set[str], layout_name: str) -> list[str]:
    """The keys no part of the layout knows (the newer one's housekeeping keys aside)."""
    table = NEW_LAYOUT if layout_name == "newer" else OLD_LAYOUT
    known = {key for key, _, _ in table} | (
        set(NEW_COUNTS) | NEW_OTHER if layout_name == "newer" else set()
    )
    return sorted(
        key for key in keys - known if not (layout_name == "newer" and _HOUSEKEEPING.match(key))
    )


def _verdicts(
    table: Layout, lists: dict[str, list[str]], predicted: set[str]
) -> tuple[dict[str, Verdict], list[Orphan]]:
    """Each predicted instance's verdict (the first list naming it; conflicting when two
    exclusive lists do), and the listed ids without a prediction, each once."""
    verdicts: dict[str, Verdict] = {}
    orphans: dict[str, Orphan] = {}
    exclusive: dict[str, set[str]] = {}
    for key, status, is_exclusive in table:
        for position, instance_id in enumerate(lists.get(key, []), start=1):
            if instance_id not in predicted:
                # the harness lists every dataset instance it was not given (incomplete_ids):
                # an id without a prediction is one left-out item, never the system's end
                orphans.setdefault(instance_id, Orphan(instance_id, key, position))
                continue
            if instance_id not in verdicts:
                verdicts[instance_id] = Verdict(status, key, position)
            if is_exclusive:
                exclusive.setdefault(instance_id, set()).add(status)
    for instance_id, statuses in exclusive.items():
        if len(statuses) > 1:
            first = verdicts[instance_id]
            verdicts[instance_id] = Verdict(CONFLICTING, first.key, first.position)
    return verdicts, sorted(orphans.values(), key=_orphan_order)


def _orphan_order(orphan: Orphan) -> tuple[str, int, str]:
    return (orphan.key, orphan.position, orphan.instance_id)


def _check_counts(results: dict[str, Any], lists: dict[str, list[str]], label: str) -> None:
    for count_key, list_key in NEW_COUNTS.items():
        if count_key not in results:
            continue
        count = results[count_key]
        if not isinstance(count, int) or isinstance(count, bool):
            raise SourceProblem(label, C.R_IMPORT_MALFORMED, f"{count_key} must be an integer")
        ids = lists.get(list_key)
        if list_key == "resolved_ids" and ids is None:
            ids = lists.get("resolved")
        if ids is not None and len(ids) != count:
            raise SourceProblem(
                label,
                C.R_IMPORT_MALFORMED,
                f"{count_key} is {count} but {list_key} lists {len(ids)} id(s)",
            )
    if "resolved" in lists and "resolved_ids" in lists:
        if sorted(lists["resolved"]) != sorted(lists["resolved_ids"]):
            raise SourceProblem(
                label, C.R_IMPORT_MALFORMED, "resolved and resolved_ids list different ids"
            )


def issue_from_history(history: list[Any]) -> tuple[str | None, bool]:
    """The issue text from a trajectory's history, and whether a demonstration was skipped.

    A SWE-agent history may open with a canned demonstration turn (``is_demo``, or text
    starting "Here is a demonstration"); the task is the user turn that holds the issue (the
    ``ISSUE:`` section, or ``<pr_description>``), else the first user turn after any demo.
    """
    skipped = False
    turns: list[str] = []
    for turn in history:
        if not isinstance(turn, dict) or turn.get("role") != "user":
            continue
        text = text_of(turn.get("content"))
        if turn.get("is_demo") or any(marker in text for marker in DEMO_MARKERS):
            skipped = True
            continue
        turns.append(text)
    for text in turns:
        found = _ISSUE_TAGS.search(text) or _ISSUE_MARKER.search(text)
        if found and found.group(1).strip():
            return found.group(1).strip(), skipped
    if turns and turns[0].strip():
        return turns[0].strip(), skipped
    return None, skipped


def _trajectory(
    unit: Unit, spec: ImportSpec, prefix: str, instance_id: str
) -> tuple[str | None, dict[str, Any]]:
    """The issue text from the instance's trajectory, if one holds it, and what to note."""
    try:
        path, label = _file(spec, prefix, f"trajs/{instance_id}.traj")
    except SourceProblem as problem:
        unit.skip(problem.path, problem.reason, f"leads outside {spec.path}; not read")
        return None, {}
    if not path.is_file():
        return None, {}
    try:
        data, _sha = unit.read(path, label)
        traj = parse_json(data, label)
    except SourceProblem as problem:
        unit.skip(problem.path, problem.reason, problem.detail)
        return None, {"trajectory": label}
    history = traj.get("history") if isinstance(traj, dict) else None
    if not isinstance(history, list):
        detail = (
            "missing key history"
            if isinstance(traj, dict)
            else f"expected a JSON object, found a JSON {json_type(traj)}"
        )
        unit.skip(label, C.R_IMPORT_MALFORMED, detail)
        return None, {"trajectory": label}
    unit.count(label, 1)
    issue, skipped = issue_from_history(history)
    notes: dict[str, Any] = {"trajectory": label, "demonstration_skipped": skipped}
    info = traj.get("info")
    if isinstance(info, dict) and isinstance(info.get("submission"), str):
        notes["trajectory_submission"] = info["submission"]
    return issue, notes


def _log_time(unit: Unit, spec: ImportSpec, prefix: str, instance_id: str) -> str | None:
    """The timestamp starting the first line of the instance's run_instance.log, if any."""
    try:
        path, label = _file(spec, prefix, f"logs/{instance_id}/run_instance.log")
    except SourceProblem as problem:
        unit.skip(problem.path, problem.reason, f"leads outside {spec.path}; not read")
        return None
    if not path.is_file():
        return None
    try:
        data, _sha = unit.read(path, label)
    except SourceProblem as problem:
        unit.skip(problem.path, problem.reason, problem.detail)
        return None
    unit.count(label, 1)
    found = _LOG_TIME.match(data[:256])
    moment = None
    if found:
        day, clock, fraction = (g.decode() if g else None for g in found.groups())
        moment = parse_timestamp(f"{day}T{clock}" + (f".{fraction}" if fraction else ""))
    if moment is None:
        unit.warnings.append(
            f"{label}: the first line does not start with a timestamp; created_at falls back "
            "to the predictions file's modification time"
        )
        return None
    return format_timestamp(moment)


@dataclass(frozen=True)
class _SystemFolder:
    """A system folder being imported: its source, system name and path prefix, and its
    predictions (label, sha256, path) and results file (label, sha256, layout) as read."""

    spec: ImportSpec
    system: str
    prefix: str
    preds: tuple[str, str, Path]
    results: tuple[str, str, str]


def _import_instance(
    unit: Unit, folder: _SystemFolder, prediction: Prediction, verdict: Verdict
) -> None:
    spec, system, prefix = folder.spec, folder.system, folder.prefix
    preds_label, preds_sha, preds_path = folder.preds
    results_label, results_sha, layout_name = folder.results
    instance_id = prediction.instance_id
    run_id = f"{C.IMPORT_SWE_BENCH}/{system}/{instance_id}"
    issue, notes = _trajectory(unit, spec, prefix, instance_id)
    if spec.created_at is not None:
        stamp, stamp_source = format_timestamp(spec.created_at), CREATED_AT_OPTION
    else:
        logged = _log_time(unit, spec, prefix, instance_id)
        if logged is not None:
            stamp, stamp_source = logged, CREATED_AT_LOG
        else:
            stamp, stamp_source = mtime_timestamp(preds_path), CREATED_AT_MTIME
    patch = prediction.patch
    patch_state = "null" if patch is None else ("empty" if not patch.strip() else "present")
    status = verdict.status
    if patch_state != "present":
        # a null or empty patch is a failure whatever the results say, and never trainable
        status = NULL_PATCH if patch is None else EMPTY_PATCH
    run_origin = Provenance(preds_label, prediction.line, preds_sha, prediction.line)
    meta: dict[str, Any] = {
        "importer": C.IMPORT_SWE_BENCH,
        "system": system,
        "instance_id": instance_id,
        "patch": patch_state,
        "results_status": verdict.status,
        "results_layout": layout_name,
        "instruction_source": "trajectory" if issue else "placeholder",
        "created_at_source": stamp_source,
        "imported_from": run_origin.as_meta(),
    }
    if prediction.model is not None:
        meta["model_name_or_path"] = prediction.model
    submission = notes.pop("trajectory_submission", None)
    meta.update(notes)
    if submission is not None and patch is not None:
        meta["trajectory_submission_matches"] = submission.strip() == patch.strip()
    if not issue:
        meta["sft_eligible"] = False
    unit.add(
        {
            "kind": C.KIND_RUN,
            "run_id": run_id,
            "task_id": instance_id,
            "instruction": issue or placeholder_instruction(instance_id),
            "response": patch if patch_state == "present" else "",
            "created_at": stamp,
            "agent": system,
            "meta": meta,
        },
        run_origin,
    )
    effect = VERDICTS[status]
    if effect is None:
        return
    outcome, reward, incomplete = effect
    # the outcome points at the results entry that decided it, or at the prediction whose
    # missing patch did
    if verdict.key is not None and status == verdict.status:
        origin = Provenance(results_label, verdict.position, results_sha)
    else:
        origin = run_origin
    outcome_meta: dict[str, Any] = {
        "importer": C.IMPORT_SWE_BENCH,
        "status": status,
        "results_key": verdict.key,
        "created_at_source": stamp_source,
        "imported_from": origin.as_meta(),
    }
    if incomplete:
        outcome_meta["signals"] = {"incomplete": 1.0}
    obj: dict[str, Any] = {
        "kind": C.KIND_OUTCOME,
        "run_id": run_id,
        "outcome": outcome,
        "created_at": stamp,
        "meta": outcome_meta,
    }
    if reward is not None:
        obj["reward"] = reward
    unit.add(obj, origin)
