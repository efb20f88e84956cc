"""Decide which input each parsed item belongs to, using the restated question as evidence.

In Auto-Demo mode the model copies every question before answering it. That echo is
looked up among the inputs of the call, so a skipped, repeated or swapped question is
detected (and realigned when the evidence is unambiguous) instead of shifting every
later answer. Pure functions; no I/O.

The rules, strongest evidence first (see :meth:`EchoMatcher.verdict`):

1. The restatement's :func:`comparison_key` equals exactly one input's key: that input,
   whatever index the model wrote. The engine never packs two inputs with the same key
   into one call (:func:`distinguishable_parts`), so an exact key is never ambiguous.
2. The restatement is a long prefix of exactly one input's key (models abbreviate long
   inputs), or a verbatim word-aligned part of exactly one input's key of at least
   :data:`FRAGMENT_MIN_TOKENS` words (models copy only the question sentence of a long
   input): that input.
3. Otherwise an order-aware similarity (words and word pairs) must clear
   :data:`MATCH_THRESHOLD` and beat every other input by :data:`MARGIN`; moving an answer
   away from the index the model wrote needs the larger :data:`REALIGN_MARGIN`.
4. A restatement that copies a *distractor* (a text the prompt shows but whose answer
   belongs to no input: a demonstration's question, an example in the chat context)
   at least as well as an input is rejected. Retrieved demonstrations are chosen for
   being similar to the inputs, so a model that re-answers one must not have that
   answer placed on the input it resembles.
5. An answer without a restatement is placed only where nothing else could be meant: the
   call holds one input. In ``batch`` mode, which asks for no restatements, the index is
   all there is, and the engine checks the completion's indices as a whole.

Anything else is rejected with a reason, and the engine re-asks the item.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from langchain_autodemo.parser import ParsedItem

__all__ = [
    "ItemVerdict",
    "EchoMatcher",
    "MATCH_THRESHOLD",
    "MARGIN",
    "REALIGN_MARGIN",
    "comparison_key",
    "distinguishable_parts",
]

#: Minimum similarity for a restatement to count as a copy of an input.
MATCH_THRESHOLD = 0.6
#: How much better the best input must match than the runner-up.
MARGIN = 0.1
#: The margin needed to move an answer away from the index the model wrote.
REALIGN_MARGIN = 0.3
#: A restatement this long (characters of its key) that starts an input's key matches it.
PREFIX_MIN_CHARS = 40
#: A verbatim, word-aligned part of exactly one input's key matches it from this length on.
FRAGMENT_MIN_TOKENS = 4
FRAGMENT_MIN_CHARS = 20

_COPIES_DISTRACTOR = "restated question copies a demonstration, not a question of the batch"

_TOKEN = re.compile(r"\w+|[^\w\s]")


# Unicode's format characters (category Cf: zero-width spaces and joiners, bidi marks,
# BOMs, tag characters) are invisible; a regex strips them ~50x faster than a per-character
# category check on a 20k-character input.
_INVISIBLE = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f]"
)


def _tokens(text: str) -> list[str]:
    # NFKC folds look-alike forms (full-width digits, ligatures).
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    tokens = _TOKEN.findall(text.casefold())
    words = [t for t in tokens if not unicodedata.category(t[0]).startswith("P")]
    # Punctuation is dropped so that a restatement without the final "?" still matches,
    # unless it is all there is ("?!" and emoji-only inputs keep their symbols).
    return words or tokens


def comparison_key(text: str) -> str:
    """What a restatement must reproduce to count as an exact copy of ``text``.

    Case, Unicode width, invisible characters, spacing and punctuation do not count;
    words, numbers, their order and symbols such as emoji do.

    Example:
        >>> comparison_key("Is 3 greater than 7?")
        'is 3 greater than 7'
        >>> comparison_key("😀😀") == comparison_key("😡")
        False
    """
    return " ".join(_tokens(text))


def _shingles(tokens: Sequence[str]) -> frozenset[str]:
    pairs = (f"{a}\x00{b}" for a, b in zip(tokens, tokens[1:], strict=False))
    return frozenset((*tokens, *pairs))


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard similarity of two shingle sets (words and consecutive word pairs)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def distinguishable_parts(indices: Sequence[int], keys: Sequence[str]) -> list[list[int]]:
    """Split ``indices`` (in order) so that no part holds two inputs with the same key.

    Two inputs that compare equal cannot be told apart by their restatements, so they
    must never share a call. Most batches come back whole.

    Example:
        >>> distinguishable_parts([0, 1, 2, 3], ["a", "b", "a", "c"])
        [[0, 1, 3], [2]]
    """
    parts: list[list[int]] = []
    seen: list[set[str]] = []
    for index in indices:
        key = keys[index]
        for part, keys_in_part in zip(parts, seen, strict=True):
            if key not in keys_in_part:
                part.append(index)
                keys_in_part.add(key)
                break
        else:
            parts.append([index])
            seen.append({key})
    return parts


@dataclass(frozen=True, slots=True)
class ItemVerdict:
    """Where a parsed item goes: ``position`` in the call (0-based), or ``None`` with a
    ``reason`` when it cannot be attributed to exactly one input."""

    position: int | None
    reason: str | None = None
    realigned: bool = False


class EchoMatcher:
    """Attribute parsed items to the positions of one call.

    ``expected`` are the questions as rendered in the prompt, in marker order. With
    ``require_echo`` (Auto-Demo mode) an item must carry a restatement that identifies
    its input, unless the call asks a single question. ``distractors`` are other texts
    the prompt shows (demonstration questions, context messages): a restatement that
    copies one of them is attributed to no input.

    Example:
        >>> from langchain_autodemo.parser import ParsedItem
        >>> matcher = EchoMatcher(["Is 3 greater than 7?", "Is 7 greater than 3?"])
        >>> swapped = ParsedItem(1, "Is 7 greater than 3?", "Yes.", "yes", "next_marker")
        >>> matcher.verdict(swapped)
        ItemVerdict(position=1, reason=None, realigned=True)
    """

    def __init__(
        self,
        expected: Sequence[str],
        *,
        require_echo: bool = True,
        distractors: Sequence[str] = (),
    ) -> None:
        self._expected = list(expected)
        tokens = [_tokens(text) for text in self._expected]
        self._keys = [" ".join(t) for t in tokens]
        self._shingles = [_shingles(t) for t in tokens]
        self._by_key: dict[str, int | None] = {}
        for position, key in enumerate(self._keys):
            # Two equal keys in one call are never planned; if given, neither is trusted.
            self._by_key[key] = None if key in self._by_key else position
        # An input's own text wins over an equal distractor: the exact copy is its question.
        distractor_tokens = [_tokens(text) for text in distractors]
        self._distractor_keys = {" ".join(t) for t in distractor_tokens} - self._by_key.keys()
        self._distractor_shingles = [
            _shingles(t) for t in distractor_tokens if " ".join(t) in self._distractor_keys
        ]
        self._require_echo = require_echo

    def __len__(self) -> int:
        return len(self._expected)

    def verdict(self, item: ParsedItem) -> ItemVerdict:
        claimed = item.index - 1
        in_range = 0 <= claimed < len(self._expected)
        if item.marker_conflict:
            return ItemVerdict(None, f"answer marker does not match question {item.index}")
        if item.question is None:
            if not in_range:
                return ItemVerdict(None, f"index {item.index} is outside the batch")
            if self._require_echo and len(self._expected) > 1:
                return ItemVerdict(None, "answered without restating its question")
            return ItemVerdict(claimed)
        return self.match(item.question, claimed if in_range else None)

    def _one_containing(
        self, contains: Callable[[str], bool], claimed: int | None
    ) -> ItemVerdict | None:
        """The verdict when the restatement is a part of input keys (``None``: of none).

        Part of exactly one input: that input; of a demonstration too: a copy of the
        demonstration; of several inputs: ambiguous, re-asked.
        """
        inside = [p for p, k in enumerate(self._keys) if contains(k)]
        if not inside:
            return None
        if any(contains(d) for d in self._distractor_keys):
            return ItemVerdict(None, _COPIES_DISTRACTOR)
        if len(inside) > 1:
            return ItemVerdict(None, "restated question matches several inputs")
        return ItemVerdict(inside[0], realigned=inside[0] != claimed)

    def match(self, restated: str, claimed: int | None = None) -> ItemVerdict:
        """Which input ``restated`` copies (``claimed``: the index the model wrote)."""
        tokens = _tokens(restated)
        key = " ".join(tokens)
        if key in self._by_key:
            position = self._by_key[key]
            if position is None:
                return ItemVerdict(None, "restated question matches several inputs")
            return ItemVerdict(position, realigned=position != claimed)
        if key in self._distractor_keys:
            return ItemVerdict(None, _COPIES_DISTRACTOR)
        if len(key) >= PREFIX_MIN_CHARS:
            found = self._one_containing(lambda k: k.startswith(key), claimed)
            if found is not None:
                return found
        if len(tokens) >= FRAGMENT_MIN_TOKENS and len(key) >= FRAGMENT_MIN_CHARS:
            # A verbatim part of one input (RTE: the model copies only the hypothesis, the
            # last sentence of "Premise: ... Hypothesis: ..."; 18 of 29 rejections on RTE-64).
            found = self._one_containing(lambda k: f" {key} " in f" {k} ", claimed)
            if found is not None:
                return found
        shingles = _shingles(tokens)
        scores = [similarity(shingles, expected) for expected in self._shingles]
        best = max(range(len(scores)), key=scores.__getitem__)
        runner_up = max((s for i, s in enumerate(scores) if i != best), default=0.0)
        if scores[best] < MATCH_THRESHOLD:
            return ItemVerdict(None, "restated question matches no input of the batch")
        decoy = max((similarity(shingles, d) for d in self._distractor_shingles), default=0.0)
        if decoy > scores[best] - MARGIN:
            return ItemVerdict(None, _COPIES_DISTRACTOR)
        margin = scores[best] - runner_up
        if margin < MARGIN:
            return ItemVerdict(None, "restated question matches several inputs")
        if best != claimed and margin < REALIGN_MARGIN:
            return ItemVerdict(None, "restated question does not clearly match its index")
        return ItemVerdict(best, realigned=best != claimed)
