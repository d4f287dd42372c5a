"""The closed vocabulary of distill: stage names, metadata keys, check names and reason codes.

Everything a user or a tool can see by name (receipt stages, metadata keys, quarantine reason
codes, asset check names, output paths) is defined here once, so the vocabulary stays closed.

Length: the vocabulary is kept in one module on purpose (one place for every name a user or a
tool sees).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

RECEIPT_SCHEMA_VERSION: Final = 1
SUMMARY_SCHEMA_VERSION: Final = 1
DRIFT_SCHEMA_VERSION: Final = 1
# how a run without a category is counted in a stage's category mix (receipt extra.categories)
NO_CATEGORY: Final = "(none)"
INDEX_SCHEMA_VERSION: Final = 1

# --- stages -------------------------------------------------------------------------------
STAGE_COLLECT: Final = "collect"
STAGE_SCORE: Final = "score"
STAGE_EXTRACT_PLAYBOOKS: Final = "extract-playbooks"
STAGE_EXPORT_RAG: Final = "export-rag"
STAGE_EXPORT_SFT: Final = "export-sft"
STAGE_EXPORT_PREFERENCE: Final = "export-preference"
STAGE_EXPORT_KTO: Final = "export-kto"
STAGE_EXPORT_REVIEW: Final = "export-review"
STAGE_INDEX: Final = "index"
STAGE_PUBLISH: Final = "publish"
# --- assets -------------------------------------------------------------------------------
ASSET_EVIDENCE_INDEX: Final = "evidence_index"
ASSET_SCORED_RUNS: Final = "scored_runs"
ASSET_EXTRACTED_PLAYBOOKS: Final = "extracted_playbooks"
ASSET_RAG_PLAYBOOKS: Final = "rag_playbooks"
ASSET_SFT_DATASET: Final = "sft_dataset"
ASSET_PREFERENCE_PAIRS: Final = "preference_pairs"
ASSET_KTO_DATASET: Final = "kto_dataset"
ASSET_REVIEW_QUEUE: Final = "review_queue"
ASSET_PLAYBOOK_INDEX: Final = "playbook_index"
ASSET_DATASET_MANIFEST: Final = "dataset_manifest"
ASSET_GROUP: Final = "distill"
# the one step (a multi-asset) that materializes every export in one pass over the scored runs;
# its run config holds each export's settings under the export's asset name
OP_EXPORTS: Final = "exports"

# --- output layout (relative to DISTILL_OUTPUT_DIR) ---------------------------------------
EVIDENCE_DIR: Final = "evidence"
SCORED_DIR: Final = "scored-runs"
EXPORTS_DIR: Final = "exports"
REPORTS_DIR: Final = "reports"
# the sources the output was built from (lib/evidence/sources.py): other sources are refused
SOURCES_PATH: Final = "sources.json"
VERSIONS_DIR: Final = ".versions"
VERSIONS_KEPT: Final = 5
RAG_PATH: Final = "exports/rag/playbooks.jsonl"
EXTRACTED_PATH: Final = "exports/rag/extracted_playbooks.jsonl"
INDEX_PATH: Final = "exports/rag/index.sqlite"
SFT_PATH: Final = "exports/sft/instruction_response.jsonl"
PREFERENCE_PATH: Final = "exports/preference/chosen_rejected.jsonl"
KTO_PATH: Final = "exports/kto/unpaired_preferences.jsonl"
RAG_HOLDOUT_PATH: Final = "exports/rag/holdout.jsonl"
SFT_HOLDOUT_PATH: Final = "exports/sft/holdout.jsonl"
PREFERENCE_HOLDOUT_PATH: Final = "exports/preference/holdout.jsonl"
KTO_HOLDOUT_PATH: Final = "exports/kto/holdout.jsonl"
EXTRACTED_HOLDOUT_PATH: Final = "exports/rag/extracted_holdout.jsonl"
REVIEW_QUEUE_PATH: Final = "exports/review/queue.jsonl"
QUARANTINE_DIR: Final = "exports/quarantine"
MANIFEST_PATH: Final = "exports/MANIFEST.json"
ALERTS_PATH: Final = "reports/alerts.jsonl"
RUN_INDEX_PATH: Final = "reports/runs.jsonl"
UNDATED_BUCKET: Final = "undated"
# scratch space of a running stage (sorted spills); removed when the stage ends
SCRATCH_DIR: Final = ".scratch"
# per-partition file names
SCORED_FILE: Final = "scored_runs.jsonl"
# the day's scored runs as sort entries by task, best first (see lib/scoring.task_entry)
BY_TASK_FILE: Final = "runs_by_task.jsonl"
PART_QUARANTINE_FILE: Final = "quarantine.jsonl"


def quarantine_path(stage: str) -> str:
    """Relative path of a stage's merged quarantine file."""
    return f"{QUARANTINE_DIR}/{stage}.jsonl"


