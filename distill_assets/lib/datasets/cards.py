"""What an export writes besides its rows: the Parquet copies and the dataset card.

``package_dataset`` runs after an export stage (``export-rag``, ``-sft``, ``-preference``,
``-kto``) has written its train, holdout and quarantine files under the run's write root. It
writes the Parquet copy of the train and holdout files when configured (and removes a copy left
from an earlier version when not, so a Parquet file never disagrees with its JSONL), then the
dataset card ``exports/<kind>/README.md``: a Hugging Face YAML header (license, task
categories, size category, a ``default`` config whose splits are the train and holdout files)
and a body with the counts, the reasons rows were left out, the receipt's run id and the sha256
of every file, and how the rows were built. The card names the run that built the data, so its
bytes differ between otherwise identical runs: receipts list it but leave it out of their output
hash (``constants.is_card``), and the data files themselves stay byte-identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.datasets.formats import FormatSettings, arrow_schema, write_parquet
from distill_assets.lib.infra.io import WrittenFile, write_bytes_atomic
from distill_assets.lib.records.accounting import StageResult
from distill_assets.lib.records.receipts import receipt_relpath
from distill_assets.lib.stages import CARDS

KIND_OF_STAGE = {stage: kind for kind, stage in S.DATASET_KINDS.items()}


def size_category(rows: int) -> str:
    """The Hugging Face ``size_categories`` bucket of a row count."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")]
    bounds += [(1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    for bound, name in bounds:
        if rows < bound:
            return name
    return "n>100M"


def _name(relpath: str) -> str:
    return relpath.rsplit("/", 1)[-1]


def _yaml_header(
    stage: str, formats: FormatSettings, rows: int, splits: dict[str, int]
) -> list[str]:
    lines = ["---", f"license: {formats.license}", "task_categories:"]
    lines += [f"- {category}" for category in CARDS[stage].task_categories]
    lines += ["tags:", *[f"- {tag}" for tag in CARDS[stage].tags]]
    lines += ["size_categories:", f"- {size_category(rows)}", "configs:"]
    lines += ["- config_name: default", "  data_files:"]
    for split, relpath in (
        ("train", S.TRAIN_PATHS[stage]),
        ("holdout", S.HOLDOUT_PATHS[stage]),
    ):
        # an empty file has no rows to infer columns from: ``datasets`` refuses it
        if splits[split]:
            lines += [f"  - split: {split}", f"    path: {_name(relpath)}"]
    return [*lines, "---"]


def render_card(
    result: StageResult,
    run_id: str,
    formats: FormatSettings,
    files: list[WrittenFile],
    settings: dict[str, Any],
) -> str:
    """The card's text: deterministic for a given run id, counts and files."""
    stage = result.stage
    kind = KIND_OF_STAGE[stage]
    tally = result.tally
    by_path = {f.path: f for f in files}
    train = by_path.get(S.TRAIN_PATHS[stage])
    holdout = by_path.get(S.HOLDOUT_PATHS[stage])
    train_rows = train.record_count if train else 0
    holdout_rows = holdout.record_count if holdout else 0
    fmt = formats.format_of(stage)
    splits = {"train": train_rows, "holdout": holdout_rows}
    lines = _yaml_header(stage, formats, train_rows + holdout_rows, splits)
    lines += [
        "",
        f"# distill {kind}: {CARDS[stage].title}",
        "",
        f"Built by distill's stage `{stage}` from scored agent runs. " + CARDS[stage].built,
        "",
        "## Files",
        "",
        "| file (under exports/) | rows | sha256 |",
        "|---|---|---|",
    ]
    for entry in sorted(files, key=lambda f: f.path):
        shown = entry.path.removeprefix(f"{C.EXPORTS_DIR}/")
        lines.append(f"| `{shown}` | {entry.record_count} | `{entry.sha256}` |")
    lines += [
        "",
        f"Splits: `train` ({train_rows} rows) and `holdout` ({holdout_rows} rows: whole tasks "
        "held out by a hash of their task id, never in train).",
    ]
    empty = [split for split, rows in splits.items() if not rows]
    if empty:
        lines.append(
            f"The {' and '.join(empty)} split is empty this time and is left out of `configs` "
            "(`datasets` cannot infer the columns of a file without rows)."
        )
    if fmt:
        lines.append(f"Row format: `{fmt}` (docs/datasets.md); provenance columns alongside.")
    lines += [
        "",
        "## Counts",
        "",
        "| records in | out | accepted | rejected | quarantined | skipped |",
        "|---|---|---|---|---|---|",
        f"| {tally.records_in} | {tally.records_out} | {tally.accepted} | {tally.rejected} "
        f"| {tally.quarantined} | {tally.skipped} |",
        "",
        "## Left out, by reason",
        "",
    ]
    if tally.reasons:
        lines += ["| reason | count |", "|---|---|"]
        lines += [f"| `{code}` | {count} |" for code, count in sorted(tally.reasons.items())]
        lines += [
            "",
            f"Each left-out record has a row in `exports/quarantine/{stage}.jsonl` naming it.",
        ]
    else:
        lines.append("Nothing was left out.")
    lines += ["", "## How it was built", ""]
    if settings:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| `{name}` | `{settings[name]!r}` |" for name in sorted(settings)]
        lines.append("")
    lines += [
        "Every row was screened for secrets and evaluation prompts, near-duplicates were dropped "
        "(docs/safety.md), and blocking checks re-verified the written files (schema, "
        "contamination firewall, conservation, no secrets, disjoint holdout) before publishing.",
        "",
        "## Receipt",
        "",
        f"- run id: `{run_id}`",
        f"- receipt: `{receipt_relpath(run_id, stage)}` (`distill receipts show {run_id}`)",
    ]
    trainer = CARDS[stage].trl_trainer
    if trainer is not None:
        lines += [
            "",
            "## Use",
            "",
            "```python",
            "from datasets import load_dataset",
            "",
            'ds = load_dataset("json", data_files={'
            + ", ".join(
                f'"{split}": "{_name(path)}"'
                for split, path in (
                    ("train", S.TRAIN_PATHS[stage]),
                    ("holdout", S.HOLDOUT_PATHS[stage]),
                )
                if splits[split]
            )
            + "})",
            "```",
            "",
            f"The columns are what TRL's `{trainer}` expects (docs/datasets.md).",
        ]
    return "\n".join(lines) + "\n"


def _parquet_copies(result: StageResult, write_root: Path, formats: FormatSettings) -> None:
    stage = result.stage
    relpaths = (S.TRAIN_PATHS[stage], S.HOLDOUT_PATHS[stage])
    if not formats.parquet:
        for relpath in relpaths:
            # a copy seeded from the published version would no longer match its JSONL
            (write_root / C.parquet_path(relpath)).unlink(missing_ok=True)
        return
    schema = arrow_schema(stage, formats.format_of(stage))
    written = [write_parquet(write_root, relpath, schema) for relpath in relpaths]
    result.outputs.extend(written)
    result.extra["parquet_rows"] = sum(f.record_count for f in written)


def package_dataset(
    result: StageResult,
    write_root: Path,
    formats: FormatSettings,
    run_id: str,
    settings: dict[str, Any],
) -> StageResult:
    """Add the Parquet copies (when configured) and the card to an export's outputs;
    ``settings`` are the stage's configuration as its receipt records them."""
    stage = result.stage
    if not any(f.path == S.TRAIN_PATHS[stage] for f in result.outputs):
        return result  # the export wrote nothing (its result carries the error)
    _parquet_copies(result, write_root, formats)
    relpath = C.card_path(KIND_OF_STAGE[stage])
    text = render_card(result, run_id, formats, list(result.outputs), settings).encode("utf-8")
    sha = write_bytes_atomic(write_root / relpath, text)
    result.outputs.append(WrittenFile(relpath, sha, len(text), 0))
    return result
