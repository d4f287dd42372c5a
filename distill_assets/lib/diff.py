"""``distill diff``: what changed in the datasets between two runs' versions, and why.

Both versions' trace lookups (lib/trace.py) are attached to one SQLite connection: rows added,
removed and changed (by stable row id; a changed row has other bytes or moved between train and
holdout) are set operations in SQL; the reason codes that moved come from the stages' receipts
and the verdicts the lookups kept; for every run whose verdict changed, the evidence that changed
it (a new review, a new outcome, one gone) is read from the evidence store, or else the scoring
settings that differ are named.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from distill_assets.lib import constants as C
from distill_assets.lib.trace import (
    DATASETS,
    Lookup,
    TraceError,
    _evidence,
    evidence_detail,
    open_lookup,
    run_places,
    traced_versions,
)

# details listed per kind before "N more" (``--all`` lists everything)
SHOWN = 10


def diff_command(prior_run_id: str | None, run_id: str) -> str | None:
    """The command that explains a drift between two runs (None without a prior run)."""
    return f"distill diff {prior_run_id} {run_id}" if prior_run_id else None


def explained_by(prior_run_id: str | None, run_id: str) -> dict[str, str]:
    """The drift check's metadata entry naming the command that explains the drift."""
    command = diff_command(prior_run_id, run_id)
    return {"explain": command} if command else {}


def explained_md(severity: str, prior_run_id: str | None, run_id: str) -> list[str]:
    """The line of summary.md's drift section naming the ``distill diff`` that explains a
    warn or alert (none otherwise)."""
    command = diff_command(prior_run_id, run_id)
    if severity not in (C.SEVERITY_WARN, C.SEVERITY_ALERT) or command is None:
        return []
    return ["", f"What changed, and why: `{command}`"]


def _pick(out_root: Path, run_a: str | None, run_b: str | None) -> tuple[str, str]:
    kept = traced_versions(out_root)
    if run_a is not None and run_b is not None:
        return run_a, run_b
    if run_a is not None:
        later = [r for r in kept if r != run_a]
        if not later:
            raise TraceError(f"no other kept version to compare run {run_a} with")
        return run_a, later[-1]
    if len(kept) < 2:
        raise TraceError(
            f"diff needs two runs with a kept version under {out_root}/{C.VERSIONS_DIR}; "
            f"found {len(kept)} ({', '.join(kept) or 'none'})"
        )
    return kept[-2], kept[-1]


def _ids(db: Any, sql: str, args: tuple[Any, ...], limit: int | None) -> tuple[int, list[str]]:
    rows = [r[0] for r in db.execute(sql, args)]
    return len(rows), sorted(rows)[:limit] if limit is not None else sorted(rows)


# a dataset's rows in one version; the rows of the other version looked up by the id index
_OF = "(SELECT file FROM {db}.files WHERE name = ?1)"
_ONLY_IN = (
    "SELECT y.id FROM {y}.rows y WHERE (y.place >> 40) IN " + _OF.format(db="{y}") + " "
    "AND NOT EXISTS (SELECT 1 FROM {x}.rows x WHERE x.id = y.id AND (x.place >> 40) IN "
    + _OF.format(db="{x}")
    + ")"
)
_CHANGED = (
    "SELECT y.id FROM b.rows y JOIN b.files fy ON fy.file = (y.place >> 40) AND fy.name = ?1 "
    "JOIN main.rows x ON x.id = y.id "
    "JOIN main.files fx ON fx.file = (x.place >> 40) AND fx.name = ?1 "
    "WHERE x.digest != y.digest OR fx.split != fy.split"
)


def _dataset_changes(db: Any, name: str, limit: int | None) -> dict[str, Any]:
    count = "SELECT count(*) FROM {db}.rows WHERE (place >> 40) IN " + _OF
    added = _ids(db, _ONLY_IN.format(x="main", y="b"), (name,), limit)
    removed = _ids(db, _ONLY_IN.format(x="b", y="main"), (name,), limit)
    changed = _ids(db, _CHANGED, (name,), limit)
    return {
        "dataset": name,
        "rows_a": db.execute(count.format(db="main"), (name,)).fetchone()[0],
        "rows_b": db.execute(count.format(db="b"), (name,)).fetchone()[0],
        "added": added[0],
        "removed": removed[0],
        "changed": changed[0],
        "added_ids": added[1],
        "removed_ids": removed[1],
        "changed_ids": changed[1],
    }