# a dataset card (Hugging Face README.md with a YAML header) beside each dataset's files
CARD_NAME: Final = "README.md"


def card_path(kind: str) -> str:
    """Relative path of a dataset kind's card."""
    return f"{EXPORTS_DIR}/{kind}/{CARD_NAME}"


def is_card(relpath: str) -> bool:
    """A dataset card: listed in its stage's receipt, but left out of the receipt's output hash
    (it names the run that built the data, which differs between otherwise identical runs)."""
    return relpath.startswith(f"{EXPORTS_DIR}/") and relpath.endswith(f"/{CARD_NAME}")


def parquet_path(jsonl_path: str) -> str:
    """The Parquet file written beside a JSONL dataset file when configured."""
    return jsonl_path.removesuffix(".jsonl") + ".parquet"


# row shapes of the datasets (docs/datasets.md, TRL's dataset formats)
SFT_FORMAT_MESSAGES: Final = "messages"
SFT_FORMAT_PROMPT_COMPLETION: Final = "prompt_completion"
SFT_FORMATS: Final = (SFT_FORMAT_MESSAGES, SFT_FORMAT_PROMPT_COMPLETION)
PREFERENCE_FORMAT_STANDARD: Final = "standard"
PREFERENCE_FORMAT_CONVERSATIONAL: Final = "conversational"
PREFERENCE_FORMATS: Final = (PREFERENCE_FORMAT_STANDARD, PREFERENCE_FORMAT_CONVERSATIONAL)
DEFAULT_LICENSE: Final = "other"
# the labels of the unpaired (KTO) rows: desirable for accepted runs, undesirable for rejected
KTO_DESIRABLE: Final = True
KTO_UNDESIRABLE: Final = False


# --- evidence kinds and enumerations ------------------------------------------------------
KIND_RUN: Final = "run"
KIND_REVIEW: Final = "review"
KIND_OUTCOME: Final = "outcome"
KINDS: Final = (KIND_RUN, KIND_REVIEW, KIND_OUTCOME)
VERDICTS: Final = ("approve", "request_changes", "reject")
OUTCOMES: Final = ("success", "partial", "failure", "error")

QUALITY_ACCEPTED: Final = "accepted"
QUALITY_PARTIAL: Final = "partially_accepted"
QUALITY_REJECTED: Final = "rejected"
QUALITY_REVIEW: Final = "needs_human_review"
QUALITIES: Final = (QUALITY_ACCEPTED, QUALITY_PARTIAL, QUALITY_REJECTED, QUALITY_REVIEW)
# rank used to order runs: higher is better; needs_human_review is never ranked
QUALITY_RANK: Final = {QUALITY_ACCEPTED: 2, QUALITY_PARTIAL: 1, QUALITY_REJECTED: 0}

# where a failed run left a playbook's steps (docs/rag.md)
DIVERGED_TOOL: Final = "different_tool"
DIVERGED_ARGUMENTS: Final = "different_arguments"
DIVERGED_STOPPED: Final = "stopped_early"
DIVERGED_EXTRA: Final = "extra_step"
DIVERGED_NONE: Final = "same_steps"
DIVERGENCE_KINDS: Final = (
    DIVERGED_TOOL,
    DIVERGED_ARGUMENTS,
    DIVERGED_STOPPED,
    DIVERGED_EXTRA,
    DIVERGED_NONE,
)

# --- dispositions of a left-out record ----------------------------------------------------
DISPOSITION_SKIPPED: Final = "skipped"
DISPOSITION_QUARANTINED: Final = "quarantined"

