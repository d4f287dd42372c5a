"""Benchmark of the playbook search index: build time, size and query latency at scale.

    python -m distill_assets.bench_search --playbooks 100000 [--queries 500] [--seed 7]

Generates synthetic RAG playbooks (the rows ``rag_playbooks`` writes: a title, a Markdown text
with steps and an answer, tags) over a Zipf-distributed vocabulary, builds the index with the
same function the ``index`` stage uses, then asks known-item questions (a few words of one
playbook plus a common word) and times each. Prints one JSON line (docs/rag.md has figures).
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.infra.io import AtomicJsonlWriter
from distill_assets.lib.playbooks.search import (
    Encoder,
    IndexSettings,
    open_index,
    search,
    write_index,
)

_SYLLABLES = [a + b for a in "bcdfghklmnprstvz" for b in ("a", "e", "i", "o", "u", "ai", "ou")]
_TOOLS = [
    "get_user_details",
    "search_flights",
    "update_reservation",
    "run_sql",
    "read_file",
    "edit_file",
    "run_tests",
    "scale_deployment",
    "get_metrics",
    "dns_add",
    "issue_refund",
    "send_email",
]


def vocabulary(rng: random.Random, size: int) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def playbook_rows(count: int, seed: int) -> tuple[list[str], object]:
    """The vocabulary and a generator of ``count`` synthetic RAG rows."""
    rng = random.Random(seed)
    words = vocabulary(rng, 20_000)
    weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(words))))

    def rows():
        for number in range(count):
            title = " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(5, 9)))
            steps = [
                f"{n}. `{rng.choice(_TOOLS)}`(id={rng.randrange(10**6)}) → "
                + " ".join(rng.choices(words, cum_weights=weights, k=12))
                for n in range(1, rng.randint(1, 6) + 1)
            ]
            problem = " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(20, 60)))
            answer = " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(30, 90)))
            text = (
                f"# {title}\n\n## Problem\n{problem}\n\n## Steps taken\n"
                + "\n".join(steps)
                + f"\n\n## Verified solution (accepted, score 1)\n{answer}\n"
            )
            yield {
                "id": f"pb-{number:024x}",
                "task_id": f"task-{number}",
                "title": title,
                "text": text,
                "source_run_ids": [f"run-{number}-0"],
                "quality": C.QUALITY_ACCEPTED,
                "score": 1.0,
                "failed_run_ids": [],
                "tags": {"category": "bench", "agents": ["bench-agent"], "tools": []},
            }

    return words, rows()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def run(
    playbooks: int, queries: int, seed: int, workdir: Path, mode: str = "bm25"
) -> dict[str, object]:
    words, rows = playbook_rows(playbooks, seed)
    source = workdir / "playbooks.jsonl"
    with AtomicJsonlWriter(workdir, source.name) as writer:
        writer.write_rows(rows)
    index = workdir / "index.sqlite"
    dense = mode != "bm25"
    encoder = Encoder() if dense else None
    started = time.perf_counter()
    built = write_index(source, index, IndexSettings(dense=dense), encoder)
    build_s = time.perf_counter() - started

    rng = random.Random(seed + 1)
    targets = sorted(rng.sample(range(playbooks), min(queries, playbooks)))
    texts: dict[int, str] = {}
    with open(source, "rb") as fh:
        for number, raw in enumerate(fh):
            if number in targets:
                row = orjson.loads(raw)
                texts[number] = row["title"] + " " + row["text"]
    db = open_index(index)
    latencies: list[float] = []
    cpu: list[float] = []
    found = 0
    try:
        for number in targets:
            body = [w for w in texts[number].split() if w.isalpha() and len(w) > 3]
            question = " ".join(rng.sample(body, min(4, len(body))) + [words[rng.randrange(50)]])
            started, started_cpu = time.perf_counter(), time.process_time()
            hits = search(db, question, 5, mode, encoder)
            latencies.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
            found += any(hit.task_id == f"task-{number}" for hit in hits)
    finally:
        db.close()
    return {
        "mode": mode,
        "playbooks": built.rows,
        "queries": len(latencies),
        "jsonl_bytes": source.stat().st_size,
        "build_s": round(build_s, 3),
        "index_bytes": built.bytes,
        "query_ms_p50": round(statistics.median(latencies), 3),
        "query_ms_p95": round(percentile(latencies, 95), 3),
        "query_ms_p99": round(percentile(latencies, 99), 3),
        "query_ms_max": round(max(latencies), 3),
        "query_cpu_ms_p50": round(statistics.median(cpu), 3),
        "query_cpu_ms_p95": round(percentile(cpu, 95), 3),
        "recall_at_5": round(found / len(latencies), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "sqlite": sqlite3.sqlite_version,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "seed": seed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill_assets.bench_search")
    parser.add_argument("--playbooks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", help="where to write the files (default: a temporary one)")
    parser.add_argument(
        "--mode",
        choices=("bm25", "dense", "hybrid"),
        default="bm25",
        help="dense and hybrid embed every playbook (needs the dense extra)",
    )
    args = parser.parse_args(argv)
    if args.playbooks < 1 or args.queries < 1:
        parser.error("--playbooks and --queries must be at least 1")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="distill-bench-search-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args.playbooks, args.queries, args.seed, workdir, args.mode)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(orjson.dumps(report).decode("utf-8") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
