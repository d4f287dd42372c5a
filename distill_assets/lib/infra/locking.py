"""One run at a time per output directory: a lock file naming the run that holds it.

The first stage of a run takes ``reports/run.lock``; later stages of the same run pass through;
the run's last stage releases it. A second run that finds the lock held by a live run fails at
once with a message naming the holder. A lock whose holder is gone (its process no longer
exists on this host, or the Dagster instance knows the run has finished) is stale and is taken
over, and the takeover is logged.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.infra.io import write_bytes_atomic
from distill_assets.lib.records.receipts import UNPINNED, Provenance, reports_lock

LOCK_PATH = f"{C.REPORTS_DIR}/run.lock"


class OutputLocked(RuntimeError):
    """Another live run holds the output directory."""


def coordinator_pid() -> int:
    """The process that lives as long as the run: this one, or the parent of a step process."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid else os.getpid()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(out_root: Path) -> dict[str, Any] | None:
    path = out_root / LOCK_PATH
    if not path.exists():
        return None
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return {"run_id": "?", "pid": -1, "host": "?", "since": "?"}


def live_holder(out_root: Path) -> dict[str, Any] | None:
    """The run holding the output, unless its lock is stale by its process (on this host)."""
    holder = read_lock(out_root)
    if holder is None:
        return None
    if holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1))):
        return None
    return holder


def acquire(
    out_root: Path,
    run_id: str,
    run_finished: Callable[[str], bool] = lambda _run: False,
    log: Callable[[str], None] = lambda _msg: None,
    provenance: Provenance = UNPINNED,
) -> bool:
    """Take the output directory for ``run_id`` or raise OutputLocked naming the holder.

    The lock says since when it is held, stamped by ``provenance`` (unpinned: the wall
    clock). Returns True when the lock was newly taken (the run's first stage), False when the
    run already held it.
    """
    with reports_lock(out_root):
        holder = read_lock(out_root)
        if holder is not None and holder.get("run_id") != run_id:
            stale = (
                holder.get("host") == socket.gethostname() and not _alive(int(holder["pid"]))
            ) or run_finished(str(holder.get("run_id")))
            if not stale:
                raise OutputLocked(
                    f"output directory {out_root} is in use by run {holder['run_id']} "
                    f"(pid {holder['pid']} on {holder['host']}, since {holder['since']}); it is "
                    "released when that run ends and recovered automatically once its process "
                    f"is gone (or delete {out_root / LOCK_PATH} if you know it is)"
                )
            log(f"recovered a stale lock of run {holder.get('run_id')} (pid {holder.get('pid')})")
        if holder is not None and holder.get("run_id") == run_id:
            return False
        write_bytes_atomic(
            out_root / LOCK_PATH,
            orjson.dumps(
                {
                    "run_id": run_id,
                    "pid": coordinator_pid(),
                    "host": socket.gethostname(),
                    "since": provenance.recorded_at(),
                }
            ),
        )
        return True


def sweep_temp_files(out_root: Path) -> int:
    """Remove temporary files a killed run left behind; only the lock holder may call this."""
    removed = 0
    for top in (C.EVIDENCE_DIR, C.SCORED_DIR, C.REPORTS_DIR, C.VERSIONS_DIR):
        base = out_root / top
        if not base.is_dir():
            continue
        for path in base.rglob(".*.tmp"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def release(out_root: Path, run_id: str) -> None:
    with reports_lock(out_root):
        holder = read_lock(out_root)
        if holder is not None and holder.get("run_id") == run_id:
            (out_root / LOCK_PATH).unlink(missing_ok=True)
