"""The ``distill`` command: run the graph, import foreign logs, read receipts and drift reports.

Errors a user can cause (unknown run id, missing output directory, bad arguments) print one line
to stderr and exit non-zero; nothing here prints input text.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.layout import run_ids

if TYPE_CHECKING:
    from distill_assets.lib.importers import ImportSpec

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def _output_setting(arg: str | None) -> str:
    return arg or os.environ.get(C.ENV_OUTPUT_DIR) or str(PROJECT_ROOT / "out")


def _output_root(arg: str | None, reads: tuple[str, ...] = (f"{C.REPORTS_DIR}/*",)) -> Path:
    """The output directory; for a URL, a local copy of the files the command ``reads``."""
    from distill_assets.lib.storage import OutputLocation, StorageError, is_remote

    raw = _output_setting(arg)
    if not is_remote(raw):
        return Path(raw)
    try:
        return OutputLocation(raw).view(reads)
    except (ImportError, ValueError, OSError, StorageError) as exc:
        raise UserError(f"cannot read output {raw}: {exc}") from exc


def _source_root(arg: str | None) -> Path:
    raw = arg or os.environ.get(C.ENV_SOURCE_DIR) or str(PROJECT_ROOT / "fixtures" / "evidence")
    return Path(raw)


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME as set, or .dagster_home/ in the project with dagster.yaml linked into it."""
    home = os.environ.get("DAGSTER_HOME")
    path = Path(home) if home else PROJECT_ROOT / ".dagster_home"
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not home and not config.exists():
        config.symlink_to(PROJECT_ROOT / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(path)
    return path


def import_date_range(specs: list[ImportSpec]) -> tuple[date, date] | None:
    """First and last created_at date of what the import sources would give."""
    from distill_assets.lib.evidence import parse_timestamp
    from distill_assets.lib.importers import run_import

    days = []
    for spec in specs:
        for item in run_import(spec).objects:
            moment = parse_timestamp(item.obj.get("created_at"))
            if moment is not None:
                days.append(moment.date())
    return (min(days), max(days)) if days else None


def partition_range(source: Path | None, imports: list[ImportSpec] | None = None) -> str:
    """The partition range covering every day in the sources and import sources (a day either
    side for offsets)."""
    from distill_assets.lib.layout import partition_end, partition_start, source_date_range

    try:
        earliest = partition_start(os.environ.get(C.ENV_PARTITION_START))
        end = partition_end(os.environ.get(C.ENV_PARTITION_END), earliest)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    # the daily partitions end with tomorrow's (end_offset=2, for the one-day future horizon),
    # or with DISTILL_PARTITION_END's day when that comes first
    today = datetime.now(UTC).date()
    latest = today + timedelta(days=1) if end is None else min(end, today + timedelta(days=1))
    spans = [
        span
        for span in (
            source_date_range(source) if source is not None else None,
            import_date_range(imports) if imports else None,
        )
        if span is not None
    ]
    found = (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None
    if found is None:
        day = min(today, latest)
        return f"{day}...{day}"
    if end is not None and found[1] > end:
        print(
            f"distill: source days after {C.ENV_PARTITION_END}={end} (to {found[1]}) are left "
            "out: no partition covers them",
            flush=True,
        )
    first = max(earliest, found[0] - timedelta(days=1))
    last = min(latest, found[1] + timedelta(days=1))
    if first > last:
        first = last
    return f"{first.isoformat()}...{last.isoformat()}"


def _configured_imports(config: list[dict]) -> tuple[list[ImportSpec], dict[str, str]]:
    """Import sources from run config (resources.distill.config.imports, edited in place) or
    $DISTILL_IMPORTS, with paths made absolute, since the graph runs from the project folder."""
    given = None
    for item in config:
        found = item.get("resources", {}).get("distill", {}).get("config", {}).get("imports")
        if found is not None:
            given = found
    raw = os.environ.get(C.ENV_IMPORTS)
    try:
        entries = given if given is not None else (orjson.loads(raw) if raw else [])
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{C.ENV_IMPORTS} is not valid JSON ({exc.msg})") from None
    if not isinstance(entries, list):
        raise UserError("import sources: expected a JSON list of objects with kind and path")
    if not entries:
        # no import sources: the importers (numpy, detect-secrets: ~0.2 s to load) stay unloaded
        return [], {C.ENV_IMPORTS: "[]"} if given is None and raw else {}
    from distill_assets.lib.importers import parse_specs

    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            entry["path"] = str(Path(entry["path"]).resolve())
    try:
        specs = parse_specs(orjson.dumps(entries).decode())
    except ValueError as exc:
        raise UserError(f"import sources: {exc}") from None
    env = {C.ENV_IMPORTS: orjson.dumps(entries).decode()} if given is None and raw else {}
    return specs, env


def cmd_materialize(args: argparse.Namespace) -> int:
    user_env = {name for name in (C.ENV_SOURCE_DIR, C.ENV_OUTPUT_DIR) if os.environ.get(name)}
    config = [orjson.loads(item) for item in args.config or []]
    imports, env = _configured_imports(config)
    from distill_assets.lib.storage import is_remote

    raw_out = _output_setting(args.output)
    remote = is_remote(raw_out)
    out = _output_root(args.output)
    source: Path | None = None
    if args.source or os.environ.get(C.ENV_SOURCE_DIR) or not imports:
        source = _source_root(args.source)
        if not source.is_dir():
            raise UserError(
                f"source directory {source} does not exist (pass --source DIR or set "
                f"{C.ENV_SOURCE_DIR})"
            )
        os.environ[C.ENV_SOURCE_DIR] = str(source.resolve())
    os.environ.update(env)
    os.environ[C.ENV_OUTPUT_DIR] = raw_out if remote else str(out.resolve())
    if not remote:
        _check_sources(out, source, imports, args.replace)
    ensure_dagster_home()
    span = args.partition_range or partition_range(source, imports)
    per_day = args.per_day or os.environ.get(C.ENV_BACKFILL) == "per_day"
    if per_day and args.select != "*":
        raise UserError("--per-day materializes the whole graph; leave out --select")
    base = [sys.executable, "-m", "dagster", "asset", "materialize"]
    base += ["-m", "distill_assets.definitions"]
    # the default executor runs in-process; a named one (DISTILL_EXECUTOR) takes its own config
    if args.multiprocess and not os.environ.get(C.ENV_EXECUTOR):
        config.append({"execution": {"config": {"multiprocess": {}}}})
    if config:
        merged: dict = {}
        for item in config:
            _deep_merge(merged, item)
        from distill_assets.lib.runconfig import upgrade_run_config

        merged, moved = upgrade_run_config(merged)
        for path in moved:
            print(
                f"distill: run config {path} is now ops.{C.OP_EXPORTS}.config.{path[4:]} "
                "(one step makes every export; docs/datasets.md)",
                file=sys.stderr,
            )
        base += ["--config-json", orjson.dumps(merged).decode()]
    if per_day:
        commands = [base + step for step in per_day_steps(span)]
        print(f"distill: materializing the graph one run per day for {span}", flush=True)
    else:
        # a single run over the range needs the single-run backfill policy
        os.environ[C.ENV_BACKFILL] = "single_run"
        commands = [base + ["--select", args.select, "--partition-range", span]]
        print(f"distill: materializing {args.select} for partitions {span}", flush=True)
    equivalent = dagster_command(commands, env_changes(args, env, user_env))
    sources = [str(source.resolve())] if source is not None else []
    sources += [f"{spec.kind} {spec.path}" for spec in imports]
    shown = raw_out.rstrip("/") if remote else str(out.resolve())
    print(f"distill: sources {', '.join(sources)} -> output {shown}", flush=True)
    runs_before = _report_dirs(out)
    log_path = Path(os.environ["DAGSTER_HOME"]) / "last-materialize.log"
    with open(log_path, "wb") as log:
        sink = None if args.verbose else log
        for command in commands:
            done = subprocess.run(command, cwd=PROJECT_ROOT, check=False, stdout=sink, stderr=sink)
            if done.returncode != 0:
                break
    if remote:
        # a URL output: its reports and published datasets, fetched into the local mirror
        out = _output_root(args.output, (f"{C.REPORTS_DIR}/*", f"{C.EXPORTS_DIR}/*"))
    runs = [run for run in run_ids(out) if run not in runs_before]
    if runs:
        for line in run_summary_lines(out / C.REPORTS_DIR / runs[-1]):
            print(line)
    else:
        print("distill: this run recorded no stage (it failed before the first one finished)")
    print("distill: datasets:")
    for rel in (
        C.EXTRACTED_PATH,
        C.RAG_PATH,
        C.SFT_PATH,
        C.PREFERENCE_PATH,
        C.KTO_PATH,
        *C.HOLDOUT_PATHS.values(),
    ):
        path = out / rel
        state = plural(_lines(path), "row") if path.exists() else "not written"
        print(f"  {path if not remote else f'{shown}/{rel}'}  ({state})")
    review = out / C.REVIEW_QUEUE_PATH if not remote else f"{shown}/{C.REVIEW_QUEUE_PATH}"
    print(f"  review queue: {review}")
    index = out / C.INDEX_PATH
    shown_index = index if not remote else f"{shown}/{C.INDEX_PATH}"
    print(f"  {shown_index}  ({'search: distill search' if index.exists() else 'not written'})")
    print(
        f"  quarantine: {out / C.QUARANTINE_DIR if not remote else f'{shown}/{C.QUARANTINE_DIR}'}/"
    )
    if runs:
        where = (
            out / C.REPORTS_DIR / runs[-1] if not remote else f"{shown}/{C.REPORTS_DIR}/{runs[-1]}"
        )
        print(f"  receipts:   {where}/")
        print(f"  summary:    {where}/summary.md")
    print("distill: the same run with Dagster alone (from the project folder):")
    print(f"  {equivalent}")
    if runs:
        print(f"distill: open run {runs[-1]} in the UI: {_shown(Path(sys.argv[0]))} ui, then")
        print(f"  http://127.0.0.1:{DEFAULT_UI_PORT}/runs/{runs[-1]}")
        # the last line: the run's drift severity
        print(drift_line(out, runs[-1]))
    if done.returncode != 0:
        if not args.verbose:
            for line in _failure_lines(log_path):
                print(f"distill: {line}", file=sys.stderr)
        where = "above" if args.verbose else f"in {log_path}"
        print(f"distill: materialization FAILED; Dagster's log is {where}", file=sys.stderr)
    return done.returncode


DEFAULT_UI_PORT = 3000


def _shown(path: Path) -> str:
    """A path as a user in the project folder types it (relative under it, else absolute)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


def env_changes(
    args: argparse.Namespace, env: dict[str, str], user_env: set[str]
) -> dict[str, str]:
    """The settings the Dagster command needs to do what this ``distill materialize`` does:
    the project's instance, and the source and output when they are not the defaults."""
    changes = {"DAGSTER_HOME": os.environ["DAGSTER_HOME"]}
    for name in (C.ENV_SOURCE_DIR, C.ENV_OUTPUT_DIR):
        given = args.source if name == C.ENV_SOURCE_DIR else args.output
        if (given or name in user_env) and os.environ.get(name):
            changes[name] = os.environ[name]
    changes.update(env)
    for name in (C.ENV_EXECUTOR, C.ENV_PARTITION_START, C.ENV_PARTITION_END):
        if os.environ.get(name):
            changes[name] = os.environ[name]
    return changes


def dagster_command(commands: list[list[str]], env: dict[str, str]) -> str:
    """The ``dagster asset materialize`` command line(s) equivalent to a ``distill
    materialize``, as a shell runs them from the project folder."""
    dagster = Path(sys.executable).parent / "dagster"
    program = _shown(dagster) if dagster.exists() else "dagster"
    prefix = " ".join(f"{name}={_env_shown(name, v)}" for name, v in env.items())
    lines = [
        " ".join([prefix, program, *(shlex.quote(part) for part in command[3:])]).strip()
        for command in commands
    ]
    return " && \\\n  ".join(lines)


def _env_shown(name: str, value: str) -> str:
    """A setting's value as typed in a shell in the project folder: a path under it relative
    (DAGSTER_HOME, which Dagster wants absolute, as ``"$PWD/..."``)."""
    if name in ("DAGSTER_HOME", C.ENV_SOURCE_DIR, C.ENV_OUTPUT_DIR) and "://" not in value:
        shown = _shown(Path(value))
        if name == "DAGSTER_HOME" and not Path(shown).is_absolute():
            return '"$PWD"/' + shlex.quote(shown)
        return shlex.quote(shown)
    return shlex.quote(value)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 row``, ``2 rows``: a count with its noun."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


# what the rows each stage writes are (the unit of its receipt's extra "rows")
_ROW_NOUN = {
    C.STAGE_COLLECT: ("evidence record", None),
    C.STAGE_SCORE: ("run graded", "runs graded"),
    C.STAGE_EXTRACT_PLAYBOOKS: ("playbook", None),
    C.STAGE_EXPORT_RAG: ("playbook", None),
    C.STAGE_EXPORT_SFT: ("row", None),
    C.STAGE_EXPORT_PREFERENCE: ("pair", None),
    C.STAGE_EXPORT_KTO: ("row", None),
    C.STAGE_EXPORT_REVIEW: ("run to review", "runs to review"),
    C.STAGE_INDEX: ("playbook indexed", "playbooks indexed"),
}


_GRADE = {"needs_human_review": "needing review", "partially_accepted": "partially accepted"}


def _written(stage: str, extra: dict) -> str:
    """Where a stage's output went, in the unit of the files it wrote."""
    if stage == C.STAGE_PUBLISH:
        return "published" if extra.get("published", True) else "not published"
    noun, many = _ROW_NOUN.get(stage, ("row", None))
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
    for stage in C.STAGES:
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


def cmd_ui(args: argparse.Namespace) -> int:
    """The Dagster UI and daemon (``dagster dev``) on the project's instance, on 127.0.0.1, so
    the runs ``distill materialize`` and the plain Dagster command made are there, and the
    drift sensor judges new ones."""
    if args.source:
        os.environ[C.ENV_SOURCE_DIR] = str(Path(args.source).resolve())
    raw_out = _output_setting(args.output)
    if args.output or os.environ.get(C.ENV_OUTPUT_DIR):
        os.environ[C.ENV_OUTPUT_DIR] = ui_output(raw_out)
    window, line = ui_partitions(raw_out)
    home = ensure_dagster_home()
    os.environ.update(window)
    print(line, flush=True)
    # `dagster dev` (in dagster itself; `dg dev` comes with the dev extra) runs the webserver and
    # the daemon; run from the instance's folder, it finds its dagster.yaml where it expects it
    command = [sys.executable, "-W", "ignore:Function `dev_command` is superseded"]
    command += ["-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml")]
    command += ["-h", "127.0.0.1", "-p", str(args.port)]
    print(
        f"distill: the UI at http://127.0.0.1:{args.port} on the instance in {home} "
        "(webserver and daemon; Ctrl-C stops both)",
        flush=True,
    )
    # a caught SIGINT becomes the default one in the child, even when distill itself was started
    # with SIGINT ignored (in the background): `dagster dev` stops on SIGINT, and on SIGTERM only
    # through its SIGINT handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server = subprocess.Popen(command, cwd=home)

    def stop(_signum: int, _frame: object) -> None:
        server.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, stop)
    while True:
        try:
            server.wait()
            return 0 if server.returncode in (0, -signal.SIGINT) else server.returncode
        except KeyboardInterrupt:
            # Ctrl-C reached the server too; wait for it to stop its webserver and daemon
            continue


