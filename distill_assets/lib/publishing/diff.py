"""``distill diff``: what changed in the datasets between two runs' versions, and why.

Both versions' trace lookups (lib/publishing/trace.py) are read as polars frames over their mapped
Arrow
tables: rows added, removed and changed (by stable row id; a changed row has other bytes or moved
between train and holdout) are anti and inner joins; the reason codes that moved come from the
stages' receipts and the verdicts the lookups kept; for every run whose verdict changed, the
evidence that changed it (a new review, a new outcome, one gone) is read from the evidence
store, or else the scoring settings that differ are named.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from distill_assets.lib import constants as C
from distill_assets.lib.publishing.trace import (
    DATASETS,
    PLACE_BITS,
    Lookup,
    TraceError,
    evidence_detail,
    evidence_of,
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


def _ids(ids: Any, limit: int | None) -> tuple[int, list[str]]:
    found = sorted(str(i) for i in ids.to_list())
    return len(found), found[:limit] if limit is not None else found


def _dataset_rows(lookup: Lookup, name: str) -> Any:
    """A dataset's rows in one version: id, split and digest (polars, from the mapped table)."""
    import polars as pl

    numbers = [
        n for n, info in lookup.files.items() if info.role == "dataset" and info.name == name
    ]
    splits = {n: lookup.files[n].split for n in numbers}
    rows = pl.from_arrow(lookup.table("rows").select(["id", "place", "digest"]))
    assert isinstance(rows, pl.DataFrame)
    file = pl.col("place") // (1 << PLACE_BITS)
    return rows.filter(file.is_in(numbers)).select(
        "id", "digest", file.replace_strict(splits, return_dtype=pl.String).alias("split")
    )


def _dataset_changes(a: Lookup, b: Lookup, name: str, limit: int | None) -> dict[str, Any]:
    """Rows added, removed and changed (other bytes, or moved between train and holdout)."""
    import polars as pl

    x, y = _dataset_rows(a, name), _dataset_rows(b, name)
    added = _ids(y.join(x, on="id", how="anti")["id"], limit)
    removed = _ids(x.join(y, on="id", how="anti")["id"], limit)
    both = y.join(x, on="id", how="inner", suffix="_a")
    changed = _ids(
        both.filter(
            (pl.col("digest") != pl.col("digest_a")) | (pl.col("split") != pl.col("split_a"))
        )["id"],
        limit,
    )
    return {
        "dataset": name,
        "rows_a": x.height,
        "rows_b": y.height,
        "added": added[0],
        "removed": removed[0],
        "changed": changed[0],
        "added_ids": added[1],
        "removed_ids": removed[1],
        "changed_ids": changed[1],
    }


def _runs(lookup: Lookup, columns: tuple[str, ...]) -> Any:
    """The named columns of a lookup's scored runs, with each run's number (polars)."""
    import polars as pl

    runs = pl.from_arrow(lookup.table("runs").select(list(columns)))
    assert isinstance(runs, pl.DataFrame)
    return runs.with_row_index("run", offset=1)


