"""What the ``distill`` verbs share: the user error they print as one line, where the output and
the sources are (flag, environment, default), and small printing helpers.

Errors a user can cause (unknown run id, missing output directory, bad arguments) print one line
to stderr and exit non-zero; nothing here prints input text.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import orjson

from distill_assets.lib import constants as C

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def output_setting(arg: str | None) -> str:
    return arg or os.environ.get(C.ENV_OUTPUT_DIR) or str(PROJECT_ROOT / "out")


def output_root(arg: str | None, reads: tuple[str, ...] = (f"{C.REPORTS_DIR}/*",)) -> Path:
    """The output directory; for a URL, a local copy of the files the command ``reads``."""
    from distill_assets.lib.infra.storage import (
        OutputLocation,
        StorageError,
        default_staging_dir,
        is_remote,
    )

    raw = output_setting(arg)
    if not is_remote(raw):
        return Path(raw)
    try:
        return OutputLocation(raw, default_staging_dir(raw, os.environ)).view(reads)
    except (ImportError, ValueError, OSError, StorageError) as exc:
        raise UserError(f"cannot read output {raw}: {exc}") from exc


def source_root(arg: str | None) -> Path:
    raw = arg or os.environ.get(C.ENV_SOURCE_DIR) or str(PROJECT_ROOT / "fixtures" / "evidence")
    return Path(raw)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 row``, ``2 rows``: a count with its noun."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def line_count(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def require_reports(out: Path) -> None:
    if not out.is_dir():
        raise UserError(
            f"output directory {out} does not exist (pass --output DIR or set {C.ENV_OUTPUT_DIR})"
        )
    if not (out / C.REPORTS_DIR).is_dir():
        raise UserError(
            f"no reports under {out}: nothing has been materialized there yet (pass --output DIR "
            f"or set {C.ENV_OUTPUT_DIR} to where distill materialize wrote)"
        )


def require_run(out: Path, run_id: str) -> Path:
    require_reports(out)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", run_id):
        raise UserError(f"not a run id: {run_id!r}")
    directory = out / C.REPORTS_DIR / run_id
    if not directory.is_dir():
        raise UserError(f"unknown run id {run_id} (see `distill receipts list`)")
    return directory


def print_json(obj: object) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")
