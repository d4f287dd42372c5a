"""Outputs at an fsspec URL: the same datasets as a local directory, verified transfers, and a
lock in the store that keeps parallel steps from losing report updates (parallel steps on a
Celery worker writing to a file:// store are in test_celery_backfill.py)."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from pathlib import Path

import dagster as dg
import fsspec
import orjson
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.infra.storage import OutputLocation, RemoteStore, StorageError, is_remote

from .conftest import (
    DATA_TOPS,
    FIXTURES,
    RECORDED_AT,
    dataset_files,
    masked,
    materialize_range,
)
from .lock_worker import count_under_lock


@pytest.fixture(autouse=True)
def pinned_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(C.ENV_RECORDED_AT, RECORDED_AT)


def remote_files(url: str) -> dict[str, bytes]:
    """Every data file a reader of the store sees, as dataset_files does for a directory."""
    fs, base = fsspec.core.url_to_fs(url)
    base = base.rstrip("/")
    found = {}
    for top in DATA_TOPS:
        if fs.exists(f"{base}/{top}"):
            for name in fs.find(f"{base}/{top}"):
                relpath = name[len(base) :].lstrip("/")
                found[relpath] = masked(relpath, fs.cat_file(name))
    return dict(sorted(found.items()))


def latest_summary(url: str) -> dict:
    fs, base = fsspec.core.url_to_fs(url)
    runs = fs.cat_file(f"{base}/{C.RUN_INDEX_PATH}").splitlines()
    run_id = orjson.loads(runs[-1])["run_id"]
    return orjson.loads(fs.cat_file(f"{base}/{C.REPORTS_DIR}/{run_id}/summary.json"))


def test_an_unknown_store_is_a_setting_error(tmp_path: Path) -> None:
    from distill_assets.runtime.resource import ConfigError, DistillResource

    resource = DistillResource(output_dir="nosuchstore://bucket/x", staging_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="invalid setting output_dir='nosuchstore://bucket/x'"):
        resource.output_location()


def test_plain_path_is_local_and_untouched(tmp_path: Path) -> None:
    assert not is_remote(str(tmp_path)) and not is_remote("out/rel")
    assert is_remote("s3://bucket/prefix") and is_remote("file:///srv/x")
    location = OutputLocation(str(tmp_path), staging_dir=tmp_path / "staging")
    with location.workspace(tmp_path, ["evidence/*"]) as workspace:
        assert workspace.root == tmp_path and not workspace.remote
        assert workspace.pull(["*"]) == 0 and workspace.push_data() == 0
    assert not (tmp_path / "staging").exists()


def test_url_output_gives_the_same_datasets(
    reference: Path, tmp_path: Path, recorded_checks: int
) -> None:
    url = f"memory://distill-{uuid.uuid4().hex}/out"
    staging = tmp_path / "staging"
    with dg.instance_for_test() as instance:
        result = materialize_range(instance, FIXTURES, url, staging=staging)
        assert result.success
        sft = instance.fetch_materializations(dg.AssetKey(C.ASSET_SFT_DATASET), limit=1)
        receipt_at = sft.records[0].asset_materialization.metadata[C.MD_RECEIPT_PATH].value
    assert receipt_at == f"{url}/{C.REPORTS_DIR}/{result.run_id}/{C.STAGE_EXPORT_SFT}.json"
    assert remote_files(url) == dataset_files(reference)
    summary = latest_summary(url)
    assert summary["run_id"] == result.run_id
    assert summary["overall_passed"] and summary["chain_ok"]
    # every check's verdict reached the store (all of them but drift, which the asset reports)
    assert len(summary["checks"]) == recorded_checks
    fs, base = fsspec.core.url_to_fs(url)
    # the store has no symlink: a pointer names the published version, and the run lock is gone
    version = f"{C.VERSIONS_DIR}/{result.run_id}/{C.EXPORTS_DIR}"
    assert orjson.loads(fs.cat_file(f"{base}/{C.PUBLISHED_POINTER_PATH}")) == {"target": version}
    assert not fs.exists(f"{base}/{C.REPORTS_DIR}/run.lock")
    assert (
        fs.cat_file(f"{base}/{version}/sft/instruction_response.jsonl")
        == (reference / C.SFT_PATH).read_bytes()
    )
    # steps worked in private directories that are gone; the mirror keeps what was pushed
    assert list((staging / "steps").iterdir()) == []
    assert (staging / "mirror" / version / "sft" / "instruction_response.jsonl").exists()


def test_another_machine_continues_from_the_store(reference: Path, tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    with dg.instance_for_test() as instance:
        first = materialize_range(instance, FIXTURES, url, staging=tmp_path / "machine-a")
        assert first.success
        # a second machine, with an empty staging directory, pulls what the exports read
        exports = [
            C.ASSET_RAG_PLAYBOOKS,
            C.ASSET_SFT_DATASET,
            C.ASSET_PREFERENCE_PAIRS,
            C.ASSET_KTO_DATASET,
            C.ASSET_REVIEW_QUEUE,
            C.ASSET_DATASET_MANIFEST,
        ]
        second = materialize_range(
            instance, FIXTURES, url, staging=tmp_path / "machine-b", assets=exports
        )
        assert second.success
    assert remote_files(url) == dataset_files(reference)
    fs, base = fsspec.core.url_to_fs(url)
    drift = orjson.loads(fs.cat_file(f"{base}/{C.REPORTS_DIR}/{second.run_id}/drift.json"))
    # drift compared each export with the first machine's receipts, found in the store
    assert {d["stage"] for d in drift["stages"]} == {*S.EXPORT_STAGES, C.STAGE_PUBLISH}
    assert {d["prior_run_id"] for d in drift["stages"]} == {first.run_id}
    # the second run's version is published; the first is kept (VERSIONS_KEPT) until it ages
    pointer = orjson.loads(fs.cat_file(f"{base}/{C.PUBLISHED_POINTER_PATH}"))
    assert pointer == {"target": f"{C.VERSIONS_DIR}/{second.run_id}/{C.EXPORTS_DIR}"}
    assert fs.exists(f"{base}/{C.VERSIONS_DIR}/{first.run_id}")
    assert drift["severity"] == C.SEVERITY_OK
    assert latest_summary(url)["chain_ok"]


def test_a_file_changed_in_the_store_is_refused(tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    with dg.instance_for_test() as instance:
        assert materialize_range(instance, FIXTURES, url, staging=tmp_path / "a").success
        scored = next((tmp_path / "store" / C.SCORED_DIR).rglob(C.SCORED_FILE))
        data = bytearray(scored.read_bytes())
        data[10] = ord("X") if data[10] != ord("X") else ord("Y")
        scored.write_bytes(bytes(data))  # same size: only the sha256 can tell
        # the exports read the scored runs without rewriting them
        result = materialize_range(
            instance, FIXTURES, url, staging=tmp_path / "b", assets=[C.ASSET_SFT_DATASET]
        )
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failures
    message = str(failures[0].event_specific_data.error)
    assert "changed outside distill" in message
    assert scored.relative_to(tmp_path / "store").as_posix() in message


class _CorruptingMemoryFS(MemoryFileSystem):
    """An in-process store whose uploads lose their last byte."""

    protocol = "corruptmem"

    def put_file(self, lpath, rpath, **kwargs):
        data = Path(lpath).read_bytes()
        self.pipe_file(rpath, data[:-1])


def test_an_upload_that_does_not_read_back_fails(tmp_path: Path) -> None:
    fsspec.register_implementation("corruptmem", _CorruptingMemoryFS, clobber=True)
    store = RemoteStore.open(f"corruptmem://b-{uuid.uuid4().hex}/out", tmp_path / "staging")
    local = tmp_path / "rows.jsonl"
    local.write_bytes(b'{"a":1}\n')
    with pytest.raises(StorageError, match="upload verification failed"):
        store.upload(local, "exports/rows.jsonl")


def test_the_store_lock_excludes_other_processes(tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    (tmp_path / "store" / C.REPORTS_DIR / ".locks").mkdir(parents=True)
    # a crashed holder's entry, ten minutes old, must not block anyone
    stale = time.time_ns() - 600 * 10**9
    (tmp_path / "store" / C.REPORTS_DIR / ".locks" / f"{stale:020d}-dead").write_bytes(b"")
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=count_under_lock, args=(url, str(tmp_path / f"s{i}"), 15))
        for i in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert (tmp_path / "store" / "counter").read_text() == "60"
    assert list((tmp_path / "store" / C.REPORTS_DIR / ".locks").iterdir()) == []


def test_search_reads_the_index_published_in_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import json

    from distill_assets.cli import main

    url = (tmp_path / "store").as_uri()
    with dg.instance_for_test() as instance:
        result = materialize_range(instance, FIXTURES, url, staging=tmp_path / "staging")
        assert result.success
    fs, base = fsspec.core.url_to_fs(url)
    assert fs.exists(f"{base}/{C.INDEX_PATH}")  # the published copy, beside the playbooks
    monkeypatch.setenv(C.ENV_STAGING_DIR, str(tmp_path / "reader"))
    query = "login fails with a plus sign in the email"
    assert main(["search", query, "-k", "1", "--json", "--output", url]) == 0
    [hit] = json.loads(capsys.readouterr().out)
    assert hit["task_id"] == "T-login" and hit["source_run_ids"][0] == "run-001"
