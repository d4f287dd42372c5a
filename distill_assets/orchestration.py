"""Glue between Dagster and the pure library: partitions, the resource, stage configs, and the one
function every asset uses to run a stage and report it (receipt, drift, metadata, summary).

Nothing here reads the environment at import time but the first and last daily partitions (a
partitions definition is fixed when the definitions load): paths and thresholds are resolved
when a run starts, and a bad setting fails the run before anything is written, naming the setting.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
from pydantic import Field

from distill_assets.lib import constants as C
from distill_assets.lib import progress
from distill_assets.lib.accounting import StageResult, skipped_share_errors
from distill_assets.lib.drift import DriftThresholds
from distill_assets.lib.evidence import ParseSettings
from distill_assets.lib.exports import ExportSettings
from distill_assets.lib.formats import FormatSettings, preview_markdown
from distill_assets.lib.hygiene.curate import HygieneSettings
from distill_assets.lib.hygiene.decontam import EvalSet, load_eval_set, resolve_eval_path
from distill_assets.lib.importers import ImportSpec, check_distinct, make_spec, parse_specs
from distill_assets.lib.layout import (
    CHECK_INPUT_GLOBS,
    STAGE_INPUT_GLOBS,
    partition_end,
    partition_start,
    version_relroot,
)
from distill_assets.lib.locking import OutputLocked, acquire, release, sweep_temp_files
from distill_assets.lib.parallel import default_workers, release_memory
from distill_assets.lib.playbooks import PlaybookSettings
from distill_assets.lib.receipts import (
    StageReceipt,
    load_receipt,
    receipt_metadata,
    receipt_relpath,
)
from distill_assets.lib.reports import CheckRecord, record_checks, record_failure, record_stage
from distill_assets.lib.runconfig import asset_config
from distill_assets.lib.scoring import ScoringPolicy
from distill_assets.lib.search import DEFAULT_DENSE_PACKAGE, IndexSettings
from distill_assets.lib.storage import OutputLocation, Workspace
from distill_assets.lib.versions import open_version

if TYPE_CHECKING:
    from distill_assets.lib.export_pass import ExportPlan

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE_DIR = PROJECT_ROOT / "fixtures" / "evidence"
DEFAULT_OUTPUT_DIR = PROJECT_ROOT / "out"

# The first and last partitions are settings (DISTILL_PARTITION_START, default 2020-01-01;
# DISTILL_PARTITION_END, inclusive, default none), read once when the definitions load: the UI
# counts every day between them as a partition, materialized or missing (`distill ui` sets both
# to the output's evidence days when the user set neither). The last partition is never later
# than tomorrow (UTC), so records up to the one-day horizon have a home; Dagster's end_date is
# exclusive, and end_offset stops there.
try:
    FIRST_DAY = partition_start(os.environ.get(C.ENV_PARTITION_START))
    LAST_DAY = partition_end(os.environ.get(C.ENV_PARTITION_END), FIRST_DAY)
except ValueError as _exc:
    raise dg.DagsterInvariantViolationError(str(_exc)) from None
DAILY = dg.DailyPartitionsDefinition(
    start_date=FIRST_DAY.isoformat(),
    end_date=None if LAST_DAY is None else (LAST_DAY + timedelta(days=1)).isoformat(),
    end_offset=2,
)
SINGLE_RUN = dg.BackfillPolicy.single_run()
PER_DAY = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
BACKFILL_SINGLE_RUN = "single_run"
BACKFILL_PER_DAY = "per_day"


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
    staging directory synced with it (lib/storage.py, docs/deploy.md).
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
        default=None, description="Percent change that warns (default 20)."
    )
    drift_alert_pct: float | None = Field(
        default=None, description="Percent change that alerts (default 50)."
    )
    workers: int | None = Field(
        default=None,
        description="Processes a stage may use (default: $DISTILL_WORKERS, else one per CPU up "
        "to 4; 1 keeps all work in the step's process). Outputs are the same for any value.",
    )
    drift_min_base: int | None = Field(
        default=None, description="Counts below this never drive a percentage (default 10)."
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
                        item.kind, item.path, item.name, item.system, item.domain, item.created_at
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
        """The run's sources as the output records them (lib/sources.py)."""
        from distill_assets.lib.sources import source_names

        source, imports = self.evidence_sources()
        return source_names(source, imports)

    def check_sources(self) -> None:
        """Refuse, before anything is written, a run whose sources would mix with the other
        sources a local output was built from (one line naming both, and the ways out)."""
        from distill_assets.lib.sources import sources_conflict

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
        location = OutputLocation(raw, Path(self.staging_dir) if self.staging_dir else None)
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
                self.drift_warn_pct, self.drift_alert_pct, self.drift_min_base
            )
        except ValueError as exc:
            raise ConfigError("drift thresholds", None, str(exc)) from exc
        problems = thresholds.errors()
        if problems:
            raise ConfigError(
                "drift thresholds", (thresholds.warn_pct, thresholds.alert_pct), "; ".join(problems)
            )
        return thresholds


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


