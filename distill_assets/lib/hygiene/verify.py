"""Re-verification of written files for the blocking ``no_secrets`` check."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from distill_assets.lib.hygiene.prefilter import flag_lines
from distill_assets.lib.hygiene.secrets import has_live_secret


@dataclass
class SecretReport:
    """Rows scanned and the rows still holding a secret (file, row number, types; never text)."""

    rows: int = 0
    count: int = 0
    types: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    sample_limit: int = 20

    @property
    def passed(self) -> bool:
        return self.count == 0


# files are scanned in blocks of about this many bytes, cut at line ends (memory stays bounded
# whatever the size of a dataset file)
BLOCK_BYTES = 16 * 1024 * 1024


def _blocks(path: Path, size: int) -> Iterator[bytes]:
    """The file in blocks of whole lines of about ``size`` bytes (the last may lack its line
    end): each block is one read plus the rest of its last line."""
    with open(path, "rb") as fh:
        while block := fh.read(size):
            if not block.endswith(b"\n"):
                block += fh.readline()
            yield block


def _line_ends(block: bytes) -> np.ndarray:
    """Where each line of ``block`` ends (its newline), in one native pass."""
    return np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)


def _rows(block: bytes, ends: np.ndarray) -> int:
    """How many lines of ``block`` hold something (empty lines are not rows)."""
    lines = len(ends) + (0 if block.endswith(b"\n") else 1)
    empty = int(np.count_nonzero(np.diff(ends) == 1)) + (1 if block.startswith(b"\n") else 0)
    return lines - empty


def verify_no_secrets(
    root: Path, relpaths: list[str], block_bytes: int = BLOCK_BYTES
) -> SecretReport:
    """Scan every row of the given files (under ``root``) for a live secret: the native
    prefilter reads every byte, and the exact rules read only the rows it flags."""
    report = SecretReport()
    for relpath in relpaths:
        path = root / relpath
        if not path.exists():
            continue
        first = 1  # the row number of each block's first line
        for block in _blocks(path, block_bytes):
            ends = _line_ends(block)
            report.rows += _rows(block, ends)
            flagged = flag_lines(block).tolist()
            lines = block.split(b"\n") if flagged else []
            for index in flagged:
                raw = lines[index]
                if not raw.strip():
                    continue
                found = has_live_secret(orjson.loads(raw))
                if found:
                    report.count += 1
                    report.types.update(found)
                    if len(report.samples) < report.sample_limit:
                        report.samples.append(
                            {"file": relpath, "row": first + index, "types": sorted(set(found))}
                        )
            first += len(ends)
    return report
