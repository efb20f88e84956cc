"""One rule for "the same answer": the audit's comparator and the evaluation's scorer."""

from __future__ import annotations

import doctest

import pytest

from langchain_autodemo import agreement, audit
from langchain_autodemo.agreement import NUMBER_ABS_TOL, answers_agree, numbers_agree
from langchain_autodemo.evaluation.scoring import numbers_equal


def test_audit_keeps_its_names() -> None:
    assert audit.answers_agree is answers_agree
    assert audit.wilson_interval is agreement.wilson_interval
    assert audit.normalise_answer is agreement.normalise_answer


@pytest.mark.parametrize(
    ("a", "b"),
    [(0.1 + 0.2, 0.3), (0.0, NUMBER_ABS_TOL / 2), (1e6, 1e6 + 0.5), (18, 19), (0.0, 1e-8)],
)
def test_scorer_and_audit_share_one_numeric_rule(a: float, b: float) -> None:
    same = numbers_agree(a, b)
    assert numbers_equal(a, b) is same
    assert answers_agree(repr(a), repr(b)) is same


def test_agreement_docstring_examples_run() -> None:
    assert doctest.testmod(agreement, optionflags=doctest.ELLIPSIS).failed == 0
