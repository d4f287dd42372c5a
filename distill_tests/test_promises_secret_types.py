"""Every secret type distill detects (lib/hygiene/secrets.py: REGEX_DETECTORS, the keyword and
credential-name rules, the entropy rule) planted as a realistic fake in a run of its own and
taken through the real graph: collect finds and counts each type, stores a typed placeholder in
its place, the SFT export quarantines each run naming the type, and the value itself appears in
no file of the output and no event of the run. test_secrets_canary.py takes eleven of these
types through the CLI; this covers all of them, the seven it never planted included."""

from __future__ import annotations

import base64
import random
import shutil
import string

import dagster as dg
import orjson
import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.hygiene.secrets import REGEX_DETECTORS
from distill_assets.lib.records.receipts import load_receipt
from distill_tests.conftest import FIXTURES, materialize_graph

_RNG = random.Random("distill-secret-types-1")  # seeded: the same fakes on every run
UPPER, LOWER, DIGITS = string.ascii_uppercase, string.ascii_lowercase, string.digits
ALNUM = UPPER + LOWER + DIGITS


def _pick(alphabet: str, n: int) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _fakes() -> dict[str, tuple[str, str]]:
    """type -> (text around it, the fake secret)."""
    jwt = ".".join(
        [_b64url(b'{"alg":"HS256","typ":"JWT"}'), _b64url(b'{"sub":"42"}'), _pick(ALNUM, 43)]
    )
    azure = base64.b64encode(bytes(_RNG.randrange(256) for _ in range(64))).decode()
    return {
        C.SECRET_AWS_ACCESS_KEY: ("aws key id {}", "AKIA" + _pick(UPPER + "234567", 16)),
        C.SECRET_GITHUB_TOKEN: ("git push with {}", "ghp_" + _pick(ALNUM, 36)),
        C.SECRET_GITLAB_TOKEN: ("gitlab token {}", "glpat-" + _pick(ALNUM, 20)),
        C.SECRET_SLACK_TOKEN: (
            "slack bot {}",
            f"xoxb-{_pick(DIGITS, 12)}-{_pick(DIGITS, 13)}-{_pick(ALNUM, 24)}",
        ),
        C.SECRET_STRIPE_KEY: ("stripe {}", "sk_live_" + _pick(ALNUM, 24)),
        C.SECRET_OPENAI_API_KEY: ("openai {}", "sk-proj-" + _pick(ALNUM, 48)),
        C.SECRET_ANTHROPIC_API_KEY: ("anthropic {}", "sk-ant-api03-" + _pick(ALNUM, 40)),
        C.SECRET_GOOGLE_API_KEY: ("gemini {}", "AIza" + _pick(ALNUM, 35)),
        C.SECRET_HUGGINGFACE_TOKEN: ("hub login {}", "hf_" + _pick(ALNUM, 34)),
        C.SECRET_PRIVATE_KEY: (
            "cat id_rsa:\n{}",
            f"-----BEGIN RSA PRIVATE KEY-----\n{_pick(ALNUM, 64)}\n-----END RSA PRIVATE KEY-----",
        ),
        C.SECRET_JWT: ("Authorization: Bearer {}", jwt),
        C.SECRET_PASSWORD_IN_URL: (
            "cloned https://deploy:{}@git.example.com/repo.git",
            _pick(LOWER, 6) + _pick(DIGITS, 4) + _pick(LOWER, 4),
        ),
        C.SECRET_ASSIGNMENT: (
            'settings: password="{}" loaded',
            _pick(LOWER, 5) + _pick(DIGITS, 3) + _pick(LOWER, 4),
        ),
        C.SECRET_HIGH_ENTROPY: (
            "the blob {} was printed",
            _pick(UPPER, 8) + _pick(LOWER, 8) + _pick(DIGITS, 8) + _pick(ALNUM, 16),
        ),
        C.SECRET_AZURE_STORAGE_KEY: (
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={};"
            "EndpointSuffix=core.windows.net",
            azure,
        ),
        C.SECRET_MAILCHIMP_KEY: ("mailchimp key {}", _pick("0123456789abcdef", 32) + "-us14"),
        C.SECRET_NPM_TOKEN: ("//registry.npmjs.org/:_authToken={}", "npm_" + _pick(ALNUM, 36)),
        C.SECRET_PYPI_TOKEN: ("twine upload -p {}", "pypi-AgEIcHlwaS5vcmc" + _pick(ALNUM, 70)),
        C.SECRET_SENDGRID_KEY: ("sendgrid {}", f"SG.{_pick(ALNUM, 22)}.{_pick(ALNUM, 43)}"),
        C.SECRET_SQUARE_OAUTH: ("square secret {}", "sq0csp-" + _pick(ALNUM, 43)),
        C.SECRET_TWILIO_KEY: ("twilio sid {}", "AC" + _pick("abcdef" + DIGITS, 32)),
    }