def _reason_counts(lookup: Lookup) -> Counter[tuple[str, str]]:
    """Reason codes per stage, counted from the version's quarantine files when it was built,
    and the verdicts (quality, reasons) of the scored runs the lookup kept."""
    counts: Counter[tuple[str, str]] = Counter()
    for stage, reason, n in lookup.db.execute("SELECT stage, reason, n FROM reasons"):
        counts[(stage, reason)] += int(n)
    for quality, reasons in lookup.db.execute("SELECT quality, reasons FROM runs"):
        counts[("verdict", str(quality))] += 1
        for reason in (reasons or "").split(","):
            if reason:
                counts[("verdict reason", reason)] += 1
    return counts


def _rows_of(lookup: Lookup, run: int) -> set[tuple[str, str, str]]:
    """(dataset, split, row id) of the published rows naming the scored run numbered ``run``."""
    found = set()
    for file, offset in run_places(lookup, run):
        info = lookup.files[file]
        if info.role == "dataset":
            line = lookup.line(file, offset)
            if line is not None:
                found.add((info.name, info.split, str(line.get("id"))))
    return found


def _settings_changed(a: Lookup, b: Lookup, file_a: int, file_b: int) -> list[dict[str, Any]]:
    before = a.settings(a.files[file_a].producer, C.STAGE_SCORE) or {}
    after = b.settings(b.files[file_b].producer, C.STAGE_SCORE) or {}
    return [
        {"change": "setting", "name": key, "before": before.get(key), "after": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def _verdict_changes(a: Lookup, b: Lookup, limit: int | None) -> dict[str, Any]:
    db = a.db
    changed = db.execute(
        "SELECT y.run_id, x.quality, y.quality, x.score, y.score, x.reasons, y.reasons, "
        "x.evidence, y.evidence, y.evidence_places, x.file, y.file, x.run, y.run "
        "FROM main.runs x JOIN b.runs y ON x.run_id = y.run_id "
        "WHERE x.quality != y.quality OR x.score != y.score OR x.reasons != y.reasons "
        "ORDER BY y.run_id"
    ).fetchall()
    only = "SELECT y.run_id FROM {y}.runs y WHERE NOT EXISTS "
    only += "(SELECT 1 FROM {x}.runs x WHERE x.run_id = y.run_id)"
    new = _ids(db, only.format(x="main", y="b"), (), limit)
    gone = _ids(db, only.format(x="b", y="main"), (), limit)
    shown = changed if limit is None else changed[:limit]
    runs = []
    for run_id, qa, qb, sa, sb, ra, rb, ea, eb, where, fa, fb, pa, pb in shown:
        before = {e for e in (ea or "").split(",") if e}
        after_ids = (eb or "").split(",")
        after_places = (where or "").split(",")
        because: list[dict[str, Any]] = []
        new_ids = [i for i, e in enumerate(after_ids) if e and e not in before]
        chosen = (
            ",".join(after_ids[i] for i in new_ids),
            ",".join(after_places[i] for i in new_ids if i < len(after_places)),
        )
        for item in _evidence(b, *chosen):
            label = f"new {item.get('kind', 'evidence')}"
            because.append({"change": label, **item})
        after = {e for e in after_ids if e}
        for prefix in sorted(before - after):
            because.append({"change": "evidence gone", "evidence_id": prefix})
        if not because:
            because = _settings_changed(a, b, fa, fb)
        if not because:
            because = [{"change": "none found", "note": "same evidence and scoring settings"}]
        rows_a, rows_b = _rows_of(a, pa), _rows_of(b, pb)
        runs.append(
            {
                "run_id": run_id,
                "before": {"quality": qa, "score": sa, "reasons": (ra or "").split(",")},
                "after": {"quality": qb, "score": sb, "reasons": (rb or "").split(",")},
                "because": because,
                "rows_added": [list(r) for r in sorted(rows_b - rows_a)],
                "rows_removed": [list(r) for r in sorted(rows_a - rows_b)],
            }
        )
    return {
        "changed": len(changed),
        "newly_scored": new[0],
        "newly_scored_ids": new[1],
        "no_longer_scored": gone[0],
        "no_longer_scored_ids": gone[1],
        "runs": runs,
        "runs_not_shown": len(changed) - len(shown),
    }


def diff(
    out_root: Path, run_a: str | None = None, run_b: str | None = None, everything: bool = False
) -> dict[str, Any]:
    """The changes from run ``run_a``'s version to run ``run_b``'s (default: the last two)."""
    first, second = _pick(out_root, run_a, run_b)
    limit = None if everything else SHOWN
    a = open_lookup(out_root, first)
    b = open_lookup(out_root, second)
    try:
        a.db.execute("ATTACH DATABASE ? AS b", (f"file:{b.path}?mode=ro",))
        datasets = [_dataset_changes(a.db, name, limit) for name in DATASETS]
        counts_a, counts_b = _reason_counts(a), _reason_counts(b)
        moved = [
            {"stage": stage, "reason": reason, "a": counts_a[key], "b": counts_b[key]}
            for key in sorted(set(counts_a) | set(counts_b))
            for stage, reason in [key]
            if counts_a[key] != counts_b[key]
        ]
        verdicts = _verdict_changes(a, b, limit)
    finally:
        a.close()
        b.close()
    return {"a": first, "b": second, "datasets": datasets, "reasons": moved, "verdicts": verdicts}


def _more(total: int, shown: int) -> list[str]:
    return [f"    ... {total - shown} more (--all lists them)"] if total > shown else []


def render_diff(answer: dict[str, Any]) -> list[str]:
    """The diff as text: a summary line per dataset first, then the details."""
    lines = [f"distill diff {answer['a']} -> {answer['b']}"]
    for d in answer["datasets"]:
        lines.append(
            f"{d['dataset']}: {d['rows_a']} -> {d['rows_b']} rows  +{d['added']} added  "
            f"-{d['removed']} removed  ~{d['changed']} changed"
        )
    v = answer["verdicts"]
    lines.append(
        f"verdicts: {v['changed']} changed, {v['newly_scored']} newly scored, "
        f"{v['no_longer_scored']} no longer scored"
    )
    if answer["reasons"]:
        lines += ["", "reason codes that moved:"]
        for item in answer["reasons"]:
            delta = item["b"] - item["a"]
            lines.append(
                f"  {item['stage']} {item['reason']}: {item['a']} -> {item['b']} ({delta:+d})"
            )
    if v["runs"]:
        lines += ["", "runs whose verdict changed:"]
    for run in v["runs"]:
        before, after = run["before"], run["after"]
        lines.append(
            f"  {run['run_id']}: {before['quality']} {before['score']} -> "
            f"{after['quality']} {after['score']}  (reasons {','.join(before['reasons'])} -> "
            f"{','.join(after['reasons'])})"
        )
        for why in run["because"]:
            if why["change"] == "setting":
                lines.append(
                    f"    because setting {why['name']}: {why['before']} -> {why['after']}"
                )
            elif "source_path" in why:
                detail = evidence_detail(why)
                lines.append(
                    f"    because {why['change']} {why['evidence_id']} "
                    f"({why['source_path']}:{why['line']}){' ' + detail if detail else ''}"
                )
            else:
                lines.append(
                    f"    because {why['change']} {why.get('evidence_id', why.get('note', ''))}"
                )
        for dataset, split, row_id in run["rows_added"]:
            lines.append(f"    row added: {dataset} {split} {row_id}")
        for dataset, split, row_id in run["rows_removed"]:
            lines.append(f"    row removed: {dataset} {split} {row_id}")
    if v["runs_not_shown"]:
        lines.append(f"  ... {v['runs_not_shown']} more (--all lists them)")
    for label, key in (("newly scored", "newly_scored"), ("no longer scored", "no_longer_scored")):
        if v[f"{key}_ids"]:
            lines.append(f"{label}: {', '.join(v[f'{key}_ids'])}")
            lines += _more(v[key], len(v[f"{key}_ids"]))
    for d in answer["datasets"]:
        for kind in ("added", "removed", "changed"):
            if d[f"{kind}_ids"]:
                lines.append(f"{d['dataset']} {kind}: {', '.join(d[f'{kind}_ids'])}")
                lines += _more(d[kind], len(d[f"{kind}_ids"]))
    return lines
