"""The stage registry: one ``StageSpec`` per stage, and every per-stage table derived from it.

A stage is named in many places: its asset, the stages it reads (the chain of custody a run
summary verifies), the files it reads under the output root (object-store copies pull just
those), its output paths, its Pandera model, its dataset card, what the CLI calls its rows.
They are declared here once, in graph order; the tables the rest of the code uses (``STAGES``,
``ASSET_STAGE``, ``STAGE_READS``, ``STAGE_INPUT_GLOBS``, the dataset paths, the card facts, …)
are computed from ``SPECS``. Adding a stage is a spec here, an asset in ``defs/`` and its checks
in ``lib/verify/checks.CHECKS``; ``distill_tests/test_stage_specs.py`` holds the three together.

Names only: nothing here imports the stages' libraries, Dagster or Pandera (the CLI and the
layout read this module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from distill_assets.lib import constants as C

_DAY = "[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]"
_SCORED = f"{C.SCORED_DIR}/{_DAY}/{C.SCORED_FILE}"
_RECORDS = f"{C.EVIDENCE_DIR}/{_DAY}/records.jsonl"
_INDEX = f"{C.EVIDENCE_DIR}/{_DAY}/index.jsonl"
# the scored runs sorted by task, which the exports merge (the scored files name the days)
_BY_TASK = f"{C.SCORED_DIR}/{_DAY}/{C.BY_TASK_FILE}"
_EXPORT_READS = (_SCORED, _BY_TASK, _RECORDS)


@dataclass(frozen=True)
class CardFacts:
    """What a dataset's card (Hugging Face README.md) says of it."""

    title: str
    task_categories: tuple[str, ...]
    tags: tuple[str, ...]
    built: str
    trl_trainer: str | None = None


@dataclass(frozen=True)
class StageSpec:
    """One stage of the graph and the facts every other table takes from it."""

    stage: str
    asset: str
    # stages whose outputs it reads: the chain of custody a run summary verifies
    reads: tuple[str, ...]
    # the files under the output root it reads (glob patterns): a step working on a copy of an
    # object-store output pulls just these; a run's version directory and the published one
    # are added for the versioned stages
    input_globs: tuple[str, ...] = ()
    # its checks look every written run up in the scored runs (the firewall)
    checks_read_scored: bool = False
    # partitioned by day: a per-day backfill runs it day by day
    daily: bool = False
    # writes into the run's version directory; the versioned stages are published together
    versioned: bool = False
    # an export of scored runs (the review queue is one: published with the datasets)
    export: bool = False
    # its quarantine file is published with the datasets
    quarantine_published: bool = False
    # the dataset it writes: its name in the manifest and the trace lookup, train and holdout
    dataset: str | None = None
    train_path: str | None = None
    holdout_path: str | None = None
    # the directory under exports/ of a published, carded dataset
    card_kind: str | None = None
    card: CardFacts | None = None
    # the Pandera model of its rows (lib/verify/schemas.SCHEMAS), by class name
    schema: str | None = None
    # what the CLI's summary calls one of its rows: singular, plural (None: add an "s")
    row_noun: tuple[str, str | None] | None = None


# what the extraction and the exports share: their checks look each row's runs up in the scored
# runs, they write into the run's version directory and their quarantines are published
_PUBLISHED_ROWS = {"checks_read_scored": True, "versioned": True, "quarantine_published": True}

