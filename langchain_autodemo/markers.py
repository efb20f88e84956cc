"""Index markers (``Q[i]:`` / ``A[i]:``) and the tolerant patterns that recognise them.

Markers are only recognised at the start of a line. Inputs are rendered on a single
line after their own marker (see :func:`langchain_autodemo.prompts.one_line`), so
marker-like text inside an input can never start a line of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

__all__ = ["Markers", "FINAL_ANSWER_PREFIX"]

#: The phrase that ends every answer block in the default prompts.
FINAL_ANSWER_PREFIX = "The answer is"

# Decoration models put around markers: markdown bold/italic, headings, quotes, bullets.
_DECORATION = r"[ \t>*_#`~-]*"


@dataclass(frozen=True)
class Markers:
    """The labels that tie each restated question and answer to its input.

    ``question_label`` / ``answer_label`` are written as ``{label}[{i}]:`` with ``i``
    counted from 1 (the convention of Cheng et al. 2023, which models already know).
    ``*_aliases`` are the spelled-out variants models drift into, such as
    ``Question 3:`` or ``**Answer [3]**``.

    Example:
        >>> Markers().question(3)
        'Q[3]:'
        >>> Markers(question_label="Input", answer_label="Output").answer(1)
        'Output[1]:'
    """

    question_label: str = "Q"
    answer_label: str = "A"
    question_aliases: tuple[str, ...] = ("Question",)
    answer_aliases: tuple[str, ...] = ("Answer",)

    def __post_init__(self) -> None:
        for label in (self.question_label, self.answer_label):
            if not label or not label.strip() or "\n" in label:
                raise ValueError(f"marker labels must be non-empty single-line text, got {label!r}")
        if self.question_label.casefold() == self.answer_label.casefold():
            raise ValueError("question and answer markers must differ")

    def question(self, index: int) -> str:
        return f"{self.question_label}[{index}]:"

    def answer(self, index: int) -> str:
        return f"{self.answer_label}[{index}]:"

    @cached_property
    def line_pattern(self) -> re.Pattern[str]:
        """Matches a line that starts with a question or answer marker.

        Groups: ``q`` or ``a`` (which kind matched); the number in ``qb`` / ``ab`` for a
        bracketed form or ``qn`` / ``an`` for a bare one (only one of them is set, and the
        bare groups exist only when that kind has aliases); ``rest`` (the text after it).
        Bracketed forms (``Q[3]``, ``Q [3]``, ``Q(3)``) need no colon: real models write
        ``A[1] The price...``. Bare forms (``Question 3``, ``Question #3``) need a colon after
        the number (decoration such as ``**`` may come between) and are only accepted for the
        spelled-out aliases, so that prose such as ``A 3-hour drive`` is never taken for a
        marker.
        """

        def alternatives(label: str, aliases: tuple[str, ...]) -> str:  # longest first
            names = sorted({label, *aliases}, key=len, reverse=True)
            return "|".join(re.escape(name) for name in names)

        def marker(kind: str, label: str, aliases: tuple[str, ...]) -> str:
            names = alternatives(label, aliases)
            bracketed = rf"(?:{names})\s*[\[(]\s*(?P<{kind}b>\d{{1,6}})\s*[\])]"
            if not aliases:
                return rf"(?P<{kind}>{bracketed})"
            spelled = "|".join(re.escape(alias) for alias in aliases)
            bare = rf"(?:{spelled})\s*#?\s*(?P<{kind}n>\d{{1,6}})(?=\s*[*_`]*\s*:)"
            return rf"(?P<{kind}>{bracketed}|{bare})"

        q = marker("q", self.question_label, self.question_aliases)
        a = marker("a", self.answer_label, self.answer_aliases)
        return re.compile(
            rf"^{_DECORATION}(?:{q}|{a})[ \t*_`]*[:.)]?[ \t*_`]*(?P<rest>.*)$",
            re.IGNORECASE,
        )
