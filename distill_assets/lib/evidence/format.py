"""Evidence format v1: parse and validate one source line into an evidence record.

A line becomes either a ``Record`` (usable evidence with its canonical bytes and evidence id)
or a ``Rejected`` line carrying reason codes, a disposition (skipped: not a record at all;
quarantined: a record that breaks the format) and, when its timestamp could be read, its day.
See docs/evidence-format.md for the format and every reason code.

Length: evidence format v1 is one validator; its field rules follow docs/evidence-format.md in
order, with the fast path's equivalent beside each.
"""

from __future__ import annotations

import binascii
import bisect
import functools
import hashlib
import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import orjson

from distill_assets.lib import constants as C

_BOM = b"\xef\xbb\xbf"
_MESSAGE_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_REQUIRED: dict[str, tuple[str, ...]] = {
    C.KIND_RUN: ("run_id", "task_id", "instruction", "response", "created_at"),
    C.KIND_REVIEW: ("run_id", "verdict", "created_at"),
    C.KIND_OUTCOME: ("run_id", "outcome", "created_at"),
}
# a run may have answered nothing: an empty response is evidence (of failure), not bad input
_MAY_BE_EMPTY = frozenset({"response"})
# optional fields that must be text when present (null is allowed and means absent)
_OPTIONAL_TEXT: dict[str, tuple[str, ...]] = {
    C.KIND_RUN: ("agent", "category"),
    C.KIND_REVIEW: ("reviewer", "comment"),
    C.KIND_OUTCOME: (),
}
_OPTIONAL_UNIT: dict[str, tuple[str, ...]] = {
    C.KIND_RUN: (),
    C.KIND_REVIEW: ("score",),
    C.KIND_OUTCOME: ("reward",),
}
_ENUMS: dict[str, tuple[str, tuple[str, ...]]] = {
    C.KIND_REVIEW: ("verdict", C.VERDICTS),
    C.KIND_OUTCOME: ("outcome", C.OUTCOMES),
}


@dataclass(frozen=True)
class ParseSettings:
    """Limits applied to every source line (see docs/evidence-format.md)."""

    max_line_bytes: int = 8 * 1024 * 1024
    future_horizon: timedelta = timedelta(days=1)
    max_messages: int = 10_000
    max_messages_depth: int = 32
    earliest: date = date.fromisoformat(C.PARTITION_START)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @functools.cached_property
    def latest(self) -> datetime:
        """The latest timestamp that is not in the future."""
        return self.now + self.future_horizon


@dataclass(frozen=True, slots=True)
class Record:
    """A usable evidence record."""

    kind: str
    run_id: str
    created_at: str  # normalized: UTC, ISO 8601 with a Z
    day: date
    evidence_id: str
    canonical: bytes
    obj: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that did not become evidence, and why."""

    disposition: str
    reasons: tuple[str, ...]
    day: date | None = None
    kind: str | None = None
    run_id: str | None = None
    evidence_id: str | None = None


def strip_line(raw: bytes, first: bool) -> bytes:
    """Drop the line end (LF or CRLF) and, on a file's first line, a UTF-8 byte-order mark."""
    if first and raw.startswith(_BOM):
        raw = raw[3:]
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw


def parse_timestamp(value: Any) -> datetime | None:
    """ISO 8601 text to an aware UTC datetime; naive values are read as UTC; None if unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def format_timestamp(moment: datetime) -> str:
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


def _canonical_stamp(value: Any) -> datetime | None:
    """The moment of a timestamp already spelled as ``format_timestamp`` writes it (the common
    case, ``YYYY-MM-DDTHH:MM:SSZ``), else None; lets the parser skip reformatting it."""
    if (
        type(value) is str
        and len(value) == 20
        and value[19] == "Z"
        and value[10] == "T"
        and value[4] == "-"
        and value[7] == "-"
        and value[13] == ":"
        and value[16] == ":"
    ):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether a JSON value nests more than ``limit`` levels deep (the value itself is level 1,
    a container's items one more). Walks level by level, and only into containers."""
    if limit < 1:
        return True
    level: list[Any] = [value]
    depth = 1
    while level:
        below: list[Any] = []
        deeper = False
        for node in level:
            if isinstance(node, dict):
                children: Any = node.values()
            elif isinstance(node, list):
                children = node
            else:
                continue
            for child in children:
                deeper = True
                if isinstance(child, dict | list):
                    below.append(child)
        if not deeper:
            return False
        depth += 1
        if depth > limit:
            return True
        level = below
    return False