def per_day_backfill(loaded: dg.Definitions) -> dg.Definitions:
    """``loaded`` with its daily-partitioned assets backfilled one run per day."""
    assets = [
        asset.with_attributes(backfill_policy=PER_DAY)
        if isinstance(asset, dg.AssetsDefinition) and asset.partitions_def is not None
        else asset
        for asset in loaded.assets or []
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=loaded.asset_checks,
        schedules=loaded.schedules,
        sensors=loaded.sensors,
        jobs=loaded.jobs,
        resources=loaded.resources,
        executor=loaded.executor,
        loggers=loaded.loggers,
        metadata=loaded.metadata,
    )


def recorded_now() -> datetime:
    """The moment future timestamps are judged against: DISTILL_RECORDED_AT when pinned."""
    pinned = os.environ.get(C.ENV_RECORDED_AT)
    if not pinned:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(pinned)
    except ValueError as exc:
        raise ConfigError(C.ENV_RECORDED_AT, pinned, "not an ISO 8601 timestamp") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class CollectConfig(dg.Config):
    """Limits applied to source lines (docs/evidence-format.md)."""

    max_line_bytes: int = Field(default=8 * 1024 * 1024, description="Longer lines are skipped.")
    future_horizon_hours: float = Field(
        default=24.0, description="Timestamps further ahead of now are quarantined."
    )
    max_messages: int = Field(default=10_000, description="Most chat messages one run may carry.")
    max_messages_depth: int = Field(default=32, description="Deepest nesting of a messages list.")

    def settings(self) -> ParseSettings:
        for name in ("max_line_bytes", "max_messages", "max_messages_depth"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "must be at least 1")
        if not 0 <= self.future_horizon_hours <= 24:
            raise ConfigError(
                "future_horizon_hours",
                self.future_horizon_hours,
                "must be between 0 and 24 (the last partition is tomorrow)",
            )
        return ParseSettings(
            max_line_bytes=self.max_line_bytes,
            future_horizon=timedelta(hours=self.future_horizon_hours),
            max_messages=self.max_messages,
            max_messages_depth=self.max_messages_depth,
            earliest=FIRST_DAY,
            now=recorded_now(),
        )


class ScoringConfig(dg.Config):
    """The scoring policy's thresholds and which evidence wins (docs/scoring.md)."""

    accept_min_score: float = Field(default=0.8, description="Lowest score graded accepted.")
    reward_success_min: float = Field(default=1.0, description="A success needs this reward.")
    reward_failure_max: float = Field(default=0.0, description="Rewards up to this are failure.")
    conflict_policy: str = Field(
        default="human_review",
        description="When reviews and outcomes disagree: human_review, review_wins, outcome_wins.",
    )
    require_review: bool = Field(default=False, description="Accept only with an approval.")
    score_signals: list[str] = Field(
        default_factory=list, description="Outcome meta.signals averaged into the score."
    )
    incomplete_outcome_needs_review: bool = Field(
        default=True, description="An outcome flagged incomplete sends its run to review."
    )
    evidence_window_days: int = Field(
        default=2, description="Days around a run's day searched for its reviews and outcomes."
    )

    def policy(self) -> ScoringPolicy:
        policy = ScoringPolicy(
            accept_min_score=self.accept_min_score,
            reward_success_min=self.reward_success_min,
            reward_failure_max=self.reward_failure_max,
            conflict_policy=self.conflict_policy,  # type: ignore[arg-type]
            require_review=self.require_review,
            score_signals=tuple(self.score_signals),
            incomplete_outcome_needs_review=self.incomplete_outcome_needs_review,
            evidence_window_days=self.evidence_window_days,
        )
        problems = policy.errors()
        if problems:
            raise ConfigError("scoring policy", None, "; ".join(problems))
        return policy