SPECS: Final[tuple[StageSpec, ...]] = (
    StageSpec(
        C.STAGE_COLLECT,
        C.ASSET_EVIDENCE_INDEX,
        reads=(),
        daily=True,
        schema="EvidenceIndexSchema",
        row_noun=("evidence record", None),
    ),
    StageSpec(
        C.STAGE_SCORE,
        C.ASSET_SCORED_RUNS,
        reads=(C.STAGE_COLLECT,),
        input_globs=(_INDEX,),
        daily=True,
        schema="ScoredRunSchema",
        row_noun=("run graded", "runs graded"),
    ),
    StageSpec(
        C.STAGE_EXTRACT_PLAYBOOKS,
        C.ASSET_EXTRACTED_PLAYBOOKS,
        reads=(C.STAGE_SCORE, C.STAGE_COLLECT),
        input_globs=_EXPORT_READS,
        **_PUBLISHED_ROWS,
        dataset="rag_extracted",
        train_path=C.EXTRACTED_PATH,
        holdout_path=C.EXTRACTED_HOLDOUT_PATH,
        schema="ExtractedPlaybookSchema",
        row_noun=("playbook", None),
    ),
    StageSpec(
        C.STAGE_EXPORT_RAG,
        C.ASSET_RAG_PLAYBOOKS,
        # reads only the run's version (the extraction's playbooks)
        reads=(C.STAGE_EXTRACT_PLAYBOOKS,),
        **_PUBLISHED_ROWS,
        export=True,
        dataset="rag",
        train_path=C.RAG_PATH,
        holdout_path=C.RAG_HOLDOUT_PATH,
        card_kind="rag",
        card=CardFacts(
            "retrieval playbooks",
            ("text-retrieval",),
            ("rag", "agents"),
            "One document per task with a verified run: the playbook extracted from its best "
            "accepted (or, when allowed, partially accepted) run, rendered as Markdown, with the "
            "rejected runs of the task compared step by step.",
        ),
        schema="RagPlaybookSchema",
        row_noun=("playbook", None),
    ),
    StageSpec(
        C.STAGE_EXPORT_SFT,
        C.ASSET_SFT_DATASET,
        reads=(C.STAGE_SCORE, C.STAGE_COLLECT),
        input_globs=_EXPORT_READS,
        **_PUBLISHED_ROWS,
        export=True,
        dataset="sft",
        train_path=C.SFT_PATH,
        holdout_path=C.SFT_HOLDOUT_PATH,
        card_kind="sft",
        card=CardFacts(
            "supervised fine-tuning conversations",
            ("text-generation",),
            ("sft", "trl", "agents"),
            "One row per accepted run in an allowed category, with an answer: its chat without "
            "system turns (tool calls in the OpenAI shape), or its instruction and final answer.",
            "SFTTrainer",
        ),
        schema="SftExampleSchema",
        row_noun=("row", None),
    ),
    StageSpec(
        C.STAGE_EXPORT_PREFERENCE,
        C.ASSET_PREFERENCE_PAIRS,
        reads=(C.STAGE_SCORE, C.STAGE_COLLECT),
        input_globs=_EXPORT_READS,
        **_PUBLISHED_ROWS,
        export=True,
        dataset="preference",
        train_path=C.PREFERENCE_PATH,
        holdout_path=C.PREFERENCE_HOLDOUT_PATH,
        card_kind="preference",
        card=CardFacts(
            "preference pairs (DPO)",
            ("text-generation",),
            ("dpo", "trl", "agents"),
            "Pairs of two runs of one task, the chosen run strictly better (accepted or partially "
            "accepted) by at least the configured score margin, texts different; rejected runs "
            "only ever on the rejected side, runs needing review never.",
            "DPOTrainer",
        ),
        schema="PreferencePairSchema",
        row_noun=("pair", None),
    ),
    StageSpec(
        C.STAGE_EXPORT_KTO,
        C.ASSET_KTO_DATASET,
        reads=(C.STAGE_SCORE, C.STAGE_COLLECT),
        input_globs=_EXPORT_READS,
        **_PUBLISHED_ROWS,
        export=True,
        dataset="kto",
        train_path=C.KTO_PATH,
        holdout_path=C.KTO_HOLDOUT_PATH,
        card_kind="kto",
        card=CardFacts(
            "unpaired preferences (KTO)",
            ("text-generation",),
            ("kto", "trl", "agents"),
            "One row per accepted run (label true: the SFT rules apply) and per rejected run "
            "(label false); partially accepted runs and runs needing review are left out, and so "
            "is a rejected answer identical to an accepted answer of its task.",
            "KTOTrainer",
        ),
        schema="KtoExampleSchema",
        row_noun=("row", None),
    ),
    StageSpec(
        C.STAGE_EXPORT_REVIEW,
        C.ASSET_REVIEW_QUEUE,
        reads=(C.STAGE_SCORE, C.STAGE_COLLECT),
        # the review queue also looks up each run's reviews and outcomes through the index
        input_globs=(_SCORED, _RECORDS, _INDEX),
        **_PUBLISHED_ROWS,
        export=True,
        row_noun=("run to review", "runs to review"),
    ),
    StageSpec(
        C.STAGE_INDEX,
        C.ASSET_PLAYBOOK_INDEX,
        # reads only the run's version (the RAG playbooks)
        reads=(C.STAGE_EXPORT_RAG,),
        versioned=True,
        quarantine_published=True,
        row_noun=("playbook indexed", "playbooks indexed"),
    ),
    StageSpec(
        C.STAGE_PUBLISH,
        C.ASSET_DATASET_MANIFEST,
        reads=(
            C.STAGE_EXTRACT_PLAYBOOKS,
            C.STAGE_EXPORT_RAG,
            C.STAGE_EXPORT_SFT,
            C.STAGE_EXPORT_PREFERENCE,
            C.STAGE_EXPORT_KTO,
            C.STAGE_EXPORT_REVIEW,
            C.STAGE_INDEX,
        ),
        input_globs=(
            # the trace lookup (lib/publishing/trace.py) is built from the score stage's lists of
            # runs
            f"{C.SCORED_DIR}/{_DAY}/{C.SCORED_TRACE_FILE}",
            f"{C.EVIDENCE_DIR}/{_DAY}/{C.PART_QUARANTINE_FILE}",
            f"{C.EVIDENCE_DIR}/{C.UNDATED_BUCKET}/{C.PART_QUARANTINE_FILE}",
            f"{C.SCORED_DIR}/{_DAY}/{C.PART_QUARANTINE_FILE}",
        ),
        versioned=True,
    ),
)