FAKES = _fakes()


def _needles(kind: str, secret: str) -> list[str]:
    """What must never appear: the value, or a private key's body line."""
    if kind == C.SECRET_PRIVATE_KEY:
        return [line for line in secret.splitlines() if "PRIVATE KEY" not in line]
    return [secret]


def test_every_detector_type_is_planted() -> None:
    """The fakes cover every type a detector can report; Discord and Telegram tokens are named
    in SECRET_TYPES but their plugins are left out on purpose (docs/safety.md)."""
    detected = {kind for kind, _, _ in REGEX_DETECTORS}
    detected |= {C.SECRET_ASSIGNMENT, C.SECRET_HIGH_ENTROPY}
    assert set(FAKES) == detected
    assert C.SECRET_TYPES - detected == {C.SECRET_DISCORD_TOKEN, C.SECRET_TELEGRAM_TOKEN}


@pytest.fixture(scope="module")
def planted(tmp_path_factory, project_defs):
    base = tmp_path_factory.mktemp("secret_types")
    source = base / "source"
    shutil.copytree(FIXTURES, source)
    lines = []
    for number, (kind, (template, secret)) in enumerate(sorted(FAKES.items())):
        run_id = f"run-secret-{number:02d}"
        created = f"2026-03-02T{number % 24:02d}:30:00Z"
        lines.append(
            {
                "kind": "run",
                "run_id": run_id,
                "task_id": f"T-secret-{kind}",
                "instruction": f"Task {number}: set up the {kind.replace('_', ' ')} integration.",
                "response": f"Done. {template.format(secret)}",
                "agent": "ops-agent",
                "category": "ops",
                "created_at": created,
            }
        )
        lines.append(
            {"kind": "review", "run_id": run_id, "verdict": "approve", "created_at": created}
        )
    (source / "runs" / "2026-03-02-secrets.jsonl").write_bytes(
        b"".join(orjson.dumps(line) + b"\n" for line in lines)
    )
    out = base / "out"
    home = base / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test(temp_dir=str(home)) as inst:
        mp.setenv(C.ENV_RECORDED_AT, "2026-03-10T00:00:00Z")
        result = materialize_graph(project_defs, inst, source, out)
        events = [repr(event) for event in inst.all_logs(result.run_id)]
    return result, out, events


def test_each_type_is_found_and_counted_once(planted) -> None:
    result, out, _ = planted
    assert result.success
    collect = load_receipt(out / C.REPORTS_DIR / result.run_id / f"{C.STAGE_COLLECT}.json")
    counts = collect.extra["secrets"]
    for kind in FAKES:
        assert counts.get(kind, 0) >= 1, kind
    records = b"".join(p.read_bytes() for p in (out / C.EVIDENCE_DIR).rglob("records.jsonl"))
    for kind in FAKES:
        assert f"[REDACTED:{kind}]".encode() in records, kind


def test_each_planted_run_is_quarantined_from_sft_naming_its_type(planted) -> None:
    result, out, _ = planted
    rows = [
        orjson.loads(line)
        for line in (out / C.quarantine_path(C.STAGE_EXPORT_SFT)).read_bytes().splitlines()
    ]
    by_run = {r["run_id"]: r for r in rows if (r["run_id"] or "").startswith("run-secret-")}
    assert len(by_run) == len(FAKES)
    for number, kind in enumerate(sorted(FAKES)):
        row = by_run[f"run-secret-{number:02d}"]
        assert C.R_SECRET_DETECTED in row["reasons"]
        assert {f["type"] for f in row["findings"]} == {kind}
        for finding in row["findings"]:
            assert f"[REDACTED:{kind}]" in finding["preview"]


def test_no_value_appears_in_any_output_or_event(planted) -> None:
    result, out, events = planted
    blobs = [
        (str(path), path.read_bytes())
        for path in sorted(out.rglob("*"))
        if path.is_file() and not path.is_symlink()
    ]
    blobs += [(f"event {i}", text.encode()) for i, text in enumerate(events)]
    leaks = [
        f"{kind} in {name}"
        for name, blob in blobs
        for kind, (_, secret) in FAKES.items()
        for needle in _needles(kind, secret)
        if needle.encode() in blob
    ]
    assert leaks == []
    # the search can find them: the source still holds every one
    source = b"".join(p.read_bytes() for p in (out.parent / "source").rglob("*.jsonl"))
    assert all(
        needle.encode() in source
        for kind, (_, secret) in FAKES.items()
        for needle in _needles(kind, secret)
    )
