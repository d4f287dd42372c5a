"""τ-bench result files → evidence: one run and one outcome per trial (docs/importers.md).

A result file is a JSON array of ``{task_id, trial, reward, info: {task, reward_info, ...},
traj: [chat messages]}``. The file has no timestamps: ``created_at`` is the ``created_at``
option when given, else the file's modification time, and every record says which.

A trial's ``reward_info`` is complete when it is an object whose ``reward`` matches the trial's
reward and whose ``info`` holds the ``r_actions`` signal. Otherwise (missing or null, as when the
episode never finished, or graded on outputs only, without ``r_actions``) the outcome is still
imported from ``reward`` but carries the partial signal ``incomplete`` = 1, which the scoring
policy (``incomplete_outcome_needs_review``, on by default) sends to human review.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.collect import SourceFile, list_source_files
from distill_assets.lib.evidence.format import parse_timestamp
from distill_assets.lib.evidence.importers.base import (
    ImportBatch,
    ImportSpec,
    Provenance,
    SourceProblem,
    Unit,
    created_at,
    is_number,
    json_type,
    parse_json,
    safe_name,
    text_of,
)

KNOWN_DOMAINS = ("airline", "retail", "telecom")
# meta.reward_info: why an outcome is (in)complete
REWARD_INFO_COMPLETE = "complete"
REWARD_INFO_MISSING = "missing"
REWARD_INFO_NO_R_ACTIONS = "no_r_actions"
REWARD_INFO_MISMATCH = "reward_mismatch"


def import_tau_bench(spec: ImportSpec) -> ImportBatch:
    """Import one τ-bench result file, or every ``*.json`` file under a directory."""
    batch = ImportBatch(spec)
    if spec.path.is_file():
        files = [SourceFile(spec.path.parent, spec.path.name, spec.path)]
    else:
        files = list_source_files(spec.path, suffix=".json")
        if not files:
            batch.fail(spec.label("."), C.R_IMPORT_MISSING_FILE, "holds no *.json result file")
    for source in files:
        label = spec.label(source.relpath)
        if source.problem is not None:
            batch.fail(label, source.problem, f"leads outside {spec.path}; not read")
            continue
        batch.run_unit(
            lambda unit, source=source, label=label: _import_file(unit, spec, source, label)
        )
    return batch


def system_and_domain(spec: ImportSpec, path: Path, label: str) -> tuple[str, str, list[str]]:
    """The options, else the file name read as ``<system>-<domain>.json``; and any warnings."""
    stem = path.stem
    system, domain = spec.system, spec.domain
    if system is None and domain is not None:
        suffix = f"-{domain}"
        system = stem[: -len(suffix)] if stem.endswith(suffix) and len(stem) > len(suffix) else stem
    elif system is not None and domain is None:
        prefix = f"{system}-"
        if stem.startswith(prefix) and len(stem) > len(prefix):
            domain = stem[len(prefix) :]
    elif system is None and domain is None and "-" in stem:
        system, domain = stem.rsplit("-", 1)
    if not system or not domain or not safe_name(system) or not safe_name(domain):
        raise SourceProblem(
            label,
            C.R_IMPORT_MALFORMED,
            "cannot tell the system and domain from the file name (expected "
            "<system>-<domain>.json); set the system and domain options",
        )
    warnings = []
    if spec.domain is None and domain not in KNOWN_DOMAINS:
        warnings.append(
            f"{label}: domain {domain!r} taken from the file name is not a "
            f"known τ-bench domain ({', '.join(KNOWN_DOMAINS)}); set the domain option if wrong"
        )
    return system, domain, warnings


def _import_file(unit: Unit, spec: ImportSpec, source: SourceFile, label: str) -> None:
    data, sha = unit.read(source.path, label)
    results = parse_json(data, label)
    if not isinstance(results, list):
        raise SourceProblem(
            label,
            C.R_IMPORT_MALFORMED,
            f"expected a JSON array of τ-bench results, found a JSON {json_type(results)}",
        )
    system, domain, warnings = system_and_domain(spec, source.path, label)
    unit.warnings.extend(warnings)
    stamp, stamp_source = created_at(spec, source.path)
    moment = parse_timestamp(stamp)
    day = moment.date() if moment is not None else None
    trials = Trials(system, domain, stamp, stamp_source)
    for number, result in enumerate(results, start=1):
        problem = record_problem(result)
        if problem is not None:
            unit.quarantine(label, number, problem, day)
            continue
        origin = Provenance(label, number, sha)
        run, outcome = map_result(result, trials, origin)
        unit.add(run, origin)
        unit.add(outcome, origin)
    unit.count(label, len(results))


def record_problem(result: Any) -> str | None:
    """Why a result cannot be mapped at all (None when it can)."""
    if not isinstance(result, dict):
        return f"expected an object, found a JSON {json_type(result)}"
    missing = [key for key in ("task_id", "trial", "reward", "traj") if key not in result]
    if missing:
        return "missing key(s) " + ", ".join(missing)
    task_id = result["task_id"]
    if not (isinstance(task_id, int | str) and not isinstance(task_id, bool) and str(task_id)):
        return "task_id must be a number or text"
    if not isinstance(result["trial"], int) or isinstance(result["trial"], bool):
        return "trial must be an integer"
    if not is_number(result["reward"]):
        return "reward must be a number"
    if not isinstance(result["traj"], list):
        return "traj must be an array of chat messages"
    info = result.get("info")
    if info is not None and not isinstance(info, dict):
        return "info must be an object"
    return None


def reward_info_status(result: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """Whether the trial's reward_info is complete, and the numeric signals it holds."""
    info = result.get("info") or {}
    reward_info = info.get("reward_info")
    if not isinstance(reward_info, dict) or not reward_info:
        return REWARD_INFO_MISSING, {}
    details = reward_info.get("info")
    signals = {}
    if isinstance(details, dict):
        for name in ("r_actions", "r_outputs"):
            if is_number(details.get(name)):
                signals[name] = float(details[name])
    if reward_info.get("reward") != result["reward"]:
        return REWARD_INFO_MISMATCH, signals
    if "r_actions" not in signals:
        return REWARD_INFO_NO_R_ACTIONS, signals
    return REWARD_INFO_COMPLETE, signals