def _check_messages(messages: Any, settings: ParseSettings) -> str | None:
    if not isinstance(messages, list):
        return C.invalid_type("messages")
    if len(messages) > settings.max_messages:
        return C.R_MESSAGES_TOO_LARGE
    if _deeper_than(messages, settings.max_messages_depth):
        return C.R_MESSAGES_TOO_DEEP
    for message in messages:
        if not isinstance(message, dict):
            return C.invalid_value("messages")
        role = message.get("role")
        if not isinstance(role, str) or role not in _MESSAGE_ROLES:
            return C.invalid_value("messages")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            return C.invalid_value("messages")
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and not isinstance(tool_calls, list):
            return C.invalid_value("messages")
    return None


def _is_unit_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value == value  # not NaN
        and 0.0 <= value <= 1.0
    )


def parse_line(raw: bytes, settings: ParseSettings) -> Record | Rejected:
    """Parse one stripped source line (see ``strip_line``) into a Record or a Rejected line."""
    if not raw.strip():
        return Rejected(C.DISPOSITION_SKIPPED, (C.R_EMPTY_LINE,))
    if len(raw) > settings.max_line_bytes:
        return Rejected(C.DISPOSITION_SKIPPED, (C.R_LINE_TOO_LONG,))
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return Rejected(C.DISPOSITION_SKIPPED, (C.R_INVALID_UTF8,))
        message = str(exc)
        # orjson says "recursion limit" in older releases and "depth limit exceeded" in newer ones
        if "recursion" in message or "depth limit" in message:
            return Rejected(C.DISPOSITION_SKIPPED, (C.R_JSON_TOO_DEEP,))
        return Rejected(C.DISPOSITION_SKIPPED, (C.R_INVALID_JSON,))
    if not isinstance(obj, dict):
        return Rejected(C.DISPOSITION_SKIPPED, (C.R_NOT_AN_OBJECT,))
    return validate_object(obj, settings)


def validate_object(
    obj: dict[str, Any], settings: ParseSettings, check_all: bool = False
) -> Record | Rejected:
    """Validate a decoded JSON object against evidence format v1.

    A clean object is recognized by a quicker test first; ``check_all`` skips it (the two
    always agree, which the tests verify)."""
    kind = obj.get("kind")
    run_id = obj.get("run_id")
    run_id_text = run_id if isinstance(run_id, str) and run_id.strip() else None
    moment, stamp = _read_stamp(obj)
    day = moment.date() if moment is not None else None

    if kind is None:
        return Rejected(
            C.DISPOSITION_QUARANTINED, (C.missing_field("kind"),), day, None, run_id_text
        )
    if not isinstance(kind, str) or kind not in _REQUIRED:
        return Rejected(C.DISPOSITION_QUARANTINED, (C.R_UNKNOWN_KIND,), day, None, run_id_text)
    if (
        not check_all
        and run_id_text is not None
        and moment is not None
        and _complete(obj, kind, moment, settings)
    ):
        return _record(obj, kind, run_id_text, moment, stamp)

    reasons = [
        *_required_reasons(obj, kind, moment),
        *_optional_reasons(obj, kind),
        *(_run_reasons(obj, settings) if kind == C.KIND_RUN else ()),
        *_range_reasons(moment, settings),
    ]
    if reasons:
        if C.R_TIMESTAMP_OUT_OF_RANGE in reasons or C.R_FUTURE_TIMESTAMP in reasons:
            day = None  # no partition holds that day: file it with its neighbours instead
        return Rejected(C.DISPOSITION_QUARANTINED, tuple(reasons), day, kind, run_id_text)
    assert moment is not None and run_id_text is not None
    return _record(obj, kind, run_id_text, moment, stamp)


def _read_stamp(obj: dict[str, Any]) -> tuple[datetime | None, str | None]:
    """The moment ``created_at`` names (None: absent or unreadable), and the text itself when
    it is already in the normalized form."""
    if "created_at" not in obj:
        return None, None
    raw_stamp = obj["created_at"]
    moment = _canonical_stamp(raw_stamp)
    if moment is not None:
        return moment, raw_stamp
    return parse_timestamp(raw_stamp), None


