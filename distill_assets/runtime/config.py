"""The run config of each stage (``dg.Config``), turned into lib's settings and validated.

Every default a config shares with a settings dataclass of ``lib/`` is taken from that
dataclass (``default_of``), so it is written once; a test (distill_tests/test_config_defaults.py)
says the two agree. A value the dataclass refuses fails the run with a ``ConfigError`` that names
the setting, before anything is written (stage.preflight).

Length: each field is declared with its default's source and the description the UI shows; the
configs are read together (ExportsConfig holds the others).
"""

from __future__ import annotations

from dataclasses import MISSING
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import ExportSettings
from distill_assets.lib.datasets.formats import FormatSettings
from distill_assets.lib.evidence.format import ParseSettings
from distill_assets.lib.hygiene.curate import HygieneSettings
from distill_assets.lib.hygiene.decontam import EvalSet, load_eval_set, resolve_eval_path
from distill_assets.lib.playbooks.playbook import PlaybookSettings
from distill_assets.lib.playbooks.search import IndexSettings
from distill_assets.lib.scoring import ScoringPolicy
from distill_assets.runtime.partitions import FIRST_DAY
from distill_assets.runtime.resource import ConfigError, DistillResource, recorded_now

if TYPE_CHECKING:
    from distill_assets.lib.datasets.export_pass import ExportPlan


def default_of(settings: type, name: str) -> Any:
    """The default of the field ``name`` of the settings dataclass ``settings``."""
    found = settings.__dataclass_fields__[name]
    if found.default is not MISSING:
        return found.default
    if found.default_factory is not MISSING:
        return found.default_factory()
    raise TypeError(f"{settings.__name__}.{name} has no default")


