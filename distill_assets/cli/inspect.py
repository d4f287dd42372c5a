"""The read-only ``distill`` verbs over an output directory: ``receipts list|show``, ``drift``,
``search``, ``trace``, ``diff``, and the run summary and drift line ``distill materialize``
prints after a run. They read what the stages wrote and never change it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from distill_assets.cli.common import (
    UserError,
    output_root,
    plural,
    print_json,
    require_reports,
    require_run,
)
from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.infra.layout import run_ids

_GRADE = {C.QUALITY_REVIEW: "needing review", C.QUALITY_PARTIAL: "partially accepted"}


def _written(stage: str, extra: dict) -> str:
    """Where a stage's output went, in the unit of the files it wrote."""
    if stage == C.STAGE_PUBLISH:
        return "published" if extra.get("published", True) else "not published"
    noun, many = S.ROW_NOUNS.get(stage, ("row", None))
    rows = extra.get("rows")
    text = plural(int(rows), noun, many) if isinstance(rows, int) else ""
    quality = extra.get("quality")
    if stage == C.STAGE_SCORE and isinstance(quality, dict):
        grades = ", ".join(
            f"{n} {_GRADE.get(q, q)}" for q, n in quality.items() if isinstance(n, int) and n
        )
        text += f": {grades}" if grades else ""
    held = extra.get("holdout_rows")
    if isinstance(held, int) and held:
        text += f" + {held} held out (the holdout split)"
    return text


