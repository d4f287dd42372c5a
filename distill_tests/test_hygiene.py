"""The hygiene library: secret detection and redaction, the holdout split, decontamination and
near-duplicate clustering, each on small hand-made inputs with known answers."""

from __future__ import annotations

import random
import string
from pathlib import Path

import orjson
import pytest
from detect_secrets.plugins import keyword as kw

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.format import ParseSettings, Record, validate_object
from distill_assets.lib.hygiene import secrets as S
from distill_assets.lib.hygiene.decontam import load_eval_set, resolve_eval_path
from distill_assets.lib.hygiene.holdout import holdout_point, in_holdout, verify_disjoint
from distill_assets.lib.hygiene.neardup import NearDupIndex, shingle_hashes
from distill_assets.lib.hygiene.verify import verify_no_secrets

ALNUM = string.ascii_letters + string.digits


_RNG = random.Random(20260310)


@pytest.fixture(autouse=True)
def _seeded(request: pytest.FixtureRequest) -> None:
    """Each test draws the same samples on every run, whatever ran before it in its worker."""
    _RNG.seed(request.node.nodeid)


def _rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(n))


# --- secrets -------------------------------------------------------------------------------

SAMPLES = [
    (C.SECRET_AWS_ACCESS_KEY, lambda: "AKIA" + _rand(16, string.ascii_uppercase + string.digits)),
    (C.SECRET_GITHUB_TOKEN, lambda: "ghp_" + _rand(36)),
    (C.SECRET_GITLAB_TOKEN, lambda: "glpat-" + _rand(20)),
    (C.SECRET_SLACK_TOKEN, lambda: "xoxp-1234567-89012345-" + _rand(20, "abcdef0123456789")),
    (C.SECRET_STRIPE_KEY, lambda: "sk_live_" + _rand(40)),
    (C.SECRET_OPENAI_API_KEY, lambda: "sk-" + _rand(20) + "T3BlbkFJ" + _rand(20)),
    (C.SECRET_OPENAI_API_KEY, lambda: "sk-proj-" + _rand(60)),
    (C.SECRET_ANTHROPIC_API_KEY, lambda: "sk-ant-admin01-" + _rand(80)),
    (C.SECRET_GOOGLE_API_KEY, lambda: "AIza" + _rand(35)),
    (C.SECRET_HUGGINGFACE_TOKEN, lambda: "hf_" + _rand(34)),
    (C.SECRET_SENDGRID_KEY, lambda: "SG." + _rand(22) + "." + _rand(43)),
    (C.SECRET_PYPI_TOKEN, lambda: "pypi-AgEIcHlwaS5vcmc" + _rand(80)),
    (C.SECRET_HIGH_ENTROPY, lambda: _rand(40)),
]


@pytest.mark.parametrize(("kind", "make"), SAMPLES)
def test_each_token_format_is_found_and_replaced(kind, make):
    secret = make()
    text = f"step 3: the tool printed {secret} and exited"
    redacted, findings = S.redact_text(text, "response")
    assert secret not in redacted
    assert redacted == f"step 3: the tool printed [REDACTED:{kind}] and exited"
    assert [(f.type, f.field) for f in findings] == [(kind, "response")]
    assert secret not in findings[0].preview and f"[REDACTED:{kind}]" in findings[0].preview


@pytest.mark.parametrize(
    ("text", "kind", "secret"),
    [
        ("postgres://admin:{s}@db:5432/app", C.SECRET_PASSWORD_IN_URL, "Zx81kq0pQ7"),
        ("export DB_PASSWORD={s} && ./migrate", C.SECRET_ASSIGNMENT, "hunter2hunter"),
        ('{{"password": "{s}"}}', C.SECRET_ASSIGNMENT, "Pq9!zz81aa"),
        ("db:\n  password: {s}\n  host: x", C.SECRET_ASSIGNMENT, "swordfish77"),
    ],
)
def test_passwords_in_urls_and_assignments(text, kind, secret):
    redacted, findings = S.redact_text(text.format(s=secret))
    assert secret not in redacted and f"[REDACTED:{kind}]" in redacted
    assert {f.type for f in findings} == {kind}


def test_private_key_block_is_redacted_whole():
    body = "\n".join(_rand(64) for _ in range(5))
    text = (
        f"key:\n-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\nok"
    )
    redacted, findings = S.redact_text(text)
    assert redacted == "key:\n[REDACTED:private_key]\nok"
    assert [f.type for f in findings] == [C.SECRET_PRIVATE_KEY]


