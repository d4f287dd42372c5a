"""The secret prefilter and the two rules added to the exact ones.

- The prefilter is a superset of the exact rules: every JSON line (however written: orjson,
  ``json.dumps`` with ASCII escapes, a writer that escapes "/" or any character) on which
  ``has_live_secret`` or ``scrub`` finds something is flagged, and so is every text on which
  ``find_spans`` or ``redact_text`` does (a Hypothesis property, derandomized).
- It flags (almost) nothing on a synthetic corpus that holds no secret.
- Credentials under a name that says so (``SERVICE_TOKEN=…``) and tokens as a URL's user
  (``https://TOKEN@host``) are found; ordinary words and URLs are not.

Every secret here is random and fake; nothing prints one.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import re
import string
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_assets.devtools.synth import SynthSpec, synthesize
from distill_assets.lib import constants as C
from distill_assets.lib.hygiene import prefilter as PF
from distill_assets.lib.hygiene import secrets as S

ALNUM = string.ascii_letters + string.digits
LOWER_ALNUM = string.ascii_lowercase + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
URLSAFE = ALNUM + "-_"
B64 = ALNUM + "+/"

Rng = random.Random


def _r(rng: Rng, n: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(obj)).decode().rstrip("=")


def _mixed_case(rng: Rng, word: str) -> str:
    return "".join(c.upper() if rng.random() < 0.3 else c for c in word)


# --- one generator per kind of secret the exact rules know ----------------------------------


def _private_key(rng: Rng) -> str:
    body = "\n".join(_r(rng, 64, B64) for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.2:
        mac = _r(rng, 40, HEX)
        return f"PuTTY-User-Key-File-2: ssh-rsa\nPrivate-Lines: 2\n{body}\nPrivate-MAC: {mac}"
    kind = rng.choice(["RSA ", "DSA ", "EC ", "OPENSSH ", "PGP ", "SSH2 ENCRYPTED ", ""])
    label = f"{kind}PRIVATE KEY" + (" BLOCK" if kind == "PGP " else "")
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"


def _gitlab(rng: Rng) -> str:
    prefix, length = rng.choice(
        [("glpat-", 20), ("gldt-", 30), ("glft-", 25), ("glsoat-", 20), ("glrt-", 40)]
        + [("glcbt-", 20), ("glimt-", 25), ("glptt-", 40), ("glagent-", 50), ("gloas-", 64)]
        + [("GR1348941", 30)]
    )
    return prefix + _r(rng, length, URLSAFE)


def _jwt(rng: Rng) -> str:
    header = _b64({"alg": rng.choice(["HS256", "RS256"]), "typ": "JWT"})
    payload = _b64({"sub": _r(rng, 12), "admin": rng.random() < 0.5})
    return f"{header}.{payload}.{_r(rng, 43, URLSAFE)}"


def _password_in_url(rng: Rng) -> str:
    user = _r(rng, rng.randint(3, 10), ALNUM + "._~%") or "u"
    password = _r(rng, rng.randint(6, 20), ALNUM + '._~%"\\é€')
    scheme = rng.choice(["postgres", "https", "mysql", "redis", "amqp"])
    slash = rng.choice(["//", "//"])
    return f"{scheme}:{slash}{user}:{password}@{rng.choice(['db.internal', '10.0.0.7'])}/app"


def _aws_secret(rng: Rng) -> str:
    lead = _mixed_case(rng, "aws") + rng.choice(["_", "-", " ", "_secret_access_"])
    word = _mixed_case(rng, rng.choice(["key", "pwd", "pw", "password", "pass", "token"]))
    quote = rng.choice(["'", '"'])
    return f"{lead}{word}{rng.choice([' = ', '=', ': '])}{quote}{_r(rng, 40, B64)}{quote}"


def _npm(rng: Rng) -> str:
    value = "npm_" + _r(rng, 36) if rng.random() < 0.5 else _uuid(rng)
    return f"//registry.npmjs.org/:_authToken={value}"


def _uuid(rng: Rng) -> str:
    return "-".join(_r(rng, n, HEX) for n in (8, 4, 4, 4, 12))


def _keyword_value(rng: Rng) -> str:
    first = rng.choice(ALNUM + "éß_")
    return first + _r(rng, rng.randint(3, 20), ALNUM + "!#%&*-_.é€ ")


def _keyword_name(rng: Rng) -> str:
    word = rng.choice(S.KEYWORD_LITERALS)
    affix = rng.choice(["", "", "_secure", "2", "é", "_ñ"])
    prefix = rng.choice(["", "", "db_", "MY_", "x"])
    return prefix + _mixed_case(rng, word) + affix


def _keyword(rng: Rng) -> str:
    """One of detect-secrets' keyword forms (the ones distill applies)."""
    name, value = _keyword_name(rng), _keyword_value(rng).strip() or "abcd"
    quote = rng.choice(["'", '"', "`", ""])
    blank = rng.choice(["", " ", "  ", "\t", "\u00a0", "\u3000"])
    close = rng.choice(["", "", "'", '"', "]", "']"])
    form = rng.randrange(5)
    if form == 0:
        op = rng.choice(["=", "==", "===", "!=", "!==", ":=", ":", "=>"])
        return f"{name}{close}{blank}{op}{blank}{quote}{value}{quote}"
    if form == 1:
        quote = quote or '"'
        return f"{name}{_r(rng, rng.randint(0, 8), ALNUM + '.()')}{blank}{quote}{value}{quote};"
    if form == 2:
        quote = quote or "'"
        op = rng.choice(["==", "!=", "===", "!=="])
        lower = rng.choice(S.KEYWORD_LITERALS)
        return f"{quote}{value}{quote}{blank}{op}{blank}{rng.choice(['', 'my_', 'é'])}{lower}"
    if form == 3:
        return f"\n{name}: {value}\n"
    return f"{name}{close}{blank}={blank}{value}"


