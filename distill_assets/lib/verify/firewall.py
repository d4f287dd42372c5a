"""The contamination firewall and the pair rules, re-verified from the files on disk.

The export code already keeps rejected and unreviewed work out; these functions check the
written datasets against the scored runs independently, so a bug in an export (or a file edited
by hand) is caught by a blocking asset check before anything downstream uses it.

Every rule is a join or an expression over a dataset frame (read once by
``schemas.read_jsonl``, train then holdout, row numbers counted on across both) and a
``ScoredTable``: each scored run keyed by two independent 64-bit hashes of its id, with its
quality, task, score and flags, about 30 bytes a run. The ``verify_*_frame`` functions take an
already-read frame; ``verify_*`` read the files themselves.

Length: one rule set per dataset (extraction, RAG, SFT, preference, KTO, review queue), each a
few joins; they share the scored-table join and the sampling of violations.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from distill_assets.lib import constants as C
from distill_assets.lib.datasets.exporter import ExportSettings
from distill_assets.lib.datasets.runs import scored_files
from distill_assets.lib.verify.schemas import (
    LINE,
    PIECE_BYTES,
    WHITESPACE,
    batched,
    hash_key,
    iter_jsonl,
    read_columns,
    read_jsonl,
    sniff_schema,
    texts_identical,
)

TRUSTED = (C.QUALITY_ACCEPTED, C.QUALITY_PARTIAL)
SEQ = "_seq"  # the order of a row's violations: its run ids' positions


class Scored(NamedTuple):
    quality: str
    task_id: str
    score: float
    response_empty: bool
    sft_eligible: bool


@dataclass
class FirewallReport:
    rows: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    sample_limit: int = 20

    def add(self, row: int, rule: str, **details: Any) -> None:
        self.count += 1
        if len(self.violations) < self.sample_limit:
            self.violations.append({"row": row, "rule": rule, **details})

    @property
    def passed(self) -> bool:
        return self.count == 0

    def merge(self, later: FirewallReport) -> FirewallReport:
        """This report followed by one of later rows (the next piece of the same files)."""
        self.rows += later.rows
        self.count += later.count
        self.violations = (self.violations + later.violations)[: self.sample_limit]
        return self


# --- the scored runs -----------------------------------------------------------------------

KEY = ("_k1", "_k2")
_SCORED_COLUMNS = {
    "run_id": pl.String,
    "task_id": pl.String,
    "quality_score": pl.String,
    "score": pl.Float64,
    "response_empty": pl.Boolean,
    "sft_eligible": pl.Boolean,
    "category": pl.String,
}
# bumped when the table's columns change, so a table shared by an older run is not reused
_TABLE_VERSION = "2"


def run_key(run_id: pl.Expr, names: Sequence[str] = KEY) -> list[pl.Expr]:
    """The key that joins dataset rows to scored runs: two independent 64-bit hashes of the run
    id (``hash_key``), null for a null or empty id."""
    return hash_key(pl.when(run_id != "").then(run_id), names)


def _enum(values: pl.Series) -> pl.Enum:
    return pl.Enum(values.drop_nulls().unique(maintain_order=True))


@dataclass(frozen=True)
class ScoredTable:
    """What the firewall needs to know of every scored run, keyed by ``run_key``; a run id
    scored on several days keeps its last row (file order), as a dict would."""

    frame: pl.DataFrame

    @staticmethod
    def _compact(rows: pl.DataFrame) -> pl.DataFrame:
        """Rows with run_id, task_id, quality_score, score, response_empty, sft_eligible as the
        table keeps them (the run id as two hashes), in order."""
        return rows.select(
            *run_key(pl.col("run_id")),
            pl.col("quality_score").alias("quality"),
            pl.col("task_id"),
            pl.col("score"),
            pl.col("response_empty").fill_null(False),
            pl.col("sft_eligible").fill_null(True),
            (pl.col("category") if "category" in rows.columns else pl.lit(None, pl.String)).alias(
                "category"
            ),
        ).filter(pl.col(KEY[0]).is_not_null())

    @classmethod
    def _keyed(cls, compact: pl.DataFrame) -> ScoredTable:
        keyed = compact.unique(subset=list(KEY), keep="last", maintain_order=True)
        # few distinct qualities and categories: an enum holds each run's as a small integer
        return cls(
            keyed.with_columns(
                pl.col("quality").cast(_enum(keyed["quality"])),
                pl.col("category").cast(_enum(keyed["category"])),
            )
        )

    @classmethod
    def from_rows(cls, rows: pl.DataFrame) -> ScoredTable:
        """From rows with run_id, task_id, quality_score, score, response_empty, sft_eligible
        (and category, null when absent)."""
        return cls._keyed(cls._compact(rows))

    @classmethod
    def read(cls, paths: Sequence[Path]) -> ScoredTable:
        """From scored-runs files, reading only the columns needed (natively, by polars), file
        by file: memory holds the compact table and one file's columns."""
        parts = [cls._compact(read_columns([path], _SCORED_COLUMNS)) for path in paths]
        if not parts:
            return cls.from_rows(read_columns([], _SCORED_COLUMNS))
        return cls._keyed(pl.concat(parts, how="vertical"))

    def __len__(self) -> int:
        return self.frame.height

    @property
    def nbytes(self) -> int:
        """Memory held: the columns and the distinct qualities and task ids."""
        categories = sum(
            pl.Series(dtype.categories).estimated_size()
            for dtype in self.frame.schema.values()
            if isinstance(dtype, pl.Enum)
        )
        return self.frame.estimated_size() + categories

    def get(self, run_id: str) -> Scored | None:
        """One run, by its id (for tests and tools; checks join whole frames)."""
        k1, k2 = pl.select(*run_key(pl.lit(run_id, pl.String))).row(0)
        hit = self.frame.filter((pl.col(KEY[0]) == k1) & (pl.col(KEY[1]) == k2))
        if hit.height == 0:
            return None
        row = hit.row(0, named=True)
        return Scored(
            row["quality"], row["task_id"], row["score"], row["response_empty"], row["sft_eligible"]
        )

    def __getitem__(self, run_id: str) -> Scored:
        found = self.get(run_id)
        if found is None:
            raise KeyError(run_id)
        return found

    def __contains__(self, run_id: object) -> bool:
        return isinstance(run_id, str) and self.get(run_id) is not None

    def attach(self, frame: pl.DataFrame, column: str, prefix: str) -> pl.DataFrame:
        """``frame`` (order kept) with what is known of the run named in ``column``:
        ``{prefix}known``, ``{prefix}quality``, ``{prefix}task_id``, ``{prefix}score``,
        ``{prefix}response_empty``, ``{prefix}sft_eligible``, ``{prefix}category``."""
        keys = [f"{prefix}{k}" for k in KEY]
        right = self.frame.rename(
            {name: f"{prefix}{name.lstrip('_')}" for name in self.frame.columns if name not in KEY}
        ).rename(dict(zip(KEY, keys, strict=True)))
        keyed = frame.with_columns(run_key(pl.col(column), keys))
        # the table's rows this frame names first (a semi join hashes the frame's keys and
        # probes the table), so the left join hashes those, not every scored run
        named = right.join(keyed.select(keys), on=keys, how="semi")
        joined = keyed.join(
            named.with_columns(pl.lit(True).alias(f"{prefix}known")),
            on=keys,
            how="left",
            maintain_order="left",
        )
        return joined.with_columns(
            pl.col(f"{prefix}known").fill_null(False),
            pl.col(f"{prefix}quality").cast(pl.String),
            pl.col(f"{prefix}task_id").cast(pl.String),
            pl.col(f"{prefix}category").cast(pl.String),
        ).drop(keys)