class Trials(NamedTuple):
    """What every trial of one results file shares: the system and domain it ran, and its
    ``created_at`` with where that came from."""

    system: str
    domain: str
    stamp: str
    stamp_source: str


def map_result(
    result: dict[str, Any], trials: Trials, origin: Provenance
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One τ-bench trial as an evidence run and its outcome."""
    system, domain, stamp, stamp_source = trials
    task = str(result["task_id"])
    run_id = f"{C.IMPORT_TAU_BENCH}/{system}/{domain}/{task}/{result['trial']}"
    messages = [
        m for m in result["traj"] if not (isinstance(m, dict) and m.get("role") == "system")
    ]
    instruction = next(
        (
            text_of(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        "",
    )
    response = next(
        (
            text
            for m in reversed(messages)
            if isinstance(m, dict)
            and m.get("role") == "assistant"
            and (text := text_of(m.get("content"))).strip()
        ),
        "",
    )
    info = result.get("info") or {}
    task_info = info.get("task") if isinstance(info.get("task"), dict) else {}
    run_meta: dict[str, Any] = {
        "importer": C.IMPORT_TAU_BENCH,
        "system": system,
        "domain": domain,
        "tau_task_id": result["task_id"],
        "trial": result["trial"],
        "created_at_source": stamp_source,
        "imported_from": origin.as_meta(),
    }
    if isinstance(task_info.get("user_id"), str):
        run_meta["user_id"] = task_info["user_id"]
    if isinstance(task_info.get("instruction"), str):
        run_meta["task_instruction"] = task_info["instruction"]
    run = {
        "kind": C.KIND_RUN,
        "run_id": run_id,
        "task_id": f"{C.IMPORT_TAU_BENCH}/{domain}/{task}",
        "instruction": instruction,
        "response": response,
        "messages": messages,
        "created_at": stamp,
        "agent": system,
        "category": domain,
        "meta": run_meta,
    }
    reward = float(result["reward"])
    if reward >= 1.0:
        verdict = "success"
    elif reward <= 0.0:
        verdict = "failure"
    else:
        verdict = "partial"
    status, signals = reward_info_status(result)
    if status != REWARD_INFO_COMPLETE:
        signals["incomplete"] = 1.0
    outcome = {
        "kind": C.KIND_OUTCOME,
        "run_id": run_id,
        "outcome": verdict,
        "reward": reward,
        "created_at": stamp,
        "meta": {
            "importer": C.IMPORT_TAU_BENCH,
            "reward_info": status,
            "signals": signals,
            "created_at_source": stamp_source,
            "imported_from": origin.as_meta(),
        },
    }
    return run, outcome