def _entropy(rng: Rng) -> str:
    token = _r(rng, rng.randint(32, 64), rng.choice([ALNUM, B64, URLSAFE, ALNUM + "+=_-"]))
    return token if rng.random() < 0.7 else f"{_r(rng, 3, string.ascii_lowercase)}/{token}"


def _placeholder(rng: Rng) -> str:
    return f"[REDACTED:{rng.choice(sorted(C.SECRET_TYPES))}]"


CREDENTIAL_NAMES = (
    "token",
    "TOKEN",
    "GITHUB_TOKEN",
    "authToken",
    "x-auth",
    "db_credential",
    "client_secret",
    "API_KEY",
    "apiKey",
    "api-key",
    "Auth",
    "SERVICE_TOKEN",
    "my.secret.value",
    "oauth2_token",
)


def _credential_value(rng: Rng) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return _r(rng, rng.choice([16, 32, 40, 64]), HEX)
    if kind == 1:
        return _r(rng, rng.randint(16, 48), ALNUM)
    if kind == 2:
        return _uuid(rng)
    return _r(rng, rng.randint(20, 44), URLSAFE)


def _credential_assignment(rng: Rng) -> str:
    name, value = rng.choice(CREDENTIAL_NAMES), _credential_value(rng)
    quote = rng.choice(["", "'", '"'])
    scheme = rng.choice(["", "", "Bearer ", "token "])
    op = rng.choice(["=", ": ", " = ", ":=", " => "])
    key_quote = rng.choice(["", '"'])
    return f"{key_quote}{name}{key_quote}{op}{quote}{scheme}{value}{quote}"


def _url_user(rng: Rng) -> str:
    user = rng.choice([_r(rng, 40, HEX), "ghp_" + _r(rng, 36), _r(rng, 32, ALNUM)])
    password = rng.choice(["", "", ":x-oauth-basic", ":"])
    return f"https://{user}{password}@github.com/org/repo.git"


