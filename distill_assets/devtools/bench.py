"""The benchmark: ``python -m distill_assets.bench --runs N [--days D]``.

In one process it (1) makes or reuses a seeded synthetic corpus under ``.cache/bench/``,
(2) measures the floor, which is reading every source file once, parsing each line with orjson
and hashing it with sha256, (3) materializes the whole graph in-process on a temporary Dagster
instance as a single run over every day of the corpus, and (4) prints one JSON line: ``runs``,
``source_bytes``, ``floor_s``, ``total_s``, ``ratio`` (total_s / floor_s), per-stage seconds
and records per second (from the receipts' ``duration_ms``), per-step seconds of the checks,
and ``peak_rss_mib``, the most memory the process (with any worker processes it started) held at
once. The source files are read once untimed before the floor, so both the floor and the run
find them in the page cache. ``--stage-cpu`` instead prints the CPU seconds of each stage's
library function run alone, against the floor's. See docs/performance.md.

Length: the benchmark's three modes (the graph, ``--stage-cpu``, ``--fixtures``) share the
corpus cache, the floor and the process-tree memory sampler.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import psutil

from distill_assets.devtools.synth import SynthSpec
from distill_assets.lib import constants as C
from distill_assets.lib import stages as S

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = PROJECT_ROOT / ".cache" / "bench"
_MARKER = "synth.json"


def corpus_dir(cache: Path, spec: SynthSpec) -> Path:
    return cache / f"corpus-r{spec.runs}-d{spec.days}-s{spec.seed}"


def ensure_corpus(spec: SynthSpec, cache: Path, workers: int) -> tuple[Path, dict[str, Any]]:
    """The cached corpus of ``spec``, generated first when absent (or left incomplete)."""
    target = corpus_dir(cache, spec)
    marker = target / _MARKER
    if marker.exists():
        return target / "evidence", orjson.loads(marker.read_bytes())
    if target.exists():
        shutil.rmtree(target)
    staging = cache / f".{target.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    # generated in a child process, so its memory never counts towards the benchmark's peak
    started = time.perf_counter()
    command = [sys.executable, "-m", "distill_assets.cli", "synth", "--runs", str(spec.runs)]
    command += ["--days", str(spec.days), "--seed", str(spec.seed), "--workers", str(workers)]
    command += ["--out", str(staging / "evidence")]
    done = subprocess.run(command, check=False, stdout=subprocess.PIPE)
    if done.returncode != 0:
        raise SystemExit(f"bench: generating the corpus failed ({done.returncode})")
    summary = orjson.loads(done.stdout.splitlines()[-1])
    summary["synth_s"] = round(time.perf_counter() - started, 2)
    (staging / _MARKER).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    staging.rename(target)
    return target / "evidence", summary


def source_files(source: Path) -> list[Path]:
    return sorted(p for p in source.rglob("*.jsonl") if p.is_file())


def warm(paths: list[Path]) -> None:
    """Read every file once so the floor and the run both start from the page cache."""
    for path in paths:
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass


def measure_floor(paths: list[Path]) -> tuple[float, int, int]:
    """Seconds to read each file once, parse each line with orjson and sha256 it."""
    loads = orjson.loads
    sha256 = hashlib.sha256
    lines = 0
    size = 0
    started = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=1 << 20) as fh:
            for raw in fh:
                size += len(raw)
                lines += 1
                sha256(raw).digest()
                try:
                    loads(raw)
                except orjson.JSONDecodeError:
                    pass
    return time.perf_counter() - started, size, lines


def _watch(parent_pid: int, interval: float, stop: Any, peak: Any, when: Any) -> None:
    """Sample the proportional set size (PSS) of ``parent_pid`` and its other descendants."""
    parent = psutil.Process(parent_pid)
    me = os.getpid()
    while True:
        total = 0
        for proc in [parent, *parent.children(recursive=True)]:
            if proc.pid == me:
                continue
            try:
                total += proc.memory_full_info().pss
            except psutil.Error:
                continue
        if total > peak.value:
            peak.value = total
            when.value = time.time()
        if stop.wait(interval):
            return


class PeakMemory:
    """The most memory this process and the workers it starts held at once.

    A separate watcher process samples the PSS of the whole process tree, so pages a forked
    worker shares with its parent count once; the watcher itself is left out. (A thread would
    do, but the stages fork workers only when the process runs a single thread.)
    """

    def __init__(self, interval: float = 0.2) -> None:
        context = multiprocessing.get_context("fork")
        self._stop = context.Event()
        self._peak = context.Value("Q", 0)
        self._when = context.Value("d", 0.0)
        self._watcher = context.Process(
            target=_watch,
            args=(os.getpid(), interval, self._stop, self._peak, self._when),
            daemon=True,
        )

    @property
    def peak(self) -> int:
        return int(self._peak.value)

    @property
    def peak_time(self) -> float:
        """When the peak was sampled (seconds since the epoch)."""
        return float(self._when.value)

    def __enter__(self) -> PeakMemory:
        self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._watcher.join()


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class _GcClock:
    """Time this process spends in the cyclic garbage collector."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> _GcClock:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def temp_instance(instance_dir: Path, kind: str = "sqlite") -> Any:
    """A temporary Dagster instance: SQLite storage in ``instance_dir`` (the default) or in
    memory."""
    import dagster as dg

    instance_dir.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        return dg.DagsterInstance.local_temp(str(instance_dir))
    return dg.DagsterInstance.ephemeral()