# --- reason codes -------------------------------------------------------------------------
# collect: lines that are not usable evidence (skipped)
R_EMPTY_LINE: Final = "empty_line"
R_EMPTY_FILE: Final = "empty_file"
R_INVALID_UTF8: Final = "invalid_utf8"
R_INVALID_JSON: Final = "invalid_json"
R_NOT_AN_OBJECT: Final = "not_an_object"
R_LINE_TOO_LONG: Final = "line_too_long"
R_JSON_TOO_DEEP: Final = "json_too_deep"
R_UNREADABLE_FILE: Final = "unreadable_file"
R_OUTSIDE_SOURCE_DIR: Final = "outside_source_dir"
R_DUPLICATE: Final = "duplicate_record"
# collect: import sources (docs/importers.md); whole files skipped, bad records quarantined
R_IMPORT_MISSING_FILE: Final = "import_missing_file"
R_IMPORT_INVALID_JSON: Final = "import_invalid_json"
R_IMPORT_MALFORMED: Final = "import_malformed"
# an instance id the results list but no prediction has (the harness lists every dataset
# instance it was not given under incomplete_ids): one quarantined item, the system is kept
R_IMPORT_ORPHAN_RESULT: Final = "import_orphan_result"
# collect: records that parse but break the format (quarantined)
R_UNKNOWN_KIND: Final = "unknown_kind"
R_MISSING_FIELD: Final = "missing_field"  # rendered as missing_field:<name>
R_INVALID_VALUE: Final = "invalid_value"  # rendered as invalid_value:<field>
R_INVALID_TYPE: Final = "invalid_type"  # rendered as invalid_type:<field>
R_EMPTY_FIELD: Final = "empty_field"  # rendered as empty_field:<field>
R_BAD_TIMESTAMP: Final = "bad_timestamp"
R_FUTURE_TIMESTAMP: Final = "future_timestamp"
R_TIMESTAMP_OUT_OF_RANGE: Final = "timestamp_out_of_range"
R_MESSAGES_TOO_DEEP: Final = "messages_too_deep"
R_MESSAGES_TOO_LARGE: Final = "messages_too_large"
# score
R_ORPHAN_EVIDENCE: Final = "orphan_evidence"
R_CONFLICTING_DUPLICATE: Final = "conflicting_duplicate"
R_APPROVED: Final = "approved"
R_SUCCESS: Final = "success"
R_REJECTED_BY_REVIEW: Final = "rejected_by_review"
R_FAILED: Final = "failed"
R_CHANGES_REQUESTED: Final = "changes_requested"
R_PARTIAL_OUTCOME: Final = "partial_outcome"
R_PARTIAL_REWARD: Final = "partial_reward"
R_BELOW_ACCEPT_SCORE: Final = "below_accept_score"
R_CONFLICTING_EVIDENCE: Final = "conflicting_evidence"
R_OUTCOME_ERROR: Final = "outcome_error"
R_NO_EVIDENCE: Final = "no_evidence"
R_OUTCOME_ONLY: Final = "outcome_only"
R_INCOMPLETE: Final = "incomplete_evidence"
R_OVERRULED: Final = "overruled_evidence"
# exports
R_QUALITY_REJECTED: Final = "quality_rejected"
R_NEEDS_HUMAN_REVIEW: Final = "needs_human_review"
R_PARTIALLY_ACCEPTED: Final = "quality_partially_accepted"
R_CATEGORY_DISALLOWED: Final = "category_disallowed"
R_UNSAFE_SFT_CATEGORY: Final = "unsafe_sft_category"
# a run (or a playbook) in a denied category kept out of the extraction, RAG or preference pairs
R_DENIED_CATEGORY: Final = "category_denied"
R_MISSING_SOURCE_RUN_ID: Final = "missing_source_run_id"
R_SELF_PAIR: Final = "self_pair"
R_IDENTICAL_TEXT: Final = "identical_text"
R_BELOW_MARGIN: Final = "below_margin"
R_NO_PAIR: Final = "no_valid_pair"
R_EMPTY_RESPONSE: Final = "empty_response"
R_NOT_SFT_ELIGIBLE: Final = "not_sft_eligible"
R_INSTRUCTION_UNAVAILABLE: Final = "instruction_unavailable"
# hygiene (docs/safety.md)
R_SECRET_DETECTED: Final = "secret_detected"
R_CONTAMINATED_EVAL: Final = "contaminated_eval"
R_NEAR_DUPLICATE: Final = "near_duplicate"
# index
R_DUPLICATE_PLAYBOOK: Final = "duplicate_playbook_id"

