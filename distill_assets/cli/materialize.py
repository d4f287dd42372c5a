"""``distill materialize`` and ``distill ui``: the plumbing that starts Dagster on the project's
instance (DAGSTER_HOME, the partition range of the sources, import sources from run config or
the environment, the equivalent ``dagster asset materialize`` command, a per-day backfill's
steps) and the summary printed after a run. Nothing here loads the stages' libraries before
Dagster starts (distill_tests/test_fixture_startup.py).

Length: ``materialize`` and ``ui`` share the instance, the partition range and the import-source
plumbing; split by verb, that plumbing would be a third module both import.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from distill_assets.cli.common import (
    PROJECT_ROOT,
    UserError,
    line_count,
    output_root,
    output_setting,
    plural,
    source_root,
)
from distill_assets.cli.inspect import drift_line, run_summary_lines
from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.infra.layout import run_ids

if TYPE_CHECKING:
    from distill_assets.lib.evidence.importers import ImportSpec

DEFAULT_UI_PORT = 3000


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
    from distill_assets.lib.evidence.format import parse_timestamp
    from distill_assets.lib.evidence.importers import run_import

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
    from distill_assets.lib.infra.layout import partition_end, partition_start, source_date_range

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
    from distill_assets.lib.evidence.importers import parse_specs

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
    from distill_assets.lib.infra.storage import is_remote

    raw_out = output_setting(args.output)
    remote = is_remote(raw_out)
    out = output_root(args.output)
    source = _evidence_source(args.source, imports)
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
    base += _config_arguments(config, args.multiprocess)
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
        out = output_root(args.output, (f"{C.REPORTS_DIR}/*", f"{C.EXPORTS_DIR}/*"))
    runs = [run for run in run_ids(out) if run not in runs_before]
    _print_outcome(out, shown, remote, runs, equivalent)
    if done.returncode != 0:
        if not args.verbose:
            for line in _failure_lines(log_path):
                print(f"distill: {line}", file=sys.stderr)
        where = "above" if args.verbose else f"in {log_path}"
        print(f"distill: materialization FAILED; Dagster's log is {where}", file=sys.stderr)
    return done.returncode


def _evidence_source(arg: str | None, imports: list[ImportSpec]) -> Path | None:
    """The evidence directory (made absolute in the environment for Dagster), or None when
    only import sources are configured and no source was given."""
    if not (arg or os.environ.get(C.ENV_SOURCE_DIR) or not imports):
        return None
    source = source_root(arg)
    if not source.is_dir():
        raise UserError(
            f"source directory {source} does not exist (pass --source DIR or set "
            f"{C.ENV_SOURCE_DIR})"
        )
    os.environ[C.ENV_SOURCE_DIR] = str(source.resolve())
    return source


def _config_arguments(config: list[dict], multiprocess: bool) -> list[str]:
    """``--config-json`` with the run config merged and brought up to date (each moved key
    said on stderr), or nothing when there is none."""
    # the default executor runs in-process; a named one (DISTILL_EXECUTOR) takes its own config
    if multiprocess and not os.environ.get(C.ENV_EXECUTOR):
        config.append({"execution": {"config": {"multiprocess": {}}}})
    if not config:
        return []
    merged: dict = {}
    for item in config:
        _deep_merge(merged, item)
    from distill_assets.lib.infra.runconfig import upgrade_run_config

    merged, moved = upgrade_run_config(merged)
    for path in moved:
        print(
            f"distill: run config {path} is now ops.{C.OP_EXPORTS}.config.{path[4:]} "
            "(one step makes every export; docs/datasets.md)",
            file=sys.stderr,
        )
    return ["--config-json", orjson.dumps(merged).decode()]


def _print_outcome(out: Path, shown: str, remote: bool, runs: list[str], equivalent: str) -> None:
    """What the run made: its summary, where each dataset is (under the URL ``shown`` for a
    ``remote`` output), the equivalent Dagster command, the UI link and, last, the drift line."""
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
        *S.HOLDOUT_PATHS.values(),
    ):
        path = out / rel
        state = plural(line_count(path), "row") if path.exists() else "not written"
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


def cmd_ui(args: argparse.Namespace) -> int:
    """The Dagster UI and daemon (``dagster dev``) on the project's instance, on 127.0.0.1, so
    the runs ``distill materialize`` and the plain Dagster command made are there, and the
    drift sensor judges new ones."""
    if args.source:
        os.environ[C.ENV_SOURCE_DIR] = str(Path(args.source).resolve())
    raw_out = output_setting(args.output)
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
    from distill_assets.lib.infra.storage import is_remote

    return raw_out if is_remote(raw_out) else str(Path(raw_out).resolve())


def ui_partitions(raw_out: str) -> tuple[dict[str, str], str]:
    """The partition settings ``distill ui`` gives the webserver and daemon, and the line saying
    which days the lineage shows. Neither DISTILL_PARTITION_START nor DISTILL_PARTITION_END
    set: the first and last evidence day in the output (the days its runs covered), so a new
    user's graph is not years of "missing" days; nothing on disk yet (or a URL output): the
    defaults. A value the user set always wins, and a bad one stops here, naming it."""
    from distill_assets.lib.infra.layout import evidence_days, partition_end, partition_start
    from distill_assets.lib.infra.storage import is_remote

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


def _check_sources(
    out: Path, source: Path | None, imports: list[ImportSpec], replace: bool
) -> None:
    """Refuse sources that would mix with those the output was built from, or (``--replace``)
    forget the old ones: their evidence and scored runs are removed before the run."""
    from distill_assets.lib.evidence.sources import replace_sources, source_names, sources_conflict

    problem = sources_conflict(out, source_names(source, imports))
    if problem is None:
        return
    if not replace:
        raise UserError(problem)
    from distill_assets.lib.infra.locking import live_holder

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
    for asset in S.DAILY_ASSETS:
        steps += [["--select", asset, "--partition", day] for day in days]
    rest = [asset for asset in S.ASSET_STAGE if asset not in S.DAILY_ASSETS]
    steps.append(["--select", ",".join(rest)])
    return steps


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


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