# hygiene settings that must agree across a run (near_dup_threshold may differ per export)
AGREED_HYGIENE = (
    "secret_action",
    "holdout_fraction",
    "eval_set_path",
    "decontam_ngram",
    "decontam_min_overlap",
)


class HygieneConfig(dg.Config):
    """Secrets, holdout and decontamination (docs/safety.md): the same for every asset of a run
    that writes published rows (the run refuses settings that differ between them)."""

    secret_action: str = Field(
        default=C.SECRET_ACTION_QUARANTINE,
        description="A row with a secret: quarantine it (secret_detected) or redact and keep it.",
    )
    holdout_fraction: float = Field(
        default=0.1, description="Share of tasks (by a hash of task_id) held out, in [0, 1)."
    )
    near_dup_threshold: float | None = Field(
        default=0.8, description="MinHash Jaccard threshold of near-duplicate rows (null: off)."
    )
    eval_set_path: str | None = Field(
        default=None,
        description="Evaluation prompts / task ids kept out (absolute, or under the source dir).",
    )
    decontam_ngram: int = Field(default=13, description="Word n-gram size of decontamination.")
    decontam_min_overlap: float = Field(
        default=0.0,
        description="A row is contaminated above this share of an eval prompt's n-grams.",
    )

    def hygiene(self) -> HygieneSettings:
        return HygieneSettings(
            secret_action=self.secret_action,
            holdout_fraction=self.holdout_fraction,
            near_dup_threshold=self.near_dup_threshold,
            eval_set_path=self.eval_set_path,
            decontam_ngram=self.decontam_ngram,
            decontam_min_overlap=self.decontam_min_overlap,
        )

    def eval_path(self, distill: DistillResource) -> Path | None:
        """The evaluation file, resolved (a relative path under the source directory)."""
        if not self.eval_set_path:
            return None
        source, _ = distill.evidence_sources()
        try:
            path = resolve_eval_path(self.eval_set_path, source)
        except ValueError as exc:
            raise ConfigError("eval_set_path", self.eval_set_path, str(exc)) from exc
        if not path.is_file():
            raise ConfigError("eval_set_path", self.eval_set_path, "no such file")
        return path

    def eval_set(self, distill: DistillResource) -> EvalSet | None:
        path = self.eval_path(distill)
        if path is None:
            return None
        try:
            return load_eval_set(path, self.decontam_ngram, self.decontam_min_overlap)
        except ValueError as exc:
            raise ConfigError("eval_set_path", self.eval_set_path, str(exc)) from exc


class ExportConfig(HygieneConfig):
    """Export rules (docs/datasets.md); each export reads the fields that concern it."""

    sft_allow_categories: list[str] | None = Field(
        default=None, description="When set, only these categories reach SFT."
    )
    sft_deny_categories: list[str] | None = Field(
        default=None,
        description="Categories kept out of this export (SFT, KTO, RAG, preference pairs; "
        "default: the unsafe list; [] denies none).",
    )
    min_margin: float = Field(default=0.2, description="Least score gap of a preference pair.")
    max_pairs_per_task: int | None = Field(
        default=None, description="Cap on pairs per task (widest margins kept)."
    )
    rag_include_partial: bool = Field(
        default=True, description="Partially accepted runs may back a playbook."
    )
    sft_format: str = Field(
        default=C.SFT_FORMAT_MESSAGES,
        description="SFT rows: messages (TRL conversational) or prompt_completion.",
    )
    preference_format: str = Field(
        default=C.PREFERENCE_FORMAT_STANDARD,
        description="Preference and KTO rows: standard (strings) or conversational (turns).",
    )
    parquet: bool = Field(
        default=False, description="Also write a Parquet copy beside each JSONL dataset file."
    )
    license: str = Field(
        default=C.DEFAULT_LICENSE, description="License id the dataset cards declare (e.g. mit)."
    )

    def formats(self) -> FormatSettings:
        return FormatSettings(
            sft_format=self.sft_format,
            preference_format=self.preference_format,
            parquet=self.parquet,
            license=self.license,
        )

    def settings(self) -> ExportSettings:
        settings = ExportSettings(
            sft_allow_categories=None
            if self.sft_allow_categories is None
            else tuple(self.sft_allow_categories),
            sft_deny_categories=C.DEFAULT_UNSAFE_SFT_CATEGORIES
            if self.sft_deny_categories is None
            else tuple(self.sft_deny_categories),
            min_margin=self.min_margin,
            max_pairs_per_task=self.max_pairs_per_task,
            rag_include_partial=self.rag_include_partial,
            hygiene=self.hygiene(),
            formats=self.formats(),
        )
        problems = settings.errors()
        if problems:
            raise ConfigError("export settings", None, "; ".join(problems))
        return settings


