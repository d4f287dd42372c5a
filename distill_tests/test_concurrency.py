"""Two materializations on one output directory: the second fails at once naming the holder,
the first completes, and the published datasets are never a mix of the two."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date

import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.infra.io import sha256_file
from distill_assets.lib.infra.locking import LOCK_PATH, OutputLocked, acquire, read_lock, release
from distill_tests.conftest import REPO_ROOT, copy_fixtures
from distill_tests.corpus import CorpusSpec, write_corpus


def start(source, out, env, span: str | None = None, *extra: str) -> subprocess.Popen:
    span_args = ["--partition-range", span] if span else []
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distill_assets.cli",
            "materialize",
            "--source",
            str(source),
            "--output",
            str(out),
            *span_args,
            *extra,
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def open_gate(gate, reader: subprocess.Popen) -> None:
    """Open the pipe for writing once ``reader`` has opened it, and close it (end of file);
    fails instead of waiting forever if the reader ends first."""
    deadline = time.monotonic() + 120
    while True:
        try:
            fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # no reader yet (ENXIO)
            assert reader.poll() is None, reader.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
            continue
        os.close(fd)
        return


def test_second_run_fails_clearly_and_datasets_stay_whole(tmp_path):
    small = copy_fixtures(tmp_path / "small")
    big = write_corpus(tmp_path / "big", CorpusSpec(runs=2_000, first_day=date(2026, 4, 1), days=2))
    # a handshake, not a race: collect opens this pipe among its source files and waits on it
    # (holding the lock) until the test has watched the second run fail
    gate = big / "zz-gate.jsonl"
    os.mkfifo(gate)
    (tmp_path / "home").mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "DISTILL_RECORDED_AT": "2026-04-10T00:00:00Z",
    }
    out = tmp_path / "out"
    # the range given, so that nothing but collect reads the sources (the pipe) before the lock
    first = start(big, out, env, span="2026-03-31...2026-04-03")
    deadline = time.monotonic() + 120
    while not (out / LOCK_PATH).exists():
        assert first.poll() is None, first.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    holder = read_lock(out)["run_id"]
    second = start(small, out, env)
    _, err2 = second.communicate(timeout=300)
    assert first.poll() is None  # still waiting at the gate, holding the lock
    open_gate(gate, first)  # the first run reads an empty file and goes on
    _, err1 = first.communicate(timeout=600)
    assert first.returncode == 0, err1.decode()[-2000:]
    assert second.returncode != 0
    message = err2.decode()
    assert f"is in use by run {holder}" in message
    # the published version is entirely the first run's: every file matches the manifest, and
    # every SFT row comes from the big corpus
    manifest = orjson.loads((out / C.MANIFEST_PATH).read_bytes())
    for entry in manifest["files"]:
        assert sha256_file(out / entry["path"]) == entry["sha256"]
    rows = [orjson.loads(x) for x in (out / C.SFT_PATH).read_bytes().splitlines()]
    assert rows and all(r["task_id"].startswith("task-") for r in rows)
    assert not (out / LOCK_PATH).exists()  # released at the end of the run
    # another source into the same output: the lock lets it in, and --replace says the user
    # means to rebuild the output from it (else it is refused: sources never mix)
    third = start(small, out, env, None, "--replace")
    _, err3 = third.communicate(timeout=300)
    assert third.returncode == 0, err3.decode()[-2000:]


def test_lock_is_reentrant_for_its_run_and_refuses_others(tmp_path):
    assert acquire(tmp_path, "run-a") is True
    assert acquire(tmp_path, "run-a") is False
    with pytest.raises(OutputLocked, match="in use by run run-a"):
        acquire(tmp_path, "run-b")
    release(tmp_path, "run-b")  # not the holder: nothing happens
    assert read_lock(tmp_path)["run_id"] == "run-a"
    release(tmp_path, "run-a")
    assert read_lock(tmp_path) is None


def test_stale_lock_of_a_dead_process_is_recovered(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "reports").mkdir()
    (tmp_path / LOCK_PATH).write_bytes(
        orjson.dumps({"run_id": "gone", "pid": dead.pid, "host": os.uname().nodename, "since": "x"})
    )
    messages: list[str] = []
    assert acquire(tmp_path, "run-c", log=messages.append) is True
    assert read_lock(tmp_path)["run_id"] == "run-c"
    assert "recovered a stale lock of run gone" in messages[0]


def test_lock_of_a_finished_run_is_recovered(tmp_path):
    acquire(tmp_path, "run-d")
    assert acquire(tmp_path, "run-e", run_finished=lambda run: run == "run-d") is True
