"""Worker processes for the stages that can use more than one CPU.

Stages hand pure functions of files to a process pool and write what comes back in a fixed
order, so the bytes they write do not depend on the number of processes.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor

MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """One worker per CPU, at most MAX_DEFAULT_WORKERS."""
    return max(1, min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1))


# libraries that run native thread pools once used (polars' and pyarrow's): a process that
# imported them may hold threads Python does not see, and forking it can deadlock the child
_THREADED = ("polars", "pyarrow")
# what the fork server imports once, so the workers it forks start ready
_PRELOAD = [
    "distill_assets.lib.evidence.collect",
    "distill_assets.lib.scoring",
    "distill_assets.lib.datasets.export_pass",
    "distill_assets.lib.verify.checks",
    "distill_assets.lib.verify.schemas",
    "distill_assets.lib.verify.firewall",
]


def pool_context() -> multiprocessing.context.BaseContext:
    """Fork when this process runs a single thread and no native thread pool (cheap, nothing
    to re-import); otherwise a fork server, since forking a process whose other threads may
    hold locks is unsafe."""
    if (
        threading.active_count() == 1
        and not any(name in sys.modules for name in _THREADED)
        and "fork" in multiprocessing.get_all_start_methods()
    ):
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def process_pool(workers: int, fresh: bool = False) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes; ``fresh``: a new process for each task (memory a task
    used goes with its process), when the pool does not fork from this process."""
    context = pool_context()
    per_task = 1 if fresh and context.get_start_method() != "fork" else None
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, max_tasks_per_child=per_task
    )


# a step process holding more than this after a stage hands its free memory back
TRIM_ABOVE_BYTES = 512 * 1024 * 1024


def release_memory() -> None:
    """Hand memory a stage freed back to the system (glibc's trim) when the process holds much:
    a long run's step process does not keep every stage's high-water mark."""
    import psutil

    if psutil.Process().memory_info().rss < TRIM_ABOVE_BYTES:
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