class PlaybookConfig(HygieneConfig):
    """How much of each run a playbook quotes (docs/rag.md)."""

    max_steps: int = Field(default=40, description="Steps shown per playbook (the rest counted).")
    argument_chars: int = Field(default=160, description="Longest summary of a call's arguments.")
    value_chars: int = Field(default=60, description="Longest single argument value shown.")
    result_chars: int = Field(default=240, description="Longest tool result shown.")
    answer_chars: int = Field(default=400, description="Longest failed run's answer shown.")
    max_divergences: int = Field(default=5, description="Failed runs compared per playbook.")
    title_chars: int = Field(default=80, description="Longest title.")
    deny_categories: list[str] | None = Field(
        default=None,
        description="Categories whose runs no playbook uses (default: the unsafe list; [] none).",
    )

    def settings(self) -> PlaybookSettings:
        problems = self.hygiene().errors()
        if problems:
            raise ConfigError("playbook settings", None, "; ".join(problems))
        fields = self.model_dump(include=set(PlaybookSettings.__dataclass_fields__))
        denied = fields.pop("deny_categories")
        if denied is not None:
            fields["deny_categories"] = tuple(denied)
        settings = PlaybookSettings(**fields)
        problems = settings.errors()
        if problems:
            raise ConfigError("playbook settings", None, "; ".join(problems))
        return settings


class ExportsConfig(dg.Config):
    """The settings of every export of the export pass, each under its asset's name (run config
    ``ops: {exports: {config: {sft_dataset: {...}, ...}}}``; docs/datasets.md)."""

    extracted_playbooks: PlaybookConfig = Field(
        default_factory=PlaybookConfig, description="How much of each run a playbook quotes."
    )
    rag_playbooks: ExportConfig = Field(
        default_factory=ExportConfig, description="Export rules of the RAG playbooks."
    )
    sft_dataset: ExportConfig = Field(
        default_factory=ExportConfig, description="Export rules of the SFT dataset."
    )
    preference_pairs: ExportConfig = Field(
        default_factory=ExportConfig, description="Export rules of the preference pairs."
    )
    kto_dataset: ExportConfig = Field(
        default_factory=ExportConfig, description="Export rules of the KTO dataset."
    )

    def of(self, asset: str) -> Any:
        """The config of one export (the review queue has none: an empty one)."""
        if asset == C.ASSET_REVIEW_QUEUE:
            return HygieneConfig()
        return getattr(self, asset)

    def plan(self, distill: DistillResource, write_root: Path, selected: set[str]) -> ExportPlan:
        """The export pass of the selected assets with their validated settings."""
        from distill_assets.lib.export_pass import ExportPlan

        def export(asset: str) -> tuple[ExportSettings, EvalSet | None] | None:
            if asset not in selected:
                return None
            config = getattr(self, asset)
            return config.settings(), config.eval_set(distill)

        extract = None
        if C.ASSET_EXTRACTED_PLAYBOOKS in selected:
            playbook = self.extracted_playbooks
            extract = (playbook.settings(), playbook.hygiene(), playbook.eval_set(distill))
        return ExportPlan(
            write_root=write_root,
            extract=extract,
            rag=export(C.ASSET_RAG_PLAYBOOKS),
            sft=export(C.ASSET_SFT_DATASET),
            preference=export(C.ASSET_PREFERENCE_PAIRS),
            kto=export(C.ASSET_KTO_DATASET),
            review=C.ASSET_REVIEW_QUEUE in selected,
        )


class IndexConfig(dg.Config):
    """BM25 column weights and optional dense retrieval (docs/rag.md)."""

    title_weight: float = Field(default=2.0, description="BM25 weight of the title column.")
    text_weight: float = Field(default=1.0, description="BM25 weight of the playbook text.")
    tags_weight: float = Field(default=1.0, description="BM25 weight of the tags.")
    dense: bool = Field(
        default=False, description="Also store embeddings (needs the dense extra installed)."
    )
    dense_package: str = Field(
        default=DEFAULT_DENSE_PACKAGE,
        description="Installed Python package that carries the embedding model.",
    )

    def settings(self) -> IndexSettings:
        settings = IndexSettings(**self.model_dump())
        problems = settings.errors()
        if problems:
            raise ConfigError("index settings", None, "; ".join(problems))
        return settings


