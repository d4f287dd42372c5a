"""Reviewers' verdicts read back as review evidence (lib/hygiene/verdicts.py): the three file shapes
and the two item shapes, each field where the format puts it."""

from __future__ import annotations

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.hygiene.verdicts import verdict_items, verdict_to_review

WHEN = "2026-03-01T00:00:00Z"


def test_json_lines_are_numbered_by_line_and_a_bad_line_is_none() -> None:
    data = (
        b'{"run_id": "r1", "verdict": "approve"}\n\n{not json\n{"id": "r2", "verdict": "reject"}\n'
    )
    assert verdict_items(data) == [
        (1, {"run_id": "r1", "verdict": "approve"}),
        (3, None),
        (4, {"id": "r2", "verdict": "reject"}),
    ]


def test_a_json_list_and_a_langfuse_page_are_numbered_by_item() -> None:
    items = [{"run_id": "r1", "verdict": "approve"}, {"run_id": "r2", "verdict": "reject"}]
    assert verdict_items(orjson.dumps(items)) == list(enumerate(items, start=1))
    assert verdict_items(orjson.dumps({"data": items, "meta": {}})) == list(
        enumerate(items, start=1)
    )


def test_distill_shape_becomes_a_review() -> None:
    item = {"id": "r1", "verdict": "request_changes", "score": 0.4, "comment": "tests missing"}
    assert verdict_to_review(item, "alice", WHEN) == {
        "kind": C.KIND_REVIEW,
        "run_id": "r1",
        "verdict": "request_changes",
        "created_at": WHEN,
        "score": 0.4,
        "reviewer": "alice",
        "comment": "tests missing",
    }
    # the item's own reviewer and time win over the defaults; an empty comment is left out
    own = {
        "run_id": "r2",
        "verdict": "approve",
        "reviewer": "bob",
        "created_at": "t",
        "comment": "",
    }
    assert verdict_to_review(own, "alice", WHEN) == {
        "kind": C.KIND_REVIEW,
        "run_id": "r2",
        "verdict": "approve",
        "created_at": "t",
        "reviewer": "bob",
    }


def test_langfuse_score_becomes_a_review_and_other_scores_do_not() -> None:
    score = {
        "name": "verdict",
        "traceId": "r3",
        "stringValue": "reject",
        "createdAt": "2026-03-02T00:00:00Z",
        "authorUserId": "carol",
    }
    assert verdict_to_review(score, None, WHEN) == {
        "kind": C.KIND_REVIEW,
        "run_id": "r3",
        "verdict": "reject",
        "created_at": "2026-03-02T00:00:00Z",
        "reviewer": "carol",
    }
    assert verdict_to_review({**score, "name": "helpfulness"}, None, WHEN) is None
    assert verdict_to_review(["not", "an", "object"], None, WHEN) is None
    assert verdict_to_review(None, None, WHEN) is None
