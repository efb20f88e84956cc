"""Answer extraction and scoring: numbers (GSM8K-style) and labels (RTE, BoolQ, SST-2).

Pure functions, no I/O. A prediction that yields no number / no label is a *parse
failure*; it is scored wrong and counted separately.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from langchain_autodemo.agreement import numbers_agree

__all__ = [
    "Score",
    "extract_last_number",
    "numbers_equal",
    "normalise_text",
    "match_label",
    "score_numeric",
    "score_label",
    "score_text",
]

# a fraction "3/4", or a number: 1,234.5  -3  .5  12 (thousands separators in groups of three)
_NUMBER = re.compile(
    r"(?<![\w.,/])(?:(?P<num>-?\d+)\s*/\s*(?P<den>\d+)(?![\d.,/])"
    r"|(?P<value>-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+))"
)
_LATEX_WRAPPERS = re.compile(r"\\(?:boxed|text|mathrm|textbf)\s*\{([^{}]*)\}")
_LATEX_FRACTION = re.compile(r"\\d?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}")


@dataclass(frozen=True)
class Score:
    """How one prediction fared against its gold answer."""

    correct: bool
    parsed: bool
    """False when no answer (number / label) could be extracted from the prediction."""
    extracted: str | None = None


def extract_last_number(text: str | None) -> float | None:
    """The last number written in ``text`` (``$1,200``, ``-3``, ``4.5``, ``\\boxed{7}``, ``3/4``).

    Returns ``None`` when there is none. ``####`` gold answers work too.
    """
    if not text:
        return None
    cleaned = _LATEX_WRAPPERS.sub(r" \1 ", str(text)).replace("\u2212", "-")
    cleaned = _LATEX_FRACTION.sub(r" \1/\2 ", cleaned)
    value: float | None = None
    for match in _NUMBER.finditer(cleaned):
        if match.group("value") is not None:
            value = float(match.group("value").replace(",", ""))
        elif int(match.group("den")):
            value = int(match.group("num")) / int(match.group("den"))
    return value


def numbers_equal(a: float | None, b: float | None, *, rel_tol: float = 1e-6) -> bool:
    """The audit's numeric rule (:func:`langchain_autodemo.agreement.numbers_agree`): a
    scored answer and an audited one are the same number by one definition."""
    return numbers_agree(a, b, rel_tol=rel_tol)


def normalise_text(text: str | None) -> str:
    """Case-fold, drop accents, punctuation, markdown, articles and extra spaces."""
    if text is None:
        return ""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = re.sub(r"[^\w\s]", " ", text).replace("_", " ")
    words = [word for word in text.split() if word not in {"a", "an", "the"}]
    return " ".join(words)


def match_label(
    text: str | None, labels: Iterable[str], aliases: Mapping[str, str] | None = None
) -> str | None:
    """The label named in ``text``, or ``None``.

    ``aliases`` maps extra phrases (``"not entailed"``, ``"true"``) to labels. Phrases are
    matched as whole words after :func:`normalise_text`, longest first, so
    ``not_entailment`` never counts as ``entailment``. When several labels are named
    the last one wins (models state their final verdict last).
    """
    body = normalise_text(text)
    if not body:
        return None
    phrases: dict[str, str] = {normalise_text(label): label for label in labels}
    for phrase, label in (aliases or {}).items():
        phrases.setdefault(normalise_text(phrase), label)
    phrases.pop("", None)
    if body in phrases:
        return phrases[body]
    alternation = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    found = [m.group(1) for m in re.finditer(rf"(?<!\w)({alternation})(?!\w)", body)]
    return phrases[found[-1]] if found else None


def score_numeric(prediction: str | None, gold: str) -> Score:
    predicted = extract_last_number(prediction)
    expected = extract_last_number(gold)
    if predicted is None:
        return Score(correct=False, parsed=False)
    shown = f"{predicted:g}" if not predicted.is_integer() else str(int(predicted))
    return Score(correct=numbers_equal(predicted, expected), parsed=True, extracted=shown)


def score_label(
    prediction: str | None,
    gold: str,
    labels: Iterable[str],
    aliases: Mapping[str, str] | None = None,
) -> Score:
    labels = list(labels)
    predicted = match_label(prediction, labels, aliases)
    if predicted is None:
        return Score(correct=False, parsed=False)
    expected = match_label(gold, labels, aliases) or gold
    return Score(correct=predicted == expected, parsed=True, extracted=predicted)


def score_text(prediction: str | None, gold: str) -> Score:
    predicted = normalise_text(prediction)
    if not predicted:
        return Score(correct=False, parsed=False)
    return Score(correct=predicted == normalise_text(gold), parsed=True, extracted=predicted)
