"""The ``distill`` resource (where evidence is read from and datasets are written to, the drift
thresholds, the workers) and the one reader of the environment while a run works (and while
the drift sensor ticks): paths, thresholds, the progress interval and the pins records are
stamped with (``provenance``: DISTILL_RECORDED_AT, DISTILL_GIT_COMMIT), which lib/ takes as
arguments.

Nothing here reads the environment at import time (the settings fixed when the definitions
load, the executor, the backfill mode and the partition bounds, are read in settings.py):
paths and thresholds are resolved when a run starts, and a bad setting fails the run before
anything is written, naming the setting (``ConfigError``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
from pydantic import Field

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.importers import ImportSpec, check_distinct, make_spec, parse_specs
from distill_assets.lib.infra import progress
from distill_assets.lib.infra.parallel import default_workers
from distill_assets.lib.infra.storage import OutputLocation, Workspace, default_staging_dir
from distill_assets.lib.records.drift import DriftThresholds
from distill_assets.lib.records.receipts import Provenance

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE_DIR = PROJECT_ROOT / "fixtures" / "evidence"
DEFAULT_OUTPUT_DIR = PROJECT_ROOT / "out"


class ConfigError(dg.Failure):
    """A setting is wrong; raised before the stage writes anything."""

    def __init__(self, setting: str, value: object, problem: str) -> None:
        super().__init__(description=f"invalid setting {setting}={value!r}: {problem}")


class ImportSource(dg.Config):
    """A foreign layout of agent runs read by an importer (docs/importers.md)."""

    kind: str = Field(description="Importer: tau-bench or swe-bench.")
    path: str = Field(description="A τ-bench result file or folder; a SWE-bench experiment root.")
    name: str | None = Field(
        default=None, description="Names its files in provenance as <name>:<path> (default: kind)."
    )
    system: str | None = Field(
        default=None, description="System that made the runs (default: from the file name)."
    )
    domain: str | None = Field(
        default=None, description="τ-bench domain (default: from the file name)."
    )
    created_at: str | None = Field(
        default=None, description="ISO 8601 time of runs without one (default: the file's mtime)."
    )


class DistillResource(dg.ConfigurableResource):
    """Where evidence is read from and datasets are written to, and the drift thresholds.

    Unset fields fall back to the environment (DISTILL_SOURCE_DIR, DISTILL_OUTPUT_DIR,
    DISTILL_IMPORTS, DISTILL_DRIFT_WARN_PCT, DISTILL_DRIFT_ALERT_PCT, DISTILL_WORKERS), then to
    the bundled fixtures (unless import sources are configured), ``out/`` and one worker per
    CPU. The output may be an fsspec URL (``s3://bucket/prefix``): steps then work in a local
    staging directory synced with it (lib/infra/storage.py, docs/deploy.md).
    """

    source_dir: str | None = Field(
        default=None, description="Evidence directory (default: $DISTILL_SOURCE_DIR or fixtures)."
    )
    output_dir: str | None = Field(
        default=None,
        description="Output directory or fsspec URL (default: $DISTILL_OUTPUT_DIR or out/).",
    )
    staging_dir: str | None = Field(
        default=None,
        description="Local mirror of a URL output (default: $DISTILL_STAGING_DIR or ~/.cache).",
    )
    drift_warn_pct: float | None = Field(
        default=None,
        description=f"Percent change that warns (default {DriftThresholds.warn_pct:g}).",
    )
    drift_alert_pct: float | None = Field(
        default=None,
        description=f"Percent change that alerts (default {DriftThresholds.alert_pct:g}).",
    )
    workers: int | None = Field(
        default=None,
        description="Processes a stage may use (default: $DISTILL_WORKERS, else one per CPU up "
        "to 4; 1 keeps all work in the step's process). Outputs are the same for any value.",
    )
    drift_min_base: int | None = Field(
        default=None,
        description=f"Counts below this never drive a percentage (default "
        f"{DriftThresholds.min_base}).",
    )
    alert_webhook_url: str | None = Field(
        default=None,
        description="Drift alerts are POSTed here (default: $DISTILL_ALERT_WEBHOOK_URL).",
    )
    max_skipped_share: float | None = Field(
        default=None,
        description="Fail a stage that skips more than this share (0..1) of the records it "
        "reads (default: $DISTILL_MAX_SKIPPED_SHARE, else no limit).",
    )

    def skipped_limit(self) -> float | None:
        """The largest share of skipped records a stage may have (None: no limit)."""
        setting, raw = "max_skipped_share", self.max_skipped_share
        if raw is None:
            text = os.environ.get(C.ENV_MAX_SKIPPED_SHARE)
            if not text:
                return None
            setting = C.ENV_MAX_SKIPPED_SHARE
            try:
                raw = float(text)
            except ValueError as exc:
                raise ConfigError(setting, text, "not a number") from exc
        if not 0.0 <= raw <= 1.0:
            raise ConfigError(setting, raw, "must be a share between 0 and 1")
        return raw

    def webhook_url(self) -> str | None:
        return self.alert_webhook_url or os.environ.get(C.ENV_ALERT_WEBHOOK) or None

    imports: list[ImportSource] | None = Field(
        default=None,
        description="Import sources read with the evidence directory (default: $DISTILL_IMPORTS, "
        "a JSON list of objects with the same fields).",
    )

    def import_specs(self) -> list[ImportSpec]:
        """The configured import sources, validated (paths must exist, names be distinct)."""
        if self.imports is None:
            raw = os.environ.get(C.ENV_IMPORTS)
            if not raw:
                return []
            try:
                return parse_specs(raw)
            except ValueError as exc:
                raise ConfigError(C.ENV_IMPORTS, raw[:200], str(exc)) from exc
        specs = []
        for number, item in enumerate(self.imports):
            try:
                specs.append(
                    make_spec(
                        item.kind,
                        item.path,
                        name=item.name,
                        system=item.system,
                        domain=item.domain,
                        created_at=item.created_at,
                    )
                )
            except ValueError as exc:
                raise ConfigError(f"imports[{number}]", item.path, str(exc)) from exc
        try:
            check_distinct(specs)
        except ValueError as exc:
            raise ConfigError("imports", None, str(exc)) from exc
        return specs

    def evidence_sources(self) -> tuple[Path | None, list[ImportSpec]]:
        """The evidence directory and the import sources; with imports configured and no
        directory set, only the imports are read (the bundled fixtures are not mixed in)."""
        specs = self.import_specs()
        if specs and self.source_dir is None and not os.environ.get(C.ENV_SOURCE_DIR):
            return None, specs
        return self.source_root(), specs

    def source_names(self) -> list[str]:
        """The run's sources as the output records them (lib/evidence/sources.py)."""
        from distill_assets.lib.evidence.sources import source_names

        source, imports = self.evidence_sources()
        return source_names(source, imports)

    def check_sources(self) -> None:
        """Refuse, before anything is written, a run whose sources would mix with the other
        sources a local output was built from (one line naming both, and the ways out)."""
        from distill_assets.lib.evidence.sources import sources_conflict

        if self.output_location().remote:
            return
        problem = sources_conflict(self.output_root(), self.source_names())
        if problem is not None:
            raise dg.Failure(description=problem)

    def source_root(self) -> Path:
        setting, raw = "source_dir", self.source_dir
        if raw is None:
            setting, raw = C.ENV_SOURCE_DIR, os.environ.get(C.ENV_SOURCE_DIR)
        path = Path(raw) if raw else DEFAULT_SOURCE_DIR
        if not path.exists():
            raise ConfigError(setting, str(path), "the source directory does not exist")
        if not path.is_dir():
            raise ConfigError(setting, str(path), "the source path is not a directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(setting, str(path), "the source directory is not readable")
        return path

    def _output_setting(self) -> tuple[str, str]:
        setting, raw = "output_dir", self.output_dir
        if raw is None:
            setting, raw = C.ENV_OUTPUT_DIR, os.environ.get(C.ENV_OUTPUT_DIR)
        return setting, raw or str(DEFAULT_OUTPUT_DIR)

    def output_location(self) -> OutputLocation:
        """The output as configured: a local directory or a URL (with its staging directory)."""
        setting, raw = self._output_setting()
        staging = Path(self.staging_dir) if self.staging_dir else None
        location = OutputLocation(raw, staging or default_staging_dir(raw, os.environ))
        if location.remote:
            try:
                location.store()
            except (ImportError, ValueError, OSError) as exc:
                raise ConfigError(setting, raw, f"cannot open it ({exc})") from exc
        return location

    @contextmanager
    def workspace(self, reads: Sequence[str]) -> Iterator[Workspace]:
        """The directory a step works in: the output itself, or a synced copy of a URL's files."""
        location = self.output_location()
        root = None if location.remote else self.output_root()
        with location.workspace(root, reads) as workspace:
            yield workspace

    def output_root(self) -> Path:
        setting, raw = self._output_setting()
        path = Path(raw)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(setting, str(path), f"cannot create it ({exc.strerror})") from exc
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(setting, str(path), "the output directory is not writable")
        return path

    def worker_count(self) -> int:
        setting, raw = "workers", self.workers
        if raw is None:
            setting, text = C.ENV_WORKERS, os.environ.get(C.ENV_WORKERS)
            if not text:
                return default_workers()
            try:
                raw = int(text)
            except ValueError as exc:
                raise ConfigError(setting, text, "not a whole number") from exc
        if raw < 1:
            raise ConfigError(setting, raw, "must be at least 1")
        return raw

    def thresholds(self) -> DriftThresholds:
        try:
            thresholds = DriftThresholds.from_env(
                os.environ, self.drift_warn_pct, self.drift_alert_pct, self.drift_min_base
            )
        except ValueError as exc:
            raise ConfigError("drift thresholds", None, str(exc)) from exc
        problems = thresholds.errors()
        if problems:
            raise ConfigError(
                "drift thresholds", (thresholds.warn_pct, thresholds.alert_pct), "; ".join(problems)
            )
        return thresholds


def run_tags(distill: DistillResource) -> dict[str, str]:
    """The tags that tell this graph's runs apart: where the evidence came from and where the
    datasets went (a URL without its user and password)."""
    # as configured, without the existence checks: a run of the exports alone needs no source
    try:
        imports = distill.import_specs()
    except ConfigError:
        imports = []
    raw = distill.source_dir or os.environ.get(C.ENV_SOURCE_DIR)
    sources = [str(Path(raw).resolve()) if raw else str(DEFAULT_SOURCE_DIR)]
    if imports and not raw:
        sources = []
    sources += [f"{spec.kind} {spec.path}" for spec in imports]
    _, output = distill._output_setting()
    parts = urlsplit(output)
    if parts.scheme and "@" in parts.netloc:
        output = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    elif not parts.scheme:
        output = str(Path(output).resolve())
    return {C.TAG_SOURCE: ", ".join(sources), C.TAG_OUTPUT: output}


def provenance() -> Provenance:
    """What this process stamps its records with (receipts, summaries, failures, alerts, the
    run lock): DISTILL_RECORDED_AT and DISTILL_GIT_COMMIT when pinned (tests pin the time for
    byte-identical reports), else the wall clock and the checkout's commit."""
    return Provenance(
        pinned_at=os.environ.get(C.ENV_RECORDED_AT) or None,
        pinned_commit=os.environ.get(C.ENV_GIT_COMMIT) or None,
    )


def recorded_now() -> datetime:
    """The moment future timestamps are judged against: DISTILL_RECORDED_AT when pinned."""
    pinned = provenance().pinned_at
    if not pinned:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(pinned)
    except ValueError as exc:
        raise ConfigError(C.ENV_RECORDED_AT, pinned, "not an ISO 8601 timestamp") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def progress_interval() -> float:
    """Seconds between progress lines (DISTILL_PROGRESS_INTERVAL_S, default 5)."""
    raw = os.environ.get(C.ENV_PROGRESS_INTERVAL)
    if not raw:
        return progress.DEFAULT_INTERVAL_S
    try:
        return max(0.0, float(raw))
    except ValueError as exc:
        raise ConfigError(C.ENV_PROGRESS_INTERVAL, raw, "not a number of seconds") from exc