# categories kept out of every published export (SFT, KTO, the extraction, RAG and its index,
# preference pairs) unless an export's configured deny-list replaces this one (docs/datasets.md)
DEFAULT_UNSAFE_SFT_CATEGORIES: Final = (
    "credential_access",
    "exploit",
    "harassment",
    "malware",
    "pii_extraction",
    "self_harm",
    "unsafe",
    "weapons",
)


def missing_field(name: str) -> str:
    return f"{R_MISSING_FIELD}:{name}"


def invalid_value(field: str) -> str:
    return f"{R_INVALID_VALUE}:{field}"


def invalid_type(field: str) -> str:
    return f"{R_INVALID_TYPE}:{field}"


def empty_field(field: str) -> str:
    return f"{R_EMPTY_FIELD}:{field}"


# --- secret finding types (docs/safety.md); placeholders read [REDACTED:<type>] -------------
SECRET_AWS_ACCESS_KEY: Final = "aws_access_key"
SECRET_GITHUB_TOKEN: Final = "github_token"
SECRET_GITLAB_TOKEN: Final = "gitlab_token"
SECRET_SLACK_TOKEN: Final = "slack_token"
SECRET_STRIPE_KEY: Final = "stripe_key"
SECRET_OPENAI_API_KEY: Final = "openai_api_key"
SECRET_ANTHROPIC_API_KEY: Final = "anthropic_api_key"
SECRET_GOOGLE_API_KEY: Final = "google_api_key"
SECRET_HUGGINGFACE_TOKEN: Final = "huggingface_token"
SECRET_PRIVATE_KEY: Final = "private_key"
SECRET_JWT: Final = "jwt"
SECRET_PASSWORD_IN_URL: Final = "password_in_url"
SECRET_ASSIGNMENT: Final = "secret_assignment"
SECRET_HIGH_ENTROPY: Final = "high_entropy_string"
SECRET_AZURE_STORAGE_KEY: Final = "azure_storage_key"
SECRET_DISCORD_TOKEN: Final = "discord_token"
SECRET_MAILCHIMP_KEY: Final = "mailchimp_key"
SECRET_NPM_TOKEN: Final = "npm_token"
SECRET_PYPI_TOKEN: Final = "pypi_token"
SECRET_SENDGRID_KEY: Final = "sendgrid_key"
SECRET_SQUARE_OAUTH: Final = "square_oauth_secret"
SECRET_TELEGRAM_TOKEN: Final = "telegram_bot_token"
SECRET_TWILIO_KEY: Final = "twilio_key"
SECRET_TYPES: Final = frozenset(
    {
        SECRET_AWS_ACCESS_KEY,
        SECRET_GITHUB_TOKEN,
        SECRET_GITLAB_TOKEN,
        SECRET_SLACK_TOKEN,
        SECRET_STRIPE_KEY,
        SECRET_OPENAI_API_KEY,
        SECRET_ANTHROPIC_API_KEY,
        SECRET_GOOGLE_API_KEY,
        SECRET_HUGGINGFACE_TOKEN,
        SECRET_PRIVATE_KEY,
        SECRET_JWT,
        SECRET_PASSWORD_IN_URL,
        SECRET_ASSIGNMENT,
        SECRET_HIGH_ENTROPY,
        SECRET_AZURE_STORAGE_KEY,
        SECRET_DISCORD_TOKEN,
        SECRET_MAILCHIMP_KEY,
        SECRET_NPM_TOKEN,
        SECRET_PYPI_TOKEN,
        SECRET_SENDGRID_KEY,
        SECRET_SQUARE_OAUTH,
        SECRET_TELEGRAM_TOKEN,
        SECRET_TWILIO_KEY,
    }
)
# the version of the secret rules (lib/hygiene/secrets.py): collect records it in its receipt,
# and the exports trust collect's "no secret here" verdict on a record only under the same rules
SECRET_RULES_VERSION: Final = 3
SECRET_ACTION_QUARANTINE: Final = "quarantine"
SECRET_ACTION_REDACT: Final = "redact"
SECRET_ACTIONS: Final = (SECRET_ACTION_QUARANTINE, SECRET_ACTION_REDACT)

