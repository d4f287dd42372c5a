"""The scoring truth table, one row per case, and the policy's validation."""

from __future__ import annotations

import pytest

from distill_assets.lib import constants as C
from distill_assets.lib.scoring import ScoringPolicy, grade

POLICY = ScoringPolicy()


def review(verdict, score=None):
    return {"kind": "review", "verdict": verdict, "score": score}


def outcome(result, reward=None, signals=None):
    return {"kind": "outcome", "outcome": result, "reward": reward, "signals": signals}


@pytest.mark.parametrize(
    ("reviews", "outcomes", "quality", "score", "reasons"),
    [
        ([], [], C.QUALITY_REVIEW, 0.0, {C.R_NO_EVIDENCE}),
        ([review("approve")], [], C.QUALITY_ACCEPTED, 1.0, {C.R_APPROVED}),
        ([], [outcome("success")], C.QUALITY_ACCEPTED, 1.0, {C.R_SUCCESS}),
        (
            [review("approve")],
            [outcome("success", 1.0)],
            C.QUALITY_ACCEPTED,
            1.0,
            {C.R_APPROVED, C.R_SUCCESS},
        ),
        ([review("reject")], [], C.QUALITY_REJECTED, 0.0, {C.R_REJECTED_BY_REVIEW}),
        ([], [outcome("failure")], C.QUALITY_REJECTED, 0.0, {C.R_FAILED}),
        (
            [review("reject")],
            [outcome("partial")],
            C.QUALITY_REJECTED,
            0.25,
            {C.R_REJECTED_BY_REVIEW, C.R_PARTIAL_OUTCOME},
        ),
        ([review("request_changes")], [], C.QUALITY_PARTIAL, 0.5, {C.R_CHANGES_REQUESTED}),
        ([], [outcome("partial", 0.6)], C.QUALITY_PARTIAL, 0.6, {C.R_PARTIAL_OUTCOME}),
        ([], [outcome("success", 0.5)], C.QUALITY_PARTIAL, 0.5, {C.R_PARTIAL_REWARD}),
        ([], [outcome("success", 0.0)], C.QUALITY_REJECTED, 0.0, {C.R_FAILED}),
        (
            [review("approve"), review("request_changes")],
            [],
            C.QUALITY_PARTIAL,
            0.75,
            {C.R_APPROVED, C.R_CHANGES_REQUESTED},
        ),
        (
            [review("approve")],
            [outcome("failure")],
            C.QUALITY_REVIEW,
            0.5,
            {C.R_APPROVED, C.R_FAILED, C.R_CONFLICTING_EVIDENCE},
        ),
        (
            [review("approve"), review("reject")],
            [],
            C.QUALITY_REVIEW,
            0.5,
            {C.R_APPROVED, C.R_REJECTED_BY_REVIEW, C.R_CONFLICTING_EVIDENCE},
        ),
        (
            [review("approve")],
            [outcome("error")],
            C.QUALITY_REVIEW,
            0.5,
            {C.R_APPROVED, C.R_OUTCOME_ERROR},
        ),
        (
            [review("approve", 0.9)],
            [outcome("success")],
            C.QUALITY_ACCEPTED,
            0.95,
            {C.R_APPROVED, C.R_SUCCESS},
        ),
        (
            [review("approve", 0.6)],
            [],
            C.QUALITY_PARTIAL,
            0.6,
            {C.R_APPROVED, C.R_BELOW_ACCEPT_SCORE},
        ),
        (
            [],
            [outcome("failure", signals={"incomplete": 1.0})],
            C.QUALITY_REVIEW,
            0.0,
            {C.R_FAILED, C.R_INCOMPLETE},
        ),
    ],
)
def test_truth_table(reviews, outcomes, quality, score, reasons):
    graded = grade(reviews, outcomes, POLICY)
    assert graded.quality == quality
    assert graded.score == pytest.approx(score)
    assert set(graded.reasons) == reasons


@pytest.mark.parametrize(
    ("policy", "quality", "extra_reason"),
    [
        (ScoringPolicy(conflict_policy="review_wins"), C.QUALITY_ACCEPTED, C.R_OVERRULED),
        (ScoringPolicy(conflict_policy="outcome_wins"), C.QUALITY_REJECTED, C.R_OVERRULED),
        (ScoringPolicy(conflict_policy="human_review"), C.QUALITY_REVIEW, C.R_CONFLICTING_EVIDENCE),
    ],
)
def test_which_evidence_wins_is_configurable(policy, quality, extra_reason):
    graded = grade([review("approve")], [outcome("failure")], policy)
    assert graded.quality == quality
    assert extra_reason in graded.reasons


def test_conflict_inside_the_winning_side_still_needs_a_human():
    policy = ScoringPolicy(conflict_policy="review_wins")
    graded = grade([review("approve"), review("reject")], [outcome("success")], policy)
    assert graded.quality == C.QUALITY_REVIEW


def test_require_review_holds_outcome_only_successes():
    graded = grade([], [outcome("success")], ScoringPolicy(require_review=True))
    assert graded.quality == C.QUALITY_REVIEW and C.R_OUTCOME_ONLY in graded.reasons


def test_thresholds_move_the_grade():
    lenient = ScoringPolicy(reward_success_min=0.5)
    assert grade([], [outcome("success", 0.5)], lenient).quality == C.QUALITY_PARTIAL
    lenient = ScoringPolicy(reward_success_min=0.5, accept_min_score=0.5)
    assert grade([], [outcome("success", 0.5)], lenient).quality == C.QUALITY_ACCEPTED


def test_score_signals_join_the_score():
    policy = ScoringPolicy(score_signals=("r_actions",))
    graded = grade([], [outcome("failure", 0.0, {"r_actions": 1.0})], policy)
    assert graded.quality == C.QUALITY_REJECTED and graded.score == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (ScoringPolicy(accept_min_score=1.5), "accept_min_score=1.5 must be between 0 and 1"),
        (
            ScoringPolicy(reward_failure_max=0.9, reward_success_min=0.5),
            "reward_failure_max=0.9 must be below reward_success_min=0.5",
        ),
        (
            ScoringPolicy(conflict_policy="coin_flip"),  # type: ignore[arg-type]
            "conflict_policy='coin_flip' is not one of human_review, review_wins, outcome_wins",
        ),
        (
            ScoringPolicy(evidence_window_days=-1),
            "evidence_window_days=-1 must be between 0 and 31",
        ),
    ],
)
def test_invalid_policies_are_named(policy, message):
    """Each bad setting gives exactly one problem, naming the setting and its value."""
    assert ScoringPolicy().errors() == []
    assert policy.errors() == [message]
