"""A real dagster-webserver on 127.0.0.1 serves the project's asset graph: the lineage
evidence_index -> scored_runs -> the exports -> dataset_manifest, with their checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import orjson
import pytest

from distill_assets.lib import constants as C
from distill_tests.conftest import REPO_ROOT
from distill_tests.ports import PortTaken, says_address_in_use, start_on_free_port

QUERY = """{ assetNodes { assetKey { path } dependencyKeys { path } groupName kinds description
  assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }"""


def _start_webserver(home, port: int) -> tuple[subprocess.Popen, str]:
    """Start dagster-webserver on ``port`` and wait until it answers; PortTaken when another
    process bound the port first (start_on_free_port then tries another one)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster_webserver",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                # the process is gone: a server of another test may hold the port; never read
                # an answer from that server as ours
                stderr = proc.stderr.read().decode()
                if says_address_in_use(stderr):
                    raise PortTaken(stderr[-500:])
                pytest.fail(f"webserver exited: {stderr[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("webserver did not answer within 120 s")
            time.sleep(0.5)  # polling a readiness endpoint, not synchronisation by time
    except BaseException:
        proc.terminate()
        proc.wait(timeout=30)
        raise
    if proc.poll() is not None:  # answered, but the answer came from someone else's server
        stderr = proc.stderr.read().decode()
        raise PortTaken(stderr[-500:])
    return proc, url


@pytest.fixture(scope="module")
def webserver(tmp_path_factory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("web_home")
    proc, url = start_on_free_port(lambda port: _start_webserver(home, port))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=orjson.dumps({"query": query}),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return orjson.loads(response.read())


def test_lineage_and_checks_over_graphql(webserver):
    nodes = graphql(webserver, QUERY)["data"]["assetNodes"]
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    deps = {key: {"/".join(d["path"]) for d in n["dependencyKeys"]} for key, n in by_key.items()}
    assert deps[C.ASSET_EVIDENCE_INDEX] == set()
    assert deps[C.ASSET_SCORED_RUNS] == {C.ASSET_EVIDENCE_INDEX}
    assert deps[C.ASSET_EXTRACTED_PLAYBOOKS] == {C.ASSET_SCORED_RUNS}
    assert deps[C.ASSET_RAG_PLAYBOOKS] == {C.ASSET_EXTRACTED_PLAYBOOKS}
    assert deps[C.ASSET_PLAYBOOK_INDEX] == {C.ASSET_RAG_PLAYBOOKS}
    assert deps[C.ASSET_KTO_DATASET] == {C.ASSET_SCORED_RUNS}
    for export in (
        C.ASSET_RAG_PLAYBOOKS,
        C.ASSET_SFT_DATASET,
        C.ASSET_PREFERENCE_PAIRS,
        C.ASSET_KTO_DATASET,
    ):
        checks = {c["name"]: c["blocking"] for c in by_key[export]["assetChecksOrError"]["checks"]}
        assert checks[C.CHECK_FIREWALL] is True and checks[C.CHECK_SCHEMA] is True
        assert checks[C.CHECK_DRIFT] is False
    assert deps[C.ASSET_DATASET_MANIFEST] == {
        C.ASSET_EXTRACTED_PLAYBOOKS,
        C.ASSET_RAG_PLAYBOOKS,
        C.ASSET_SFT_DATASET,
        C.ASSET_PREFERENCE_PAIRS,
        C.ASSET_KTO_DATASET,
        C.ASSET_REVIEW_QUEUE,
        C.ASSET_PLAYBOOK_INDEX,
    }
    for node in nodes:
        assert node["groupName"] == C.ASSET_GROUP
        assert node["description"] and "\n" not in node["description"]
        assert "python" in node["kinds"]