def test_a_long_key_is_not_left_half_visible():
    tail = _rand(60)
    redacted, _ = S.redact_text(f"sk_live_{_rand(24)}{tail}")
    assert tail not in redacted


@pytest.mark.parametrize(
    "text",
    [
        "Reset your password: click the link below. The secret to success is patience.",
        "pwd = os.getcwd()",
        "password = get_password(user)",
        "password=${DB_PASSWORD}",
        "/home/user/projects/MyApp2/src/components/ButtonGroupHandler",
        "commit 3f2a9c1e8b7d4e6fa1b2c3d4e5f60718a9b0c1d2",
        "uuid 3f2a9c1e-8b7d-4e6f-a1b2-c3d4e5f60718",
        "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "getUserAccountSettingsHandler calls parseHttpRequestHeaders",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert S.redact_text(text) == (text, [])


def test_scrub_walks_messages_and_exempts_id_keys_from_entropy():
    call_id = "call_Q1w2E3r4T5y6U7i8O9p0AsDf"
    token = "ghp_" + _rand(36)
    row = {
        "messages": [
            {"role": "user", "content": "deploy"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": call_id, "function": {"name": "sh", "arguments": f'{{"t": "{token}"}}'}}
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "ok"},
        ],
        "id": "sft-1",
    }
    scrubbed, findings = S.scrub(row)
    assert [(f.type, f.field) for f in findings] == [
        (C.SECRET_GITHUB_TOKEN, "messages[1].tool_calls[0].function.arguments")
    ]
    assert token not in orjson.dumps(scrubbed).decode()
    assert scrubbed["messages"][2]["tool_call_id"] == call_id  # an id, not a secret
    assert row["messages"][1]["tool_calls"][0]["function"]["arguments"].endswith(f'{token}"}}')


def test_scrubbing_is_idempotent_and_placeholders_still_count():
    text = f"token {'ghp_' + _rand(36)} and password={_rand(10)}"
    once, first = S.redact_text(text)
    twice, second = S.redact_text(once)
    assert twice == once
    assert sorted(f.type for f in second) == sorted(f.type for f in first)
    assert S.has_live_secret(once) == []


def test_a_preview_never_cuts_a_placeholder():
    text = "x" * 30 + f" password={_rand(12)} " + "y" * 10 + f" AKIA{_rand(16, string.digits)}"
    redacted, findings = S.redact_text(text)
    for finding in findings:
        assert S.has_live_secret(finding.preview) == []


def test_keyword_literals_cover_detect_secrets_denylist():
    for word in kw.DENYLIST:
        for literal in (word.replace("_?", ""), word.replace("_?", "_")):
            assert literal in S.KEYWORD_LITERALS
            assert any(root in literal for root in S.KEYWORD_ROOTS)


def test_scrub_record_keeps_the_evidence_id_and_refuses_secret_identifiers():
    settings = ParseSettings()
    secret = "ghp_" + _rand(36)
    obj = {
        "kind": "run",
        "run_id": "r-1",
        "task_id": "T",
        "instruction": "fix it",
        "response": f"used {secret}",
        "created_at": "2026-03-01T00:00:00Z",
    }
    record = validate_object(obj, settings)
    assert isinstance(record, Record)
    cleaned, findings = S.scrub_record(record)
    assert cleaned is not None and cleaned.evidence_id == record.evidence_id
    assert secret.encode() not in cleaned.canonical
    assert [f.field for f in findings] == ["response"]
    bad = validate_object({**obj, "run_id": secret, "response": "ok"}, settings)
    assert isinstance(bad, Record)
    assert S.scrub_record(bad)[0] is None


def test_verify_no_secrets_reads_files(tmp_path: Path):
    clean = {"text": "[REDACTED:aws_access_key] rotated"}
    leak = {"text": "AKIA" + _rand(16, string.digits)}
    (tmp_path / "a.jsonl").write_bytes(orjson.dumps(clean) + b"\n" + orjson.dumps(leak) + b"\n")
    report = verify_no_secrets(tmp_path, ["a.jsonl"])
    assert (report.rows, report.count) == (2, 1)
    assert report.samples == [{"file": "a.jsonl", "row": 2, "types": [C.SECRET_AWS_ACCESS_KEY]}]
    assert leak["text"] not in orjson.dumps(report.samples).decode()


# --- holdout -------------------------------------------------------------------------------


def test_holdout_is_by_task_stable_and_monotone():
    tasks = [f"task-{i}" for i in range(20_000)]
    held = {t for t in tasks if in_holdout(t, 0.1)}
    assert 0.09 < len(held) / len(tasks) < 0.11
    # a task's side depends on its id alone: more tasks arriving moves none
    more = tasks + [f"new-{i}" for i in range(5_000)]
    assert {t for t in more if in_holdout(t, 0.1) and t in set(tasks)} == held
    # raising the fraction only moves tasks into the holdout
    assert held <= {t for t in tasks if in_holdout(t, 0.2)}
    assert not any(in_holdout(t, 0.0) for t in tasks[:100])
    assert holdout_point("T-certs") < 0.1 < holdout_point("T-login")  # the fixture's split


def test_verify_disjoint_finds_a_task_on_both_sides(tmp_path: Path):
    (tmp_path / "train.jsonl").write_bytes(b'{"task_id":"a"}\n{"task_id":"b"}\n')
    (tmp_path / "holdout.jsonl").write_bytes(b'{"task_id":"c"}\n')
    assert verify_disjoint(tmp_path / "train.jsonl", tmp_path / "holdout.jsonl").passed
    (tmp_path / "holdout.jsonl").write_bytes(b'{"task_id":"c"}\n{"task_id":"b"}\n')
    report = verify_disjoint(tmp_path / "train.jsonl", tmp_path / "holdout.jsonl")
    assert not report.passed and report.shared_tasks == ["b"]


# --- decontamination -----------------------------------------------------------------------

EVAL_PROMPT = (
    "Write a function that returns the longest palindromic substring of a given string, "
    "using dynamic programming, and explain its time complexity in one sentence."
)


def _eval_file(tmp_path: Path) -> Path:
    path = tmp_path / "evals.jsonl"
    lines = [EVAL_PROMPT, {"prompt": "What is 2+2?"}, {"task_id": "T-held"}]
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in lines))
    return path


