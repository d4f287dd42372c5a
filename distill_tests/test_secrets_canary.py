"""Canary: one secret of each type planted in the fixtures, the real graph run through the real
``distill materialize`` command, and not one of the secrets anywhere under the output directory,
in Dagster's instance (event log, compute logs) or in what the command printed.

The secrets are drawn at random on every run, so nothing can pass by matching a fixed string.
"""

from __future__ import annotations

import base64
import os
import random
import string
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.infra.runconfig import run_config_of
from distill_assets.lib.records.receipts import load_receipt
from distill_tests.conftest import REPO_ROOT, copy_fixtures

ALNUM = string.ascii_letters + string.digits
UPPER = string.ascii_uppercase + string.digits


# seeded: the same canaries on every run (a random draw missed the entropy rule ~1 in 40 runs,
# a 40-character draw without a digit or with too little entropy being no secret by that rule)
_RNG = random.Random("distill-canaries-1")


def _rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(n))


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(obj)).decode().rstrip("=")


WORDS = (
    "ledger queue shard replica index vacuum rollout canary beacon cipher lattice harbor "
    "meadow quartz saffron timber violet walnut yonder zephyr amber basalt cobalt dune"
).split()


def _sentence() -> str:
    """Random words, so no two canary runs are near-duplicates of each other."""
    return " ".join(_RNG.choice(WORDS) for _ in range(14))


def _canaries() -> dict[str, str]:
    """type -> a fresh secret of that type."""
    _RNG.seed("distill-canaries-1")  # the same draws whatever ran before
    key_lines = "\n".join(_rand(64) for _ in range(4))
    return {
        C.SECRET_AWS_ACCESS_KEY: "AKIA" + _rand(16, UPPER),
        C.SECRET_GITHUB_TOKEN: "ghp_" + _rand(36),
        C.SECRET_SLACK_TOKEN: "xoxb-1234567890-123456789012-" + _rand(24, "abcdef0123456789"),
        C.SECRET_STRIPE_KEY: "sk_live_" + _rand(24),
        C.SECRET_OPENAI_API_KEY: "sk-proj-" + _rand(48),
        C.SECRET_ANTHROPIC_API_KEY: "sk-ant-api03-" + _rand(93) + "AA",
        C.SECRET_PRIVATE_KEY: (
            f"-----BEGIN RSA PRIVATE KEY-----\n{key_lines}\n-----END RSA PRIVATE KEY-----"
        ),
        C.SECRET_JWT: ".".join(
            (
                _b64({"alg": "HS256", "typ": "JWT"}),
                _b64({"sub": _rand(16), "scope": "admin"}),
                _rand(43, ALNUM + "-_"),
            )
        ),
        C.SECRET_PASSWORD_IN_URL: _rand(14),
        C.SECRET_ASSIGNMENT: _rand(12),
        C.SECRET_HIGH_ENTROPY: _rand(40),
    }


def _needles(kind: str, secret: str) -> list[str]:
    """What must not appear: the secret, or each line of a key block's body."""
    if kind == C.SECRET_PRIVATE_KEY:
        return [line for line in secret.splitlines() if "PRIVATE KEY" not in line]
    if kind == C.SECRET_JWT:
        return [secret, secret.split(".")[1], secret.split(".")[2]]
    return [secret]


def _plant(source: Path, canaries: dict[str, str]) -> None:
    """One accepted run per secret, each secret in a different place of the record, plus a
    review comment and an outcome's meta carrying secrets too."""
    s = canaries
    places = {
        C.SECRET_AWS_ACCESS_KEY: {"instruction": f"Rotate the key {s['aws_access_key']} today."},
        C.SECRET_GITHUB_TOKEN: {"response": f"Pushed with token {s['github_token']} and done."},
        C.SECRET_SLACK_TOKEN: {"user": f"Post with {s['slack_token']} to #ops please."},
        C.SECRET_STRIPE_KEY: {"arguments": orjson.dumps({"key": s["stripe_key"]}).decode()},
        C.SECRET_OPENAI_API_KEY: {"tool": f"OPENAI_API_KEY found: {s['openai_api_key']}"},
        C.SECRET_ANTHROPIC_API_KEY: {"response": f"Configured {s['anthropic_api_key']} ok."},
        C.SECRET_PRIVATE_KEY: {"tool": f"cat id_rsa:\n{s['private_key']}\n"},
        C.SECRET_JWT: {"response": f"Use the header Authorization: Bearer {s['jwt']}"},
        C.SECRET_PASSWORD_IN_URL: {
            "instruction": f"Migrate postgres://admin:{s['password_in_url']}@db.internal/app"
        },
        C.SECRET_ASSIGNMENT: {
            "arguments": orjson.dumps(
                {"cmd": f"export DB_PASSWORD={s['secret_assignment']}"}
            ).decode()
        },
        C.SECRET_HIGH_ENTROPY: {"response": f"The session token is {s['high_entropy_string']}"},
    }
    lines = []
    for number, (kind, where) in enumerate(places.items()):
        run_id = f"run-canary-{number:02d}"
        instruction = where.get("instruction", "Handle this for the ops team.")
        response = where.get("response", "Handled it, all checks green.")
        instruction = f"{instruction} {_sentence()}"
        response = f"{response} {_sentence()}"
        user = where.get("user", instruction)
        messages = [
            {"role": "system", "content": "You are the ops agent."},
            {"role": "user", "content": user},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{number}",
                        "type": "function",
                        "function": {
                            "name": "shell",
                            "arguments": where.get("arguments", '{"cmd": "uptime"}'),
                        },
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": f"call_{number}",
                "content": where.get("tool", "load average: 0.10"),
            },
            {"role": "assistant", "content": response},
        ]
        created = f"2026-03-02T0{number % 10}:{number:02d}:00Z"
        lines.append(
            {
                "kind": "run",
                "run_id": run_id,
                "task_id": f"T-canary-{kind}",
                "instruction": instruction,
                "response": response,
                "messages": messages,
                "agent": "ops-agent",
                "category": "ops",
                "created_at": created,
            }
        )
        comment = f"fine, but it printed {s['github_token']}" if number == 0 else "fine"
        lines.append(
            {
                "kind": "review",
                "run_id": run_id,
                "verdict": "approve",
                "comment": comment,
                "created_at": created,
            }
        )
    lines.append(
        {
            "kind": "outcome",
            "run_id": "run-canary-01",
            "outcome": "success",
            "meta": {"log": f"deployed with {s['stripe_key']}"},
            "created_at": "2026-03-02T05:00:00Z",
        }
    )
    (source / "runs" / "2026-03-02-canary.jsonl").write_bytes(
        b"".join(orjson.dumps(line) + b"\n" for line in lines)
    )