class CollectConfig(dg.Config):
    """Limits applied to source lines (docs/evidence-format.md)."""

    max_line_bytes: int = Field(
        default=default_of(ParseSettings, "max_line_bytes"), description="Longer lines are skipped."
    )
    future_horizon_hours: float = Field(
        default=default_of(ParseSettings, "future_horizon") / timedelta(hours=1),
        description="Timestamps further ahead of now are quarantined.",
    )
    max_messages: int = Field(
        default=default_of(ParseSettings, "max_messages"),
        description="Most chat messages one run may carry.",
    )
    max_messages_depth: int = Field(
        default=default_of(ParseSettings, "max_messages_depth"),
        description="Deepest nesting of a messages list.",
    )

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

    accept_min_score: float = Field(
        default=default_of(ScoringPolicy, "accept_min_score"),
        description="Lowest score graded accepted.",
    )
    reward_success_min: float = Field(
        default=default_of(ScoringPolicy, "reward_success_min"),
        description="A success needs this reward.",
    )
    reward_failure_max: float = Field(
        default=default_of(ScoringPolicy, "reward_failure_max"),
        description="Rewards up to this are failure.",
    )
    conflict_policy: str = Field(
        default=default_of(ScoringPolicy, "conflict_policy"),
        description="When reviews and outcomes disagree: human_review, review_wins, outcome_wins.",
    )
    require_review: bool = Field(
        default=default_of(ScoringPolicy, "require_review"),
        description="Accept only with an approval.",
    )
    score_signals: list[str] = Field(
        default_factory=lambda: list(default_of(ScoringPolicy, "score_signals")),
        description="Outcome meta.signals averaged into the score.",
    )
    incomplete_outcome_needs_review: bool = Field(
        default=default_of(ScoringPolicy, "incomplete_outcome_needs_review"),
        description="An outcome flagged incomplete sends its run to review.",
    )
    evidence_window_days: int = Field(
        default=default_of(ScoringPolicy, "evidence_window_days"),
        description="Days around a run's day searched for its reviews and outcomes.",
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
        default=default_of(HygieneSettings, "secret_action"),
        description="A row with a secret: quarantine it (secret_detected) or redact and keep it.",
    )
    holdout_fraction: float = Field(
        default=default_of(HygieneSettings, "holdout_fraction"),
        description="Share of tasks (by a hash of task_id) held out, in [0, 1).",
    )
    near_dup_threshold: float | None = Field(
        default=default_of(HygieneSettings, "near_dup_threshold"),
        description="MinHash Jaccard threshold of near-duplicate rows (null: off).",
    )
    eval_set_path: str | None = Field(
        default=default_of(HygieneSettings, "eval_set_path"),
        description="Evaluation prompts / task ids kept out (absolute, or under the source dir).",
    )
    decontam_ngram: int = Field(
        default=default_of(HygieneSettings, "decontam_ngram"),
        description="Word n-gram size of decontamination.",
    )
    decontam_min_overlap: float = Field(
        default=default_of(HygieneSettings, "decontam_min_overlap"),
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
        default=default_of(ExportSettings, "sft_allow_categories"),
        description="When set, only these categories reach SFT.",
    )
    # None stands for ExportSettings' default (the unsafe list), which [] cannot say
    sft_deny_categories: list[str] | None = Field(
        default=None,
        description="Categories kept out of this export (SFT, KTO, RAG, preference pairs; "
        "default: the unsafe list; [] denies none).",
    )
    min_margin: float = Field(
        default=default_of(ExportSettings, "min_margin"),
        description="Least score gap of a preference pair.",
    )
    max_pairs_per_task: int | None = Field(
        default=default_of(ExportSettings, "max_pairs_per_task"),
        description="Cap on pairs per task (widest margins kept).",
    )
    rag_include_partial: bool = Field(
        default=default_of(ExportSettings, "rag_include_partial"),
        description="Partially accepted runs may back a playbook.",
    )
    sft_format: str = Field(
        default=default_of(FormatSettings, "sft_format"),
        description="SFT rows: messages (TRL conversational) or prompt_completion.",
    )
    preference_format: str = Field(
        default=default_of(FormatSettings, "preference_format"),
        description="Preference and KTO rows: standard (strings) or conversational (turns).",
    )
    parquet: bool = Field(
        default=default_of(FormatSettings, "parquet"),
        description="Also write a Parquet copy beside each JSONL dataset file.",
    )
    license: str = Field(
        default=default_of(FormatSettings, "license"),
        description="License id the dataset cards declare (e.g. mit).",
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
            sft_deny_categories=default_of(ExportSettings, "sft_deny_categories")
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

    max_steps: int = Field(
        default=default_of(PlaybookSettings, "max_steps"),
        description="Steps shown per playbook (the rest counted).",
    )
    argument_chars: int = Field(
        default=default_of(PlaybookSettings, "argument_chars"),
        description="Longest summary of a call's arguments.",
    )
    value_chars: int = Field(
        default=default_of(PlaybookSettings, "value_chars"),
        description="Longest single argument value shown.",
    )
    result_chars: int = Field(
        default=default_of(PlaybookSettings, "result_chars"),
        description="Longest tool result shown.",
    )
    answer_chars: int = Field(
        default=default_of(PlaybookSettings, "answer_chars"),
        description="Longest failed run's answer shown.",
    )
    max_divergences: int = Field(
        default=default_of(PlaybookSettings, "max_divergences"),
        description="Failed runs compared per playbook.",
    )
    title_chars: int = Field(
        default=default_of(PlaybookSettings, "title_chars"), description="Longest title."
    )
    # None stands for PlaybookSettings' default (the unsafe list), which [] cannot say
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
        from distill_assets.lib.datasets.export_pass import ExportPlan

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

    title_weight: float = Field(
        default=default_of(IndexSettings, "title_weight"),
        description="BM25 weight of the title column.",
    )
    text_weight: float = Field(
        default=default_of(IndexSettings, "text_weight"),
        description="BM25 weight of the playbook text.",
    )
    tags_weight: float = Field(
        default=default_of(IndexSettings, "tags_weight"), description="BM25 weight of the tags."
    )
    dense: bool = Field(
        default=default_of(IndexSettings, "dense"),
        description="Also store embeddings (needs the dense extra installed).",
    )
    dense_package: str = Field(
        default=default_of(IndexSettings, "dense_package"),
        description="Installed Python package that carries the embedding model.",
    )

    def settings(self) -> IndexSettings:
        settings = IndexSettings(**self.model_dump())
        problems = settings.errors()
        if problems:
            raise ConfigError("index settings", None, "; ".join(problems))
        return settings


# asset -> its run config (the export pass's assets: their part of ExportsConfig)
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