def index_settings_of(context: dg.AssetExecutionContext) -> IndexSettings | None:
    """The search index's settings in this run, when the run builds the index (and its
    config is valid: preflight has said so); else None."""
    if C.STAGE_INDEX not in expected_stages(context):
        return None
    ops = (context.run.run_config or {}).get("ops", {})
    try:
        return IndexConfig(**asset_config(ops, C.ASSET_PLAYBOOK_INDEX)).settings()
    except (ConfigError, ValueError):
        return None


def expected_stages(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[str]:
    """Stages the current run was asked to materialize."""
    selection = context.run.asset_selection
    if not selection:
        return list(C.STAGES)
    names = {key.to_user_string() for key in selection}
    return [stage for stage in C.STAGES if C.STAGE_ASSET[stage] in names]


@contextmanager
def frozen_gc() -> Iterator[None]:
    """Keep the objects that exist now (Dagster's, the imported modules') out of the cyclic
    garbage collector while a stage works, so its collections only walk what the stage made.

    Without this, a stage that keeps many containers alive triggers full collections that
    each walk every object in the process; they are released again afterwards."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


CONFIG_CLASSES: dict[str, type[dg.Config]] = {
    C.ASSET_EVIDENCE_INDEX: CollectConfig,
    C.ASSET_SCORED_RUNS: ScoringConfig,
    C.ASSET_EXTRACTED_PLAYBOOKS: PlaybookConfig,
    C.ASSET_RAG_PLAYBOOKS: ExportConfig,
    C.ASSET_SFT_DATASET: ExportConfig,
    C.ASSET_PREFERENCE_PAIRS: ExportConfig,
    C.ASSET_KTO_DATASET: ExportConfig,
    C.ASSET_PLAYBOOK_INDEX: IndexConfig,
}


def preflight(context: dg.AssetExecutionContext, distill: DistillResource, stage: str) -> None:
    """Validate every setting the run will use before the first byte is written.

    Dagster has already refused unknown keys and wrong types; this checks values (thresholds,
    paths) for all assets selected in the run, so a bad export setting fails the run before
    collect writes anything.
    """
    ops = (context.run.run_config or {}).get("ops", {})
    selected = set(expected_stages(context))
    for asset, config_class in CONFIG_CLASSES.items():
        if C.ASSET_STAGE[asset] not in selected:
            continue
        values = asset_config(ops, asset)
        config = config_class(**values)
        validate = getattr(config, "settings", None) or config.policy
        validate()
        if isinstance(config, ExportConfig):
            config.eval_path(distill)
    distill.thresholds()
    distill.skipped_limit()
    if C.STAGE_COLLECT in selected:
        distill.source_root()
        distill.check_sources()
    hygienic = [
        asset
        for asset, config_class in CONFIG_CLASSES.items()
        if C.ASSET_STAGE[asset] in selected and issubclass(config_class, HygieneConfig)
    ]
    for name in AGREED_HYGIENE:
        values = {
            asset: asset_config(ops, asset).get(name, HygieneConfig.model_fields[name].default)
            for asset in hygienic
        }
        if len({repr(v) for v in values.values()}) > 1:
            raise ConfigError(
                name,
                values,
                "must be the same for every asset that publishes rows (set it on each of "
                + ", ".join(sorted(values))
                + ")",
            )


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


def tag_run(context: dg.AssetExecutionContext, distill: DistillResource) -> None:
    """Tag the run with its source and output, however it was launched (``distill
    materialize``, ``dagster asset materialize``, the UI, a backfill)."""
    tags = run_tags(distill)
    if any(context.run.tags.get(key) != value for key, value in tags.items()):
        context.instance.add_run_tags(context.run.run_id, tags)


def _run_finished(context: dg.AssetExecutionContext) -> Callable[[str], bool]:
    def finished(run_id: str) -> bool:
        run = context.instance.get_run_by_id(run_id)
        return run is not None and run.is_finished

    return finished


def run_stage(
    context: dg.AssetExecutionContext,
    distill: DistillResource,
    stage: str,
    work: Callable[[Path, Path], StageResult],
    settings: dict[str, object] | None = None,
) -> dg.MaterializeResult:
    """Run one stage and account for it: lock, receipt, ledger, drift, summary and metadata.

    ``work(out_root, write_root)`` does the stage; ``write_root`` is the run's version
    directory for the export and publish stages (see lib/versions.py), else ``out_root``.
    """
    [(materialized, failure)] = run_stages(
        context, distill, [stage], lambda out, root: {stage: work(out, root)}, {stage: settings}
    )
    if failure is not None:
        raise failure
    return materialized


def run_stages(
    context: dg.AssetExecutionContext,
    distill: DistillResource,
    stages: list[str],
    work: Callable[[Path, Path], dict[str, StageResult]],
    settings: dict[str, dict[str, object] | None],
    named: bool = False,
) -> list[tuple[dg.MaterializeResult, dg.Failure | None]]:
    """Run stages that share one step (the export pass) and account for each as if it had run
    alone: its own receipt, ledger entries, drift, metadata and drift check, in stage order.

    ``work(out_root, write_root)`` returns each stage's StageResult; a stage's duration is its
    own share of the step (``extra["own_ms"]``) when the work says so. Returns, per stage, its
    materialization (naming its asset when ``named``: a multi-asset) and the failure to raise when
    its chain of custody is broken or its validation failed: every receipt is recorded first,
    and the caller reports the stages that passed before raising.
    """
    started = time.perf_counter()
    run_id = context.run.run_id
    expected = expected_stages(context)
    versioned = any(stage in C.VERSIONED_STAGES for stage in stages)
    reads = tuple(dict.fromkeys(g for stage in stages for g in STAGE_INPUT_GLOBS[stage]))
    with distill.workspace(reads) as workspace:
        out_root = workspace.root
        try:
            for stage in stages:
                preflight(context, distill, stage)
            tag_run(context, distill)
            thresholds = distill.thresholds()
            skipped_limit = distill.skipped_limit()
            with workspace.reports(run_id):
                taken = acquire(out_root, run_id, _run_finished(context), context.log.warning)
                if versioned and workspace.remote:
                    # the run's version is seeded once, under the store's lock
                    workspace.pull_versions(run_id)
                    open_version(out_root, run_id)
                    workspace.push_data()
            if taken:
                swept = sweep_temp_files(out_root)
                if swept:
                    context.log.warning(f"removed {swept} temporary file(s) left by a killed run")
        except OutputLocked as exc:
            # nothing is written: the directory belongs to the run that holds it
            raise dg.Failure(description=str(exc)) from exc
        write_root = open_version(out_root, run_id) if versioned else out_root
        label = C.OP_EXPORTS if named else stages[0]
        try:
            with frozen_gc(), progress.reporting(label, context.log.info, progress_interval()):
                results = work(out_root, write_root)
        except Exception as exc:
            with workspace.reports(run_id):
                for stage in stages:
                    record_failure(out_root, run_id, stage, exc, expected)
            raise
        release_memory()
        workspace.push_data()
        reported = []
        for stage in stages:
            result = results[stage]
            if stage in C.VERSIONED_STAGES:
                result.output_root = version_relroot(run_id)
            if settings.get(stage):
                result.extra["settings"] = settings[stage]
            result.errors.extend(skipped_share_errors(stage, result.tally, skipped_limit))
            own_ms = result.extra.get("own_ms")
            began = started if own_ms is None else time.perf_counter() - own_ms / 1000
            with workspace.reports(run_id):
                recorded = record_stage(out_root, run_id, result, began, expected, thresholds)
                if stage == expected[-1]:
                    release(out_root, run_id)
            receipt_at = workspace.location_of(recorded.receipt_path)
            # read while the workspace (a staged copy of a remote output) is still at hand
            extras = (
                dataset_metadata(stage, write_root, recorded.receipt)
                if stage in C.DATASET_STAGES
                else {}
            )
            reported.append((stage, result, recorded, receipt_at, extras))
    with frozen_gc():  # the first report loads the table models (pandera, pandas)
        return [_report(context, *item, named=named) for item in reported]


def _report(
    context: dg.AssetExecutionContext,
    stage: str,
    result: StageResult,
    recorded: Any,
    receipt_at: str,
    extras: dict[str, object],
    named: bool,
) -> tuple[dg.MaterializeResult, dg.Failure | None]:
    """A recorded stage as Dagster sees it: its materialization (metadata, drift check), and
    the failure to raise when its chain of custody is broken or its validation failed."""
    receipt = recorded.receipt
    stats = receipt.stats
    for warning in receipt.validation.warnings[:20]:
        context.log.warning(f"{stage}: {warning}")
    if len(receipt.validation.warnings) > 20:
        context.log.warning(f"{stage}: {len(receipt.validation.warnings) - 20} more warning(s)")
    context.log.info(
        f"{stage}: {stats.records_in} in, {stats.records_out} out, {stats.quarantined} "
        f"quarantined, {stats.skipped} skipped; drift {recorded.drift.severity}; "
        f"receipt {receipt_at}"
    )
    failure = None
    broken = [link for link in recorded.summary.chain if not link.ok and link.stage == stage]
    if broken:
        failure = dg.Failure(
            description=f"{stage}: chain of custody broken for {len(broken)} input file(s), "
            f"first {broken[0].path}: {broken[0].problem}",
            metadata={"receipt": receipt_at},
        )
    elif not receipt.validation.passed:
        failure = dg.Failure(
            description=f"{stage}: validation failed: " + "; ".join(receipt.validation.errors),
            metadata={"receipt": receipt_at},
        )
    metadata = receipt_metadata(receipt, receipt_at, recorded.drift.severity)
    schema = column_schema(C.STAGE_ASSET[stage], str(receipt.extra.get("format", "")))
    if schema is not None:
        metadata[C.MD_COLUMN_SCHEMA] = schema
    if result.partitions:
        metadata[C.MD_PARTITIONS] = f"{result.partitions[0]}..{result.partitions[-1]}"
        metadata[C.MD_FIGURES_OF] = figures_label(result.partitions)
        observe_days(context, C.STAGE_ASSET[stage], result)
    metadata.update(extras)
    drift = recorded.drift
    severity = (
        dg.AssetCheckSeverity.ERROR if drift.severity == "alert" else (dg.AssetCheckSeverity.WARN)
    )
    asset = C.STAGE_ASSET[stage]
    return (
        dg.MaterializeResult(
            asset_key=asset if named else None,
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(
                    asset_key=asset if named else None,
                    check_name=C.CHECK_DRIFT,
                    passed=drift.severity == "ok",
                    severity=severity,
                    metadata={
                        "severity": drift.severity,
                        "prior_run_id": drift.prior_run_id or "",
                        "flags": ", ".join(drift.flags) or "none",
                    },
                )
            ],
        ),
        failure,
    )


def figures_label(days: Sequence[str]) -> str:
    """Whose figures a materialization carries: Dagster shows one range run's metadata on every
    partition of the range, so say it is the range's (each day's own is its observation)."""
    if len(days) == 1:
        return f"the day {days[0]}"
    return (
        f"the whole range {days[0]}...{days[-1]} ({len(days)} days); each day's own counts are "
        "its observation"
    )


def observe_days(context: dg.AssetExecutionContext, asset: str, result: StageResult) -> None:
    """Log each day's own counts on that day's partition (one AssetObservation per day of the
    run), so a partition's page shows its day, not the range's totals."""
    per_day = result.extra.get("per_partition") or {}
    if not context.has_partition_key_range and not context.has_partition_key:
        return
    for day in context.partition_keys:
        counts = per_day.get(day, {})
        records_out = int(counts.get("records_out", 0))
        context.log_event(
            dg.AssetObservation(
                asset_key=asset,
                partition=day,
                metadata={
                    C.MD_ROW_COUNT: records_out,
                    C.MD_RECORDS_IN: int(counts.get("records_in", 0)),
                    C.MD_RECORDS_OUT: records_out,
                    C.MD_QUARANTINED: int(counts.get("quarantined", 0)),
                    C.MD_SKIPPED: int(counts.get("skipped", 0)),
                    C.MD_FIGURES_OF: f"the day {day}",
                },
            )
        )


def progress_interval() -> float:
    """Seconds between progress lines (DISTILL_PROGRESS_INTERVAL_S, default 5)."""
    raw = os.environ.get(C.ENV_PROGRESS_INTERVAL)
    if not raw:
        return progress.DEFAULT_INTERVAL_S
    try:
        return max(0.0, float(raw))
    except ValueError as exc:
        raise ConfigError(C.ENV_PROGRESS_INTERVAL, raw, "not a number of seconds") from exc


def dataset_metadata(stage: str, write_root: Path, receipt: StageReceipt) -> dict[str, object]:
    """A dataset's UI extras: a preview of its first rows (cut, redacted), its row format and
    the rows of its Parquet copies."""
    metadata: dict[str, object] = {
        C.MD_RECORDS_OUT: receipt.stats.records_out,
        C.MD_PREVIEW: dg.MetadataValue.md(
            preview_markdown(write_root / C.TRAIN_PATHS[stage], stage)
        ),
    }
    if receipt.extra.get("format"):
        metadata[C.MD_FORMAT] = str(receipt.extra["format"])
    if "parquet_rows" in receipt.extra:
        metadata[C.MD_PARQUET_ROWS] = int(receipt.extra["parquet_rows"])
    return metadata


def column_schema(asset: str, fmt: str = "") -> dg.TableSchema | None:
    """The asset's table schema for the UI, from its Pandera model (one definition) for the
    row format it wrote."""
    from distill_assets.lib.schemas import SCHEMAS, schema_of

    if asset not in SCHEMAS:
        return None
    model = schema_of(asset, fmt)
    columns = model.to_schema().columns
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=name,
                type=str(column.dtype),
                description=column.description,
                constraints=dg.TableColumnConstraints(nullable=bool(column.nullable)),
            )
            for name, column in columns.items()
        ]
    )


def stage_receipt(out_root: Path, run_id: str, stage: str) -> StageReceipt | None:
    path = out_root / receipt_relpath(run_id, stage)
    return load_receipt(path) if path.exists() else None


def run_check_step(
    context: dg.AssetCheckExecutionContext, distill: DistillResource
) -> list[dg.AssetCheckResult]:
    """Run the selected checks of one check step (a multi-asset check) on what this run wrote:
    per asset, its receipt's files are fetched once and every selected check of it judges them
    (lib/checks.py); all verdicts are recorded with the run's reports at once."""
    from distill_assets.lib.checks import CHECKS, run_all

    run_id = context.run.run_id
    wanted: dict[str, list[str]] = {}
    for key in sorted(
        context.selected_asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)
    ):
        wanted.setdefault(key.asset_key.to_user_string(), []).append(key.name)
    for asset, names in wanted.items():
        names.sort(key=list(CHECKS[asset]).index)
    reads = tuple(
        dict.fromkeys(g for asset in wanted for g in CHECK_INPUT_GLOBS[C.ASSET_STAGE[asset]])
    )
    with distill.workspace(reads) as workspace:
        receipts = {}
        for asset in wanted:
            stage = C.ASSET_STAGE[asset]
            receipt = stage_receipt(workspace.root, run_id, stage)
            if receipt is None:
                raise dg.Failure(
                    description=f"{asset}: no receipt for stage {stage} in run {run_id}; the "
                    "asset was not materialized in this run"
                )
            root = receipt.extra.get("root", "")
            pulled = [f.path for f in receipt.outputs.files]
            if asset == C.ASSET_PLAYBOOK_INDEX:
                pulled.append(C.RAG_PATH)
            workspace.pull([f"{root}/{p}" if root else p for p in pulled])
            receipts[asset] = receipt
        with frozen_gc():
            outcomes = run_all(wanted, receipts, workspace.root, distill.worker_count())
        with workspace.reports(run_id):
            record_checks(
                workspace.root,
                run_id,
                [
                    CheckRecord(
                        asset=o.asset,
                        stage=C.ASSET_STAGE[o.asset],
                        check=o.check,
                        passed=o.passed,
                        severity="ERROR" if o.severity == "ERROR" else "WARN",
                        blocking=o.blocking,
                        num_failures=o.num_failures,
                        description=o.description,
                    )
                    for o in outcomes
                ],
                expected_stages(context),
            )
    return [
        dg.AssetCheckResult(
            asset_key=o.asset,
            check_name=o.check,
            passed=o.passed,
            severity=dg.AssetCheckSeverity.ERROR
            if o.severity == "ERROR"
            else dg.AssetCheckSeverity.WARN,
            description=o.description,
            metadata={
                "num_failures": o.num_failures,
                **{
                    name: dg.MetadataValue.json(value) if isinstance(value, list | dict) else value
                    for name, value in o.metadata.items()
                },
            },
        )
        for o in outcomes
    ]


def check_specs(assets: Sequence[str]) -> list[dg.AssetCheckSpec]:
    """The blocking check specs of ``assets`` (lib/checks.CHECKS), for one check step."""
    from distill_assets.lib.checks import CHECKS

    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=True, description=description)
        for asset in assets
        for name, description in CHECKS[asset].items()
    ]
