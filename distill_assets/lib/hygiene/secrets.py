"""Secrets in agent transcripts: found with detect-secrets, replaced by typed placeholders.

Every detector distill uses is listed once, in ``REGEX_DETECTORS`` and the keyword and entropy
rules below (docs/safety.md): detect-secrets' own plugins for known token formats, four plugins of
ours in the same plugin interface for LLM-provider and other keys it does not know, its keyword
regexes for ``password=``-style assignments and its Shannon entropy for unknown random tokens,
plus two rules of ours: random-looking values assigned to a name that says it holds a credential
(``GITHUB_TOKEN=…``, ``"authToken": "…"``) and tokens in a URL's userinfo (``https://TOKEN@host``).

``Scanner.scrub`` walks a JSON value and returns it with every secret replaced by
``[REDACTED:<type>]``, plus one ``Finding`` per secret (type, field path, redacted preview). A
``Finding`` never holds the secret; nothing in this module logs, raises or returns one. Texts
already carrying placeholders scan clean (the placeholder is not a secret), so scrubbing twice
gives the same bytes, and a placeholder found later still counts as a finding of its type.

Length: every detector and its filters in one place: the rule set is versioned as one
(``SECRET_RULES_VERSION``), and docs/safety.md lists it in this order.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from detect_secrets.filters.heuristic import (
    is_indirect_reference,
    is_not_alphanumeric_string,
    is_potential_uuid,
    is_prefixed_with_dollar_sign,
    is_sequential_string,
    is_templated_secret,
)
from detect_secrets.plugins import keyword as kw
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

from distill_assets.lib import constants as C
from distill_assets.lib.evidence.format import Record

# --- plugins of ours, in detect-secrets' plugin interface ----------------------------------


class AnthropicKeyDetector(RegexBasedDetector):
    """Anthropic API and admin keys (sk-ant-api03-…, sk-ant-admin01-…)."""

    secret_type = "Anthropic API Key"
    denylist = (re.compile(r"sk-ant-[a-z]{3,10}\d{0,3}-[A-Za-z0-9_\-]{20,}"),)


class OpenAIProjectKeyDetector(RegexBasedDetector):
    """OpenAI project, service-account and admin keys, which detect-secrets' plugin (the legacy
    ``T3BlbkFJ`` form) does not always match."""

    secret_type = "OpenAI API Key"
    denylist = (re.compile(r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{20,}"),)


class GoogleApiKeyDetector(RegexBasedDetector):
    """Google Cloud / Gemini API keys."""

    secret_type = "Google API Key"
    denylist = (re.compile(r"AIza[0-9A-Za-z_\-]{35}"),)


class HuggingFaceTokenDetector(RegexBasedDetector):
    """Hugging Face user access tokens."""

    secret_type = "Hugging Face Token"
    denylist = (re.compile(r"hf_[A-Za-z0-9]{30,}"),)


# --- the one place detectors are configured ------------------------------------------------

# (finding type, plugin, gates): every token format distill looks for. A plugin's regexes run on
# a text only when one of its gates (literals every match contains; ``(ci)`` ones compared in
# lower case) occurs in it, which keeps the scan fast without changing what is found. Left out on
# purpose: detect-secrets' Artifactory plugin (it matches CamelCase words such as
# "APACHEConfig"), its IP-address plugin (not a secret), its hex entropy plugin (commit hashes and
# digests are everywhere in transcripts), its Discord and Telegram plugins (no literal to gate
# on, so they would cost more than all the others together; their random parts are caught by the
# entropy rule) and the plugins that only verify credentials over the network.
REGEX_DETECTORS: tuple[tuple[str, type[RegexBasedDetector], tuple[str, ...]], ...] = (
    (C.SECRET_AWS_ACCESS_KEY, AWSKeyDetector, ("A3T", "ABIA", "ACCA", "AKIA", "ASIA", "aws(ci)")),
    (C.SECRET_GITHUB_TOKEN, GitHubTokenDetector, ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    (C.SECRET_GITLAB_TOKEN, GitLabTokenDetector, ("gl", "GR1348941")),
    (C.SECRET_SLACK_TOKEN, SlackDetector, ("xox(ci)", "hooks.slack.com(ci)")),
    (C.SECRET_STRIPE_KEY, StripeDetector, ("k_live_",)),
    (C.SECRET_OPENAI_API_KEY, OpenAIDetector, ("T3BlbkFJ",)),
    (C.SECRET_OPENAI_API_KEY, OpenAIProjectKeyDetector, ("sk-",)),
    (C.SECRET_ANTHROPIC_API_KEY, AnthropicKeyDetector, ("sk-ant-",)),
    (C.SECRET_GOOGLE_API_KEY, GoogleApiKeyDetector, ("AIza",)),
    (C.SECRET_HUGGINGFACE_TOKEN, HuggingFaceTokenDetector, ("hf_",)),
    (C.SECRET_PRIVATE_KEY, PrivateKeyDetector, ("PRIVATE KEY", "PuTTY-User-Key-File")),
    (C.SECRET_JWT, JwtTokenDetector, ("eyJ",)),
    (C.SECRET_PASSWORD_IN_URL, BasicAuthDetector, ("://",)),
    (C.SECRET_AZURE_STORAGE_KEY, AzureStorageKeyDetector, ("AccountKey=",)),
    (C.SECRET_MAILCHIMP_KEY, MailchimpDetector, ("-us",)),
    (C.SECRET_NPM_TOKEN, NpmDetector, (":_authToken=",)),
    (C.SECRET_PYPI_TOKEN, PypiTokenDetector, ("pypi-Ag",)),
    (C.SECRET_SENDGRID_KEY, SendGridDetector, ("SG.",)),
    (C.SECRET_SQUARE_OAUTH, SquareOAuthDetector, ("sq0csp-",)),
    (C.SECRET_TWILIO_KEY, TwilioKeyDetector, ("AC", "SK")),
)

# detect-secrets' keyword regexes (its KeywordDetector) that distill applies, as
# (regex, group of the value, group of its opening quote). The unquoted ``key: value`` form is
# only taken at the start of a line (YAML, .env, HTTP headers), since prose ("your password:
# reset it in the portal") uses it too.
_KEYWORD_FORMS: tuple[tuple[re.Pattern[str], int, int], ...] = (
    (kw.FOLLOWED_BY_EQUAL_SIGNS_REGEX, 5, 4),
    (kw.FOLLOWED_BY_COLON_EQUAL_SIGNS_REGEX, 4, 3),
    (kw.FOLLOWED_BY_COLON_QUOTES_REQUIRED_REGEX, 5, 4),
    (kw.FOLLOWED_BY_QUOTES_AND_SEMICOLON_REGEX, 3, 2),
    (kw.FOLLOWED_BY_ARROW_FUNCTION_SIGN_QUOTES_REQUIRED_REGEX, 4, 3),
    (kw.PRECEDED_BY_EQUAL_COMPARISON_SIGNS_QUOTES_REQUIRED_REGEX, 2, 1),
)
_KEYWORD_LINE_START_FORM = (kw.FOLLOWED_BY_COLON_REGEX, 4, 3)
# detect-secrets' keyword list as literals ("api_?key" gives "apikey" and "api_key"): a keyword
# regex runs only on the lines where one of them occurs, found with plain substring search
KEYWORD_LITERALS: tuple[str, ...] = tuple(
    sorted({word.replace("_?", sep) for word in kw.DENYLIST for sep in ("", "_")})
)
# every literal contains one of these roots (a test keeps it so), which are looked for first
KEYWORD_ROOTS: tuple[str, ...] = ("key", "pass", "pwd", "secret", "contrase")
_LITERALS_BY_ROOT = {
    root: tuple(lit for lit in KEYWORD_LITERALS if root in lit) for root in KEYWORD_ROOTS
}
_KEYWORD_WINDOW = 512
# values that name no secret: placeholders a template or a config example uses
_NOT_A_VALUE = frozenset(
    {"none", "null", "nil", "true", "false", "undefined", "empty", "str", "string", "redacted"}
)
_MIN_KEYWORD_VALUE = 4
_BLANK = re.compile(r"\s")
_DIGIT = re.compile(r"\d")

# the high-entropy rule: runs of base64 characters (split at "/", so file paths are not one
# token) of at least ENTROPY_MIN_LENGTH characters, with upper case, lower case and digits, whose
# Shannon entropy over the base64 alphabet (detect-secrets' Base64HighEntropyString) exceeds
# ENTROPY_LIMIT, detect-secrets' default for that plugin
ENTROPY_LIMIT = 4.5
ENTROPY_MIN_LENGTH = 20
_ENTROPY = Base64HighEntropyString(limit=ENTROPY_LIMIT)
# the look-behind makes a token start only at a token boundary, so the scan stays linear
_TOKEN = re.compile(rf"(?<![A-Za-z0-9+=_\-])[A-Za-z0-9+=_\-]{{{ENTROPY_MIN_LENGTH},}}")

_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----.*?"
    r"(?:-----END[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|\Z)",
    re.DOTALL,
)
_PUTTY_BLOCK = re.compile(r"PuTTY-User-Key-File-\d.*?(?:Private-MAC: *[0-9a-fA-F]+|\Z)", re.DOTALL)
_PARAGRAPH_END = re.compile(r"\n\s*\n")
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+/=")
_JWT_CHARS = _TOKEN_CHARS | {"."}

PLACEHOLDER_RE = re.compile(r"\[REDACTED:([a-z0-9_]+)\]")
# no detector matches fewer characters ("pwd=abcd"): shorter strings are not scanned
_SHORTEST = 8
PREVIEW_CONTEXT = 24
# keys whose values are identifiers: the entropy rule does not apply to them (tool call ids such
# as "call_Q1w2E3r4T5y6U7i8O9p0AsDf" look random by design); token formats still do
ID_KEYS = frozenset({"id", "tool_call_id"})

# --- credentials under a name that says so, and tokens in URLs (rules of ours) ---------------

# a name that says it holds a credential: GITHUB_TOKEN, authToken, x-auth, db_credential, API_KEY
_CREDENTIAL_WORD = r"(?i:token|auth|credential|secret|api[_\-]?key)"
_NAME_CHAR = r"[A-Za-z0-9_.\-]"
# the alphabets tokens are written in (hex, base64url, alphanumerics), so a path, a file name, a
# URL or a function call is never read as a value
_VALUE_CHAR = r"[A-Za-z0-9_+=~\-]"
CREDENTIAL_MIN_LENGTH = 16
# the Shannon entropy (bits per character, over the value's own characters) a value needs
CREDENTIAL_MIN_ENTROPY = 3.0
_SCHEME = r"(?:(?i:bearer|basic|token|bot)[ \t]+)?"
_CREDENTIAL_ASSIGNMENT = re.compile(
    rf"{_CREDENTIAL_WORD}{_NAME_CHAR}*['\"\]]{{0,2}}[ \t]*(?::=|=>|[:=])[ \t]*['\"`]?{_SCHEME}"
    rf"({_VALUE_CHAR}{{{CREDENTIAL_MIN_LENGTH},}})(?!{_VALUE_CHAR}|[(/]|\.[A-Za-z0-9])",
    re.ASCII,
)
# a JSON key of that kind, whose whole string value is then read as the credential
_CREDENTIAL_KEY = re.compile(rf"{_NAME_CHAR}*{_CREDENTIAL_WORD}{_NAME_CHAR}*", re.ASCII)
_CREDENTIAL_VALUE = re.compile(rf"{_SCHEME}({_VALUE_CHAR}{{{CREDENTIAL_MIN_LENGTH},}})", re.ASCII)
_CREDENTIAL_GATES = ("token", "auth", "credential", "secret", "api")
# a token as a URL's user, with or without a password: https://TOKEN@host/…
_URL_USER = re.compile(
    rf"://([A-Za-z0-9_+=~%.\-]{{{CREDENTIAL_MIN_LENGTH},}})(?::[^\s/?#@]*)?@(?=[A-Za-z0-9\[])",
    re.ASCII,
)
_VALUE_SEPARATOR = re.compile(r"[_\-+=~.%]")
# a word of an identifier (camelCase, snake_case, UPPER_CASE) or a number
_IDENTIFIER_PIECE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_HEX_GROUPS = re.compile(r"[0-9a-fA-F]+(?:-[0-9a-fA-F]+)+")
_LETTER = re.compile(r"[A-Za-z]")
_ASCII_DIGIT = re.compile(r"[0-9]")


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


@dataclass(frozen=True, slots=True)
class Finding:
    """One secret found: its type, where (a field path such as ``messages[2].content``) and a
    preview of the text around it with every secret replaced; never the secret itself."""

    type: str
    field: str
    preview: str

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "field": self.field, "preview": self.preview}


def _is_id_key(key: str) -> bool:
    return key in ID_KEYS or key.endswith("_id")


def _shannon(value: str) -> float:
    """Shannon entropy of ``value`` in bits per character, over its own characters."""
    size = len(value)
    return -sum(n / size * math.log2(n / size) for n in Counter(value).values())


def looks_like_credential(value: str) -> bool:
    """Whether a value assigned to a credential's name (or a URL's user) is random enough to be
    the credential: at least CREDENTIAL_MIN_LENGTH characters with a letter and a digit, entropy
    of at least CREDENTIAL_MIN_ENTROPY, and, unless it is groups of hex digits (a UUID), one stretch
    without separators of that length that is not made of words (identifier words and numbers
    average more than 4 characters: ``tokens_2024_backup``, ``getUserSettings2`` are not
    credentials, ``9f86d081…``, ``kQ3xZ…`` are)."""
    if (
        len(value) < CREDENTIAL_MIN_LENGTH
        or not _LETTER.search(value)
        or not _ASCII_DIGIT.search(value)
        or _shannon(value) < CREDENTIAL_MIN_ENTROPY
    ):
        return False
    if _HEX_GROUPS.fullmatch(value):
        return sum(c != "-" for c in value) >= CREDENTIAL_MIN_LENGTH
    longest = max(_VALUE_SEPARATOR.split(value), key=len)
    if len(longest) < CREDENTIAL_MIN_LENGTH:
        return False
    return len(longest) <= 4 * len(_IDENTIFIER_PIECE.findall(longest))


@functools.lru_cache(maxsize=4096)
def is_credential_key(key: str) -> bool:
    """A JSON key that says its value is a credential (``auth_token``, ``apiKey``); id keys are
    identifiers, not credentials."""
    return not _is_id_key(key) and _CREDENTIAL_KEY.fullmatch(key) is not None


def _extend(text: str, start: int, end: int, chars: frozenset[str]) -> tuple[int, int]:
    """Widen a match to the whole token it sits in, so a key longer than a detector's pattern
    (Stripe keys, for one) is not left half visible."""
    while start > 0 and text[start - 1] in chars:
        start -= 1
    while end < len(text) and text[end] in chars:
        end += 1
    return start, end


def _private_key_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The whole key block around a header the detector matched; without a recognisable block,
    everything from the header to the end of its paragraph."""
    for block in (_PRIVATE_KEY_BLOCK, _PUTTY_BLOCK):
        for match in block.finditer(text, max(0, start - 40)):
            if match.start() <= start < match.end():
                return match.start(), max(end, match.end())
            if match.start() > start:
                break
    paragraph = _PARAGRAPH_END.search(text, end)
    return start, paragraph.start() if paragraph else len(text)


