"""The ``distill`` argument parser, one small function per verb group, and the dispatch: a
:class:`UserError` prints one line and exits 2, a closed pipe ends quietly."""

from __future__ import annotations

import argparse
import os
import sys

from distill_assets.cli.common import UserError
from distill_assets.cli.importing import cmd_import, cmd_review_import, cmd_synth
from distill_assets.cli.inspect import (
    cmd_diff,
    cmd_drift,
    cmd_receipts_list,
    cmd_receipts_show,
    cmd_search,
    cmd_trace,
)
from distill_assets.cli.materialize import DEFAULT_UI_PORT, cmd_materialize, cmd_ui
from distill_assets.lib import constants as C

# the package docstring's first line
DESCRIPTION = (
    "The ``distill`` command: run the graph, import foreign logs, read receipts and drift reports."
)
SOURCE_HELP = f"evidence directory (default ${C.ENV_SOURCE_DIR} or fixtures)"

Subparsers = argparse._SubParsersAction  # argparse names no public type for add_subparsers()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill", description=DESCRIPTION)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--output", help=f"output directory (default ${C.ENV_OUTPUT_DIR} or out/)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_materialize(sub, common)
    add_ui(sub, common)
    add_synth(sub)
    add_import(sub)
    add_review(sub)
    add_receipts(sub, common)
    add_search(sub, common)
    add_trace(sub, common)
    add_diff(sub, common)
    add_drift(sub, common)
    return parser


def add_materialize(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    mat = sub.add_parser(
        "materialize", parents=[common], help="run the whole graph (dagster asset materialize)"
    )
    mat.add_argument("--source", help=SOURCE_HELP)
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


def add_ui(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    ui = sub.add_parser(
        "ui",
        parents=[common],
        help="the Dagster UI and daemon on the project's instance (127.0.0.1)",
    )
    ui.add_argument("--source", help=SOURCE_HELP)
    ui.add_argument("-p", "--port", type=int, default=DEFAULT_UI_PORT, help="default %(default)s")
    ui.set_defaults(func=cmd_ui)


def add_synth(sub: Subparsers) -> None:
    synth = sub.add_parser("synth", help="write a seeded synthetic evidence corpus")
    synth.add_argument("--runs", type=int, required=True, help="number of runs")
    synth.add_argument("--days", type=int, default=30, help="days the corpus spans (default 30)")
    synth.add_argument("--seed", type=int, default=1, help="seed: same seed, same bytes")
    synth.add_argument("--out", required=True, help="directory to create (must be empty)")
    synth.add_argument("--workers", type=int, default=1, help="generating processes")
    synth.set_defaults(func=cmd_synth)


def add_import(sub: Subparsers) -> None:
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


def add_review(sub: Subparsers) -> None:
    review = sub.add_parser("review", help="review queue verdicts (docs/review.md)")
    vsub = review.add_subparsers(dest="review_command", required=True)
    vimp = vsub.add_parser("import", help="turn verdicts into review evidence JSONL")
    vimp.add_argument("path", help="verdicts: JSON lines, a JSON list or a Langfuse scores page")
    vimp.add_argument("--out", required=True, help="evidence directory to write <name>.jsonl into")
    vimp.add_argument("--name", default="review-verdicts", help="file name (default: %(default)s)")
    vimp.add_argument("--reviewer", help="reviewer for verdicts that name none")
    vimp.add_argument("--created-at", help="ISO 8601 time for verdicts without one (default: now)")
    vimp.set_defaults(func=cmd_review_import)


def add_receipts(sub: Subparsers, common: argparse.ArgumentParser) -> None:
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


def add_search(sub: Subparsers, common: argparse.ArgumentParser) -> None:
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


def add_trace(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    tr = sub.add_parser(
        "trace",
        parents=[common],
        help="where a dataset row, run, task or evidence record came from (docs/operations.md)",
    )
    tr.add_argument("id", help="a row id (sft-, pair-, kto-, pb-), run id, task id or evidence id")
    tr.add_argument("--run", help="read the kept version of this run (default: the published one)")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_trace)


def add_diff(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    df = sub.add_parser(
        "diff", parents=[common], help="what changed in the datasets between two runs, and why"
    )
    df.add_argument("run_a", nargs="?", help="the earlier run (default: the second-last)")
    df.add_argument("run_b", nargs="?", help="the later run (default: the last)")
    df.add_argument("--all", action="store_true", help="list every detail, not the first 10")
    df.add_argument("--json", action="store_true")
    df.set_defaults(func=cmd_diff)


def add_drift(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    drift = sub.add_parser("drift", parents=[common], help="show a run's drift report")
    drift.add_argument("run_id", nargs="?", help="a run id (default: the latest run)")
    drift.add_argument("--json", action="store_true")
    drift.add_argument("--fail-on-alert", action="store_true", help="exit 3 on an alert")
    drift.set_defaults(func=cmd_drift)


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