def ui_output(raw_out: str) -> str:
    """The output setting for the webserver and daemon: a local path made absolute, since they
    run from the instance's folder (a relative one would name a folder there); a URL as is."""
    from distill_assets.lib.storage import is_remote

    return raw_out if is_remote(raw_out) else str(Path(raw_out).resolve())


def ui_partitions(raw_out: str) -> tuple[dict[str, str], str]:
    """The partition settings ``distill ui`` gives the webserver and daemon, and the line saying
    which days the lineage shows. Neither DISTILL_PARTITION_START nor DISTILL_PARTITION_END
    set: the first and last evidence day in the output (the days its runs covered), so a new
    user's graph is not years of "missing" days; nothing on disk yet (or a URL output): the
    defaults. A value the user set always wins, and a bad one stops here, naming it."""
    from distill_assets.lib.layout import evidence_days, partition_end, partition_start
    from distill_assets.lib.storage import is_remote

    names = (C.ENV_PARTITION_START, C.ENV_PARTITION_END)
    given = {name: os.environ[name] for name in names if os.environ.get(name)}
    try:
        first = partition_start(given.get(C.ENV_PARTITION_START))
        last = partition_end(given.get(C.ENV_PARTITION_END), first)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    change = f"set {C.ENV_PARTITION_START} / {C.ENV_PARTITION_END} (ISO dates) to show other days"
    if given:
        settings = ", ".join(f"{name}={value}" for name, value in given.items())
        shown = f"{first}...{last or 'tomorrow'}"
        return {}, f"distill: the lineage shows the daily partitions {shown} (as set: {settings})"
    span = None if is_remote(raw_out) else evidence_days(Path(raw_out))
    if span is None:
        return {}, (
            f"distill: the lineage shows the daily partitions {first}...tomorrow (no evidence "
            f"days in {raw_out} yet); {change}"
        )
    window = {C.ENV_PARTITION_START: span[0].isoformat(), C.ENV_PARTITION_END: span[1].isoformat()}
    return window, (
        f"distill: the lineage shows the daily partitions {span[0]}...{span[1]}, the evidence "
        f"days in {raw_out} (restart after a run adds days); {change}"
    )


