"""A quick generator of valid evidence for tests that need volume (kill and lock tests)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import orjson


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus to write: ``runs`` runs spread over ``days`` days from ``first_day``, responses
    of about ``response_chars`` characters, drawn with ``seed``."""

    runs: int
    first_day: date
    days: int
    response_chars: int = 1500
    seed: int = 7


def write_corpus(root: Path, spec: CorpusSpec) -> Path:
    """The corpus ``spec`` under ``root``: each run with a review and an outcome, one file per
    day; 1-3 runs per task so preference pairs form."""
    rng = random.Random(spec.seed)
    words = ["deploy", "index", "retry", "cache", "query", "patch", "token", "queue", "shard"]
    bodies = [
        " ".join(rng.choice(words) for _ in range(spec.response_chars // 6)) for _ in range(64)
    ]
    root.mkdir(parents=True, exist_ok=True)
    handles = {}
    try:
        for i in range(spec.runs):
            day = spec.first_day + timedelta(days=i % spec.days)
            fh = handles.get(day)
            if fh is None:
                fh = handles[day] = open(root / f"{day.isoformat()}.jsonl", "wb")
            stamp = f"{day.isoformat()}T{rng.randrange(0, 20):02d}:{rng.randrange(60):02d}:00Z"
            later = f"{day.isoformat()}T21:{rng.randrange(60):02d}:00Z"
            task = f"task-{i // 2}"
            body = bodies[i % len(bodies)]
            good = rng.random() < 0.6
            run_id = f"run-{i:07d}"
            lines = [
                {
                    "kind": "run",
                    "run_id": run_id,
                    "task_id": task,
                    "agent": "bulk",
                    "category": "ops",
                    "instruction": f"Task {task}: {body[:200]}",
                    "response": f"{i} {body}",
                    "created_at": stamp,
                },
                {
                    "kind": "review",
                    "run_id": run_id,
                    "verdict": "approve" if good else "reject",
                    "created_at": later,
                },
                {
                    "kind": "outcome",
                    "run_id": run_id,
                    "outcome": "success" if good else "failure",
                    "created_at": later,
                },
            ]
            fh.write(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    finally:
        for fh in handles.values():
            fh.close()
    return root