# --- metadata keys on materializations ----------------------------------------------------
# run tags every run of the graph carries, however it was launched (tell runs apart in the UI)
TAG_SOURCE: Final = "distill/source"
TAG_OUTPUT: Final = "distill/output"
MD_ROW_COUNT: Final = "dagster/row_count"
MD_COLUMN_SCHEMA: Final = "dagster/column_schema"
MD_INPUT_HASH: Final = "distill/input_hash"
MD_OUTPUT_HASH: Final = "distill/output_hash"
MD_RECORDS_IN: Final = "distill/records_in"
MD_ACCEPTED: Final = "distill/accepted"
MD_REJECTED: Final = "distill/rejected"
MD_QUARANTINED: Final = "distill/quarantined"
MD_SKIPPED: Final = "distill/skipped"
MD_REASON_PREFIX: Final = "distill/reason/"
MD_RECEIPT_PATH: Final = "distill/receipt_path"
MD_DRIFT_SEVERITY: Final = "distill/drift_severity"
MD_STAGE: Final = "distill/stage"
MD_RUN_ID: Final = "distill/run_id"
MD_PARTITIONS: Final = "distill/partitions"
# whose figures a materialization or observation carries: a range run's are the whole range's
# (Dagster shows them on every partition of the range), a day's observation its own
MD_FIGURES_OF: Final = "distill/figures_of"
MD_DURATION_MS: Final = "distill/duration_ms"
MD_VALIDATION_PASSED: Final = "distill/validation_passed"
MD_SECRETS_PREFIX: Final = "distill/secrets/"
MD_HOLDOUT_ROWS: Final = "distill/holdout_rows"
MD_RECORDS_OUT: Final = "distill/records_out"
MD_PREVIEW: Final = "distill/preview"
MD_FORMAT: Final = "distill/format"
MD_PARQUET_ROWS: Final = "distill/parquet_rows"

# --- asset check names --------------------------------------------------------------------
CHECK_SCHEMA: Final = "schema_valid"
CHECK_FIREWALL: Final = "contamination_firewall"
CHECK_PAIR_RULES: Final = "pair_rules"
CHECK_CONSERVATION: Final = "conservation"
CHECK_DRIFT: Final = "drift"
CHECK_NO_SECRETS: Final = "no_secrets"
CHECK_HOLDOUT_DISJOINT: Final = "holdout_disjoint"
CHECK_INDEX_CONSISTENT: Final = "index_consistent"

# --- contamination-firewall violations (the ``rule`` of a firewall check's sample) ----------
# besides these, a violation may be named by the reason code of the rule broken
V_SOURCE_RUN_UNKNOWN: Final = "source_run_unknown"
V_TASK_MISMATCH: Final = "task_mismatch"
V_UNREVIEWED_IN_PAIR: Final = "unreviewed_in_pair"
V_CROSS_TASK_PAIR: Final = "cross_task_pair"

# --- drift --------------------------------------------------------------------------------
SEVERITY_OK: Final = "ok"
SEVERITY_WARN: Final = "warn"
SEVERITY_ALERT: Final = "alert"
SEVERITY_ORDER: Final = {SEVERITY_OK: 0, SEVERITY_WARN: 1, SEVERITY_ALERT: 2}

