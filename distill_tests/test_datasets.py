"""The published files as users take them: each loads with Hugging Face ``datasets`` with the
columns TRL expects, the Parquet copies hold the same rows in the same order, each dataset has a
card whose header ``datasets`` itself reads, and the UI gets a preview and progress lines.

Two real runs: the shared fixture run (default formats) and one with every non-default format,
Parquet copies, a license and progress lines at every record.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import datasets  # a dev dependency: missing, the tests fail rather than skip
import orjson
import pytest
import yaml

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.datasets.formats import (
    arrow_schema,
    preview_markdown,
    read_parquet_rows,
    write_parquet,
)
from distill_assets.lib.hygiene.secrets import redact_text
from distill_assets.lib.infra.io import sha256_file
from distill_assets.lib.infra.runconfig import run_config_of
from distill_assets.lib.records.receipts import aggregate_hash, load_receipt
from distill_tests.conftest import FIXTURES, materializations_of, materialize_graph

EXPORT_ASSETS = {
    C.STAGE_EXPORT_RAG: C.ASSET_RAG_PLAYBOOKS,
    C.STAGE_EXPORT_SFT: C.ASSET_SFT_DATASET,
    C.STAGE_EXPORT_PREFERENCE: C.ASSET_PREFERENCE_PAIRS,
    C.STAGE_EXPORT_KTO: C.ASSET_KTO_DATASET,
}
ALT_CONFIG = {
    "sft_format": C.SFT_FORMAT_PROMPT_COMPLETION,
    "preference_format": C.PREFERENCE_FORMAT_CONVERSATIONAL,
    "parquet": True,
    "license": "cc-by-4.0",
}


def rows(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def load(path: Path):
    builder = "parquet" if path.suffix == ".parquet" else "json"
    return datasets.load_dataset(builder, data_files=str(path), split="train")


def dtypes(features) -> dict[str, str]:
    """column -> a short type name: the dtype of a value, else the feature's class name."""
    return {
        name: getattr(feature, "dtype", type(feature).__name__)
        for name, feature in features.items()
    }


def receipts_of(out: Path, run_id: str) -> dict:
    return {
        stage: load_receipt(out / C.REPORTS_DIR / run_id / f"{stage}.json")
        for stage in S.DATASET_STAGES
    }


@pytest.fixture(scope="module")
def default_run(fixture_run):
    result, out, instance = fixture_run
    assert result.success
    return result, out, instance


@pytest.fixture(scope="module")
def alt_run(tmp_path_factory, project_defs):
    """The fixtures with every non-default export format, Parquet and progress at each record."""
    base = tmp_path_factory.mktemp("alt_formats")
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTILL_RECORDED_AT", "2026-03-10T00:00:00Z")
    mp.setenv(C.ENV_PROGRESS_INTERVAL, "0")
    config = run_config_of({asset: ALT_CONFIG for asset in EXPORT_ASSETS.values()})
    (base / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(base / "home")) as instance:
        try:
            result = materialize_graph(
                project_defs, instance, FIXTURES, base / "out", run_config=config
            )
        finally:
            mp.undo()
        assert result.success
        yield result, base / "out", instance


# --- default formats: the columns TRL reads, and our provenance ---------------------------------

PROVENANCE_SFT = {"id": "string", "source_run_id": "string", "task_id": "string"}
DEFAULT_COLUMNS = {
    C.RAG_PATH: {
        "id": "string",
        "task_id": "string",
        "title": "string",
        "text": "string",
        "source_run_ids": "List",
        "quality": "string",
        "score": "float64",
        "failed_run_ids": "List",
        "tags": "dict",
    },
    C.SFT_PATH: {"messages": "List", **PROVENANCE_SFT, "category": "string"},
    C.PREFERENCE_PATH: {
        "id": "string",
        "prompt": "string",
        "chosen": "string",
        "rejected": "string",
        "chosen_run_id": "string",
        "rejected_run_id": "string",
        "task_id": "string",
        "margin": "float64",
        "chosen_quality": "string",
        "rejected_quality": "string",
    },
    C.KTO_PATH: {
        "prompt": "string",
        "completion": "string",
        "label": "bool",
        **PROVENANCE_SFT,
        "quality": "string",
        "score": "float64",
        "category": "string",
    },
}


