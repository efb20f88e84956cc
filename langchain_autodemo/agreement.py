"""Whether two answers agree, and how sure a count of agreements is: the audit's rules,
below every layer that uses them.

:func:`answers_agree` (the audit's default comparator, and the evaluation's agreement
with ``single``), :func:`numbers_agree` (its numeric rule, also the evaluation scorer's),
and :func:`wilson_interval` (the audit's estimate, the tuner's accuracy interval). Pure
functions over the core (:class:`~langchain_autodemo.engine.ItemResult` only): no runner,
no audit, no evaluation, so :mod:`langchain_autodemo.audit`, :mod:`langchain_autodemo.tuning`
and :mod:`langchain_autodemo.evaluation` all import them from here.
"""

from __future__ import annotations

import math
import re
from typing import Any

from langchain_autodemo.engine import ItemResult

__all__ = [
    "NUMBER_ABS_TOL",
    "answers_agree",
    "normalise_answer",
    "numbers_agree",
    "wilson_interval",
]

#: How close to each other two numbers near zero must be to agree (``math.isclose``'s
#: ``abs_tol``; ``rel_tol`` decides everywhere else). One value for the audit and the
#: scorer, which had drifted apart (1e-12 in the audit, 1e-9 in the scorer). 1e-9 is kept:
#: every recorded evaluation (docs/results) was scored with it, so its accuracies stay
#: reproducible, and the tests of both callers accept it; the two differ only for numbers
#: under 1e-9 in size, which no answer is written with (float noise such as
#: ``0.1 + 0.2 - 0.3`` is ~1e-17 and agrees with 0 under either).
NUMBER_ABS_TOL = 1e-9

_Z95 = 1.959963984540054

# -- comparing answers ----------------------------------------------------------------

_SPACES = re.compile(r"\s+")
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is|:)\s*", re.IGNORECASE)
_TRAILING = ".,;:!?。"
_NUMBER = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:e[-+]?\d+)?$")


def normalise_answer(answer: Any) -> str:
    """The final answer as compared: casefolded, whitespace collapsed, a leading
    ``The answer is`` and trailing punctuation stripped."""
    if isinstance(answer, ItemResult):
        answer = answer.answer
    text = _SPACES.sub(" ", str(answer).casefold()).strip()
    text = _ANSWER_PREFIX.sub("", text)
    return text.rstrip(_TRAILING + " ").strip()


def _as_number(text: str) -> float | None:
    candidate = text.lstrip("$").replace(" ", "")
    if not candidate or not _NUMBER.match(candidate) or not any(c.isdigit() for c in candidate):
        return None
    try:
        return float(candidate.replace(",", ""))
    except ValueError:
        return None


def numbers_agree(a: float | None, b: float | None, *, rel_tol: float = 1e-6) -> bool:
    """Two numbers are the same answer: equal within ``rel_tol`` (and within
    :data:`NUMBER_ABS_TOL` of each other near zero); ``None`` (no number) agrees with
    nothing. The one numeric rule of the audit's comparator (:func:`answers_agree`) and of
    the evaluation's scorer (:func:`langchain_autodemo.evaluation.scoring.numbers_equal`).

    Example:
        >>> numbers_agree(0.1 + 0.2, 0.3), numbers_agree(18, 19), numbers_agree(None, 1)
        (True, False, False)
    """
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=NUMBER_ABS_TOL)


def answers_agree(packed: Any, single: Any, *, rel_tol: float = 1e-6) -> bool:
    """The default comparator: equal normalised final answers; numbers (``"27"``,
    ``"27.0"``, ``"1,000"``) are equal within ``rel_tol``. Non-text answers (parsed
    objects) that compare equal agree as they are."""
    if isinstance(packed, ItemResult):
        packed = packed.answer
    if isinstance(single, ItemResult):
        single = single.answer
    if not isinstance(packed, str) or not isinstance(single, str):
        try:
            if packed == single:
                return True
        except Exception:  # an exotic __eq__: fall back to the text
            pass
    left, right = normalise_answer(packed), normalise_answer(single)
    if left == right:
        return True
    return numbers_agree(_as_number(left), _as_number(right), rel_tol=rel_tol)


# -- the estimate ---------------------------------------------------------------------


def wilson_interval(agreed: int, audited: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval of ``agreed / audited`` (95% by default); ``(0, 1)``
    with no audits."""
    if audited <= 0:
        return 0.0, 1.0
    p = agreed / audited
    z2 = z * z
    denominator = 1 + z2 / audited
    centre = (p + z2 / (2 * audited)) / denominator
    half = z * math.sqrt(p * (1 - p) / audited + z2 / (4 * audited * audited)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
