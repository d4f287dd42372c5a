"""Reviewers' verdicts read back as review evidence (``distill review import``, docs/review.md).

A verdict file is JSON lines, a JSON list, or a Langfuse scores page; each item is distill's
shape or a Langfuse score named ``verdict``. Pure: the caller reads the file and validates the
reviews it gets against evidence format v1.
"""

from __future__ import annotations

import orjson

from distill_assets.lib import constants as C


def verdict_items(data: bytes) -> list[tuple[int, object]]:
    """Numbered items of a verdict file's bytes: JSON lines (numbered by line; a line that is
    not JSON is ``None``), a JSON list, or a Langfuse page ``{"data": [...]}``."""
    try:
        whole = orjson.loads(data)
    except orjson.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and isinstance(whole.get("data"), list):
        whole = whole["data"]
    if isinstance(whole, list):
        return list(enumerate(whole, start=1))
    items: list[tuple[int, object]] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if raw.strip():
            try:
                items.append((number, orjson.loads(raw)))
            except orjson.JSONDecodeError:
                items.append((number, None))
    return items


def verdict_to_review(item: object, reviewer: str | None, created_at: str) -> dict | None:
    """One verdict (distill's shape, or a Langfuse score) as review evidence; None if unusable.

    distill: ``{"run_id" | "id", "verdict", "score"?, "reviewer"?, "comment"?, "created_at"?}``;
    Langfuse: a score ``{"name": "verdict", "traceId", "stringValue" | "value", "comment"?,
    "createdAt"?, "authorUserId"?}`` whose trace id is the queue row's id (the run id).
    """
    if not isinstance(item, dict):
        return None
    if "traceId" in item:
        if item.get("name") != "verdict":
            return None
        verdict = item.get("stringValue") or item.get("value")
        run_id = item.get("traceId")
        who = item.get("authorUserId") or reviewer
        when = item.get("createdAt") or item.get("timestamp") or created_at
        score = None
    else:
        verdict = item.get("verdict")
        run_id = item.get("run_id") or item.get("id")
        who = item.get("reviewer") or reviewer
        when = item.get("created_at") or created_at
        score = item.get("score")
    review = {"kind": C.KIND_REVIEW, "run_id": run_id, "verdict": verdict, "created_at": when}
    if score is not None:
        review["score"] = score
    if who:
        review["reviewer"] = who
    if isinstance(item.get("comment"), str) and item["comment"]:
        review["comment"] = item["comment"]
    return review
