"""Answer extraction and scoring (numbers and labels)."""

from __future__ import annotations

import pytest

from langchain_autodemo.evaluation.scoring import (
    extract_last_number,
    match_label,
    normalise_text,
    numbers_equal,
    score_label,
    score_numeric,
    score_text,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#### 18", 18),
        ("Natalia sold 72 clips.\n#### 72", 72),
        ("She pays $1,200 in total.", 1200),
        ("The temperature is -3 degrees", -3),
        ("x = 4.5.", 4.5),
        (r"\[ \boxed{120} \]", 120),
        (r"\frac{3}{4}", 0.75),
        ("3/4 of a cup", 0.75),
        ("8 centimeters", 8),
        ("8cm", 8),
        ("1,000,000 people", 1_000_000),
        ("from 3 to 4", 4),
        ("It costs .5 dollars", 0.5),
        ("The answer is 18.", 18),
    ],
)
def test_extract_last_number(text: str, expected: float) -> None:
    assert extract_last_number(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", [None, "", "no numbers here", "Q[x]"])
def test_extract_last_number_none(text) -> None:
    assert extract_last_number(text) is None


def test_numbers_equal_tolerates_float_noise() -> None:
    assert numbers_equal(0.1 + 0.2, 0.3)
    assert not numbers_equal(18, 19)
    assert not numbers_equal(None, 1)


def test_score_numeric() -> None:
    assert score_numeric("$18", "18").correct
    assert score_numeric("18.0", "#### 18").correct
    wrong = score_numeric("17", "18")
    assert wrong.parsed and not wrong.correct and wrong.extracted == "17"
    failed = score_numeric("I cannot tell", "18")
    assert not failed.parsed and not failed.correct
    assert not score_numeric(None, "18").parsed


RTE = ("entailment", "not_entailment")
RTE_ALIASES = {"not entailed": "not_entailment", "does not entail": "not_entailment"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("entailment", "entailment"),
        ("Entailment.", "entailment"),
        ("not_entailment", "not_entailment"),
        ("Not entailment", "not_entailment"),
        ("**not_entailment**", "not_entailment"),
        ("The hypothesis is not entailed", "not_entailment"),
        ("The premise does not entail it", "not_entailment"),
        ("entailment? No: not_entailment", "not_entailment"),  # the last one named wins
        ("maybe", None),
        ("", None),
    ],
)
def test_match_label(text: str, expected: str | None) -> None:
    assert match_label(text, RTE, RTE_ALIASES) == expected


def test_score_label() -> None:
    assert score_label("Yes.", "yes", ("yes", "no")).correct
    assert score_label("true", "yes", ("yes", "no"), {"true": "yes"}).correct
    assert not score_label("no", "yes", ("yes", "no")).correct
    assert not score_label("perhaps", "yes", ("yes", "no")).parsed


def test_normalise_text_and_score_text() -> None:
    assert normalise_text("  The  Eiffel Tower! ") == "eiffel tower"
    assert normalise_text("Café") == "cafe"
    assert score_text("eiffel tower.", "The Eiffel Tower").correct
    assert not score_text("", "x").parsed