GENERATORS: dict[str, Callable[[Rng], str]] = {
    "aws_access_key": lambda r: (
        rng_choice(r, ["AKIA", "ASIA", "ABIA", "ACCA", "A3TX"]) + _r(r, 16, UPPER_ALNUM)
    ),
    "aws_secret_key": _aws_secret,
    "github_token": lambda r: (
        rng_choice(r, ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]) + _r(r, 36, ALNUM + "_")
    ),
    "gitlab_token": _gitlab,
    "slack_token": lambda r: (
        f"xox{r.choice('abposr')}-{_r(r, 10, string.digits)}-"
        f"{_r(r, 12, string.digits)}-{_r(r, 24, LOWER_ALNUM)}"
    ),
    "slack_webhook": lambda r: (
        f"https://hooks.slack.com/services/T{_r(r, 8)}/B{_r(r, 8)}/{_r(r, 24)}"
    ),
    "stripe_key": lambda r: rng_choice(r, ["sk_live_", "rk_live_"]) + _r(r, 24 + r.randrange(20)),
    "openai_legacy": lambda r: f"sk-{_r(r, 20)}T3BlbkFJ{_r(r, 20)}",
    "openai_project": lambda r: (
        "sk-"
        + rng_choice(r, ["proj", "svcacct", "admin"])
        + "-"
        + _r(r, 20 + r.randrange(40), URLSAFE)
    ),
    "anthropic": lambda r: (
        "sk-ant-" + rng_choice(r, ["api03", "admin01"]) + "-" + _r(r, 20 + r.randrange(80), URLSAFE)
    ),
    "google": lambda r: "AIza" + _r(r, 35, URLSAFE),
    "huggingface": lambda r: "hf_" + _r(r, 30 + r.randrange(10)),
    "private_key": _private_key,
    "jwt": _jwt,
    "password_in_url": _password_in_url,
    "azure": lambda r: "DefaultEndpointsProtocol=https;AccountKey=" + _r(r, 86, B64) + "==",
    "mailchimp": lambda r: _r(r, 32, LOWER_ALNUM) + "-us" + str(r.randint(1, 20)),
    "npm": _npm,
    "pypi": lambda r: "pypi-AgEIcHlwaS5vcmc" + _r(r, 70 + r.randrange(30), URLSAFE),
    "sendgrid": lambda r: f"SG.{_r(r, 22, URLSAFE)}.{_r(r, 43, URLSAFE)}",
    "square": lambda r: "sq0csp-" + _r(r, 43, ALNUM + "\\-_"),
    "twilio": lambda r: rng_choice(r, ["AC", "SK"]) + _r(r, 32, LOWER_ALNUM),
    "keyword": _keyword,
    "entropy": _entropy,
    "placeholder": _placeholder,
    "credential_name": _credential_assignment,
    "url_user": _url_user,
}


def rng_choice(rng: Rng, items: list[str]) -> str:
    return rng.choice(items)


# --- text around the secrets ----------------------------------------------------------------

NOISE = (
    "the service retries the request after a timeout",
    "def handle(request):\n    payload = parse(request.body)\n    return respond(200, payload)",
    "assert total == sum(line.amount for line in invoice.lines)",
    'logger.info("refund issued", extra={"order": order_id})',
    "kubectl rollout restart deployment/payments-service",
    "see https://docs.example.com/guide/setup and git@github.com:org/repo.git",
    "run-14a35facebe49879e98d6a16307370c5 task-20240415-00015 2024-04-15T00:10:15Z",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "uuid 3f2a9c1e-8b7d-4e6f-a1b2-c3d4e5f60718 call_Q1w2E3r4T5y6",
    "getUserAccountSettingsHandler calls parseHttpRequestHeaders",
    "token budget: 1200 tokens; auth: required; secret: none",
    "Reset your password: click the link. The secret to success is patience.",
    "café naïve 中文 😀 Ünïcödé — “quotes” ‘single’",
    "/home/user/projects/MyApp2/src/components/ButtonGroupHandler",
    "control \x01 \x0b \x1f chars and a backslash \\ and \\n literally",
    "Authorization: Bearer",
    "password = get_password(user)",
    "SELECT date_trunc('month', ts) AS month FROM events WHERE ts >= '2025-01-01';",
    'x == "y" and {"k": "v", "list": [1, 2]}',
    "İstanbul ıi ſ K",
    '<div class="note">a & b => c</div>',
)
SEPARATORS = (" ", " ", "\n", "\t", "", ", ", "; ", '"', "'", "=", ": ", "/", "\\", "\r\n", "`")


