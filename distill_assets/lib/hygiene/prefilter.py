"""A native prefilter for the secret rules: which JSON lines, or texts, may hold a secret.

The exact rules (``secrets.find_spans``, ``scrub``, ``has_live_secret``) are Python: regexes,
keyword windows, detect-secrets' filters and a Shannon entropy per token. Reading every string of
every record with them costs tens of "floors" (the cost of reading, parsing and hashing a record
once). This module over-approximates every one of those rules by patterns that RE2 (one
program, compiled once per process, a lazily built DFA) runs over raw bytes, so only what it
flags needs the exact rules. docs/performance.md ("Secret prefilter") says why RE2 and how
fast.

The guarantee (tested by ``distill_tests/test_secret_prefilter.py``): for a line that
``orjson.loads`` accepts, if ``has_live_secret(obj)`` or ``scrub(obj)`` finds anything
(placeholders such as ``[REDACTED:jwt]`` included), ``flag_lines`` flags the line; for a text,
if ``find_spans`` or ``redact_text`` finds anything, ``flag_texts`` flags it.

How the patterns stay a superset of rules that read *decoded* strings while they read the raw
JSON text: a JSON writer may write any character as an escape. Printable ASCII written as
``\\u00XX`` is rare (but for Go's ``&``, ``<`` and ``>``, which no pattern reads differently
from other escapes), so a line holding one is flagged outright (``escaped_ascii``), and so is a
line holding one of the four non-ASCII letters Python's case-insensitive matching equates with
ASCII ones (``İ ı ſ K``). Every other escape stands for ``"``, ``\\``, ``/``, a control character
or a non-ASCII character, which the patterns allow wherever the rules allow such a character:
``\\"`` for a quote, ``\\?/`` for a slash, ``\\[bfnrt]``, ``\\uXXXX`` or a non-ASCII byte for a
blank or a word character. A match also never leaves the JSON string it started in where the
rule reads one string (``_STRING_CHAR``), which keeps keys such as ``"password":`` from flagging.

The entropy rule (runs of at least 20 base64 characters with upper case, lower case and
digits, entropy above 4.5) is the one pattern that needs a check in Python: the pattern finds
whole runs that hold all three kinds of character, and ``secrets.is_entropy_token`` decides on
the few runs found. Run ids, hex digests and task ids hold no upper case and never match.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import re2

from distill_assets.lib.hygiene import secrets as S

# --- the patterns (syntax common to RE2 and Python's re on bytes) ---------------------------

_NON_ASCII = r"[^\x00-\x7f]"
_U_ESCAPE = r"\\u[0-9A-Fa-f]{4}"
# the raw form of one decoded \w character, and of one decoded \s character
_WORD = rf"(?:[A-Za-z0-9_]|{_NON_ASCII}|{_U_ESCAPE})"
_SPACE = rf"(?:[ \t]|\\[bfnrt]|{_U_ESCAPE}|{_NON_ASCII})"
# a quote inside a JSON string, and a slash however it is written
_QUOTE = r"(?:'|`|\\\")"
_SLASH = r"\\?/"
# one character of the JSON string the match started in: never its closing quote or a newline
_STRING_CHAR = r'(?:[^"\\\n]|\\[^\n])'
_TOKEN_CHAR = r"[A-Za-z0-9+=_\-]"
_UPPER, _LOWER, _DIGIT = "[A-Z]", "[a-z]", "[0-9]"

# detect-secrets' keyword list, spelled out so the automaton looks for whole words
_KEYWORDS = "|".join(
    re.escape(word).replace("ñ", r"(?:ñ|Ñ|\\u00[fFdD]1)") for word in S.KEYWORD_LITERALS
)
_KEYWORDS_CASED = "|".join(
    re.escape(word).replace("ñ", r"(?:ñ|\\u00[fF]1)") for word in S.KEYWORD_LITERALS
)
_CREDENTIAL_WORDS = r"(?i:token|auth|credential|secret|api[_\-]?key)"
_CREDENTIAL_VALUE = r"[A-Za-z0-9_+=~\-]"
_MIN = S.CREDENTIAL_MIN_LENGTH


def _mixed_run() -> str:
    """A whole run of token characters holding an upper-case letter, a lower-case letter and a
    digit: leftmost-first matching with greedy loops makes the match the maximal run."""
    kinds = (_UPPER, _LOWER, _DIGIT)
    t = _TOKEN_CHAR
    orders = "|".join(f"{a}{t}*{b}{t}*{c}" for a, b, c in itertools.permutations(kinds))
    return f"{t}*(?:{orders}){t}*"


# (name, pattern): any match flags the line, except the "entropy" ones (checked in Python)
PATTERNS: tuple[tuple[str, str], ...] = (
    ("placeholder", r"\[REDACTED:"),
    ("casefold", "\u0130|\u0131|\u017f|\u212a" + r"|\\u(?:013[01]|017[fF]|212[aA])"),
    # printable ASCII written as \u00XX, except the `&`, `<` and `>` that Go's encoder escapes
    # in every HTML snippet: no rule can read those three differently from any other escape
    ("escaped_ascii", r"\\u00(?:2[0-57-9A-Fa-f]|3[0-9ABDFabdf]|[4-7][0-9A-Fa-f])"),
    ("aws_access_key", r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}"),
    (
        "aws_secret_key",
        rf"(?i:aws){_STRING_CHAR}*(?i:key|pw|pass|token){_STRING_CHAR}*(?:'|\\\")"
        rf"(?:[0-9a-zA-Z+]|{_SLASH}){{40}}(?:'|\\\")",
    ),
    ("github_token", r"gh[pousr]_[A-Za-z0-9_]{36}"),
    (
        "gitlab_token",
        r"(?:glpat|gldt|glft|glsoat|glrt|glcbt|glimt|glptt|glagent|gloas|GR1348941)-?"
        r"[A-Za-z0-9_\-]{20}",
    ),
    ("slack_token", r"(?i:xox[abposr]-|hooks\.slack\.com)"),
    ("stripe_key", r"[rs]k_live_[0-9a-zA-Z]{24}"),
    ("openai_api_key", r"T3BlbkFJ|sk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{20}"),
    ("anthropic_api_key", r"sk-ant-[a-z]{3}"),
    ("google_api_key", r"AIza[0-9A-Za-z_\-]{35}"),
    ("huggingface_token", r"hf_[A-Za-z0-9]{30}"),
    (
        "private_key",
        r"BEGIN (?:(?:DSA|EC|OPENSSH|PGP|RSA|SSH2 ENCRYPTED) )?PRIVATE KEY|PuTTY-User-Key-File-2",
    ),
    ("jwt", r"eyJ[A-Za-z0-9_=\-]+\.[A-Za-z0-9_=\-]"),
    (
        "password_in_url",
        rf":{_SLASH}{_SLASH}[^:/?#\[\]@!$&'()*+,;=\s]+:[^:/?#\[\]@!$&'()*+,;=\s]+@",
    ),
    ("azure_storage_key", r"AccountKey="),
    ("mailchimp_key", r"[0-9a-z]{32}-us[0-9]"),
    ("npm_token", r":_authToken="),
    ("pypi_token", r"pypi-AgEIcHlwaS5vcmc|pypi-AgENdGVzdC5weXBpLm9yZw"),
    ("sendgrid_key", r"SG\.[a-zA-Z0-9_\-]{22}\.[a-zA-Z0-9_\-]{43}"),
    ("square_oauth_secret", r"sq0csp-"),
    ("twilio_key", r"(?:AC|SK)[a-z0-9]{32}"),
    # detect-secrets' keyword forms: `password = x`, `secret: "x"`, `pwd := x`, `key => "x"`, …
    (
        "keyword_assignment",
        rf"(?i:{_KEYWORDS}){_WORD}*(?:\]|'|\\\"){{0,2}}{_SPACE}*[=!:][=>]{{0,2}}{_SPACE}*"
        rf"{_QUOTE}?{_WORD}",
    ),
    ("keyword_semicolon", rf"(?i:{_KEYWORDS}){_STRING_CHAR}*{_QUOTE};"),
    ("keyword_comparison", rf"[!=][!=]{_SPACE}*{_WORD}*(?:{_KEYWORDS_CASED})"),
    # ours: a credential's name (or JSON key) assigned a value in a token alphabet
    (
        "credential_name",
        rf"{_CREDENTIAL_WORDS}[A-Za-z0-9_.\-]*(?:\\?\"|'|\]){{0,2}}{_SPACE}*(?::=|=>|[:=])"
        rf"{_SPACE}*(?:\\?\"|'|`)?(?:(?i:bearer|basic|token|bot){_SPACE}+)?"
        rf"{_CREDENTIAL_VALUE}{{{_MIN}}}",
    ),
    ("url_user", rf":{_SLASH}{_SLASH}[A-Za-z0-9_+=~%.\-]{{{_MIN},}}(?::[^\s/?#@]*)?@"),
    ("entropy", _mixed_run()),
)
_HEX = frozenset(b"0123456789abcdefABCDEF")


# --- the engine -----------------------------------------------------------------------------


class _Engine:
    """Two RE2 programs over bytes (Latin-1 mode: one byte, one character): every pattern in one
    alternation, the entropy one last and in the only group, and the others alone. RE2's
    leftmost-first search finds the first match of any pattern; when that is a run the entropy
    rule rejects, a match of another pattern starting inside the run is looked for with the
    second program."""

    def __init__(self) -> None:
        options = re2.Options()
        options.encoding = re2.Options.Encoding.LATIN1
        options.max_mem = 256 << 20  # room for the lazily built DFA
        definite = "|".join(f"(?:{p})" for name, p in PATTERNS if name != "entropy")
        entropy = "|".join(p for name, p in PATTERNS if name == "entropy")
        self.definite = re2.compile(definite.encode(), options)
        self.any = re2.compile(f"{definite}|({entropy})".encode(), options)


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        with _ENGINE_LOCK:
            if _ENGINE is None:
                _ENGINE = _Engine()
    return _ENGINE


# --- the check in Python for the entropy rule ------------------------------------------------


def _entropy_run_flags(data: bytes, start: int, end: int) -> bool:
    """Whether the run of token characters ``data[start:end]`` reads, once decoded, as a token
    the entropy rule reports. The raw run may start with the tail of an escape (``\\n`` leaves
    an ``n``, ``\\u00e9`` leaves ``u00e9``), so those starts are tried too."""
    if end - start < S.ENTROPY_MIN_LENGTH:
        return False
    run = data[start:end]
    candidates = [run]
    if start > 0 and data[start - 1] == 0x5C:  # a backslash
        candidates.append(run[1:])
        if run[:1] == b"u" and len(run) >= 5 and all(c in _HEX for c in run[1:5]):
            candidates.append(run[5:])
    return any(
        len(token) >= S.ENTROPY_MIN_LENGTH and S.is_entropy_token(token.decode("ascii"))
        for token in candidates
    )


# the end of `{"…_id": "` or `, "id":"`: a string that is the value of an id key, to which the
# entropy rule does not apply (secrets.ID_KEYS); a key written with escapes does not count
_ID_VALUE_START = re.compile(
    rb'[{,][ \t\r]*"(?:'
    + b"|".join(re.escape(k.encode()) for k in sorted(S.ID_KEYS))
    + rb'|[^"\\]*_id)"[ \t\r]*:[ \t\r]*"\Z'
)


def _in_id_value(data: bytes, start: int) -> bool:
    """Whether offset ``start`` lies in a JSON string that is the value of an id key."""
    line_start = data.rfind(b"\n", 0, start) + 1
    quote = start
    while True:
        quote = data.rfind(b'"', line_start, quote)
        if quote < 0:
            return False
        before = quote
        while before > line_start and data[before - 1] == 0x5C:  # a backslash
            before -= 1
        if (quote - before) % 2 == 0:  # not escaped: the string's opening quote
            break
    return _ID_VALUE_START.search(data, max(line_start, quote - 256), quote + 1) is not None


def _flagged_line_starts(data: bytes) -> list[int]:
    """Start offsets of the flagged lines, in order."""
    engine = _engine()
    starts: list[int] = []
    size = len(data)
    position = 0
    clear_until = -1  # no match of a definite pattern starts before this offset on its line
    while position < size:
        match = engine.any.search(data, position)
        if match is None:
            break
        start, end = match.span()
        newline = data.find(b"\n", start)
        line_end = size if newline < 0 else newline
        if match.start(1) >= 0 and (
            not _entropy_run_flags(data, start, end) or _in_id_value(data, start)
        ):
            if clear_until < line_end:
                hidden = engine.definite.search(data, start + 1, line_end)
                if hidden is None:
                    clear_until = line_end
                else:
                    start = hidden.start()
            if clear_until >= line_end:
                position = max(end, start + 1)
                continue
        starts.append(data.rfind(b"\n", 0, start) + 1)
        position = line_end + 1
    return starts


def _line_numbers(data: bytes, starts: list[int]) -> np.ndarray:
    """Line indices of the given line-start offsets (ascending), counting newlines once."""
    numbers = np.empty(len(starts), dtype=np.int64)
    previous, line = 0, 0
    for index, offset in enumerate(starts):
        line += data.count(b"\n", previous, offset)
        numbers[index] = line
        previous = offset
    return numbers


# --- the API --------------------------------------------------------------------------------


def flag_lines(data: bytes) -> np.ndarray:
    """Indices (in ``data.split(b"\\n")`` order, int64, sorted, unique) of the lines that may
    hold a secret or a placeholder; every other line that is valid JSON holds neither.

    A line may end in ``\\r`` and the first may start with a byte-order mark. The empty piece
    after a final newline is never flagged.
    """
    return _line_numbers(data, _flagged_line_starts(data))


def _encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):  # a lone surrogate: json writes an escape
        return json.dumps(value).encode()


def flag_texts(texts: Sequence[str]) -> np.ndarray:
    """One bool per text: False means ``find_spans`` and ``redact_text`` find nothing in it.

    A text alone says nothing of the key it sits under: for a dict whose keys may name a
    credential (``auth_token``), use ``flag_objects``, which covers ``scrub`` of the whole value.
    """
    return flag_objects(texts)


def flag_objects(values: Sequence[Any]) -> np.ndarray:
    """One bool per JSON value (dict, list, str, …): False means ``has_live_secret`` and
    ``scrub`` find nothing in it."""
    flags = np.zeros(len(values), dtype=bool)
    if len(values):
        flags[flag_lines(b"\n".join(_encode(value) for value in values))] = True
    return flags


def may_hold_secret(text: str) -> bool:
    """``flag_texts`` for one text."""
    return bool(flag_objects([text])[0])
