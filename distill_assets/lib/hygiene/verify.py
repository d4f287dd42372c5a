"""Re-verification of written files for the blocking ``no_secrets`` check."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

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


def verify_no_secrets(root: Path, relpaths: list[str]) -> SecretReport:
    """Scan every row of the given files (under ``root``) for a live secret."""
    report = SecretReport()
    for relpath in relpaths:
        path = root / relpath
        if not path.exists():
            continue
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                report.rows += 1
                found = has_live_secret(orjson.loads(raw))
                if found:
                    report.count += 1
                    report.types.update(found)
                    if len(report.samples) < report.sample_limit:
                        report.samples.append(
                            {"file": relpath, "row": number, "types": sorted(set(found))}
                        )
    return report