def _join(rng: Rng, parts: list[str]) -> str:
    out = parts[0]
    for part in parts[1:]:
        out += rng.choice(SEPARATORS) + part
    return out


def _noise(rng: Rng) -> str:
    return _join(rng, [rng.choice(NOISE) for _ in range(rng.randint(1, 4))])


def _plant(rng: Rng, text: str) -> str:
    """``text`` with one secret of a random kind put in at a random place."""
    secret = GENERATORS[rng.choice(sorted(GENERATORS))](rng)
    at = rng.randint(0, len(text))
    return _join(rng, [text[:at], secret, text[at:]])


def _text(rng: Rng) -> str:
    """Mostly zero or one secret, so that a missed secret is not hidden by another one."""
    text = _noise(rng)
    for _ in range(rng.choice([0, 0, 1, 1, 1, 2])):
        text = _plant(rng, text)
    return text


def _record(rng: Rng) -> dict:
    """A run record with zero, one or two secrets in its texts or in a credential-named key."""
    fields = {"instruction": _noise(rng), "response": _noise(rng), "user": _noise(rng)}
    fields["tool"] = _noise(rng)
    for _ in range(rng.choice([0, 1, 1, 1, 2])):
        field = rng.choice(sorted(fields))
        fields[field] = _plant(rng, fields[field])
    named = rng.choice(["auth_token", "apiKey", "x-auth", "session_token_id", "tokens", "secret"])
    value = _credential_value(rng) if rng.random() < 0.3 else _noise(rng)
    return {
        "kind": "run",
        "run_id": f"run-{_r(rng, 32, HEX)}",
        "instruction": fields["instruction"],
        "response": fields["response"],
        "messages": [
            {"role": "user", "content": fields["user"]},
            {"role": "tool", "tool_call_id": "call_" + _r(rng, 24), "content": fields["tool"]},
        ],
        "meta": {
            named: value,
            "tokens": {"prompt": rng.randint(1, 9000)},
            # identifiers look random by design: the entropy rule skips id keys' values
            "id": _entropy(rng),
            "trace_id": [_entropy(rng)] if rng.random() < 0.3 else _entropy(rng),
        },
    }


# --- JSON writers ---------------------------------------------------------------------------

_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}


def _escape_any(text: str, rng: Rng) -> str:
    """A JSON string as a writer that escapes however it likes would write it."""
    out = ['"']
    for char in text:
        code = ord(char)
        roll = rng.random()
        if roll < 0.15 or (code < 0x20 and char not in _SHORT):
            if code > 0xFFFF:
                high, low = divmod(code - 0x10000, 0x400)
                out.append(f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04X}")
            else:
                out.append(f"\\u{code:04x}" if roll < 0.1 else f"\\u{code:04X}")
        elif char in _SHORT:
            out.append(_SHORT[char])
        elif char == "/" and roll < 0.6:
            out.append("\\/")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _dumps_any(value: object, rng: Rng) -> str:
    if isinstance(value, str):
        return _escape_any(value, rng)
    if isinstance(value, dict):
        items = (f"{_escape_any(k, rng)}:{_dumps_any(v, rng)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dumps_any(v, rng) for v in value) + "]"
    return json.dumps(value)


