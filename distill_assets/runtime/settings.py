"""The settings fixed when the definitions load, and the one place they are read from the
environment: the executor (DISTILL_EXECUTOR), how a backfill is split into runs
(DISTILL_BACKFILL) and the daily partitions' bounds (DISTILL_PARTITION_START,
DISTILL_PARTITION_END).

An executor or a partitions definition cannot change during a run, so these are read when
``definitions.py`` loads the ``defs/`` folder; what a run resolves when it starts (paths,
thresholds, the pins records are stamped with) is read in resource.py.
"""

from __future__ import annotations

import os
from datetime import date

from distill_assets.lib import constants as C
from distill_assets.lib.infra.layout import partition_end, partition_start
from distill_assets.runtime.resource import ConfigError

BACKFILL_SINGLE_RUN = "single_run"
BACKFILL_PER_DAY = "per_day"


def executor_choice() -> str:
    """DISTILL_EXECUTOR as set: ``""`` (the in-process-first default) or the executor's name,
    judged where the executor is made (defs/shared/executor.py)."""
    return os.environ.get(C.ENV_EXECUTOR, "")


def backfill_mode() -> str:
    """How a backfill of the daily assets is split into runs: DISTILL_BACKFILL, ``single_run``
    (the default: one run over the whole range) or ``per_day`` (one run per day). The datasets
    are byte-identical either way."""
    mode = os.environ.get(C.ENV_BACKFILL) or BACKFILL_SINGLE_RUN
    if mode not in (BACKFILL_SINGLE_RUN, BACKFILL_PER_DAY):
        raise ConfigError(
            C.ENV_BACKFILL, mode, f"must be {BACKFILL_SINGLE_RUN} or {BACKFILL_PER_DAY}"
        )
    return mode


def partition_bounds() -> tuple[date, date | None]:
    """The first and the last daily partition (inclusive; None: no last one set), from
    DISTILL_PARTITION_START and DISTILL_PARTITION_END; a ValueError names the bad setting."""
    first = partition_start(os.environ.get(C.ENV_PARTITION_START))
    return first, partition_end(os.environ.get(C.ENV_PARTITION_END), first)