@pytest.mark.parametrize("relpath", list(DEFAULT_COLUMNS))
def test_train_and_holdout_files_load_with_datasets(default_run, relpath):
    _, out, _ = default_run
    holdout = relpath.rsplit("/", 1)[0] + "/holdout.jsonl"
    for path in (out / relpath, out / holdout):
        expected = rows(path)
        if not expected:
            continue  # an empty file has no columns to infer (the card leaves it out, below)
        ds = load(path)
        assert dtypes(ds.features) == DEFAULT_COLUMNS[relpath], path
        assert len(ds) == len(expected)
        assert ds[0]["id"] == expected[0]["id"]


def test_sft_messages_are_openai_chat_turns(default_run):
    _, out, _ = default_run
    ds = load(out / C.SFT_PATH)
    for example in ds:
        roles = [m["role"] for m in example["messages"]]
        assert set(roles) <= {"user", "assistant", "tool"}
        assert roles[0] == "user" and roles[-1] == "assistant"
        for message in example["messages"]:
            assert message["content"] is None or isinstance(message["content"], str)
            for call in message.get("tool_calls") or []:
                assert call["type"] == "function" and isinstance(call["id"], str)
                assert isinstance(call["function"]["name"], str)
                orjson.loads(call["function"]["arguments"])  # a JSON string, as OpenAI sends
    with_tools = next(e for e in ds if e["source_run_id"] == "run-014")
    assert [m["role"] for m in with_tools["messages"]] == ["user", "assistant", "tool", "assistant"]
    answer = with_tools["messages"][2]
    assert answer["tool_call_id"] == with_tools["messages"][1]["tool_calls"][0]["id"]


def test_kto_labels_follow_the_grades(default_run):
    _, out, _ = default_run
    ds = load(out / C.KTO_PATH)
    assert sorted(set(ds["quality"])) == [C.QUALITY_ACCEPTED, C.QUALITY_REJECTED]
    for example in ds:
        assert example["label"] is (example["quality"] == C.QUALITY_ACCEPTED)


def test_review_queue_loads_with_datasets(default_run):
    _, out, _ = default_run
    ds = load(out / C.REVIEW_QUEUE_PATH)
    assert ds["run_id"] == ["run-007", "run-008", "run-010"]


# --- the cards ---------------------------------------------------------------------------------