WRITERS = 6


def _write(obj: dict, rng: Rng, writer: int | None = None) -> bytes:
    """``obj`` as one of six JSON writers (a random one unless ``writer`` says which)."""
    writer = rng.randrange(WRITERS) if writer is None else writer
    if writer == 0:
        return orjson.dumps(obj)
    if writer == 5:  # Go's encoding/json: &, < and > escaped
        line = orjson.dumps(obj)
        return line.replace(b"&", b"\\u0026").replace(b"<", b"\\u003c").replace(b">", b"\\u003e")
    if writer == 1:
        return json.dumps(obj).encode()  # ensure_ascii: every non-ASCII character escaped
    if writer == 2:
        return json.dumps(obj).replace("/", "\\/").encode()
    if writer == 3:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return _dumps_any(obj, rng).encode()


def _found(obj: object) -> bool:
    return bool(S.has_live_secret(obj)) or bool(S.scrub(obj)[1])


def _text_found(text: str) -> bool:
    return bool(S.find_spans(text)) or bool(S.redact_text(text)[1])


# --- the property ---------------------------------------------------------------------------


@settings(
    derandomize=True,
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.randoms(use_true_random=False))
def test_prefilter_is_a_superset_of_the_exact_rules(rng: Rng) -> None:
    records = [_record(rng) for _ in range(rng.randint(1, 6))]
    lines = [_write(record, rng) for record in records]
    newline = b"\r\n" if rng.random() < 0.2 else b"\n"
    data = (b"\xef\xbb\xbf" if rng.random() < 0.2 else b"") + newline.join(lines) + newline
    flagged = set(PF.flag_lines(data).tolist())
    for index, line in enumerate(lines):
        obj = orjson.loads(line)
        assert obj == records[index]
        if _found(obj):
            assert index in flagged, f"line {index} holds a secret but was not flagged"
    flags = PF.flag_objects(records)
    for record, flag in zip(records, flags, strict=True):
        assert flag or not _found(record), "a record holding a secret was not flagged"
    texts = [t for r in records for t in (r["instruction"], r["response"])]
    texts += [m["content"] for r in records for m in r["messages"]] + [_text(rng)]
    flags = PF.flag_texts(texts)
    for text, flag in zip(texts, flags, strict=True):
        if _text_found(text):
            assert flag, "a text holding a secret was not flagged"
        assert flag == PF.may_hold_secret(text)


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_each_generator_plants_what_the_exact_rules_find(kind: str) -> None:
    """The property above is only as good as its secrets: each kind is found, and flagged in
    every writer's output."""
    rng = random.Random(f"prefilter-{kind}")
    found = 0
    for _ in range(40):
        text = f"note: {GENERATORS[kind](rng)} done"
        if _text_found(text):
            found += 1
            assert PF.may_hold_secret(text)
            obj = {"text": text}
            for writer in range(WRITERS):
                line = _write(obj, rng, writer)
                assert PF.flag_lines(line + b"\n").tolist() == [0]
    assert found >= 30, f"{kind}: only {found} of 40 planted secrets are findings"


def test_lines_map_to_indices_of_split() -> None:
    secret = "ghp_" + "Ab3" * 12
    lines = [
        orjson.dumps({"t": "hello"}),
        orjson.dumps({"t": secret}),
        b"",
        orjson.dumps({"t": "[REDACTED:jwt] kept"}) + b"\r",
        b"not json AKIA" + b"Q" * 16,
        orjson.dumps({"t": "plain"}),
    ]
    data = b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n"
    flagged = PF.flag_lines(data)
    assert flagged.dtype.name == "int64"
    assert flagged.tolist() == [1, 3, 4]
    assert PF.flag_lines(b"").tolist() == []
    assert PF.flag_texts([]).tolist() == []
    assert PF.flag_texts(["plain", secret, "x\ud800y", "[REDACTED:jwt]"]).tolist() == [
        False,
        True,
        False,
        True,
    ]