def materialize(
    source: Path, out: Path, instance: Any, first: date, last: date
) -> tuple[float, Any]:
    """Materialize every asset and check in-process as one run over ``first..last`` on
    ``instance``; returns the seconds it took and the run's result."""
    import dagster as dg

    from distill_assets.definitions import defs
    from distill_assets.runtime.resource import DistillResource

    definitions = defs()
    resources = {"distill": DistillResource(source_dir=str(source), output_dir=str(out))}
    started = time.perf_counter()
    result = dg.materialize(
        [*definitions.assets, *definitions.asset_checks],  # type: ignore[list-item]
        instance=instance,
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
        raise_on_error=False,
    )
    elapsed = time.perf_counter() - started
    return elapsed, result


def stage_figures(out: Path, run_id: str) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for stage in S.STAGES:
        path = out / C.REPORTS_DIR / run_id / f"{stage}.json"
        if not path.exists():
            continue
        receipt = orjson.loads(path.read_bytes())
        seconds = receipt["duration_ms"] / 1000
        records = receipt["stats"]["records_in"]
        figures[stage] = {
            "seconds": round(seconds, 3),
            "records_in": records,
            "records_per_s": round(records / seconds) if seconds > 0 else None,
        }
    return figures


def step_seconds(instance: Any, run_id: str) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for stat in instance.get_run_step_stats(run_id):
        if stat.start_time is not None and stat.end_time is not None:
            seconds[stat.step_key] = round(stat.end_time - stat.start_time, 3)
    return dict(sorted(seconds.items()))