def _split_gates(gates: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    exact = tuple(g for g in gates if not g.endswith("(ci)"))
    folded = tuple(g[:-4] for g in gates if g.endswith("(ci)"))
    return exact, folded


_GATED = tuple((kind, plugin, *_split_gates(gates)) for kind, plugin, gates in REGEX_DETECTORS)


def _regex_spans(text: str, lower: str) -> Iterator[tuple[int, int, str]]:
    for kind, plugin, exact, folded in _GATED:
        for gate in exact:
            if gate in text:
                break
        else:
            for gate in folded:
                if gate in lower:
                    break
            else:
                continue
        for pattern in plugin.denylist:
            for match in pattern.finditer(text):
                yield from _match_spans(kind, text, pattern, match)


def _match_spans(
    kind: str, text: str, pattern: re.Pattern[str], match: re.Match[str]
) -> Iterator[tuple[int, int, str]]:
    """The spans a detector's match covers (its non-empty groups, else the whole match),
    widened to the whole token (a private key: its whole block)."""
    groups = [i for i in range(1, (pattern.groups or 0) + 1) if match.group(i)]
    spans = [match.span(i) for i in groups] or [match.span()]
    for start, end in spans:
        if kind == C.SECRET_JWT:
            if not JwtTokenDetector.is_formally_valid(match.group(0)):
                continue
            yield (*_extend(text, start, end, _JWT_CHARS), kind)
        elif kind == C.SECRET_PRIVATE_KEY:
            yield (*_private_key_span(text, start, end), kind)
        elif kind != C.SECRET_PASSWORD_IN_URL:
            yield (*_extend(text, start, end, _TOKEN_CHARS), kind)
        else:
            yield start, end, kind


def _line_at(text: str, position: int) -> tuple[int, str]:
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    return start, text[start : end if end >= 0 else len(text)]


def _keyword_value(text: str, match: re.Match[str], group: int, quote_group: int):
    start, end = match.span(group)
    value = match.group(group)
    if not match.group(quote_group):
        # an unquoted value ends at the first blank: "PASSWORD=hunter2 ./run.sh"
        cut = _BLANK.search(value)
        if cut:
            value = value[: cut.start()]
            end = start + len(value)
    value = value.rstrip(").;")
    end = start + len(value)
    if len(value) < _MIN_KEYWORD_VALUE or value.lower() in _NOT_A_VALUE:
        return None
    if (
        is_templated_secret(value)
        or is_prefixed_with_dollar_sign(value)
        or is_not_alphanumeric_string(value)
        or PLACEHOLDER_RE.search(value)
    ):
        return None
    _, line = _line_at(text, start)
    if is_indirect_reference(line):
        return None
    return start, end


def _keyword_windows(text: str, lower: str) -> list[tuple[int, int]]:
    """Stretches of ``text`` (whole lines, at most _KEYWORD_WINDOW characters each side) around
    each keyword literal, merged."""
    found: list[tuple[int, int]] = []
    literals = {lit for root in KEYWORD_ROOTS if root in lower for lit in _LITERALS_BY_ROOT[root]}
    for literal in sorted(literals):
        at = lower.find(literal)
        while at >= 0:
            start = max(text.rfind("\n", 0, at) + 1, at - _KEYWORD_WINDOW)
            newline = text.find("\n", at)
            end = min(len(text) if newline < 0 else newline, at + _KEYWORD_WINDOW)
            found.append((start, end))
            at = lower.find(literal, at + len(literal))
    found.sort()
    merged: list[tuple[int, int]] = []
    for start, end in found:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _keyword_spans(text: str, lower: str) -> Iterator[tuple[int, int, str]]:
    if len(lower) != len(text):
        # lower-casing changed the length (a few Unicode letters do): scan the whole text
        windows = [(0, len(text))]
    else:
        windows = _keyword_windows(text, lower)
    for start, end in windows:
        window = text[start:end]
        for pattern, group, quote_group in _KEYWORD_FORMS:
            for match in pattern.finditer(window):
                span = _keyword_value(window, match, group, quote_group)
                if span:
                    yield start + span[0], start + span[1], C.SECRET_ASSIGNMENT
        pattern, group, quote_group = _KEYWORD_LINE_START_FORM
        for match in pattern.finditer(window):
            line_start, _ = _line_at(window, match.start())
            if window[line_start : match.start()].strip():
                continue
            span = _keyword_value(window, match, group, quote_group)
            if span:
                yield start + span[0], start + span[1], C.SECRET_ASSIGNMENT


def _long_words(text: str) -> Iterator[tuple[int, str]]:
    """(offset, word) of each blank-separated word of at least ENTROPY_MIN_LENGTH characters:
    every token the entropy rule reads lies in one (str.split is far faster than a regex)."""
    cursor = 0
    for word in [w for w in text.split() if len(w) >= ENTROPY_MIN_LENGTH]:
        at = text.find(word, cursor)
        yield at, word
        cursor = at + len(word)


def _mixed(word: str) -> bool:
    """Has upper and lower case letters and a digit (fast string-level tests)."""
    return word.lower() != word and word.upper() != word and _DIGIT.search(word) is not None


def is_entropy_token(token: str) -> bool:
    """The high-entropy rule on one token (a whole run of base64 characters)."""
    return (
        len(token) >= ENTROPY_MIN_LENGTH
        and _mixed(token)
        and not is_sequential_string(token)
        and not is_potential_uuid(token)
        and _ENTROPY.calculate_shannon_entropy(token) > ENTROPY_LIMIT
    )


def _entropy_spans(text: str) -> Iterator[tuple[int, int, str]]:
    for offset, word in _long_words(text):
        if not _mixed(word):
            continue
        for match in _TOKEN.finditer(word):
            if is_entropy_token(match.group()):
                yield offset + match.start(), offset + match.end(), C.SECRET_HIGH_ENTROPY


def _occurrences(text: str, literal: str) -> Iterator[int]:
    at = text.find(literal)
    while at >= 0:
        yield at
        at = text.find(literal, at + 1)


def _credential_spans(text: str, lower: str) -> Iterator[tuple[int, int, str]]:
    """Credentials assigned to a name that says so, and tokens as a URL's user."""
    if len(lower) != len(text):
        matches: Iterator[re.Match[str] | None] = _CREDENTIAL_ASSIGNMENT.finditer(text)
    else:  # the regex tried only where a name's word starts (much faster on prose)
        matches = (
            _CREDENTIAL_ASSIGNMENT.match(text, at)
            for gate in _CREDENTIAL_GATES
            for at in _occurrences(lower, gate)
        )
    for match in matches:
        if match and looks_like_credential(match.group(1)):
            yield match.start(1), match.end(1), C.SECRET_ASSIGNMENT
    if "://" in text:
        for match in _URL_USER.finditer(text):
            if looks_like_credential(match.group(1)):
                yield match.start(1), match.end(1), C.SECRET_PASSWORD_IN_URL


def _merge(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Overlapping spans become one, typed by the earliest-starting (then longest) match."""
    merged: list[tuple[int, int, str]] = []
    for start, end, kind in sorted(spans, key=lambda s: (s[0], -s[1])):
        if merged and start < merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], end), last[2])
        else:
            merged.append((start, end, kind))
    return merged


def find_spans(text: str, entropy: bool = True, named: bool = False) -> list[tuple[int, int, str]]:
    """(start, end, type) of each secret in ``text``, merged, in order; placeholders excluded.

    The text is scanned in the pieces between placeholders, so ``password=[REDACTED:…]`` is
    not read as a new assignment. ``named``: the text is the value of a key that names a
    credential (``is_credential_key``), so a random-looking value is one.
    """
    if len(text) < _SHORTEST:
        return []
    spans: list[tuple[int, int, str]] = []
    if named:
        whole = _CREDENTIAL_VALUE.fullmatch(text)
        if whole and looks_like_credential(whole.group(1)):
            spans.append((whole.start(1), whole.end(1), C.SECRET_ASSIGNMENT))
    offset = 0
    pieces = PLACEHOLDER_RE.split(text) if "[REDACTED:" in text else [text]
    # split() interleaves captured types; walk the pieces and skip over each placeholder
    for index in range(0, len(pieces), 2):
        piece = pieces[index]
        if piece:
            lower = piece.lower()
            found = list(_regex_spans(piece, lower)) + list(_keyword_spans(piece, lower))
            found += list(_credential_spans(piece, lower))
            if entropy:
                found += list(_entropy_spans(piece))
            spans.extend((offset + s, offset + e, k) for s, e, k in found)
        offset += len(piece)
        if index + 1 < len(pieces):
            offset += len(placeholder(pieces[index + 1]))
    return _merge(spans)


def _preview(redacted: str, start: int, end: int) -> str:
    """The text around a placeholder; a window edge never cuts another placeholder in two (a
    cut one would read as a value, ``password=[REDACTED:sec``)."""
    left = max(0, start - PREVIEW_CONTEXT)
    right = min(len(redacted), end + PREVIEW_CONTEXT)
    near = (max(0, left - 64), min(len(redacted), right + 64))
    for match in PLACEHOLDER_RE.finditer(redacted, *near):
        if match.start() < left < match.end():
            left = match.start()
        if match.start() < right < match.end():
            right = match.end()
    window = " ".join(redacted[left:right].split())
    return ("…" if left else "") + window + ("…" if right < len(redacted) else "")


def redact_text(
    text: str, field: str = "", entropy: bool = True, named: bool = False
) -> tuple[str, list[Finding]]:
    """``text`` with each secret replaced by its placeholder, and one finding per secret;
    placeholders already in the text count as findings too."""
    if len(text) < _SHORTEST:
        return text, []
    spans = find_spans(text, entropy, named)
    if not spans and "[REDACTED:" not in text:
        return text, []
    parts: list[str] = []
    placed: list[tuple[int, int, str]] = []
    cursor = 0
    length = 0
    for start, end, kind in spans:
        parts.append(text[cursor:start])
        length += start - cursor
        mark = placeholder(kind)
        parts.append(mark)
        placed.append((length, length + len(mark), kind))
        length += len(mark)
        cursor = end
    parts.append(text[cursor:])
    redacted = "".join(parts)
    new = {(s, e) for s, e, _ in placed}
    findings = [Finding(k, field, _preview(redacted, s, e)) for s, e, k in placed]
    for match in PLACEHOLDER_RE.finditer(redacted):
        if match.span() not in new and match.group(1) in C.SECRET_TYPES:
            findings.append(Finding(match.group(1), field, _preview(redacted, *match.span())))
    return redacted, findings


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def scrub(
    value: Any, path: str = "", entropy: bool = True, named: bool = False
) -> tuple[Any, list[Finding]]:
    """``value`` (any JSON value) with every string scrubbed, and the findings with their field
    paths. Containers are copied only where something changed. ``named``: see ``find_spans``
    (set for the string values of keys that name a credential)."""
    if isinstance(value, str):
        return redact_text(value, path, entropy, named)
    if isinstance(value, dict):
        findings: list[Finding] = []
        changed: dict[str, Any] | None = None
        for key, item in value.items():
            name = str(key)
            new, found = scrub(
                item,
                _join(path, name),
                entropy and not _is_id_key(name),
                isinstance(item, str) and is_credential_key(name),
            )
            if found:
                findings.extend(found)
            if new is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = new
        return (value if changed is None else changed), findings
    if isinstance(value, list):
        findings = []
        items: list[Any] | None = None
        for index, item in enumerate(value):
            new, found = scrub(item, f"{path}[{index}]", entropy)
            if found:
                findings.extend(found)
            if new is not item:
                if items is None:
                    items = list(value)
                items[index] = new
        return (value if items is None else items), findings
    return value, []


def has_live_secret(value: Any, entropy: bool = True, named: bool = False) -> list[str]:
    """Types of the secrets still in ``value`` (placeholders do not count): what the
    ``no_secrets`` check looks for in written files."""
    if isinstance(value, str):
        return [kind for _, _, kind in find_spans(value, entropy, named)]
    if isinstance(value, dict):
        return [
            kind
            for key, item in value.items()
            for kind in has_live_secret(
                item,
                entropy and not _is_id_key(str(key)),
                isinstance(item, str) and is_credential_key(str(key)),
            )
        ]
    if isinstance(value, list):
        return [kind for item in value for kind in has_live_secret(item, entropy)]
    return []


# fields that identify a record and are copied into every row about it: a secret there cannot
# be replaced (joins would break), so the record is quarantined instead
IDENTIFIER_FIELDS = ("run_id", "task_id")


def scrub_record(record: Record) -> tuple[Record | None, list[Finding]]:
    """The record as the evidence store keeps it: every secret replaced (the evidence id still
    names the source record), with the findings; no record when an identifier holds a secret."""
    obj, findings = scrub(record.obj)
    if not findings:
        return record, []
    if any(finding.field in IDENTIFIER_FIELDS for finding in findings):
        return None, findings
    if obj is record.obj:
        return record, findings
    canonical = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    return dataclasses.replace(record, obj=obj, canonical=canonical), findings


def safe_identifier(value: str | None) -> str | None:
    """``value``, or None when it holds a secret (for identifiers of rejected lines)."""
    if value is None or not has_live_secret(value, entropy=False):
        return value
    return None