def drift_line(out: Path, run_id: str) -> str:
    """The run's drift severity in one line (the last the command prints on success), read from
    drift.json as written (lib/drift.py DriftReport) without loading the model's library."""
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


def _check_sources(
    out: Path, source: Path | None, imports: list[ImportSpec], replace: bool
) -> None:
    """Refuse sources that would mix with those the output was built from, or (``--replace``)
    forget the old ones: their evidence and scored runs are removed before the run."""
    from distill_assets.lib.sources import replace_sources, source_names, sources_conflict

    problem = sources_conflict(out, source_names(source, imports))
    if problem is None:
        return
    if not replace:
        raise UserError(problem)
    from distill_assets.lib.locking import live_holder

    holder = live_holder(out)
    if holder is not None:
        raise UserError(f"--replace: output {out} is in use by run {holder.get('run_id')}")
    removed = replace_sources(out)
    print(
        f"distill: --replace: removed {', '.join(removed)} of {out} (built from other sources)",
        flush=True,
    )


def per_day_steps(span: str) -> list[list[str]]:
    """Arguments of the runs of a per-day backfill over ``span``, in the order it needs: every
    day's evidence index, then every day's scoring (a day reads the index of the days around
    it), then every unpartitioned asset (the exports read every scored day)."""
    first, _, last = span.partition("...")
    days = [str(day) for day in _days(date.fromisoformat(first), date.fromisoformat(last))]
    steps = []
    for asset in (C.ASSET_EVIDENCE_INDEX, C.ASSET_SCORED_RUNS):
        steps += [["--select", asset, "--partition", day] for day in days]
    daily = (C.ASSET_EVIDENCE_INDEX, C.ASSET_SCORED_RUNS)
    rest = [asset for asset in C.ASSET_STAGE if asset not in daily]
    steps.append(["--select", ",".join(rest)])
    return steps


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


