"""Decide which input each parsed item belongs to, using the restated question as evidence.

In Auto-Demo mode the model copies every question before answering it. That echo is
compared with the inputs of the batch, so a skipped, repeated or swapped question is
detected (and realigned when unambiguous) instead of shifting every later answer.
Pure functions; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_autodemo.parser import ParsedItem

__all__ = ["ItemVerdict", "EchoMatcher", "MATCH_THRESHOLD"]

#: Minimum word-set similarity for a restatement to count as a copy of an input.
MATCH_THRESHOLD = 0.6
#: How much better the best input must match than the runner-up to realign to it.
MARGIN = 0.1

_WORDS = re.compile(r"\w+")


def words(text: str) -> frozenset[str]:
    return frozenset(_WORDS.findall(text.casefold()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@dataclass(frozen=True, slots=True)
class ItemVerdict:
    """Where a parsed item goes: ``position`` in the batch (0-based), or ``None`` with a
    ``reason`` when it cannot be attributed to any input."""

    position: int | None
    reason: str | None = None
    realigned: bool = False


class EchoMatcher:
    """Attribute parsed items to the positions of one batch.

    ``expected`` are the questions as rendered in the prompt, in marker order. With
    ``require_echo`` (Auto-Demo mode) a restated question must match an input; an item
    without a restatement is attributed by its marker index alone.

    Example:
        >>> from langchain_autodemo.parser import ParsedItem
        >>> matcher = EchoMatcher(["What is 2+2?", "Name a red fruit."])
        >>> swapped = ParsedItem(1, "Name a red fruit.", "apple", "apple", "next_marker")
        >>> matcher.verdict(swapped)
        ItemVerdict(position=1, reason=None, realigned=True)
    """

    def __init__(self, expected: Sequence[str], *, require_echo: bool = True) -> None:
        self._expected = list(expected)
        self._words = [words(text) for text in self._expected]
        self._require_echo = require_echo

    def verdict(self, item: ParsedItem) -> ItemVerdict:
        claimed = item.index - 1
        in_range = 0 <= claimed < len(self._expected)
        if item.marker_conflict:
            return ItemVerdict(None, f"answer marker does not match question {item.index}")
        if not self._require_echo or item.question is None:
            if in_range:
                return ItemVerdict(claimed)
            return ItemVerdict(None, f"index {item.index} is outside the batch")
        restated = words(item.question)
        if in_range and item.question == self._expected[claimed]:
            return ItemVerdict(claimed)  # exact copy: the fast, common case
        scores = [jaccard(restated, expected) for expected in self._words]
        best = max(range(len(scores)), key=scores.__getitem__)
        runner_up = max((s for i, s in enumerate(scores) if i != best), default=0.0)
        if scores[best] < MATCH_THRESHOLD:
            return ItemVerdict(None, "restated question matches no input of the batch")
        if in_range and scores[claimed] >= scores[best]:
            return ItemVerdict(claimed)
        if scores[best] - runner_up < MARGIN:
            return ItemVerdict(None, "restated question matches several inputs")
        return ItemVerdict(best, realigned=best != claimed)