def test_decontamination_exact_ngram_and_task(tmp_path: Path):
    evals = load_eval_set(_eval_file(tmp_path))
    assert evals.reason("T-held", ["anything"]) == "task_id"
    assert evals.reason("T", ["  what IS 2 + 2 ?"]) == "exact"
    inside = "Please help. " + EVAL_PROMPT.replace("dynamic", "Dynamic") + " Thanks!"
    assert evals.reason("T", [inside]) == "ngram"
    assert evals.reason("T", ["Write a function that sorts a list of numbers."]) is None
    strict = load_eval_set(_eval_file(tmp_path), n=13, min_overlap=0.9)
    half = " ".join(EVAL_PROMPT.split()[:14])  # two of the prompt's 13-grams
    assert evals.reason("T", [half]) == "ngram"
    assert strict.reason("T", [half]) is None


def test_eval_file_errors_and_paths(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'"ok"\n{not json\n')
    with pytest.raises(ValueError, match="line 2"):
        load_eval_set(bad)
    assert resolve_eval_path("evals/x.txt", tmp_path) == (tmp_path / "evals/x.txt").resolve()
    with pytest.raises(ValueError, match=r"\.\."):
        resolve_eval_path("../outside.jsonl", tmp_path)
    with pytest.raises(ValueError, match="source directory"):
        resolve_eval_path("x.jsonl", None)
    assert resolve_eval_path(str(bad), None) == bad


# --- near-duplicates -----------------------------------------------------------------------


def _text(seed: int, words: int = 120) -> str:
    rng = random.Random(seed)
    return " ".join(f"w{rng.randrange(10_000)}" for _ in range(words))


def test_near_duplicates_cluster_and_the_first_row_is_kept():
    index = NearDupIndex(0.8)
    base = _text(1)
    edited = base.split()
    edited[60] = "changed"
    rows = [_text(2), base, _text(3), " ".join(edited), base.upper(), _text(4), ""]
    for row in rows:
        index.add(row)
    reps = index.representatives().tolist()
    assert reps == [0, 1, 2, 1, 1, 5, 6]


def test_signatures_are_deterministic():
    one, two = NearDupIndex(0.8), NearDupIndex(0.8)
    text = _text(9)
    assert one._band_hashes(text).tobytes() == two._band_hashes(text).tobytes()
    assert shingle_hashes("a b c d e f") == shingle_hashes("A  B c d\te F\n")
    assert len(shingle_hashes("a b c d e f")) == 2