# quarantined records of one reason printed one by one by ``distill import``; the rest counted
IMPORT_SHOWN = 10


def cmd_import(args: argparse.Namespace) -> int:
    """Convert one foreign source into evidence JSONL: ``OUT/<name>.jsonl``, written atomically."""
    from distill_assets.lib.evidence import ParseSettings, Record, validate_object
    from distill_assets.lib.importers import make_spec, run_import
    from distill_assets.lib.io import AtomicJsonlWriter, canonical_json

    try:
        spec = make_spec(
            args.kind,
            args.path,
            name=args.name,
            system=args.system,
            domain=getattr(args, "domain", None),
            created_at=args.created_at,
        )
    except ValueError as exc:
        raise UserError(f"import {args.kind}: {exc}") from None
    batch = run_import(spec)
    target = Path(args.out) / f"{spec.name}.jsonl"
    settings = ParseSettings()
    invalid = 0
    counts = dict.fromkeys(C.KINDS, 0)
    if batch.objects:
        with AtomicJsonlWriter(Path(args.out), target.name) as writer:
            for item in batch.objects:
                writer.write_raw(canonical_json(item.obj) + b"\n")
                counts[item.obj["kind"]] += 1
                if not isinstance(validate_object(item.obj, settings), Record):
                    invalid += 1
    from distill_assets.lib.importers import left_out_summary

    shown: dict[tuple[str, str], int] = {}
    for failure in batch.failures:
        key = (failure.disposition, failure.reason)
        shown[key] = shown.get(key, 0) + 1
        if failure.disposition == C.DISPOSITION_QUARANTINED and shown[key] > IMPORT_SHOWN:
            continue  # the summary line below counts them all
        print(
            f"distill import: {failure.disposition} ({failure.reason}): {failure.message}",
            file=sys.stderr,
        )
    for (disposition, reason), n in shown.items():
        if disposition == C.DISPOSITION_QUARANTINED and n > IMPORT_SHOWN:
            print(
                f"distill import: ... and {n - IMPORT_SHOWN} more {disposition} ({reason})",
                file=sys.stderr,
            )
    for warning in batch.warnings:
        print(f"distill import: warning: {warning}", file=sys.stderr)
    made = ", ".join(f"{n} {kind}s" for kind, n in counts.items() if n)
    where = f"-> {target}" if made else f"nothing imported; {target} left as it was"
    files = f"{len(batch.files)} file(s) of {spec.path}"
    print(f"distill import: {made or 'no records'} from {files} {where}")
    left_out = left_out_summary(batch.failures, invalid)
    if left_out:
        print(f"distill import: left out {left_out}", file=sys.stderr)
    if not batch.objects:
        return 1
    return 1 if args.strict and (batch.failures or invalid) else 0