def _required_reasons(obj: dict[str, Any], kind: str, moment: datetime | None) -> list[str]:
    """What is wrong with the fields every record of ``kind`` must have."""
    reasons: list[str] = []
    for name in _REQUIRED[kind]:
        if name not in obj:
            reasons.append(C.missing_field(name))
            continue
        value = obj[name]
        if name == "created_at":
            if not isinstance(value, str):
                reasons.append(C.invalid_type(name))
            elif moment is None:
                reasons.append(C.R_BAD_TIMESTAMP)
            continue
        if not isinstance(value, str):
            reasons.append(C.invalid_type(name))
        elif name not in _MAY_BE_EMPTY and not value.strip():
            reasons.append(C.empty_field(name))
    return reasons


def _optional_reasons(obj: dict[str, Any], kind: str) -> list[str]:
    """What is wrong with the optional texts, unit numbers and enumerated values of ``kind``."""
    reasons: list[str] = []
    for name in _OPTIONAL_TEXT[kind]:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            reasons.append(C.invalid_type(name))
    for name in _OPTIONAL_UNIT[kind]:
        value = obj.get(name)
        if value is not None and not _is_unit_number(value):
            reasons.append(C.invalid_value(name))
    enum = _ENUMS.get(kind)
    if enum is not None:
        name, allowed = enum
        value = obj.get(name)
        if isinstance(value, str) and value.strip() and value not in allowed:
            reasons.append(C.invalid_value(name))
    return reasons


def _run_reasons(obj: dict[str, Any], settings: ParseSettings) -> list[str]:
    """What is wrong with a run's ``messages`` and ``meta``."""
    reasons: list[str] = []
    if "messages" in obj and obj["messages"] is not None:
        problem = _check_messages(obj["messages"], settings)
        if problem:
            reasons.append(problem)
    meta = obj.get("meta")
    if meta is not None and not isinstance(meta, dict):
        reasons.append(C.invalid_type("meta"))
    return reasons


def _range_reasons(moment: datetime | None, settings: ParseSettings) -> list[str]:
    """Whether the timestamp lies before the first partition or in the future."""
    if moment is None:
        return []
    if moment.date() < settings.earliest:
        return [C.R_TIMESTAMP_OUT_OF_RANGE]
    if moment > settings.now + settings.future_horizon:
        return [C.R_FUTURE_TIMESTAMP]
    return []


def _record(
    obj: dict[str, Any], kind: str, run_id: str, moment: datetime, stamp: str | None
) -> Record:
    canonical = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    return Record(
        kind=kind,
        run_id=run_id,
        created_at=stamp if stamp is not None else format_timestamp(moment),
        day=moment.date(),
        evidence_id=hashlib.sha256(canonical).hexdigest(),
        canonical=canonical,
        obj=obj,
    )


_VERDICT_SET = frozenset(C.VERDICTS)
_OUTCOME_SET = frozenset(C.OUTCOMES)


def _complete(obj: dict[str, Any], kind: str, moment: datetime, settings: ParseSettings) -> bool:
    """True when ``validate_object`` would find nothing wrong with ``obj`` (its kind, run id and
    timestamp already read): the common case, checked without collecting reasons. False sends
    the object through the full checks, which say what is wrong."""
    return (
        _clean_fields(obj, kind, settings)
        and settings.earliest <= moment.date()
        and moment <= settings.latest
    )


