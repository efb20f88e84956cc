"""Batch plans, token budgets, recovery plans, and echo alignment."""

from __future__ import annotations

import pytest

from langchain_autodemo.alignment import EchoMatcher
from langchain_autodemo.parser import ParsedItem
from langchain_autodemo.planning import (
    PlannedBatch,
    SequentialSelector,
    recovery_batches,
    split_by_token_budget,
)


def item(index: int, question: str | None, answer: str = "x") -> ParsedItem:
    return ParsedItem(index, question, answer, answer, "next_marker")


def test_sequential_planner_makes_ceil_n_over_size_batches() -> None:
    plans = SequentialSelector().plan(["q"] * 10, 4)
    assert [p.indices for p in plans] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]


def test_planned_batch_rejects_repeated_indices_and_foreign_keep() -> None:
    with pytest.raises(ValueError, match="repeats"):
        PlannedBatch((1, 1))
    with pytest.raises(ValueError, match="subset"):
        PlannedBatch((1, 2), frozenset({3}))


def test_token_budget_splits_a_batch_and_never_drops_an_oversized_item() -> None:
    batch = PlannedBatch((0, 1, 2, 3))
    parts = split_by_token_budget(batch, lambda i: 1000 if i == 2 else 30, budget=100)
    assert [p.indices for p in parts] == [(0, 1), (2,), (3,)]


def test_token_budget_keeps_neighbour_targets() -> None:
    batch = PlannedBatch((5, 6, 7), frozenset({5}))
    parts = split_by_token_budget(batch, lambda i: 60, budget=100)
    assert [(p.indices, p.keep) for p in parts] == [((5,), frozenset({5}))]


def test_recovery_gives_up_after_max_attempts() -> None:
    assert recovery_batches([1, 2], batch_size=8, next_attempt=4, max_attempts=3) == []


def test_recovery_halves_the_batch_then_asks_alone() -> None:
    failed = list(range(10))
    assert [len(b) for b in recovery_batches(failed, 8, 2, 3)] == [4, 4, 2]
    assert [len(b) for b in recovery_batches(failed, 8, 3, 3)] == [1] * 10


QUESTIONS = ["How many apples are in the red basket?", "What colour is the sky at noon?"]


def test_exact_echo_is_accepted_at_its_index() -> None:
    assert EchoMatcher(QUESTIONS).verdict(item(1, QUESTIONS[0])).position == 0


def test_paraphrased_echo_within_threshold_is_accepted() -> None:
    paraphrase = "How many apples are in the red basket"
    assert EchoMatcher(QUESTIONS).verdict(item(1, paraphrase)).position == 0


def test_echo_of_another_input_is_realigned() -> None:
    verdict = EchoMatcher(QUESTIONS).verdict(item(1, QUESTIONS[1]))
    assert (verdict.position, verdict.realigned) == (1, True)


def test_echo_matching_nothing_is_rejected_with_a_reason() -> None:
    verdict = EchoMatcher(QUESTIONS).verdict(item(1, "Who wrote Hamlet?"))
    assert verdict.position is None and "matches no input" in str(verdict.reason)


def test_numbers_tell_near_identical_questions_apart() -> None:
    questions = ["Tom has 3 apples and buys 5 more.", "Tom has 4 apples and buys 5 more."]
    assert EchoMatcher(questions).verdict(item(1, questions[1])).position == 1


def test_without_echo_the_index_decides_and_out_of_range_is_rejected() -> None:
    matcher = EchoMatcher(QUESTIONS, require_echo=False)
    assert matcher.verdict(item(2, None)).position == 1
    assert matcher.verdict(item(9, None)).position is None