def _reason_counts(lookup: Lookup) -> Counter[tuple[str, str]]:
    """Reason codes per stage, counted from the version's quarantine files when it was built,
    and the verdicts (quality, reasons) of the scored runs the lookup kept."""
    import polars as pl

    counts: Counter[tuple[str, str]] = Counter()
    for stage, reason, n in lookup.db.execute("SELECT stage, reason, n FROM reasons"):
        counts[(stage, reason)] += int(n)
    runs = _runs(lookup, ("quality", "reasons"))
    for quality, n in runs.group_by("quality").len().iter_rows():
        counts[("verdict", str(quality))] += int(n)
    reasons = runs.select(pl.col("reasons").str.split(",").explode()).filter(
        pl.col("reasons").is_not_null() & (pl.col("reasons") != "")
    )
    for reason, n in reasons.group_by("reasons").len().iter_rows():
        counts[("verdict reason", str(reason))] += int(n)
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
    import polars as pl

    verdict = ("run_id", "quality", "score", "reasons")
    x, y = _runs(a, verdict), _runs(b, verdict)
    joined = y.join(x, on="run_id", how="inner", suffix="_a")
    differ = (
        (pl.col("quality_a") != pl.col("quality"))
        | (pl.col("score_a") != pl.col("score"))
        | (pl.col("reasons_a") != pl.col("reasons"))
    )
    changed = joined.filter(differ).sort("run_id", maintain_order=True)
    new = _ids(y.join(x, on="run_id", how="anti")["run_id"], limit)
    gone = _ids(x.join(y, on="run_id", how="anti")["run_id"], limit)
    shown = changed if limit is None else changed.head(limit)
    runs = []
    for item in shown.iter_rows(named=True):
        run_id = item["run_id"]
        qa, qb, sa, sb = item["quality_a"], item["quality"], item["score_a"], item["score"]
        ra, rb = item["reasons_a"], item["reasons"]
        pa, pb = item["run_a"], item["run"]
        # the rest of the two runs' rows, read for the runs shown only
        row_a, row_b = a.run_row(pa), b.run_row(pb)
        before = {e for e in row_a["evidence_ids"] or [] if e}
        because: list[dict[str, Any]] = []
        where = [w for w in b.evidence_places(row_b) if w[0] and w[0] not in before]
        for found in evidence_of(b, where):
            label = f"new {found.get('kind', 'evidence')}"
            because.append({"change": label, **found})
        after = {e for e in row_b["evidence_ids"] or [] if e}
        for prefix in sorted(before - after):
            because.append({"change": "evidence gone", "evidence_id": prefix})
        if not because:
            because = _settings_changed(a, b, row_a["file"], row_b["file"])
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
        "changed": changed.height,
        "newly_scored": new[0],
        "newly_scored_ids": new[1],
        "no_longer_scored": gone[0],
        "no_longer_scored_ids": gone[1],
        "runs": runs,
        "runs_not_shown": changed.height - shown.height,
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
        datasets = [_dataset_changes(a, b, name, limit) for name in DATASETS]
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


def _because_line(why: dict[str, Any]) -> str:
    """Why a run's verdict changed: a setting, or an evidence record added or gone."""
    if why["change"] == "setting":
        return f"    because setting {why['name']}: {why['before']} -> {why['after']}"
    if "source_path" in why:
        detail = evidence_detail(why)
        return (
            f"    because {why['change']} {why['evidence_id']} "
            f"({why['source_path']}:{why['line']}){' ' + detail if detail else ''}"
        )
    return f"    because {why['change']} {why.get('evidence_id', why.get('note', ''))}"


def _changed_run_lines(run: dict[str, Any]) -> list[str]:
    """A run whose verdict changed: before and after, why, and the rows it added or removed."""
    before, after = run["before"], run["after"]
    lines = [
        f"  {run['run_id']}: {before['quality']} {before['score']} -> "
        f"{after['quality']} {after['score']}  (reasons {','.join(before['reasons'])} -> "
        f"{','.join(after['reasons'])})"
    ]
    lines += [_because_line(why) for why in run["because"]]
    for dataset, split, row_id in run["rows_added"]:
        lines.append(f"    row added: {dataset} {split} {row_id}")
    for dataset, split, row_id in run["rows_removed"]:
        lines.append(f"    row removed: {dataset} {split} {row_id}")
    return lines


def _id_lines(answer: dict[str, Any]) -> list[str]:
    """The ids of the runs newly scored or no longer scored, and of the rows that changed."""
    v = answer["verdicts"]
    lines: list[str] = []
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
        lines += _changed_run_lines(run)
    if v["runs_not_shown"]:
        lines.append(f"  ... {v['runs_not_shown']} more (--all lists them)")
    return lines + _id_lines(answer)