# --- derived tables -----------------------------------------------------------------------
BY_STAGE: Final = {spec.stage: spec for spec in SPECS}
BY_ASSET: Final = {spec.asset: spec for spec in SPECS}
STAGES: Final = tuple(BY_STAGE)
ASSET_STAGE: Final = {spec.asset: spec.stage for spec in SPECS}
STAGE_ASSET: Final = {spec.stage: spec.asset for spec in SPECS}
STAGE_READS: Final = {spec.stage: spec.reads for spec in SPECS}
STAGE_INPUT_GLOBS: Final = {spec.stage: spec.input_globs for spec in SPECS}
# what a stage's checks read besides the files the stage wrote in the run
CHECK_INPUT_GLOBS: Final = {
    spec.stage: (_SCORED,) if spec.checks_read_scored else () for spec in SPECS
}
DAILY_ASSETS: Final = tuple(spec.asset for spec in SPECS if spec.daily)
# the stages writing training datasets (carded train and holdout files)
DATASET_STAGES: Final = tuple(spec.stage for spec in SPECS if spec.card is not None)
EXPORT_STAGES: Final = tuple(spec.stage for spec in SPECS if spec.export)
VERSIONED_STAGES: Final = tuple(spec.stage for spec in SPECS if spec.versioned)
PUBLISHED_QUARANTINES: Final = tuple(spec.stage for spec in SPECS if spec.quarantine_published)
# the assets of the one export step (a multi-asset): the extraction and every export
EXPORT_ASSETS: Final = tuple(
    spec.asset for spec in SPECS if spec.export or spec.stage == C.STAGE_EXTRACT_PLAYBOOKS
)
# the datasets a row can come from, by name: (stage, train path, holdout path)
DATASETS: Final = {
    spec.dataset: (spec.stage, spec.train_path, spec.holdout_path)
    for spec in SPECS
    if spec.dataset is not None and spec.train_path and spec.holdout_path
}
TRAIN_PATHS: Final = {stage: train for stage, train, _ in DATASETS.values()}
HOLDOUT_PATHS: Final = {stage: holdout for stage, _, holdout in DATASETS.values()}
# the published, carded datasets by kind (the directory under exports/ holding each)
DATASET_KINDS: Final = {spec.card_kind: spec.stage for spec in SPECS if spec.card_kind}
CARDS: Final = {spec.stage: spec.card for spec in SPECS if spec.card is not None}
ROW_NOUNS: Final = {spec.stage: spec.row_noun for spec in SPECS if spec.row_noun is not None}


def _upstream(stage: str) -> set[str]:
    """Every stage ``stage`` reads, directly or through another."""
    found: set[str] = set()
    frontier = list(STAGE_READS[stage])
    while frontier:
        read = frontier.pop()
        if read not in found:
            found.add(read)
            frontier.extend(STAGE_READS[read])
    return found


# each asset's upstream assets in the lineage: the stages it reads, less a day-partitioned one
# it also reads through another (the exports read collect's records, and collect is upstream of
# scoring: its partitions are mapped once, through the scored runs)
ASSET_DEPS: Final = {
    spec.asset: tuple(
        STAGE_ASSET[read]
        for read in spec.reads
        if not (
            BY_STAGE[read].daily
            and any(read in _upstream(other) for other in spec.reads if other != read)
        )
    )
    for spec in SPECS
}