def card_header(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


@pytest.mark.parametrize("kind", list(S.DATASET_KINDS))
def test_card_header_body_and_receipt(default_run, kind):
    result, out, _ = default_run
    stage = S.DATASET_KINDS[kind]
    receipt = receipts_of(out, result.run_id)[stage]
    header, body = card_header(out / C.card_path(kind))
    assert header["license"] == C.DEFAULT_LICENSE
    assert header["task_categories"] and header["size_categories"] == ["n<1K"]
    [config] = header["configs"]
    splits = {entry["split"]: entry["path"] for entry in config["data_files"]}
    train, holdout = out / S.TRAIN_PATHS[stage], out / S.HOLDOUT_PATHS[stage]
    assert splits["train"] == train.name
    # the preference holdout is empty on the fixtures: listed only when it has rows
    assert ("holdout" in splits) == bool(rows(holdout))
    assert result.run_id in body
    assert f"reports/{result.run_id}/{stage}.json" in body
    for entry in receipt.outputs.files:
        if not C.is_card(entry.path):
            assert entry.sha256 in body and entry.sha256 == sha256_file(out / entry.path)
    for code, count in receipt.stats.reasons.items():
        assert f"| `{code}` | {count} |" in body
    stats = receipt.stats
    assert (
        f"| {stats.records_in} | {stats.records_out} | {stats.accepted} | {stats.rejected} "
        f"| {stats.quarantined} | {stats.skipped} |" in body
    )


@pytest.mark.parametrize("kind", list(S.DATASET_KINDS))
def test_datasets_reads_the_card_configs(default_run, kind, tmp_path):
    _, out, _ = default_run
    stage = S.DATASET_KINDS[kind]
    # a cache of its own: the user-wide one may hold another build of a folder of this name
    # (seen: a stale 10-row rag split served for a 9-row file)
    loaded = datasets.load_dataset(str(out / C.EXPORTS_DIR / kind), cache_dir=str(tmp_path))
    expected = {"train": len(rows(out / S.TRAIN_PATHS[stage]))}
    if rows(out / S.HOLDOUT_PATHS[stage]):
        expected["holdout"] = len(rows(out / S.HOLDOUT_PATHS[stage]))
    assert {split: len(ds) for split, ds in loaded.items()} == expected


def test_cards_are_listed_in_receipts_but_not_in_the_output_hash(default_run):
    result, out, _ = default_run
    for stage, receipt in receipts_of(out, result.run_id).items():
        kind = {v: k for k, v in S.DATASET_KINDS.items()}[stage]
        paths = [f.path for f in receipt.outputs.files]
        assert C.card_path(kind) in paths
        data = [f for f in receipt.outputs.files if not C.is_card(f.path)]
        assert receipt.outputs.hash == aggregate_hash(data)
        assert receipt.outputs.hash != aggregate_hash(receipt.outputs.files)
    manifest = orjson.loads((out / C.MANIFEST_PATH).read_bytes())
    assert manifest["cards"] == {kind: C.card_path(kind) for kind in S.DATASET_KINDS}
    assert result.run_id.encode() not in (out / C.MANIFEST_PATH).read_bytes()


# --- the other formats, Parquet ------------------------------------------------------------------


def test_alternative_formats_have_trl_columns(alt_run):
    _, out, _ = alt_run
    sft = load(out / C.SFT_PATH)
    assert dtypes(sft.features) == {
        "prompt": "string",
        "completion": "string",
        **PROVENANCE_SFT,
        "category": "string",
    }
    pairs = load(out / C.PREFERENCE_PATH)
    for column in ("prompt", "chosen", "rejected"):
        assert dtypes(pairs.features)[column] == "List"
    first = pairs[0]
    assert [t["role"] for t in first["prompt"]] == ["user"]
    assert [t["role"] for t in first["chosen"]] == ["assistant"]
    kto = load(out / C.KTO_PATH)
    assert [t["role"] for t in kto[0]["completion"]] == ["assistant"]
    assert dtypes(kto.features)["label"] == "bool"


def test_parquet_copies_hold_the_same_rows_in_the_same_order(alt_run, tmp_path):
    result, out, _ = alt_run
    receipts = receipts_of(out, result.run_id)
    compared = 0
    for stage in S.DATASET_STAGES:
        listed = {f.path: f for f in receipts[stage].outputs.files}
        for relpath in (S.TRAIN_PATHS[stage], S.HOLDOUT_PATHS[stage]):
            parquet = C.parquet_path(relpath)
            assert listed[parquet].sha256 == sha256_file(out / parquet)
            assert read_parquet_rows(out / parquet) == rows(out / relpath), parquet
            assert listed[parquet].record_count == len(rows(out / relpath))
            if rows(out / relpath):
                assert load(out / parquet)[:] == load(out / relpath)[:], parquet
            compared += 1
    assert compared == 8
    # the copy's bytes depend only on the rows (one pyarrow version): write one again elsewhere
    again = tmp_path / "again"
    (again / C.SFT_PATH).parent.mkdir(parents=True)
    (again / C.SFT_PATH).write_bytes((out / C.SFT_PATH).read_bytes())
    schema = arrow_schema(C.STAGE_EXPORT_SFT, C.SFT_FORMAT_PROMPT_COMPLETION)
    assert write_parquet(again, C.SFT_PATH, schema).sha256 == sha256_file(
        out / C.parquet_path(C.SFT_PATH)
    )
    manifest = {f["path"] for f in orjson.loads((out / C.MANIFEST_PATH).read_bytes())["files"]}
    assert C.parquet_path(C.KTO_PATH) in manifest


def test_parquet_is_removed_when_no_longer_configured(alt_run, project_defs, tmp_path):
    """A rerun without parquet must not publish the earlier run's copies beside new JSONL."""
    import shutil

    _, out, _ = alt_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = materialize_graph(project_defs, instance, FIXTURES, copy)
    assert result.success
    for relpath in S.TRAIN_PATHS.values():
        assert not (copy / C.parquet_path(relpath)).exists()
    header, _ = card_header(copy / C.card_path("sft"))
    assert header["license"] == C.DEFAULT_LICENSE


def test_alt_cards_declare_the_configured_license(alt_run):
    _, out, _ = alt_run
    for kind in S.DATASET_KINDS:
        header, body = card_header(out / C.card_path(kind))
        assert header["license"] == "cc-by-4.0"
    assert "Row format: `prompt_completion`" in card_header(out / C.card_path("sft"))[1]


# --- the UI: previews and progress ---------------------------------------------------------------


@pytest.mark.parametrize("stage", S.DATASET_STAGES)
def test_materializations_carry_a_short_preview(default_run, stage):
    result, out, _ = default_run
    metadata = materializations_of(result, EXPORT_ASSETS[stage])[-1].metadata
    preview = metadata[C.MD_PREVIEW].value
    lines = preview.splitlines()
    assert lines[0].startswith("| id | task_id |")
    assert 3 <= len(lines) <= 2 + 3  # header, rule, at most three rows
    first = rows(out / S.TRAIN_PATHS[stage])[0]
    assert first["id"] in lines[2]
    for line in lines[2:]:
        for cell in line.strip("|").split(" | "):
            assert len(cell.strip()) <= 120
    assert (
        metadata[C.MD_RECORDS_OUT].value
        == load_receipt(Path(metadata[C.MD_RECEIPT_PATH].value)).stats.records_out
    )


def test_preview_redacts_and_cuts(tmp_path):
    key = "AKIA" + "Q7ZXW3RT5YHN2BVC"
    path = tmp_path / "rows.jsonl"
    long_text = "word " * 100
    path.write_bytes(
        orjson.dumps({"id": "kto-1", "task_id": "T|1", "prompt": f"use {key}", "completion": ""})
        + b"\n"
        + orjson.dumps({"id": "kto-2", "task_id": "T", "prompt": long_text, "completion": "x"})
        + b"\n"
    )
    assert redact_text(key)[1], "the planted key must be one the scrubber knows"
    preview = preview_markdown(path, C.STAGE_EXPORT_KTO)
    assert key not in preview and "[REDACTED:" in preview
    assert "T\\|1" in preview  # a pipe cannot break the table
    assert "…" in preview and long_text.strip() not in preview


def test_long_stages_log_progress(alt_run):
    result, _, instance = alt_run
    messages = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    # the export pass reports the scored runs it has handed to every export
    lines = [m for m in messages if m.startswith(f"{C.OP_EXPORTS}: ") and " of 22 runs (" in m]
    assert lines
    assert any(m.startswith(f"{C.OP_EXPORTS}: 22 of 22 runs (100%)") for m in lines)
    assert all(" runs/s" in m for m in lines)


def test_parquet_of_the_default_formats(default_run, tmp_path):
    """The default row shapes (chat messages, standard strings) survive Parquet too; the real
    graph writes these with ``parquet: true`` and default formats."""
    _, out, _ = default_run
    cases = [
        (C.STAGE_EXPORT_SFT, C.SFT_FORMAT_MESSAGES),
        (C.STAGE_EXPORT_PREFERENCE, C.PREFERENCE_FORMAT_STANDARD),
        (C.STAGE_EXPORT_KTO, C.PREFERENCE_FORMAT_STANDARD),
        (C.STAGE_EXPORT_RAG, ""),
    ]
    for stage, fmt in cases:
        relpath = S.TRAIN_PATHS[stage]
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_bytes((out / relpath).read_bytes())
        written = write_parquet(tmp_path, relpath, arrow_schema(stage, fmt))
        expected = rows(out / relpath)
        assert written.record_count == len(expected)
        assert read_parquet_rows(tmp_path / C.parquet_path(relpath)) == expected, stage
        loaded = load(tmp_path / C.parquet_path(relpath))
        assert loaded["id"] == [r["id"] for r in expected]
    messages = load(tmp_path / C.parquet_path(C.SFT_PATH))
    with_tools = next(e for e in messages if e["source_run_id"] == "run-014")
    assert with_tools["messages"][1]["tool_calls"][0]["function"]["name"] == "fetch_incident"