def step_at(instance: Any, run_id: str, moment: float) -> str | None:
    """The step that was running at ``moment`` (seconds since the epoch), if any."""
    for stat in instance.get_run_step_stats(run_id):
        if stat.start_time is not None and stat.end_time is not None:
            if stat.start_time <= moment <= stat.end_time:
                return stat.step_key
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = SynthSpec(runs=args.runs, days=args.days, seed=args.seed)
    problems = spec.errors()
    if problems:
        raise SystemExit("bench: " + "; ".join(problems))
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    source, summary = ensure_corpus(spec, cache, args.synth_workers)
    with PeakMemory() as memory:
        paths = source_files(source)
        warm(paths)
        floor_s, source_bytes, source_lines = measure_floor(paths)
        work = Path(tempfile.mkdtemp(prefix="run-", dir=cache))
        try:
            out = work / "out"
            first = date.fromisoformat(summary["first_day"])
            last = date.fromisoformat(summary["last_day"])
            load_before = os.getloadavg()[0]
            cpu_before = _cpu_seconds()
            gc_clock = _GcClock()
            with gc_clock:
                instance = temp_instance(work / "instance", args.instance)
                total_s, result = materialize(source, out, instance, first, last)
            cpu_s = _cpu_seconds() - cpu_before
            load_after = os.getloadavg()[0]
            run_id = result.run_id
            stages = stage_figures(out, run_id)
            steps = step_seconds(instance, run_id)
            peak_step = step_at(instance, run_id, memory.peak_time)
            summary_path = out / C.REPORTS_DIR / run_id / "summary.json"
            overall = (
                orjson.loads(summary_path.read_bytes())["overall_passed"]
                if summary_path.exists()
                else False
            )
        finally:
            if args.keep_output:
                print(f"bench: output kept in {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stage_steps = {S.STAGE_ASSET[s] for s in S.STAGES} | {C.OP_EXPORTS}
    check_steps = {k: v for k, v in steps.items() if k not in stage_steps}
    return {
        "runs": spec.runs,
        "days": spec.days,
        "seed": spec.seed,
        "source_bytes": source_bytes,
        "source_files": len(paths),
        "source_lines": source_lines,
        "floor_s": round(floor_s, 3),
        "total_s": round(total_s, 3),
        "ratio": round(total_s / floor_s, 2) if floor_s > 0 else None,
        "success": bool(result.success) and bool(overall),
        "stages": stages,
        "checks_s": round(sum(check_steps.values()), 3),
        "dagster_s": round(total_s - sum(steps.values()), 3),
        "gc_s": round(gc_clock.seconds, 3),
        "cpu_s": round(cpu_s, 2),
        "steps_s": steps,
        "peak_rss_mib": round(max(memory.peak, self_peak) / 2**20, 1),
        "peak_tree_pss_mib": round(memory.peak / 2**20, 1),
        "peak_rss_self_mib": round(self_peak / 2**20, 1),
        "peak_step": peak_step,
        "cpus": os.cpu_count(),
        "instance": args.instance,
        "loadavg": [round(load_before, 2), round(load_after, 2)],
    }


def stage_cpu(source: Path, summary: dict[str, Any], work: Path) -> dict[str, Any]:
    """CPU seconds of each stage's library function, and of each asset's checks, run alone in
    this process (one worker), and of the floor measured the same way: where the time goes,
    independent of other load."""
    from distill_assets.lib.datasets.export_pass import ExportPlan, run_exports
    from distill_assets.lib.datasets.exporter import ExportSettings
    from distill_assets.lib.evidence.collect import collect, list_source_files
    from distill_assets.lib.evidence.format import ParseSettings
    from distill_assets.lib.infra import layout
    from distill_assets.lib.playbooks.playbook import PlaybookSettings
    from distill_assets.lib.playbooks.search import IndexSettings, build_index
    from distill_assets.lib.publishing.publish import publish
    from distill_assets.lib.records.receipts import (
        UNPINNED,
        build_receipt,
        update_ledger,
        write_receipt,
    )
    from distill_assets.lib.scoring import ScoringPolicy, score
    from distill_assets.lib.verify.checks import CHECKS, run_checks

    paths = source_files(source)
    warm(paths)
    started = time.process_time()
    measure_floor(paths)
    floor = time.process_time() - started
    days = layout.day_range(
        date.fromisoformat(summary["first_day"]), date.fromisoformat(summary["last_day"])
    )
    out, export = work / "out", ExportSettings()
    receipts: dict[str, Any] = {}

    def stage(result: Any) -> Any:
        # receipts and the ledger as the graph writes them: the exports trust collect's secret
        # verdicts through them (stamped unpinned: a scratch directory whose times nobody reads)
        receipt = build_receipt(result, "bench", [], 0, UNPINNED)
        receipts[S.STAGE_ASSET[result.stage]] = receipt
        write_receipt(out, receipt)
        update_ledger(out, "bench", result.stage, result.outputs, result.output_root)
        return result

    def exports() -> None:
        plan = ExportPlan.every(out, export, PlaybookSettings())
        for result in run_exports(out, plan, workers=1).values():
            stage(result)

    steps: list[tuple[str, Any]] = [
        (
            C.STAGE_COLLECT,
            lambda: stage(collect(list_source_files(source), out, days, ParseSettings())),
        ),
        (C.STAGE_SCORE, lambda: stage(score(out, days, ScoringPolicy(), 1))),
        ("exports (one pass: extraction, rag, sft, preference, kto, review)", exports),
        (C.STAGE_INDEX, lambda: stage(build_index(out, IndexSettings()))),
        *(
            (
                f"checks: {asset}",
                lambda asset=asset: run_checks(asset, list(CHECKS[asset]), receipts[asset], out),
            )
            for asset in CHECKS
        ),
        (C.STAGE_PUBLISH, lambda: publish(out, "bench")),
    ]
    seconds: dict[str, float] = {}
    for name, step in steps:
        gc.collect()
        began = time.process_time()
        step()
        seconds[name] = round(time.process_time() - began, 3)
    return {
        "floor_cpu_s": round(floor, 3),
        "stage_cpu_s": seconds,
        "stage_cpu_floors": {name: round(value / floor, 2) for name, value in seconds.items()},
        "total_cpu_floors": round(sum(seconds.values()) / floor, 2),
    }


def _timed(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of a command (its output discarded); it must succeed."""
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace")[-2000:]
        raise SystemExit(f"bench: {' '.join(command[:4])} failed ({done.returncode}): {tail}")
    return elapsed


def fixtures(repeats: int, cache: Path) -> dict[str, Any]:
    """Wall seconds of ``distill materialize`` on the bundled fixtures against a trivial
    one-asset graph through the same ``dagster asset materialize`` path (in-process executor,
    a fresh SQLite instance each time), the median of ``repeats`` runs after one warm-up."""
    work = Path(tempfile.mkdtemp(prefix="fixtures-", dir=cache))
    trivial = [sys.executable, "-m", "dagster", "asset", "materialize"]
    trivial += ["-m", "distill_assets.devtools.bench_trivial", "--select", "*"]
    in_process = {"execution": {"config": {"in_process": {}}}}
    trivial += ["--config-json", orjson.dumps(in_process).decode()]
    measured: dict[str, list[float]] = {"fixtures": [], "trivial": []}
    try:
        for attempt in range(repeats + 1):
            for name in ("fixtures", "trivial"):
                home = work / f"home-{name}-{attempt}"
                home.mkdir()
                (home / "dagster.yaml").symlink_to(PROJECT_ROOT / "dagster.yaml")
                env = {**os.environ, "DAGSTER_HOME": str(home)}
                env.pop(C.ENV_SOURCE_DIR, None)
                if name == "fixtures":
                    out = work / f"out-{attempt}"
                    command = [sys.executable, "-m", "distill_assets.cli", "materialize"]
                    command += ["--output", str(out)]
                else:
                    command = trivial
                seconds = _timed(command, env)
                if attempt:  # the first round warms the page cache and the bytecode caches
                    measured[name].append(seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fixture_s = sorted(measured["fixtures"])[len(measured["fixtures"]) // 2]
    trivial_s = sorted(measured["trivial"])[len(measured["trivial"]) // 2]
    return {
        "fixtures_s": round(fixture_s, 3),
        "trivial_s": round(trivial_s, 3),
        "ratio": round(fixture_s / trivial_s, 2),
        "repeats": repeats,
        "fixtures_runs_s": [round(s, 3) for s in measured["fixtures"]],
        "trivial_runs_s": [round(s, 3) for s in measured["trivial"]],
        "cpus": os.cpu_count(),
        "loadavg": round(os.getloadavg()[0], 2),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distill_assets.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, help="runs in the synthetic corpus")
    parser.add_argument("--days", type=int, default=30, help="days the corpus spans (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="corpus cache directory")
    parser.add_argument(
        "--synth-workers", type=int, default=2, help="processes generating a missing corpus"
    )
    parser.add_argument(
        "--keep-output", action="store_true", help="keep the output directory and instance"
    )
    parser.add_argument(
        "--stage-cpu",
        action="store_true",
        help="instead: CPU seconds of each stage run alone, against the floor's (docs)",
    )
    parser.add_argument(
        "--fixtures",
        action="store_true",
        help="instead: wall seconds of `distill materialize` on the bundled fixtures against a "
        "trivial one-asset graph through the same `dagster asset materialize` path",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each command with --fixtures (median)"
    )
    parser.add_argument(
        "--instance",
        choices=("sqlite", "memory"),
        default="sqlite",
        help="temporary Dagster instance storage (default sqlite, as `distill materialize`)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.fixtures:
        cache = Path(args.cache)
        cache.mkdir(parents=True, exist_ok=True)
        figures = fixtures(max(1, args.repeats), cache)
        sys.stdout.write(orjson.dumps(figures).decode() + "\n")
        return 0
    if args.runs is None:
        parser.error("--runs is required (or --fixtures)")
    args.days = min(args.days, args.runs)
    if args.stage_cpu:
        spec = SynthSpec(runs=args.runs, days=args.days, seed=args.seed)
        cache = Path(args.cache)
        cache.mkdir(parents=True, exist_ok=True)
        source, summary = ensure_corpus(spec, cache, args.synth_workers)
        work = Path(tempfile.mkdtemp(prefix="cpu-", dir=cache))
        try:
            figures = {**stage_cpu(source, summary, work), "runs": spec.runs, "days": spec.days}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        sys.stdout.write(orjson.dumps(figures).decode() + "\n")
        return 0
    figures = run(args)
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    return 0 if figures["success"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