def test_random_ids_under_id_keys_do_not_flag_the_line() -> None:
    call = "call_xsMJ4gYXanU7b2Q9rTlKpW3eZ"
    assert S.has_live_secret({"tool_call_id": call}) == []
    assert S.find_spans(f"see {call}") != []
    lines = [
        orjson.dumps({"role": "tool", "tool_call_id": call, "content": "ok"}),
        json.dumps({"id": call, "x": "y"}).encode(),
        orjson.dumps({"content": f"see {call}"}),
        orjson.dumps({"arguments": json.dumps({"tool_call_id": call})}),
        orjson.dumps({"note_id": "x", "text": call}),
    ]
    assert PF.flag_lines(b"\n".join(lines)).tolist() == [2, 3, 4]


def test_escaped_letters_and_look_alike_letters_flag_the_line() -> None:
    assert PF.flag_lines(b'{"t": "\\u0041KIA"}\n').tolist() == [0]
    # Go escapes &, < and > everywhere: those alone do not flag a line
    go = json.dumps({"t": '<div class="x">a & b</div>'}).encode()
    go = go.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
    assert PF.flag_lines(go).tolist() == []
    for char in ("\u0130", "\u0131", "\u017f", "\u212a"):
        assert PF.may_hold_secret(f"a {char} b")
        assert PF.flag_lines(json.dumps({"t": char}).encode()).tolist() == [0]


def test_the_entropy_pattern_is_exactly_the_mixed_runs() -> None:
    """The entropy pattern matches a whole run of token characters exactly when it holds upper
    case, lower case and digits (all strings up to 7 characters over a small alphabet, then
    random ones), in RE2 as in Python's re."""
    pattern = dict(PF.PATTERNS)["entropy"]
    python = re.compile(pattern.encode())
    engine = PF._engine()
    mixed = re.compile(r"(?=.*[A-Z])(?=.*[a-z])(?=.*[0-9])")
    rng = random.Random(7)
    samples = ["".join(p) for n in range(3, 8) for p in itertools.product("aZ9-+", repeat=n)]
    samples += [_r(rng, rng.randint(3, 40), "aZ9-+bY8=_") for _ in range(3000)]
    for run in samples:
        data = f'"{run}"'.encode()
        expected = (1, len(run) + 1) if mixed.match(run) else None
        found = python.search(data)
        assert (found.span() if found else None) == expected, run
        found = engine.any.search(data)
        assert (found.span(1) if found else None) == expected, run


# --- selectivity ----------------------------------------------------------------------------


def test_a_synthetic_corpus_is_hardly_flagged(tmp_path: Path) -> None:
    """The synthetic corpus holds no secret (run ids, digests, timestamps and prose only): the
    lines flagged are the ones the exact rules find something on, plus at most one in a
    thousand, so a prefilter that flags everything (or much) fails here."""
    out = tmp_path / "evidence"
    synthesize(SynthSpec(runs=600, days=3, seed=13), out)
    lines = flagged_extra = 0
    for path in sorted(out.rglob("*.jsonl")):
        data = path.read_bytes()
        pieces = data.split(b"\n")
        flagged = set(PF.flag_lines(data).tolist())
        lines += len(pieces)
        for index, piece in enumerate(pieces):
            try:
                obj = orjson.loads(piece.removeprefix(b"\xef\xbb\xbf"))
            except orjson.JSONDecodeError:
                obj = None
            if obj is not None and _found(obj):
                assert index in flagged
            elif index in flagged:
                flagged_extra += 1
    assert lines > 1000
    assert flagged_extra <= lines // 1000


# --- the two rules added to the exact ones --------------------------------------------------