def _clean_fields(obj: dict[str, Any], kind: Any, settings: ParseSettings) -> bool:
    """The fields of ``kind`` besides ``run_id`` and ``created_at`` are all valid (a blank text is
    ``not s or s.isspace()``, which allocates nothing, unlike ``s.strip()``)."""
    get = obj.get
    if kind == C.KIND_RUN:
        task_id, instruction = get("task_id"), get("instruction")
        if not (
            type(task_id) is str
            and task_id
            and not task_id.isspace()
            and type(instruction) is str
            and instruction
            and not instruction.isspace()
            and type(get("response")) is str
        ):
            return False
        agent, category, meta = get("agent"), get("category"), get("meta")
        if (agent is not None and type(agent) is not str) or (
            category is not None and type(category) is not str
        ):
            return False
        if meta is not None and type(meta) is not dict:
            return False
        messages = get("messages")
        return messages is None or _check_messages(messages, settings) is None
    if kind == C.KIND_REVIEW:
        verdict = get("verdict")
        if type(verdict) is not str or verdict not in _VERDICT_SET:
            return False
        reviewer, comment, score = get("reviewer"), get("comment"), get("score")
        if (reviewer is not None and type(reviewer) is not str) or (
            comment is not None and type(comment) is not str
        ):
            return False
        return score is None or _is_unit_number(score)
    if kind == C.KIND_OUTCOME:
        outcome, reward = get("outcome"), get("reward")
        if type(outcome) is not str or outcome not in _OUTCOME_SET:
            return False
        return reward is None or _is_unit_number(reward)
    return False


_UNSEEN: Any = object()


class QuickCheck:
    """The common case of ``validate_object``, for a loop over many lines: ``check(obj)`` gives
    the day and normalized ``created_at`` of an object that ``validate_object`` keeps as it is,
    else None, and the caller asks ``validate_object`` what is wrong.

    A timestamp spelled ``YYYY-MM-DDTHH:MM:SS`` and a suffix that keeps it in UTC to the second
    (``Z``, ``+00:00``, ``.000Z``...), on a day wholly inside the range and before the horizon,
    costs two lookups (its day, its suffix: each text is read once) and one ``fromisoformat``;
    any other timestamp is converted as ``validate_object`` does it."""

    def __init__(self, settings: ParseSettings) -> None:
        self.settings = settings
        self._days: dict[str, date | None] = {}
        self._utc_suffixes: dict[str, bool] = {"Z": True}

    def _day(self, key: str) -> date | None:
        day = None
        if key[4] == "-" and key[7] == "-":
            try:
                day = date.fromisoformat(key)
            except ValueError:
                pass
        latest = self.settings.latest
        if day is not None and not (
            self.settings.earliest <= day < latest.astimezone(UTC).date()
            and datetime.combine(day + timedelta(days=1), time(), UTC) <= latest
        ):
            day = None  # partly or wholly out of range: its lines take the long way
        self._days[key] = day
        return day

    def _utc_suffix(self, suffix: str) -> bool:
        """Whether a time of day followed by ``suffix`` reads as that very second in UTC."""
        try:
            moment = datetime.fromisoformat("2000-01-01T00:00:00" + suffix)
        except ValueError:
            moment = None
        utc = (
            moment is not None
            and moment.microsecond == 0
            and (moment.tzinfo is None or moment.utcoffset() == timedelta(0))
        )
        self._utc_suffixes[suffix] = utc
        return utc

    def _other_stamp(self, stamp: Any) -> tuple[date, str] | None:
        """The day and normalized text of a timestamp the quick way does not read, converted
        as ``validate_object`` does it; None when unreadable or out of range."""
        moment = _canonical_stamp(stamp)
        if moment is None:
            moment = parse_timestamp(stamp)
            if moment is None:
                return None
            stamp = format_timestamp(moment)
        day = moment.date()
        if not (self.settings.earliest <= day and moment <= self.settings.latest):
            return None
        return day, stamp

    def check(self, obj: dict[str, Any]) -> tuple[date, str] | None:
        stamp = obj.get("created_at")
        day: date | None = None
        if (
            type(stamp) is str
            and len(stamp) >= 20
            and stamp[10] == "T"
            and stamp[13] == ":"
            and stamp[16] == ":"
        ):
            key = stamp[:10]
            day = self._days.get(key, _UNSEEN)
            if day is _UNSEEN:
                day = self._day(key)
            suffix = stamp[19:]
            utc = self._utc_suffixes.get(suffix)
            if utc is None:
                utc = self._utc_suffix(suffix)
            if day is not None and utc:
                try:
                    datetime.fromisoformat(stamp)  # the time of day is a real one
                except ValueError:
                    day = None
                else:
                    if suffix != "Z":
                        stamp = stamp[:19] + "Z"
            else:
                day = None
        if day is None:
            found = self._other_stamp(stamp)
            if found is None:
                return None
            day, stamp = found
        run_id = obj.get("run_id")
        if type(run_id) is not str or not run_id or run_id.isspace():
            return None
        if not _clean_fields(obj, obj.get("kind"), self.settings):
            return None
        return day, stamp