def run_summary_lines(directory: Path) -> list[str]:
    """The run summary for the terminal, from the run's receipts: per stage, records in = out
    + quarantined + skipped, and what the output became (rows written, rows held out)."""
    summary: dict = {}
    try:
        summary = orjson.loads((directory / "summary.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        pass
    passed = summary.get("overall_passed") if isinstance(summary, dict) else None
    verdict = {True: "PASSED", False: "FAILED"}.get(passed, "not summarized")
    lines = [f"distill: run {directory.name}: {verdict}", ""]
    header = ("stage", "in", "out", "quarantined", "skipped", "output written")
    rows = []
    errors: list[str] = []  # why the stages that failed did (a few per stage)
    for stage in S.STAGES:
        try:
            receipt = orjson.loads((directory / f"{stage}.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        stats = receipt.get("stats") or {}
        extra = receipt.get("extra") or {}
        numbers = [stats.get(k) for k in ("records_in", "records_out", "quarantined", "skipped")]
        shown = [f"{n:,}" if isinstance(n, int) else "?" for n in numbers]
        validation = receipt.get("validation") or {}
        failed = validation.get("passed") is False
        rows.append((stage, *shown, _written(stage, extra) + ("  FAILED" if failed else "")))
        if failed:
            errors.extend(str(e) for e in (validation.get("errors") or [])[:3])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [str(c).rjust(w) for c, w in zip(row[1:5], widths[1:], strict=True)]
        lines.append("  " + "  ".join(cells) + "  " + row[5])
    lines.append("  (in = out + quarantined + skipped, in each stage's records; every left-out")
    lines.append("   record and its reason is in exports/quarantine/)")
    lines.extend(f"  FAILED: {error}" for error in errors)
    missing = summary.get("not_run") if isinstance(summary, dict) else None
    if missing:
        names = [str(m.get("stage", m)) if isinstance(m, dict) else str(m) for m in missing]
        first = missing[0].get("reason") if isinstance(missing[0], dict) else None
        lines.append(f"  not run: {', '.join(names)}" + (f" ({first}, …)" if first else ""))
    return lines


def drift_line(out: Path, run_id: str) -> str:
    """The run's drift severity in one line (the last the command prints on success), read from
    drift.json as written (lib/records/drift.py DriftReport) without loading the model's library."""
    path = out / C.REPORTS_DIR / run_id / "drift.json"
    if not path.exists():
        return "distill: drift: not judged (no stage finished)"
    report = orjson.loads(path.read_bytes())
    prior = report["prior_run_id"]
    against = f"against run {prior}" if prior else "(baseline established)"
    stages = tuple(f"{d['stage']}:" for d in report["stages"])
    run_flags = [f for f in report["flags"] if not f.startswith(stages)]
    stage_flags = len(report["flags"]) - len(run_flags)
    detail = "; ".join([*run_flags, f"{stage_flags} stage flag(s)"])
    severity = str(report["severity"]).upper()
    return f"distill: drift {severity} {against}: {detail} (distill drift {run_id})"


def cmd_receipts_list(args: argparse.Namespace) -> int:
    from distill_assets.lib.records.reports import load_summary

    out = output_root(args.output)
    require_reports(out)
    rows = []
    for run_id in run_ids(out):
        try:
            summary = load_summary(out, run_id)
        except (OSError, ValueError):
            continue
        rows.append(
            {
                "run_id": run_id,
                "timestamp": summary.timestamp,
                "overall_passed": summary.overall_passed,
                "stages": [s.stage for s in summary.stages if s.ran],
                "run_hash": summary.run_hash,
            }
        )
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no runs recorded")
    for row in rows:
        verdict = "passed" if row["overall_passed"] else "FAILED"
        print(f"{row['run_id']}  {row['timestamp']}  {verdict:6}  {','.join(row['stages'])}")
    return 0


def cmd_receipts_show(args: argparse.Namespace) -> int:
    from distill_assets.lib.records.receipts import load_receipt

    out = output_root(args.output)
    directory = require_run(out, args.run_id)
    stages = (
        [args.stage] if args.stage else [s for s in S.STAGES if (directory / f"{s}.json").exists()]
    )
    if args.stage and args.stage not in S.STAGES:
        raise UserError(f"unknown stage {args.stage!r}; stages: {', '.join(S.STAGES)}")
    receipts = []
    for stage in stages:
        path = directory / f"{stage}.json"
        if not path.exists():
            raise UserError(f"run {args.run_id} has no receipt for stage {stage}")
        receipts.append(load_receipt(path))
    if args.json:
        payload = [r.model_dump(mode="json") for r in receipts]
        print_json(payload[0] if args.stage else payload)
        return 0
    for r in receipts:
        s = r.stats
        print(
            f"[{r.stage}] run {r.run_id} at {r.timestamp} ({r.duration_ms} ms) "
            f"validation {'passed' if r.validation.passed else 'FAILED'}"
        )
        print(
            f"  in {s.records_in}  out {s.records_out}  accepted {s.accepted}  rejected "
            f"{s.rejected}  quarantined {s.quarantined}  skipped {s.skipped}"
        )
        print(f"  input hash  {r.inputs.hash}  ({len(r.inputs.files)} files)")
        print(f"  output hash {r.outputs.hash}  ({len(r.outputs.files)} files)")
        for code, count in r.stats.reasons.items():
            print(f"  reason {code}: {count}")
        for error in r.validation.errors:
            print(f"  error: {error}")
        for warning in r.validation.warnings:
            print(f"  warning: {warning}")
    return 0


def _latest_run_with(out: Path, name: str) -> str:
    require_reports(out)
    for run_id in reversed(run_ids(out)):
        if (out / C.REPORTS_DIR / run_id / name).exists():
            return run_id
    raise UserError(f"no run under {out} has a drift report yet (run distill materialize)")


def _match(value: object, what: str) -> str | None:
    if value is True:
        return f"{what} same"
    if value is False:
        return f"{what} changed"
    return None


def drift_lines(report: dict) -> list[str]:
    """A drift report for people: no raw None, no n/a. Fields are read as found (the report's
    shape may grow: stages as a mapping or a list, changes as pct_change_out or delta_*)."""
    severity = str(report.get("severity") or "unknown")
    prior = report.get("prior_run_id")
    against = f"against run {prior}" if prior else "no earlier run: baseline established"
    lines = [f"run {report.get('run_id', '?')}: drift {severity.upper()} ({against})"]
    stages = report.get("stages") or {}
    items = (
        list(stages.items())
        if isinstance(stages, dict)
        else [(s.get("stage", "?"), s) for s in stages if isinstance(s, dict)]
    )
    order = {stage: n for n, stage in enumerate(S.STAGES)}
    items.sort(key=lambda item: (order.get(item[0], len(order)), str(item[0])))
    for stage, d in items:
        parts = [str(d.get("severity") or "?")]
        pct = d.get("pct_change_out")
        delta = d.get("delta_records_out", (d.get("deltas") or {}).get("records_out"))
        if isinstance(pct, int | float):
            parts.append(f"records out {pct:+.1f}%")
        elif isinstance(delta, int) and (d.get("prior_run_id") or prior):
            parts.append(f"records out {delta:+d}")
        elif d.get("baseline_established"):
            parts.append("baseline")
        parts += [
            m
            for m in (
                _match(d.get("input_hash_match"), "inputs"),
                _match(d.get("output_hash_match"), "output"),
            )
            if m
        ]
        if d.get("deterministic_violation"):
            parts.append("DETERMINISM VIOLATED (same inputs, different output)")
        lines.append(f"  {stage}: " + ", ".join(parts))
        for flag in d.get("flags") or []:
            if flag != "baseline_established":
                lines.append(f"    - {flag}")
    return lines


def cmd_drift(args: argparse.Namespace) -> int:
    out = output_root(args.output)
    run_id = args.run_id or _latest_run_with(out, "drift.json")
    directory = require_run(out, run_id)
    path = directory / "drift.json"
    if not path.exists():
        raise UserError(f"run {run_id} has no drift report")
    try:
        report = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path} ({exc})") from None
    code = 3 if str(report.get("severity")) == C.SEVERITY_ALERT and args.fail_on_alert else 0
    if args.json:
        print_json(report)
        return code  # --fail-on-alert holds with --json too
    for line in drift_lines(report):
        print(line)
    return code


def cmd_search(args: argparse.Namespace) -> int:
    """The best playbooks for a question, from the published search index."""
    from distill_assets.lib.playbooks.search import SearchError, published_index, search

    if not 1 <= args.k <= 1000:
        raise UserError(f"-k must be between 1 and 1000, not {args.k}")
    out = output_root(args.output, (C.INDEX_PATH,))
    if not out.is_dir():
        raise UserError(
            f"output directory {out} does not exist (pass --output DIR or set {C.ENV_OUTPUT_DIR})"
        )
    index = published_index(out)
    if index is None:
        raise UserError(
            f"no published search index under {out}: materialize the graph first "
            "(distill materialize; the playbook_index asset builds it)"
        )
    try:
        hits = search(index, args.query, args.k, args.mode)
    except SearchError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print_json([hit.as_dict() for hit in hits])
        return 0
    if not hits:
        print("no playbook matches")
        return 0
    for hit in hits:
        print(f"{hit.rank:>2}. {hit.score:8.4f}  {hit.title}")
        runs = ", ".join(hit.source_run_ids[:5])
        more = f" (+{len(hit.source_run_ids) - 5} more)" if len(hit.source_run_ids) > 5 else ""
        print(f"    task {hit.task_id}  {hit.quality}  {hit.id}  runs {runs}{more}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    """Where a row, run, task or evidence record came from and what happened to it."""
    from distill_assets.lib.publishing.trace import TraceError, open_lookup, render_trace, trace

    out = output_root(args.output, (f"{C.REPORTS_DIR}/*", f"{C.EXPORTS_DIR}/*"))
    require_reports(out)
    try:
        lookup = open_lookup(out, args.run)
        try:
            answer = trace(lookup, args.id)
        finally:
            lookup.close()
    except TraceError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print_json(answer)
    else:
        print("\n".join(render_trace(answer)))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    """What changed in the datasets between two runs, and why."""
    from distill_assets.lib.publishing.diff import diff, render_diff
    from distill_assets.lib.publishing.trace import TraceError

    out = output_root(args.output, (f"{C.REPORTS_DIR}/*", f"{C.EXPORTS_DIR}/*"))
    require_reports(out)
    try:
        answer = diff(out, args.run_a, args.run_b, everything=args.all)
    except TraceError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print_json(answer)
    else:
        print("\n".join(render_diff(answer)))
    return 0
