"""The asset checks' bodies: each re-reads what a stage wrote in this run and judges one property.

Every check of an asset reads the files its stage's receipt lists (under the run's version
directory for the exports) and returns one ``CheckOutcome``; the Dagster side (runtime/checks.py
``run_check_step``) turns outcomes into asset-check results and records them with the run's
reports. ``CHECKS`` lists, per asset, its checks and what each verifies: the one registry the
check specs in ``defs/`` are made from.

Length: the table of every asset's checks (``CHECKS``, with the descriptions the UI shows) and
their bodies, which share one read of each file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.records.receipts import StageReceipt

# asset -> {check name: what it verifies (the UI's description of the check)}
CHECKS: dict[str, dict[str, str]] = {
    C.ASSET_EVIDENCE_INDEX: {
        C.CHECK_SCHEMA: "Index rows match EvidenceIndexSchema (strict).",
        C.CHECK_CONSERVATION: "Every source line is kept, skipped or quarantined, and the "
        "quarantine says so.",
    },
    C.ASSET_SCORED_RUNS: {
        C.CHECK_SCHEMA: "Scored rows match ScoredRunSchema (strict).",
        C.CHECK_CONSERVATION: "Every evidence record of the day is scored, attached to a run, "
        "or quarantined.",
    },
    C.ASSET_EXTRACTED_PLAYBOOKS: {
        C.CHECK_SCHEMA: "Extracted playbooks match ExtractedPlaybookSchema (numbered steps, "
        "known divergences).",
        C.CHECK_CONSERVATION: "Every scored run is a source, a failed run compared, or "
        "quarantined with a reason.",
        C.CHECK_FIREWALL: "Sources are verified runs, failed runs are rejected ones, nothing "
        "unreviewed appears.",
        C.CHECK_NO_SECRETS: "No file the asset wrote holds a secret (re-scanned from disk).",
        C.CHECK_HOLDOUT_DISJOINT: "No task has rows in both the train and the holdout file.",
    },
    C.ASSET_RAG_PLAYBOOKS: {
        C.CHECK_SCHEMA: "Playbooks match RagPlaybookSchema.",
        C.CHECK_FIREWALL: "Only accepted or partially accepted runs of the same task back a "
        "playbook.",
        C.CHECK_CONSERVATION: "Every extracted playbook is rendered or quarantined with a reason.",
        C.CHECK_NO_SECRETS: "No file the asset wrote holds a secret (re-scanned from disk).",
        C.CHECK_HOLDOUT_DISJOINT: "No task has rows in both the train and the holdout file.",
    },
    C.ASSET_SFT_DATASET: {
        C.CHECK_SCHEMA: "SFT rows match SftExampleSchema (user first, assistant last).",
        C.CHECK_FIREWALL: "Only accepted runs in allowed categories reach SFT.",
        C.CHECK_CONSERVATION: "Every scored run is an SFT example or is quarantined with a reason.",
        C.CHECK_NO_SECRETS: "No file the asset wrote holds a secret (re-scanned from disk).",
        C.CHECK_HOLDOUT_DISJOINT: "No task has rows in both the train and the holdout file.",
    },
    C.ASSET_PREFERENCE_PAIRS: {
        C.CHECK_SCHEMA: "Pairs match PreferencePairSchema.",
        C.CHECK_FIREWALL: "Pairs keep rejected and unreviewed runs off the chosen side, checked "
        "against the scores.",
        C.CHECK_CONSERVATION: "Every scored run is in a pair or is quarantined with a reason.",
        C.CHECK_PAIR_RULES: "Pairs are two distinct runs of one task, chosen strictly better, "
        "texts different.",
        C.CHECK_NO_SECRETS: "No file the asset wrote holds a secret (re-scanned from disk).",
        C.CHECK_HOLDOUT_DISJOINT: "No task has rows in both the train and the holdout file.",
    },
    C.ASSET_KTO_DATASET: {
        C.CHECK_SCHEMA: "Unpaired rows match KtoExampleSchema (label true exactly for accepted "
        "runs).",
        C.CHECK_FIREWALL: "Label true only for accepted runs, false only for rejected ones; none "
        "needs review.",
        C.CHECK_CONSERVATION: "Every scored run is an unpaired row or is quarantined with a "
        "reason.",
        C.CHECK_NO_SECRETS: "No file the asset wrote holds a secret (re-scanned from disk).",
        C.CHECK_HOLDOUT_DISJOINT: "No task has rows in both the train and the holdout file.",
    },
    C.ASSET_REVIEW_QUEUE: {
        C.CHECK_CONSERVATION: "Every run needing review is queued or quarantined with a reason.",
        C.CHECK_NO_SECRETS: "No file the asset wrote holds a secret (re-scanned from disk).",
    },
    C.ASSET_PLAYBOOK_INDEX: {
        C.CHECK_SCHEMA: "The index file is a distill search index of this schema version, intact.",
        C.CHECK_INDEX_CONSISTENT: "The index holds exactly the playbooks beside it, at their "
        "byte offsets.",
        C.CHECK_CONSERVATION: "Every playbook is indexed or quarantined with a reason.",
    },
}


@dataclass
class CheckOutcome:
    """One check's verdict: passed, how many failures, a one-line description and metadata
    (plain JSON values: counts, capped samples naming files, rows and rules, never text)."""

    asset: str
    check: str
    passed: bool
    num_failures: int
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    blocking: bool = True
    severity: str = "ERROR"


def written_root(out_root: Path, receipt: StageReceipt) -> Path:
    """Where the checked stage wrote its files (its run's version directory for exports)."""
    return out_root / str(receipt.extra.get("root", ""))


def files_read(asset: str, check: str, receipt: StageReceipt) -> list[str]:
    """The receipt outputs a check reads (paths relative to the written root)."""
    stage = S.ASSET_STAGE[asset]
    paths = [f.path for f in receipt.outputs.files]
    if check == C.CHECK_SCHEMA:
        if asset == C.ASSET_PLAYBOOK_INDEX:
            return [C.INDEX_PATH]
        return [p for p in paths if p.endswith(_TABLES[asset])]
    if check == C.CHECK_NO_SECRETS:
        return [p for p in paths if p.endswith(".jsonl")]
    if check in (C.CHECK_HOLDOUT_DISJOINT, C.CHECK_FIREWALL, C.CHECK_PAIR_RULES):
        return [p for p in paths if p in (S.TRAIN_PATHS.get(stage), S.HOLDOUT_PATHS.get(stage))]
    if check == C.CHECK_INDEX_CONSISTENT:
        return [C.INDEX_PATH]
    return [p for p in paths if p.endswith("quarantine.jsonl") or p.startswith(C.QUARANTINE_DIR)]


# the table files a schema check validates, by asset
_TABLES: dict[str, tuple[str, ...]] = {
    C.ASSET_EVIDENCE_INDEX: ("/index.jsonl",),
    C.ASSET_SCORED_RUNS: ("/" + C.SCORED_FILE,),
    C.ASSET_EXTRACTED_PLAYBOOKS: (C.EXTRACTED_PATH, C.EXTRACTED_HOLDOUT_PATH),
    C.ASSET_RAG_PLAYBOOKS: (C.RAG_PATH, C.RAG_HOLDOUT_PATH),
    C.ASSET_SFT_DATASET: (C.SFT_PATH, C.SFT_HOLDOUT_PATH),
    C.ASSET_PREFERENCE_PAIRS: (C.PREFERENCE_PATH, C.PREFERENCE_HOLDOUT_PATH),
    C.ASSET_KTO_DATASET: (C.KTO_PATH, C.KTO_HOLDOUT_PATH),
}


def conservation(asset: str, receipt: StageReceipt, root: Path) -> CheckOutcome:
    """records in = out + quarantined + skipped, and the quarantine files hold one row for each
    record left out, re-counted from the files on disk."""
    from distill_assets.lib.infra.io import count_lines

    stats = receipt.stats
    problems = []
    accounted = stats.records_out + stats.quarantined + stats.skipped
    if stats.records_in != accounted:
        problems.append(f"{stats.records_in} in != {accounted} out+quarantined+skipped")
    quarantine_files = [
        f
        for f in receipt.outputs.files
        if f.path.endswith("quarantine.jsonl") and not f.path.startswith(C.QUARANTINE_DIR)
    ] or [f for f in receipt.outputs.files if f.path.startswith(C.QUARANTINE_DIR)]
    run_rows = 0
    for entry in quarantine_files:
        on_disk = count_lines(root / entry.path)
        if on_disk != entry.record_count:
            problems.append(
                f"{entry.path}: {on_disk} lines on disk, receipt says {entry.record_count}"
            )
        run_rows += on_disk
    pair_rows = int(receipt.extra.get("pairs_quarantined", 0))
    if run_rows - pair_rows != stats.quarantined + stats.skipped:
        problems.append(
            f"quarantine files hold {run_rows - pair_rows} record rows, receipt counts "
            f"{stats.quarantined + stats.skipped} left out"
        )
    return CheckOutcome(
        asset,
        C.CHECK_CONSERVATION,
        not problems,
        len(problems),
        "records in = out + quarantined + skipped" if not problems else "; ".join(problems),
        {
            "records_in": stats.records_in,
            "records_out": stats.records_out,
            "quarantined": stats.quarantined,
            "skipped": stats.skipped,
        },
    )


def schema(asset: str, receipt: StageReceipt, root: Path, workers: int) -> CheckOutcome:
    """Every table file the asset wrote in this run matches its Pandera model."""
    from distill_assets.lib.verify.schemas import schema_of, validate_jsonl

    paths = [root / p for p in files_read(asset, C.CHECK_SCHEMA, receipt)]
    model = schema_of(asset, str(receipt.extra.get("format", "")))
    return _schema_outcome(asset, validate_jsonl(model, paths, workers=workers), model, paths)


def _schema_outcome(asset: str, outcome: Any, model: type, paths: list[Path]) -> CheckOutcome:
    """The schema check's outcome of ``paths`` validated against ``model``."""
    return CheckOutcome(
        asset,
        C.CHECK_SCHEMA,
        outcome.passed,
        outcome.num_failures,
        f"{outcome.rows} rows in {len(paths)} file(s) match {model.__name__}"
        if outcome.passed
        else f"{outcome.num_failures} schema failure(s) in {outcome.rows} rows",
        {"rows": outcome.rows, "failure_cases": outcome.failure_cases},
    )


def no_secrets(asset: str, receipt: StageReceipt, root: Path) -> CheckOutcome:
    """Every JSONL file the asset wrote in this run (datasets, holdout, quarantine) holds no
    secret, re-scanned from disk; the metadata names files, rows and types, never text."""
    from distill_assets.lib.hygiene.verify import verify_no_secrets

    paths = files_read(asset, C.CHECK_NO_SECRETS, receipt)
    report = verify_no_secrets(root, paths)
    description = (
        f"no secret in {report.rows} rows of {len(paths)} file(s)"
        if report.passed
        else f"{report.count} row(s) hold a secret ({', '.join(sorted(report.types))})"
    )
    return CheckOutcome(
        asset,
        C.CHECK_NO_SECRETS,
        report.passed,
        report.count,
        description,
        {"rows": report.rows, "violations": report.samples},
    )


def playbook_deny_list(receipt: StageReceipt) -> tuple[str, ...]:
    """The deny-list the checked extraction used, as its receipt recorded it (lib only: a
    check worker does not import Dagster)."""
    from distill_assets.lib.playbooks.playbook import PlaybookSettings

    denied = (receipt.extra.get("settings") or {}).get("deny_categories")
    return PlaybookSettings().deny_categories if denied is None else tuple(denied)


def _settings_used(receipt: StageReceipt) -> Any:
    """The export settings the checked run used, as its receipt recorded them."""
    from distill_assets.lib.datasets.exporter import recorded_settings

    return recorded_settings(receipt.extra.get("settings") or {})


def index(asset: str, check: str, receipt: StageReceipt, root: Path) -> CheckOutcome:
    """The search index: its schema, or its consistency with the playbooks beside it."""
    from distill_assets.lib.playbooks.search import index_problems

    schema_problems, consistency = index_problems(root / C.INDEX_PATH, root / C.RAG_PATH)
    if check == C.CHECK_SCHEMA:
        problems, passed_text = schema_problems, "index schema valid"
    else:
        problems = consistency or [f"not checked: {p}" for p in schema_problems]
        passed_text = "index matches the playbooks"
    return CheckOutcome(
        asset,
        check,
        not problems,
        len(problems),
        "; ".join(problems[:5]) if problems else passed_text,
        {"problems": problems[:20]},
    )


# the firewall of each dataset asset, on a frame of its rows (lib/verify/firewall.py)
_FRAME_RULES: dict[tuple[str, str], str] = {
    (C.ASSET_EXTRACTED_PLAYBOOKS, C.CHECK_FIREWALL): "verify_extracted_frame",
    (C.ASSET_RAG_PLAYBOOKS, C.CHECK_FIREWALL): "verify_rag_frame",
    (C.ASSET_SFT_DATASET, C.CHECK_FIREWALL): "verify_sft_frame",
    (C.ASSET_PREFERENCE_PAIRS, C.CHECK_FIREWALL): "verify_preference_frame",
    (C.ASSET_PREFERENCE_PAIRS, C.CHECK_PAIR_RULES): "verify_pair_rules_frame",
    (C.ASSET_KTO_DATASET, C.CHECK_FIREWALL): "verify_kto_frame",
}


class _Firewall:
    """The firewall checks of a dataset over its pieces: their firewall columns are judged in
    joins of FIREWALL_ROWS rows (each join probes every scored run once: once per piece would
    cost the table's size per piece)."""

    def __init__(self, asset: str, rules: list[str], receipt: StageReceipt, out_root: Path) -> None:
        from distill_assets.lib.verify import firewall as fw

        self.fw = fw
        self.asset = asset
        self.verify = [(check, getattr(fw, _FRAME_RULES[(asset, check)])) for check in rules]
        self.reports = {check: fw.FirewallReport() for check in rules}
        self.table = fw.scored_lookup(out_root)
        self.settings = (
            playbook_deny_list(receipt)
            if asset == C.ASSET_EXTRACTED_PLAYBOOKS
            else _settings_used(receipt)
        )
        self.gathered: list[Any] = []
        self.rows = 0

    def add(self, piece: Any) -> None:
        frame = self.fw.firewall_columns(self.asset, piece)
        self.gathered.append(frame)
        self.rows += frame.height
        if self.rows >= FIREWALL_ROWS:
            self.judge()

    def judge(self) -> None:
        import polars as pl

        if not self.gathered:
            return
        frame = pl.concat(self.gathered, how="vertical")
        self.gathered, self.rows = [], 0
        for check, verify in self.verify:
            self.reports[check].merge(verify(frame, self.table, self.settings))

    def outcome(self, check: str) -> CheckOutcome:
        report = self.reports[check]
        what = "playbooks" if self.asset == C.ASSET_EXTRACTED_PLAYBOOKS else "rows"
        return CheckOutcome(
            self.asset,
            check,
            report.passed,
            report.count,
            f"{report.rows} {what} verified against the scored runs"
            if report.passed
            else f"{report.count} violation(s) in {report.rows} {what}",
            {"rows": report.rows, "violations": report.violations},
        )


def _holdout_outcome(asset: str, check: str, tasks: Any) -> CheckOutcome:
    split = tasks.report()
    return CheckOutcome(
        asset,
        check,
        split.passed,
        split.count,
        f"{split.train_rows} train and {split.holdout_rows} holdout rows share no task"
        if split.passed
        else f"{split.count} task(s) on both sides",
        {
            "train_rows": split.train_rows,
            "holdout_rows": split.holdout_rows,
            "shared_tasks": split.shared_tasks,
        },
    )


def dataset_checks(
    asset: str, checks: list[str], receipt: StageReceipt, out_root: Path, root: Path
) -> list[CheckOutcome]:
    """Schema, firewall, pair rules and holdout of a dataset on ONE read of its train and
    holdout files (piece by piece: memory holds one piece), each piece judged by every check."""
    from distill_assets.lib.hygiene.holdout import TaskSides
    from distill_assets.lib.verify.schemas import Validation, batched, iter_jsonl, schema_of

    stage = S.ASSET_STAGE[asset]
    paths = [root / S.TRAIN_PATHS[stage], root / S.HOLDOUT_PATHS[stage]]
    model = schema_of(asset, str(receipt.extra.get("format", "")))
    validation = Validation(model, paths) if C.CHECK_SCHEMA in checks else None
    rules = [c for c in checks if (asset, c) in _FRAME_RULES]
    firewall = _Firewall(asset, rules, receipt, out_root) if rules else None
    tasks = TaskSides() if C.CHECK_HOLDOUT_DISJOINT in checks else None
    for piece in batched(iter_jsonl(model, paths, missing_ok=True)):
        if validation is not None:
            validation.add(piece)
        if firewall is not None:
            firewall.add(piece)
        if tasks is not None:
            tasks.add(piece)
    if firewall is not None:
        firewall.judge()
    outcomes = []
    for check in checks:
        if check == C.CHECK_SCHEMA and validation is not None:
            outcomes.append(_schema_outcome(asset, validation.outcome(), model, paths))
        elif firewall is not None and check in firewall.reports:
            outcomes.append(firewall.outcome(check))
        elif check == C.CHECK_HOLDOUT_DISJOINT:
            outcomes.append(_holdout_outcome(asset, check, tasks))
    return outcomes


FIREWALL_ROWS = 100_000

_READ_ONCE = (C.CHECK_SCHEMA, C.CHECK_FIREWALL, C.CHECK_PAIR_RULES, C.CHECK_HOLDOUT_DISJOINT)


def run_checks(
    asset: str,
    checks: list[str],
    receipt: StageReceipt,
    out_root: Path,
    workers: int = 1,
) -> list[CheckOutcome]:
    """The outcomes of ``checks`` of ``asset`` on what this run's ``receipt`` lists, in the
    order given."""
    root = written_root(out_root, receipt)
    found: dict[str, CheckOutcome] = {}
    shared = [c for c in checks if c in _READ_ONCE]
    if asset in _TABLES and asset not in (C.ASSET_EVIDENCE_INDEX, C.ASSET_SCORED_RUNS) and shared:
        found.update((o.check, o) for o in dataset_checks(asset, shared, receipt, out_root, root))
    for check in checks:
        if check in found:
            continue
        if check == C.CHECK_CONSERVATION:
            found[check] = conservation(asset, receipt, root)
        elif asset == C.ASSET_PLAYBOOK_INDEX:
            found[check] = index(asset, check, receipt, root)
        elif check == C.CHECK_SCHEMA:
            found[check] = schema(asset, receipt, root, workers)
        elif check == C.CHECK_NO_SECRETS:
            found[check] = no_secrets(asset, receipt, root)
        else:
            raise ValueError(f"{asset} has no check {check}")
    return [found[check] for check in checks]


def _scored_table(out_root: Path) -> int:
    from distill_assets.lib.verify.firewall import scored_lookup

    return len(scored_lookup(out_root))


# below this many bytes to read in all, the checks run in the step's process
POOL_MIN_BYTES = 64 * 1024 * 1024


def run_all(
    wanted: dict[str, list[str]],
    receipts: dict[str, StageReceipt],
    out_root: Path,
    workers: int = 1,
    pool_min_bytes: int = POOL_MIN_BYTES,
) -> list[CheckOutcome]:
    """Every wanted check of every asset (``run_checks``), the assets spread over ``workers``
    processes when there is enough to read (the step's process then keeps none of the memory
    the checks use); outcomes in the order of ``wanted``."""
    total = sum(f.bytes for asset in wanted for f in receipts[asset].outputs.files)
    # a worker even for one asset: what the checks allocate goes when the worker does
    if workers <= 1 or total < pool_min_bytes:
        return [
            o for a, names in wanted.items() for o in run_checks(a, names, receipts[a], out_root)
        ]
    from distill_assets.lib.infra.parallel import process_pool

    # the biggest assets first, so that the pool's queue ends with small ones
    order = sorted(wanted, key=lambda a: -sum(f.bytes for f in receipts[a].outputs.files))
    with process_pool(min(workers, len(wanted)), fresh=True) as pool:
        if any((asset, check) in _FRAME_RULES for asset in wanted for check in wanted[asset]):
            # the scored runs' table, built once, then mapped by every worker
            # (lib/verify/firewall.py)
            pool.submit(_scored_table, out_root).result()
        futures = {a: pool.submit(run_checks, a, wanted[a], receipts[a], out_root) for a in order}
        done = {a: future.result() for a, future in futures.items()}
    return [o for asset in wanted for o in done[asset]]