def normalize_text(text: str) -> str:
    """Whitespace-normalized text: the form used to call two texts identical."""
    return " ".join(text.split())


# every character str.split() splits on (str.isspace(); a test compares it with Python over all
# of Unicode); as UTF-8, the ASCII ones are mapped to a space by one translate(), the others
# (each a multi-byte sequence) are replaced one by one
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPACES = list(WHITESPACE)
_ASCII_SPACES = bytes.maketrans(
    "".join(c for c in _SPACES if c.isascii() and c != " ").encode(),
    b" " * sum(1 for c in _SPACES if c.isascii() and c != " "),
)
_WIDE_SPACES = tuple(c.encode("utf-8") for c in _SPACES if not c.isascii())


def normalized_bytes(text: str) -> bytes:
    """``normalize_text(text)`` as UTF-8, computed on bytes (no list of words is built)."""
    data = text.encode("utf-8")
    if not text.isascii():
        for space in _WIDE_SPACES:
            if space in data:
                data = data.replace(space, b" ")
    data = data.translate(_ASCII_SPACES)
    while b"  " in data:
        data = data.replace(b"  ", b" ")
    return data.strip(b" ")


def text_hash(text: str) -> str:
    """sha256 of the whitespace-normalized text (see ``normalize_text``)."""
    return hashlib.sha256(normalized_bytes(text)).hexdigest()


# texts are normalized together in batches of at most this many characters (small enough for
# numpy's temporary arrays to reuse the same memory batch after batch)
_BATCH_CHARS = 256 << 10


def text_hashes(texts: list[str]) -> list[bytes]:
    """``text_hash`` of every text, as ASCII hex. ASCII texts (the usual case) are normalized a
    batch at a time with numpy, since collapsing whitespace with a loop of ``bytes.replace``
    costs several times the sha256 of the text; the others go through ``text_hash``."""
    hashes: list[bytes] = []
    ends = list(itertools.accumulate(map(len, texts)))
    start = 0
    while start < len(texts):
        before = ends[start - 1] if start else 0
        stop = max(start + 1, bisect.bisect_right(ends, before + _BATCH_CHARS, lo=start))
        batch = texts[start:stop]
        joined = "".join(batch)
        if joined.isascii():
            hashes += _ascii_hashes(batch, joined)
        else:
            ascii_at = [i for i, text in enumerate(batch) if text.isascii()]
            chosen = [batch[i] for i in ascii_at]
            found = dict(zip(ascii_at, _ascii_hashes(chosen, "".join(chosen)), strict=True))
            hashes += [found.get(i) or text_hash(text).encode() for i, text in enumerate(batch)]
        start = stop
    return hashes


def _ascii_hashes(texts: list[str], joined: str) -> list[bytes]:
    """``text_hashes`` of ASCII texts, ``joined`` being their concatenation: every whitespace
    byte becomes a space, a space that follows a space or starts its text is dropped, and so is
    a text's last byte when it is still a space; each text is then hashed where it lies."""
    data = joined.encode("ascii").translate(_ASCII_SPACES)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    chars = np.frombuffer(data, dtype=np.uint8)
    space = chars == 32
    drop = np.empty_like(space)
    if len(space):
        drop[0] = space[0]
        np.logical_and(space[1:], space[:-1], out=drop[1:])
        first = starts[starts < len(space)]
        drop[first] = space[first]
    dropped = np.flatnonzero(drop)
    kept = lengths - (np.searchsorted(dropped, ends) - np.searchsorted(dropped, starts))
    left = chars[~drop]
    new_ends = np.cumsum(kept)
    new_starts = new_ends - kept
    some = kept > 0
    new_ends[some] -= left[new_ends[some] - 1] == 32
    view = memoryview(left)
    sha256, hexlify = hashlib.sha256, binascii.hexlify
    return [
        hexlify(sha256(view[start:end]).digest())
        for start, end in zip(new_starts.tolist(), new_ends.tolist(), strict=True)
    ]
