"""A process that counts under the store lock (kept apart so spawned children skip Dagster)."""

from __future__ import annotations

import time
from pathlib import Path

from distill_assets.lib.infra.storage import RemoteStore


def count_under_lock(url: str, staging: str, times: int) -> None:
    store = RemoteStore.open(url, Path(staging))
    counter = f"{store.base}/counter"
    for _ in range(times):
        with store.lock():
            value = int(store.fs.cat_file(counter)) if store.fs.exists(counter) else 0
            time.sleep(0.002)  # widen the window a lost update would need
            store.fs.pipe_file(counter, str(value + 1).encode())