def _verdict_items(path: Path) -> list[tuple[int, object]]:
    """Items of a verdict file: JSON lines, a JSON list, or a Langfuse page ``{"data": [...]}``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror})") from None
    try:
        whole = orjson.loads(data)
    except orjson.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and isinstance(whole.get("data"), list):
        whole = whole["data"]
    if isinstance(whole, list):
        return list(enumerate(whole, start=1))
    items: list[tuple[int, object]] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if raw.strip():
            try:
                items.append((number, orjson.loads(raw)))
            except orjson.JSONDecodeError:
                items.append((number, None))
    return items


def verdict_to_review(item: object, reviewer: str | None, created_at: str) -> dict | None:
    """One verdict (distill's shape, or a Langfuse score) as review evidence; None if unusable.

    distill: ``{"run_id" | "id", "verdict", "score"?, "reviewer"?, "comment"?, "created_at"?}``;
    Langfuse: a score ``{"name": "verdict", "traceId", "stringValue" | "value", "comment"?,
    "createdAt"?, "authorUserId"?}`` whose trace id is the queue row's id (the run id).
    """
    if not isinstance(item, dict):
        return None
    if "traceId" in item:
        if item.get("name") != "verdict":
            return None
        verdict = item.get("stringValue") or item.get("value")
        run_id = item.get("traceId")
        who = item.get("authorUserId") or reviewer
        when = item.get("createdAt") or item.get("timestamp") or created_at
        score = None
    else:
        verdict = item.get("verdict")
        run_id = item.get("run_id") or item.get("id")
        who = item.get("reviewer") or reviewer
        when = item.get("created_at") or created_at
        score = item.get("score")
    review = {"kind": C.KIND_REVIEW, "run_id": run_id, "verdict": verdict, "created_at": when}
    if score is not None:
        review["score"] = score
    if who:
        review["reviewer"] = who
    if isinstance(item.get("comment"), str) and item["comment"]:
        review["comment"] = item["comment"]
    return review


def cmd_review_import(args: argparse.Namespace) -> int:
    """Turn reviewers' verdicts into review evidence: ``OUT/<name>.jsonl``, written atomically."""
    from distill_assets.lib.evidence import ParseSettings, Record, validate_object
    from distill_assets.lib.io import AtomicJsonlWriter, canonical_json

    created_at = args.created_at or datetime.now(UTC).isoformat().replace("+00:00", "Z")
    settings = ParseSettings()
    good: list[dict] = []
    bad = 0
    for number, item in _verdict_items(Path(args.path)):
        review = verdict_to_review(item, args.reviewer, created_at)
        if review is None or not isinstance(validate_object(review, settings), Record):
            bad += 1
            # never the item's content: it may quote the run
            print(f"distill review import: item {number} is not a usable verdict", file=sys.stderr)
            continue
        good.append(review)
    target = Path(args.out) / f"{args.name}.jsonl"
    if good:
        with AtomicJsonlWriter(Path(args.out), target.name) as writer:
            for review in good:
                writer.write_raw(canonical_json(review) + b"\n")
    print(
        f"distill review import: {len(good)} review(s) -> {target}"
        + (f", {bad} left out" if bad else "")
    )
    return 1 if bad else 0


def _deep_merge(into: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


_FAILURE_MARKERS = (
    "invalid setting",
    "is in use by run",
    "DagsterInvalidConfigError",
    "Error 1:",
    "blocking asset check",
    "validation failed",
    "chain of custody",
)


def _failure_lines(log_path: Path, limit: int = 8) -> list[str]:
    """The lines of Dagster's log that say why a run failed (our own messages, no input text)."""
    found: list[str] = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        text = line.strip()
        if any(marker in text for marker in _FAILURE_MARKERS) and text not in found:
            found.append(text[:400])
    return found[:limit]


def _report_dirs(out: Path) -> set[str]:
    reports = out / C.REPORTS_DIR
    return {p.name for p in reports.iterdir() if p.is_dir()} if reports.is_dir() else set()


def _lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _require_reports(out: Path) -> None:
    if not out.is_dir():
        raise UserError(
            f"output directory {out} does not exist (pass --output DIR or set {C.ENV_OUTPUT_DIR})"
        )
    if not (out / C.REPORTS_DIR).is_dir():
        raise UserError(
            f"no reports under {out}: nothing has been materialized there yet (pass --output DIR "
            f"or set {C.ENV_OUTPUT_DIR} to where distill materialize wrote)"
        )


def _require_run(out: Path, run_id: str) -> Path:
    _require_reports(out)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", run_id):
        raise UserError(f"not a run id: {run_id!r}")
    directory = out / C.REPORTS_DIR / run_id
    if not directory.is_dir():
        raise UserError(f"unknown run id {run_id} (see `distill receipts list`)")
    return directory


def _print_json(obj: object) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def cmd_receipts_list(args: argparse.Namespace) -> int:
    from distill_assets.lib.reports import load_summary

    out = _output_root(args.output)
    _require_reports(out)
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
        _print_json(rows)
        return 0
    if not rows:
        print("no runs recorded")
    for row in rows:
        verdict = "passed" if row["overall_passed"] else "FAILED"
        print(f"{row['run_id']}  {row['timestamp']}  {verdict:6}  {','.join(row['stages'])}")
    return 0


def cmd_receipts_show(args: argparse.Namespace) -> int:
    from distill_assets.lib.receipts import load_receipt

    out = _output_root(args.output)
    directory = _require_run(out, args.run_id)
    stages = (
        [args.stage] if args.stage else [s for s in C.STAGES if (directory / f"{s}.json").exists()]
    )
    if args.stage and args.stage not in C.STAGES:
        raise UserError(f"unknown stage {args.stage!r}; stages: {', '.join(C.STAGES)}")
    receipts = []
    for stage in stages:
        path = directory / f"{stage}.json"
        if not path.exists():
            raise UserError(f"run {args.run_id} has no receipt for stage {stage}")
        receipts.append(load_receipt(path))
    if args.json:
        payload = [r.model_dump(mode="json") for r in receipts]
        _print_json(payload[0] if args.stage else payload)
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
    _require_reports(out)
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
    order = {stage: n for n, stage in enumerate(C.STAGES)}
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
    out = _output_root(args.output)
    run_id = args.run_id or _latest_run_with(out, "drift.json")
    directory = _require_run(out, run_id)
    path = directory / "drift.json"
    if not path.exists():
        raise UserError(f"run {run_id} has no drift report")
    try:
        report = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path} ({exc})") from None
    code = 3 if str(report.get("severity")) == "alert" and args.fail_on_alert else 0
    if args.json:
        _print_json(report)
        return code  # --fail-on-alert holds with --json too
    for line in drift_lines(report):
        print(line)
    return code


def cmd_synth(args: argparse.Namespace) -> int:
    from distill_assets.devtools.synth import SynthSpec, synthesize

    spec = SynthSpec(runs=args.runs, days=args.days, seed=args.seed)
    problems = spec.errors()
    if problems:
        raise UserError("; ".join(problems))
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty directory")
    summary = synthesize(spec, out, workers=max(1, args.workers))
    sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """The best playbooks for a question, from the published search index."""
    from distill_assets.lib.search import SearchError, published_index, search

    if not 1 <= args.k <= 1000:
        raise UserError(f"-k must be between 1 and 1000, not {args.k}")
    out = _output_root(args.output, (C.INDEX_PATH,))
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
        _print_json([hit.as_dict() for hit in hits])
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
    from distill_assets.lib.trace import TraceError, open_lookup, render_trace, trace

    out = _output_root(args.output, (f"{C.REPORTS_DIR}/*", f"{C.EXPORTS_DIR}/*"))
    _require_reports(out)
    try:
        lookup = open_lookup(out, args.run)
        try:
            answer = trace(lookup, args.id)
        finally:
            lookup.close()
    except TraceError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        _print_json(answer)
    else:
        print("\n".join(render_trace(answer)))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    """What changed in the datasets between two runs, and why."""
    from distill_assets.lib.diff import diff, render_diff
    from distill_assets.lib.trace import TraceError

    out = _output_root(args.output, (f"{C.REPORTS_DIR}/*", f"{C.EXPORTS_DIR}/*"))
    _require_reports(out)
    try:
        answer = diff(out, args.run_a, args.run_b, everything=args.all)
    except TraceError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        _print_json(answer)
    else:
        print("\n".join(render_diff(answer)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--output", help=f"output directory (default ${C.ENV_OUTPUT_DIR} or out/)")
    sub = parser.add_subparsers(dest="command", required=True)

    mat = sub.add_parser(
        "materialize", parents=[common], help="run the whole graph (dagster asset materialize)"
    )
    mat.add_argument(
        "--source", help=f"evidence directory (default ${C.ENV_SOURCE_DIR} or fixtures)"
    )
    mat.add_argument("--select", default="*", help="Dagster asset selection (default '*')")
    mat.add_argument("--partition-range", help="START...END days (default: the sources' days)")
    mat.add_argument(
        "--config-json",
        dest="config",
        action="append",
        help="Dagster run config as JSON (repeatable)",
    )
    mat.add_argument("-v", "--verbose", action="store_true", help="show Dagster's logs")
    mat.add_argument(
        "--per-day",
        action="store_true",
        help=f"one run per day instead of one run over the range (also ${C.ENV_BACKFILL}=per_day)",
    )
    mat.add_argument(
        "--multiprocess",
        action="store_true",
        help="run steps in subprocesses (parallel exports) instead of in-process",
    )
    mat.add_argument(
        "--replace",
        action="store_true",
        help="the output was built from other sources: rebuild it from these only",
    )
    mat.set_defaults(func=cmd_materialize)

    ui = sub.add_parser(
        "ui",
        parents=[common],
        help="the Dagster UI and daemon on the project's instance (127.0.0.1)",
    )
    ui.add_argument(
        "--source", help=f"evidence directory (default ${C.ENV_SOURCE_DIR} or fixtures)"
    )
    ui.add_argument("-p", "--port", type=int, default=DEFAULT_UI_PORT, help="default %(default)s")
    ui.set_defaults(func=cmd_ui)

    synth = sub.add_parser("synth", help="write a seeded synthetic evidence corpus")
    synth.add_argument("--runs", type=int, required=True, help="number of runs")
    synth.add_argument("--days", type=int, default=30, help="days the corpus spans (default 30)")
    synth.add_argument("--seed", type=int, default=1, help="seed: same seed, same bytes")
    synth.add_argument("--out", required=True, help="directory to create (must be empty)")
    synth.add_argument("--workers", type=int, default=1, help="generating processes")
    synth.set_defaults(func=cmd_synth)
    imp = sub.add_parser(
        "import", help="convert foreign agent logs into evidence JSONL (docs/importers.md)"
    )
    isub = imp.add_subparsers(dest="import_kind", required=True)
    for kind, what in (
        (C.IMPORT_TAU_BENCH, "PATH: a τ-bench result file (JSON array) or a folder of them"),
        (C.IMPORT_SWE_BENCH, "ROOT: ROOT/<system>/all_preds.jsonl + results/results.json"),
    ):
        one = isub.add_parser(kind, help=what)
        one.add_argument("path", metavar=what.split(":")[0])
        one.add_argument("--out", required=True, help="directory to write <name>.jsonl into")
        one.add_argument("--name", help="names the source in provenance (default: the kind)")
        one.add_argument("--system", help="system that made the runs (default: from file names)")
        if kind == C.IMPORT_TAU_BENCH:
            one.add_argument("--domain", help="τ-bench domain (default: from the file name)")
        one.add_argument(
            "--created-at", help="ISO 8601 time for runs without one (default: file mtime)"
        )
        one.add_argument(
            "--strict",
            action="store_true",
            help="exit 1 when anything was left out (default: only when nothing was imported)",
        )
        one.set_defaults(func=cmd_import, kind=kind)

    review = sub.add_parser("review", help="review queue verdicts (docs/review.md)")
    vsub = review.add_subparsers(dest="review_command", required=True)
    vimp = vsub.add_parser("import", help="turn verdicts into review evidence JSONL")
    vimp.add_argument("path", help="verdicts: JSON lines, a JSON list or a Langfuse scores page")
    vimp.add_argument("--out", required=True, help="evidence directory to write <name>.jsonl into")
    vimp.add_argument("--name", default="review-verdicts", help="file name (default: %(default)s)")
    vimp.add_argument("--reviewer", help="reviewer for verdicts that name none")
    vimp.add_argument("--created-at", help="ISO 8601 time for verdicts without one (default: now)")
    vimp.set_defaults(func=cmd_review_import)

    receipts = sub.add_parser("receipts", help="read stage receipts")
    rsub = receipts.add_subparsers(dest="receipts_command", required=True)
    rlist = rsub.add_parser("list", parents=[common], help="list recorded runs")
    rlist.add_argument("--json", action="store_true")
    rlist.set_defaults(func=cmd_receipts_list)
    rshow = rsub.add_parser("show", parents=[common], help="show a run's receipts")
    rshow.add_argument("run_id")
    rshow.add_argument("--stage", help="only this stage")
    rshow.add_argument("--json", action="store_true")
    rshow.set_defaults(func=cmd_receipts_show)

    find = sub.add_parser(
        "search", parents=[common], help="the best playbooks for a question (docs/rag.md)"
    )
    find.add_argument("query", help="free text, e.g. 'rotate the staging TLS certificates'")
    find.add_argument("-k", type=int, default=5, help="how many playbooks (default 5)")
    find.add_argument("--json", action="store_true")
    find.add_argument(
        "--mode",
        choices=("bm25", "dense", "hybrid"),
        default="bm25",
        help="ranking: BM25 (default), dense embeddings, or both fused (needs a dense index)",
    )
    find.set_defaults(func=cmd_search)

    tr = sub.add_parser(
        "trace",
        parents=[common],
        help="where a dataset row, run, task or evidence record came from (docs/operations.md)",
    )
    tr.add_argument("id", help="a row id (sft-, pair-, kto-, pb-), run id, task id or evidence id")
    tr.add_argument("--run", help="read the kept version of this run (default: the published one)")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_trace)

    df = sub.add_parser(
        "diff", parents=[common], help="what changed in the datasets between two runs, and why"
    )
    df.add_argument("run_a", nargs="?", help="the earlier run (default: the second-last)")
    df.add_argument("run_b", nargs="?", help="the later run (default: the last)")
    df.add_argument("--all", action="store_true", help="list every detail, not the first 10")
    df.add_argument("--json", action="store_true")
    df.set_defaults(func=cmd_diff)

    drift = sub.add_parser("drift", parents=[common], help="show a run's drift report")
    drift.add_argument("run_id", nargs="?", help="a run id (default: the latest run)")
    drift.add_argument("--json", action="store_true")
    drift.add_argument("--fail-on-alert", action="store_true", help="exit 3 on an alert")
    drift.set_defaults(func=cmd_drift)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"distill: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`distill receipts list | head`): stop quietly; point stdout at
        # /dev/null so the interpreter's final flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