# --- environment variables ----------------------------------------------------------------
ENV_SOURCE_DIR: Final = "DISTILL_SOURCE_DIR"
ENV_OUTPUT_DIR: Final = "DISTILL_OUTPUT_DIR"
ENV_RECORDED_AT: Final = "DISTILL_RECORDED_AT"
ENV_DRIFT_WARN: Final = "DISTILL_DRIFT_WARN_PCT"
ENV_DRIFT_ALERT: Final = "DISTILL_DRIFT_ALERT_PCT"
ENV_DRIFT_MIN_BASE: Final = "DISTILL_DRIFT_MIN_BASE"
# the largest share (0..1) of its records a stage may skip before it fails (default: no limit)
ENV_MAX_SKIPPED_SHARE: Final = "DISTILL_MAX_SKIPPED_SHARE"
ENV_ALERT_WEBHOOK: Final = "DISTILL_ALERT_WEBHOOK_URL"
ENV_GIT_COMMIT: Final = "DISTILL_GIT_COMMIT"
ENV_WORKERS: Final = "DISTILL_WORKERS"
ENV_BACKFILL: Final = "DISTILL_BACKFILL"
ENV_IMPORTS: Final = "DISTILL_IMPORTS"
# seconds between progress lines of a long stage in the run log (default 5)
ENV_PROGRESS_INTERVAL: Final = "DISTILL_PROGRESS_INTERVAL_S"
# scale-out (docs/deploy.md)
ENV_STAGING_DIR: Final = "DISTILL_STAGING_DIR"
ENV_EXECUTOR: Final = "DISTILL_EXECUTOR"
ENV_PARTITION_START: Final = "DISTILL_PARTITION_START"
# the last daily partition, inclusive (default: none, i.e. tomorrow as the days go by)
ENV_PARTITION_END: Final = "DISTILL_PARTITION_END"
ENV_CELERY_BROKER: Final = "DISTILL_CELERY_BROKER_URL"
EXECUTOR_CELERY: Final = "celery"
EXECUTOR_K8S: Final = "k8s"
EXECUTORS: Final = (EXECUTOR_CELERY, EXECUTOR_K8S)
# the default executor: Dagster's multi_or_in_process_executor with in_process as its default
EXECUTOR_DEFAULT_NAME: Final = "in_process_or_multiprocess"
# at an object-store URL, which version ``exports`` points at (there are no symlinks there)
PUBLISHED_POINTER_PATH: Final = "reports/published.json"

# --- importers (docs/importers.md) --------------------------------------------------------
IMPORT_TAU_BENCH: Final = "tau-bench"
IMPORT_SWE_BENCH: Final = "swe-bench"
IMPORT_KINDS: Final = (IMPORT_TAU_BENCH, IMPORT_SWE_BENCH)

# --- partitions ---------------------------------------------------------------------------
PARTITION_START: Final = "2020-01-01"


# --- trace and diff (docs/operations.md) --------------------------------------------------
# the lookup ``distill trace`` and ``distill diff`` read: built by the publish stage in each
# version's directory, beside its ``exports`` (keys and byte offsets, no texts)
TRACE_FILE: Final = "trace.sqlite"
# beside it, the lookup's tables (Arrow IPC, memory-mapped when read; lib/publishing/trace.py)
TRACE_TABLES_DIR: Final = "trace"
TRACE_ROWS_DIR: Final = "exports/.trace"
# per scored day, the score stage's list of runs for the lookup (Arrow IPC)
SCORED_TRACE_FILE: Final = "trace.arrow"


def trace_rows_path(stage: str) -> str:
    """Where an export leaves its rows' ids and places for the trace lookup (Arrow IPC)."""
    return f"{TRACE_ROWS_DIR}/{stage}.arrow"


# --- the closed vocabularies as enums ------------------------------------------------------
# Each is made from the constants above (each value written once) and closed: a test
# (distill_tests/test_vocabulary.py) finds any stage name, reason code, severity or violation
# written as a string literal outside this module. Code uses the constants, which are plain
# ``str`` (orjson takes no enum as a dict key); the enums say what the vocabulary is.


def _vocabulary(name: str, prefix: str) -> type[StrEnum]:
    members = {
        key.removeprefix(prefix): value
        for key, value in globals().items()
        if key.startswith(prefix) and isinstance(value, str)
    }
    return StrEnum(name, members)  # type: ignore[return-value]


Stage = _vocabulary("Stage", "STAGE_")
Reason = _vocabulary("Reason", "R_")
Severity = _vocabulary("Severity", "SEVERITY_")
Violation = _vocabulary("Violation", "V_")
VOCABULARIES: Final = (Stage, Reason, Severity, Violation)