_CACHE: dict[Path, tuple[tuple[tuple[str, int, int], ...], ScoredTable]] = {}


def scored_lookup(out_root: Path) -> ScoredTable:
    """Every scored run on disk as a ``ScoredTable``; built once while the scored files stay
    the same and shared by the checks that use it: in this process, and with the check worker
    processes through an Arrow file in the output's scratch folder, which each maps (its pages
    are shared, not copied)."""
    fingerprint = tuple(
        (relpath, stat.st_size, stat.st_mtime_ns)
        for relpath in scored_files(out_root)
        for stat in [(out_root / relpath).stat()]
    )
    cached = _CACHE.get(out_root)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    _CACHE.clear()
    digest = hashlib.sha256(repr((_TABLE_VERSION, fingerprint)).encode("utf-8")).hexdigest()[:16]
    shared = out_root / C.SCRATCH_DIR / f"scored-table-{digest}.arrow"
    if shared.exists():
        table = ScoredTable(pl.read_ipc(shared))  # mapped, not read, where the format allows
    else:
        table = ScoredTable.read([out_root / relpath for relpath, _, _ in fingerprint])
        _share(table, shared)
    _CACHE[out_root] = (fingerprint, table)
    return table


def _share(table: ScoredTable, path: Path) -> None:
    """Write the table where other processes of the run find it (atomically; older tables of
    other scored files are removed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob("scored-table-*.arrow"):
        if old != path:
            old.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        table.frame.write_ipc(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- reporting -----------------------------------------------------------------------------


class _Rule(NamedTuple):
    """A violation: its name (or an expression naming it per row), when it applies, and the
    details it reports (after ``row`` and ``rule``)."""

    rule: str | pl.Expr
    when: pl.Expr
    details: dict[str, pl.Expr]


def _report(rows: int, groups: list[tuple[pl.DataFrame, list[_Rule]]]) -> FirewallReport:
    """Count every violation and sample the first ones as the row-by-row check did: by row,
    then by the position of the run id in the row, then in rule order."""
    report = FirewallReport(rows=rows)
    found: list[tuple[int, int, int, dict[str, Any]]] = []
    for frame, rules in groups:
        seq = pl.col(SEQ) if SEQ in frame.columns else pl.lit(0)
        for order, rule in enumerate(rules):
            name = pl.lit(rule.rule) if isinstance(rule.rule, str) else rule.rule
            hits = frame.filter(rule.when.fill_null(False))
            report.count += hits.height
            if SEQ in frame.columns:  # rows of one group may come in several runs of lines
                hits = hits.sort(LINE, SEQ)
            first = hits.head(report.sample_limit).select(
                pl.col(LINE).alias("row"),
                seq.alias(SEQ),
                name.alias("rule"),
                *(expr.alias(key) for key, expr in rule.details.items()),
            )
            for item in first.iter_rows(named=True):
                line, position = item.pop("row"), item.pop(SEQ)
                found.append((line, position, order, {"row": line, **item}))
    found.sort(key=lambda hit: hit[:3])
    report.violations = [details for *_, details in found[: report.sample_limit]]
    return report


def _not_in(value: pl.Expr, allowed: Sequence[str]) -> pl.Expr:
    """``value not in allowed`` as Python reads it (None is not in)."""
    return ~value.is_in(list(allowed)).fill_null(False)


def _folded(names: Sequence[str]) -> list[str]:
    """The firewall's own reading of a configured category list: surrounding whitespace and
    case do not count (read from the raw setting, not from the exporter's normalized copy)."""
    return sorted({name.strip(WHITESPACE).lower() for name in names})


def _fold(category: pl.Expr) -> pl.Expr:
    return category.str.strip_chars(WHITESPACE).str.to_lowercase()


def denied(category: pl.Expr, names: Sequence[str]) -> pl.Expr:
    """True where a category is in the deny-list ``names`` (false for none)."""
    return _fold(category).is_in(_folded(names)).fill_null(False)


def category_reason(category: pl.Expr, settings: ExportSettings) -> pl.Expr:
    """Why a run's category keeps it out of SFT (unsafe, or not allowed), else null."""
    allowed = settings.sft_allow_categories
    missing = None if allowed is None else C.R_CATEGORY_DISALLOWED
    reason = pl.when(category.is_null()).then(pl.lit(missing, pl.String))
    reason = reason.when(denied(category, settings.sft_deny_categories)).then(
        pl.lit(C.R_UNSAFE_SFT_CATEGORY)
    )
    if allowed is not None:
        reason = reason.when(_not_in(_fold(category), _folded(allowed))).then(
            pl.lit(C.R_CATEGORY_DISALLOWED)
        )
    return reason.otherwise(pl.lit(None, pl.String))


def _row_or_run_reason(settings: ExportSettings) -> pl.Expr:
    """The category rule on the category the row states, else on the one its scored run has
    (a row that misstates its run's category is still caught)."""
    return pl.coalesce(
        category_reason(pl.col("category"), settings),
        category_reason(pl.col("run_category"), settings),
    )


def _runs(
    frame: pl.DataFrame, ids: pl.Expr, offset: int = 0, keep: Sequence[str] = ()
) -> pl.DataFrame:
    """One row per run id in the list ``ids`` of each dataset row (with the row's line, task
    and ``keep`` columns), numbered by its position plus ``offset``."""
    return (
        frame.select(
            LINE,
            "task_id",
            *keep,
            ids.alias("run_id"),
            (pl.int_ranges(ids.list.len()) + offset).alias(SEQ),
        )
        .explode("run_id", SEQ)
        .filter(pl.col(SEQ).is_not_null())
    )


# --- the rules on a read frame -------------------------------------------------------------


def verify_sft_frame(
    frame: pl.DataFrame, table: ScoredTable, settings: ExportSettings
) -> FirewallReport:
    """Only accepted, SFT-eligible runs with an answer, in allowed categories, of their task."""
    rows = table.attach(
        frame.select(LINE, "source_run_id", "task_id", "category"), "source_run_id", "run_"
    )
    known = pl.col("run_known")
    run = {"run_id": pl.col("source_run_id")}
    reason = _row_or_run_reason(settings)
    return _report(
        frame.height,
        [
            (
                rows,
                [
                    _Rule(C.V_SOURCE_RUN_UNKNOWN, ~known, run),
                    _Rule(
                        "not_accepted_in_sft",
                        known & pl.col("run_quality").ne_missing(C.QUALITY_ACCEPTED),
                        {**run, "quality": pl.col("run_quality")},
                    ),
                    _Rule(
                        C.V_TASK_MISMATCH,
                        known & pl.col("run_task_id").ne_missing(pl.col("task_id")),
                        run,
                    ),
                    _Rule(C.R_EMPTY_RESPONSE, known & pl.col("run_response_empty"), run),
                    _Rule(C.R_NOT_SFT_ELIGIBLE, known & ~pl.col("run_sft_eligible"), run),
                    _Rule(reason, known & reason.is_not_null(), run),
                ],
            )
        ],
    )


def verify_rag_frame(
    frame: pl.DataFrame, table: ScoredTable, settings: ExportSettings
) -> FirewallReport:
    """Only accepted (or, when allowed, partially accepted) runs with an answer, of the task."""
    allowed = TRUSTED if settings.rag_include_partial else (C.QUALITY_ACCEPTED,)
    runs = table.attach(_runs(frame, pl.col("source_run_ids")), "run_id", "run_")
    known = pl.col("run_known")
    trusted = known & ~_not_in(pl.col("run_quality"), allowed)
    same_task = pl.col("run_task_id").eq_missing(pl.col("task_id"))
    run = {"run_id": pl.col("run_id")}
    rules = [
        _Rule(C.V_SOURCE_RUN_UNKNOWN, ~known, run),
        _Rule(
            "untrusted_run_in_rag",
            known & _not_in(pl.col("run_quality"), allowed),
            {**run, "quality": pl.col("run_quality")},
        ),
        _Rule(C.V_TASK_MISMATCH, trusted & ~same_task, run),
        _Rule(C.R_EMPTY_RESPONSE, trusted & same_task & pl.col("run_response_empty"), run),
        _Rule(
            C.R_DENIED_CATEGORY,
            known & denied(pl.col("run_category"), settings.sft_deny_categories),
            {**run, "category": pl.col("run_category")},
        ),
    ]
    return _report(frame.height, [(runs, rules)])


def _pairs(frame: pl.DataFrame, table: ScoredTable) -> pl.DataFrame:
    rows = frame.select(LINE, "chosen_run_id", "rejected_run_id", "task_id")
    return table.attach(table.attach(rows, "chosen_run_id", "c_"), "rejected_run_id", "r_")


_IDS = {"chosen": pl.col("chosen_run_id"), "rejected": pl.col("rejected_run_id")}


def verify_preference_frame(
    frame: pl.DataFrame, table: ScoredTable, settings: ExportSettings
) -> FirewallReport:
    """The firewall for pairs: a trusted chosen side with an answer, nothing unreviewed, no
    run of a denied category on either side."""
    both = pl.col("c_known") & pl.col("r_known")
    names = settings.sft_deny_categories
    either_denied = denied(pl.col("c_category"), names) | denied(pl.col("r_category"), names)
    qualities = (pl.col("c_quality"), pl.col("r_quality"))
    unreviewed = pl.any_horizontal(q.eq_missing(C.QUALITY_REVIEW) for q in qualities)
    rules = [
        _Rule(C.V_SOURCE_RUN_UNKNOWN, ~both, _IDS),
        _Rule(
            "untrusted_chosen",
            both & _not_in(pl.col("c_quality"), TRUSTED),
            {"quality": pl.col("c_quality"), **_IDS},
        ),
        _Rule(C.V_UNREVIEWED_IN_PAIR, both & unreviewed, _IDS),
        _Rule(C.R_EMPTY_RESPONSE, both & pl.col("c_response_empty"), _IDS),
        _Rule(C.R_DENIED_CATEGORY, both & either_denied, _IDS),
    ]
    return _report(frame.height, [(_pairs(frame, table), rules)])


# a pair frame may carry whether its texts are identical (computed per piece read), in place
# of the texts themselves (see firewall_columns)
IDENTICAL = "_identical"

# what each asset's firewall (and pair rules) read of its rows: a frame of these columns,
# gathered piece by piece, is judged in one join against the scored runs (a join per piece
# would build a hash table of every scored run for every piece)
_COLUMNS: dict[str, tuple[str, ...]] = {
    C.ASSET_SFT_DATASET: ("source_run_id", "task_id", "category"),
    C.ASSET_KTO_DATASET: ("source_run_id", "task_id", "label", "category"),
    C.ASSET_RAG_PLAYBOOKS: ("task_id", "source_run_ids"),
    C.ASSET_EXTRACTED_PLAYBOOKS: ("task_id", "source_run_ids", "failed_run_ids"),
    C.ASSET_PREFERENCE_PAIRS: ("chosen_run_id", "rejected_run_id", "task_id"),
}


def firewall_columns(asset: str, piece: pl.DataFrame) -> pl.DataFrame:
    """The columns of a piece of ``asset``'s rows that its firewall and pair rules read (texts
    reduced to what the rules ask of them)."""
    columns = [pl.col(LINE), *(pl.col(name) for name in _COLUMNS[asset])]
    if asset == C.ASSET_EXTRACTED_PLAYBOOKS:
        run_ids = pl.element().struct.field("run_id")
        columns.append(pl.col("divergences").list.eval(pl.struct(run_ids.alias("run_id"))))
    frame = piece.select(columns)
    if asset == C.ASSET_PREFERENCE_PAIRS:
        frame = frame.with_columns(texts_identical(piece, "chosen", "rejected").alias(IDENTICAL))
    return frame


def verify_pair_rules_frame(
    frame: pl.DataFrame, table: ScoredTable, settings: ExportSettings
) -> FirewallReport:
    """Pair rules: two distinct runs of one task, chosen strictly better by at least the
    configured margin, texts that differ after whitespace folding."""
    identical = (
        frame.get_column(IDENTICAL)
        if IDENTICAL in frame.columns
        else texts_identical(frame, "chosen", "rejected")
    )
    pairs = _pairs(frame, table).with_columns(identical.alias("identical"))
    both = pl.col("c_known") & pl.col("r_known")
    rank_c, rank_r = (
        pl.col(f"{side}_quality").replace_strict(C.QUALITY_RANK, default=-1, return_dtype=pl.Int8)
        for side in ("c", "r")
    )
    score_c, score_r = pl.col("c_score"), pl.col("r_score")
    cross = pl.col("c_task_id").ne_missing(pl.col("r_task_id")) | pl.col("c_task_id").ne_missing(
        pl.col("task_id")
    )
    rules = [
        _Rule(C.R_SELF_PAIR, pl.col("chosen_run_id").eq_missing(pl.col("rejected_run_id")), _IDS),
        _Rule(C.V_SOURCE_RUN_UNKNOWN, ~both, _IDS),
        _Rule(C.V_CROSS_TASK_PAIR, both & cross, _IDS),
        _Rule(
            "chosen_not_better",
            both & ((rank_c < rank_r) | ((rank_c == rank_r) & (score_c <= score_r))),
            _IDS,
        ),
        _Rule(C.R_BELOW_MARGIN, both & ((score_c - score_r).round(6) < settings.min_margin), _IDS),
        _Rule(C.R_IDENTICAL_TEXT, both & pl.col("identical"), _IDS),
    ]
    return _report(frame.height, [(pairs, rules)])


def verify_kto_frame(
    frame: pl.DataFrame, table: ScoredTable, settings: ExportSettings
) -> FirewallReport:
    """The firewall for unpaired rows: label true only for accepted, SFT-eligible runs with an
    answer in an allowed category; label false only for rejected runs not in a denied category;
    never a run to review
    or a partially accepted one; the row's task is its run's."""
    rows = table.attach(
        frame.select(LINE, "source_run_id", "task_id", "label", "category"),
        "source_run_id",
        "run_",
    )
    known = pl.col("run_known")
    label = pl.col("label")
    desirable, undesirable = known & label.eq_missing(True), known & label.eq_missing(False)
    quality = pl.col("run_quality")
    run = {"run_id": pl.col("source_run_id")}
    reason = _row_or_run_reason(settings)
    rules = [
        _Rule(C.V_SOURCE_RUN_UNKNOWN, ~known, run),
        _Rule(
            "desirable_not_accepted",
            desirable & quality.ne_missing(C.QUALITY_ACCEPTED),
            {**run, "quality": quality},
        ),
        _Rule(C.R_NOT_SFT_ELIGIBLE, desirable & ~pl.col("run_sft_eligible"), run),
        _Rule(reason, desirable & reason.is_not_null(), run),
        _Rule(
            "undesirable_not_rejected",
            undesirable & quality.ne_missing(C.QUALITY_REJECTED),
            {**run, "quality": quality},
        ),
        # the deny-list on the negatives too, on the row's category or its run's
        _Rule(
            C.R_DENIED_CATEGORY,
            undesirable
            & (
                denied(pl.col("category"), settings.sft_deny_categories)
                | denied(pl.col("run_category"), settings.sft_deny_categories)
            ),
            {**run, "category": pl.col("run_category")},
        ),
        _Rule("label_not_boolean", known & label.is_null(), run),
        _Rule(C.V_TASK_MISMATCH, known & pl.col("run_task_id").ne_missing(pl.col("task_id")), run),
        _Rule(C.R_EMPTY_RESPONSE, known & pl.col("run_response_empty"), run),
    ]
    return _report(frame.height, [(rows, rules)])


def verify_extracted_frame(
    frame: pl.DataFrame,
    table: ScoredTable,
    deny: Sequence[str] = C.DEFAULT_UNSAFE_SFT_CATEGORIES,
) -> FirewallReport:
    """Sources are verified runs of the task with an answer; failed runs (listed, or compared in
    a divergence) are rejected runs of the task; no run needing human review appears at all,
    nor a run of a category in ``deny`` (the extraction's deny-list)."""
    sources = table.attach(_runs(frame, pl.col("source_run_ids")), "run_id", "run_")
    failed = _runs(frame, pl.col("failed_run_ids"), 1 << 32)
    compared = pl.col("divergences").list.eval(pl.element().struct.field("run_id"))
    listed = (
        _runs(frame, compared, 1 << 33, keep=["failed_run_ids"])
        .filter(~pl.col("run_id").is_in(pl.col("failed_run_ids")).fill_null(False))
        .drop("failed_run_ids")
    )
    contrasts = table.attach(pl.concat([failed, listed]), "run_id", "run_")
    known = pl.col("run_known")
    quality = pl.col("run_quality")
    same_task = pl.col("run_task_id").eq_missing(pl.col("task_id"))
    run = {"run_id": pl.col("run_id")}
    trusted = known & ~_not_in(quality, TRUSTED)
    rejected = known & quality.eq_missing(C.QUALITY_REJECTED)
    in_denied = _Rule(
        C.R_DENIED_CATEGORY,
        known & denied(pl.col("run_category"), deny),
        {**run, "category": pl.col("run_category")},
    )
    source_rules = [
        _Rule(C.V_SOURCE_RUN_UNKNOWN, ~known, run),
        _Rule("untrusted_source", known & _not_in(quality, TRUSTED), {**run, "quality": quality}),
        _Rule(C.V_TASK_MISMATCH, trusted & ~same_task, run),
        _Rule(C.R_EMPTY_RESPONSE, trusted & same_task & pl.col("run_response_empty"), run),
        in_denied,
    ]
    contrast_rules = [
        _Rule(C.V_SOURCE_RUN_UNKNOWN, ~known, run),
        _Rule("failed_run_not_rejected", known & quality.ne_missing(C.QUALITY_REJECTED), run),
        _Rule(C.V_TASK_MISMATCH, rejected & ~same_task, run),
        in_denied,
    ]
    return _report(frame.height, [(sources, source_rules), (contrasts, contrast_rules)])


# --- the same, reading the files -----------------------------------------------------------


def dataset_files(root: Path, relpath: str, holdout: str | None = None) -> list[Path]:
    """A dataset's train file and its holdout file (default: ``holdout.jsonl`` beside it)."""
    train = root / relpath
    return [train, root / holdout if holdout else train.with_name("holdout.jsonl")]


def read_dataset(asset: str, root: Path, relpath: str, holdout: str | None = None) -> pl.DataFrame:
    """A dataset's train file and then its holdout file as one frame, read with the model its
    first row fits; missing files are skipped."""
    paths = dataset_files(root, relpath, holdout)
    return read_jsonl(sniff_schema(asset, paths), paths, missing_ok=True)


def dataset_pieces(
    asset: str, root: Path, relpath: str, holdout: str | None = None
) -> Iterator[pl.DataFrame]:
    """``read_dataset`` piece by piece (``iter_jsonl``): memory holds one piece."""
    paths = dataset_files(root, relpath, holdout)
    return iter_jsonl(sniff_schema(asset, paths), paths, piece_bytes=PIECE_BYTES, missing_ok=True)


def verify_pieces(
    pieces: Iterator[pl.DataFrame], verify: Callable[[pl.DataFrame], FirewallReport]
) -> FirewallReport:
    """One report of ``verify`` over a dataset's pieces, in order (small ones together)."""
    report = FirewallReport()
    for piece in batched(pieces):
        report.merge(verify(piece))
    return report


def _table(out_root: Path, lookup: ScoredTable | None) -> ScoredTable:
    return scored_lookup(out_root) if lookup is None else lookup


def _files_verifier(
    asset: str,
    relpath: str,
    rule: Callable[[pl.DataFrame, ScoredTable, ExportSettings], FirewallReport],
) -> Callable[..., FirewallReport]:
    """``rule`` on a dataset's files: the train file at ``relpath`` (and its holdout) under
    ``root`` (a run's version directory; default ``out_root``), against the scored runs under
    ``out_root`` (or ``lookup``, built once per run by the checks)."""

    def verify(
        out_root: Path,
        settings: ExportSettings,
        root: Path | None = None,
        lookup: ScoredTable | None = None,
    ) -> FirewallReport:
        table = _table(out_root, lookup)
        pieces = dataset_pieces(asset, root or out_root, relpath)
        return verify_pieces(pieces, lambda piece: rule(piece, table, settings))

    verify.__doc__ = f"``{rule.__name__}`` on the {asset} files. " + (_files_verifier.__doc__ or "")
    return verify


verify_sft = _files_verifier(C.ASSET_SFT_DATASET, C.SFT_PATH, verify_sft_frame)
verify_rag = _files_verifier(C.ASSET_RAG_PLAYBOOKS, C.RAG_PATH, verify_rag_frame)
verify_preference = _files_verifier(
    C.ASSET_PREFERENCE_PAIRS, C.PREFERENCE_PATH, verify_preference_frame
)
verify_pair_rules = _files_verifier(
    C.ASSET_PREFERENCE_PAIRS, C.PREFERENCE_PATH, verify_pair_rules_frame
)
verify_kto = _files_verifier(C.ASSET_KTO_DATASET, C.KTO_PATH, verify_kto_frame)