def _materialize(source: Path, out: Path, home: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        C.ENV_RECORDED_AT: "2026-03-10T00:00:00Z",
    }
    command = [
        sys.executable,
        "-m",
        "distill_assets.cli",
        "materialize",
        "-v",
        "--source",
        str(source),
        "--output",
        str(out),
        *extra,
    ]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, timeout=600, check=False
    )


def _leaks(roots: list[Path], texts: list[bytes], needles: dict[str, list[str]]) -> list[str]:
    found = []
    blobs: list[tuple[str, bytes]] = [(f"<output {i}>", t) for i, t in enumerate(texts)]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                blobs.append((str(path), path.read_bytes()))
    for name, blob in blobs:
        for kind, items in needles.items():
            for needle in items:
                if needle.encode() in blob:
                    found.append(f"{kind} in {name}")
    return found


@pytest.fixture(scope="module")
def canary_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("canary")
    source = copy_fixtures(base / "source")
    canaries = _canaries()
    _plant(source, canaries)
    out, home = base / "out", base / "home"
    home.mkdir()
    first = _materialize(source, out, home)
    redact = run_config_of(
        {
            asset: {"secret_action": C.SECRET_ACTION_REDACT}
            for asset in (
                C.ASSET_EXTRACTED_PLAYBOOKS,
                C.ASSET_RAG_PLAYBOOKS,
                C.ASSET_SFT_DATASET,
                C.ASSET_PREFERENCE_PAIRS,
                C.ASSET_KTO_DATASET,
            )
        }
    )
    quarantined = {
        path: (out / path).read_bytes()
        for path in (C.SFT_PATH, C.quarantine_path(C.STAGE_EXPORT_SFT))
        if (out / path).exists()
    }
    second = _materialize(source, out, home, "--config-json", orjson.dumps(redact).decode())
    return canaries, out, home, first, second, quarantined


def test_both_runs_succeed(canary_runs):
    _, _, _, first, second, _ = canary_runs
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    assert second.returncode == 0, second.stderr.decode()[-2000:]


def test_no_secret_anywhere(canary_runs):
    canaries, out, home, first, second, _ = canary_runs
    needles = {kind: _needles(kind, secret) for kind, secret in canaries.items()}
    texts = [first.stdout, first.stderr, second.stdout, second.stderr]
    assert _leaks([out, home], texts, needles) == []
    # the grep itself can find them: the source still holds every one
    source_blob = b"".join(p.read_bytes() for p in (out.parent / "source").rglob("*.jsonl"))
    assert all(n.encode() in source_blob for items in needles.values() for n in items)


def test_every_type_was_detected_and_counted(canary_runs):
    canaries, out, _, _, _, quarantined = canary_runs
    reports = out / C.REPORTS_DIR
    runs = [line for line in (out / C.RUN_INDEX_PATH).read_bytes().splitlines() if line]
    first_run = orjson.loads(runs[0])["run_id"]
    collect = load_receipt(reports / first_run / f"{C.STAGE_COLLECT}.json")
    assert set(canaries) <= set(collect.extra["secrets"])
    sft = load_receipt(reports / first_run / f"{C.STAGE_EXPORT_SFT}.json")
    assert sft.stats.reasons[C.R_SECRET_DETECTED] == len(canaries)
    quarantine_rows = [
        orjson.loads(line)
        for line in quarantined[C.quarantine_path(C.STAGE_EXPORT_SFT)].splitlines()
    ]
    flagged = [r for r in quarantine_rows if C.R_SECRET_DETECTED in r["reasons"]]
    assert {r["run_id"] for r in flagged} == {f"run-canary-{n:02d}" for n in range(11)}
    types = {f["type"] for r in flagged for f in r["findings"]}
    assert set(canaries) <= types
    for row in flagged:
        for finding in row["findings"]:
            assert set(finding) == {"type", "field", "preview"}
            assert f"[REDACTED:{finding['type']}]" in finding["preview"]
    assert b"run-canary" not in quarantined[C.SFT_PATH]


def test_redact_mode_keeps_the_rows_with_placeholders(canary_runs):
    canaries, out, _, _, _, _ = canary_runs
    rows = [
        orjson.loads(line)
        for path in (C.SFT_PATH, C.SFT_HOLDOUT_PATH)
        for line in (out / path).read_bytes().splitlines()
    ]
    canary_rows = [r for r in rows if r["source_run_id"].startswith("run-canary")]
    assert len(canary_rows) == len(canaries)
    text = orjson.dumps(canary_rows).decode()
    for kind in canaries:
        assert f"[REDACTED:{kind}]" in text, kind