HEX64 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
UUID = "3f2a9c1e-8b7d-4e6f-a1b2-c3d4e5f60718"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (f"export SERVICE_TOKEN={HEX64}", HEX64),
        (f'{{"authToken": "{HEX64[:32]}"}}', HEX64[:32]),
        (f"x-auth: {HEX64[:40]}", HEX64[:40]),
        ("db_credential = kQ3xZ9vBnM2wErT7", "kQ3xZ9vBnM2wErT7"),
        (f"Authorization: Bearer {HEX64[:32]}", HEX64[:32]),
        ("api_key='A1b2C3d4E5f6G7h8I9j0'", "A1b2C3d4E5f6G7h8I9j0"),
        (f"auth_token={UUID} ok", UUID),
    ],
)
def test_a_credential_under_a_name_that_says_so_is_found(text: str, value: str) -> None:
    redacted, findings = S.redact_text(text)
    assert value not in redacted
    assert [f.type for f in findings] == [C.SECRET_ASSIGNMENT]
    assert PF.may_hold_secret(text)


@pytest.mark.parametrize(
    "text",
    [
        'token = "refresh"',
        "auth: required",
        "secret: none",
        "tokens: 1200",
        "max_tokens=4096",
        'tokenizer = "bert-base-multilingual-cased-v2"',
        "auth_backend = django_auth_ldap2_backend",
        "credentials_file = service-account-2024.json",
        "token = get_token_for_user_2024(user)",
        "auth_path=/var/lib/app2/tokens/current",
        "the schema timeout token: Each error after session",
        "auth/login.py sometimes fails",
        "GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}",
    ],
)
def test_ordinary_words_under_such_names_are_not(text: str) -> None:
    assert S.find_spans(text) == []


def test_a_credential_under_a_json_key_that_says_so_is_found() -> None:
    row = {"meta": {"auth_token": HEX64[:32], "session_token_id": HEX64[:32], "tokens": 12}}
    scrubbed, findings = S.scrub(row)
    assert [(f.type, f.field) for f in findings] == [(C.SECRET_ASSIGNMENT, "meta.auth_token")]
    assert scrubbed["meta"]["session_token_id"] == HEX64[:32]  # an id, not a credential
    assert S.has_live_secret(row) == [C.SECRET_ASSIGNMENT]
    assert S.has_live_secret(scrubbed) == []
    assert S.has_live_secret({"auth": "required", "token_type": "refresh"}) == []
    assert PF.flag_lines(orjson.dumps(row)).tolist() == [0]


@pytest.mark.parametrize(
    "url",
    [
        "https://ghp_" + "aB3dE5gH7jK9" * 3 + "@github.com/org/repo.git",
        f"https://{HEX64[:40]}@github.com/org/repo.git",
        f"https://{HEX64[:40]}:x-oauth-basic@github.com/org/repo.git",
        "git+https://kQ3xZ9vBnM2wErT7yU8i@gitlab.example.com/group/project",
    ],
)
def test_a_token_as_a_url_user_is_found(url: str) -> None:
    redacted, findings = S.redact_text(f"git clone {url}")
    assert "@github.com" in redacted or "@gitlab" in redacted
    assert findings and HEX64[:40] not in redacted and "kQ3xZ9vBnM2wErT7yU8i" not in redacted
    assert PF.may_hold_secret(url)


@pytest.mark.parametrize(
    "text",
    [
        "git clone https://git@github.com/org/repo.git",
        "ssh://user@host:22/srv",
        "mailto:bob@example.com",
        "https://john.doe.smith.1985@example.com/profile",
        "https://docs.example.com/releases/v2.13.0-rc1@latest",
    ],
)
def test_ordinary_url_users_are_not(text: str) -> None:
    assert S.find_spans(text) == []


def test_new_rules_are_idempotent() -> None:
    text = f"SERVICE_TOKEN={HEX64} and https://{HEX64[:40]}@github.com/x"
    once, first = S.redact_text(text)
    twice, second = S.redact_text(once)
    assert once == twice and len(first) == len(second) == 2
    assert S.has_live_secret(once) == []
