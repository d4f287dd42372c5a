"""The ``distill`` verbs that write evidence JSONL: ``import`` (foreign agent logs through
lib/evidence/importers), ``review import`` (reviewers' verdicts through lib/hygiene/verdicts.py)
and ``synth``
(a seeded synthetic corpus, from devtools/). Each writes its file atomically.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

from distill_assets.cli.common import UserError
from distill_assets.lib import constants as C
from distill_assets.lib.hygiene.verdicts import verdict_items, verdict_to_review

# quarantined records of one reason printed one by one by ``distill import``; the rest counted
IMPORT_SHOWN = 10


def cmd_import(args: argparse.Namespace) -> int:
    """Convert one foreign source into evidence JSONL: ``OUT/<name>.jsonl``, written atomically."""
    from distill_assets.lib.evidence.format import ParseSettings, Record, validate_object
    from distill_assets.lib.evidence.importers import make_spec, run_import
    from distill_assets.lib.infra.io import AtomicJsonlWriter, canonical_json

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
    from distill_assets.lib.evidence.importers import left_out_summary

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


def cmd_review_import(args: argparse.Namespace) -> int:
    """Turn reviewers' verdicts into review evidence: ``OUT/<name>.jsonl``, written atomically."""
    from distill_assets.lib.evidence.format import ParseSettings, Record, validate_object
    from distill_assets.lib.infra.io import AtomicJsonlWriter, canonical_json

    created_at = args.created_at or datetime.now(UTC).isoformat().replace("+00:00", "Z")
    settings = ParseSettings()
    good: list[dict] = []
    bad = 0
    path = Path(args.path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror})") from None
    for number, item in verdict_items(data):
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
