"""Decide which input each parsed item belongs to, using the restated question as evidence.

In Auto-Demo mode the model copies every question before answering it. That echo is
looked up among the inputs of the call, so a skipped, repeated or swapped question is
detected (and realigned when the evidence is unambiguous) instead of shifting every
later answer. Pure functions; no I/O.

The rules, strongest evidence first (see :meth:`EchoMatcher.match`):

1. The restatement's :func:`comparison_key` equals exactly one input's key: that input,
   whatever index the model wrote (an *exact* copy). The engine never packs two inputs
   with the same key into one call (:func:`distinguishable_parts`, the same key), so an
   exact key is never ambiguous. The key ignores only what a faithful copy may change
   (case, width, spacing, sentence punctuation, invisible characters, variation
   selectors, optional diacritics) and keeps operators, signs and decimal points;
   scripts written without spaces are compared character by character.
2. The restatement is a long prefix of exactly one input's key (models abbreviate long
   inputs), or a verbatim word-aligned part of exactly one input's key of at least
   :data:`FRAGMENT_MIN_TOKENS` words (models copy only the question sentence of a long
   input), *and* no other input holds nearly as much of it (:data:`MARGIN` of
   :func:`containment`): that input.
3. Otherwise an order-aware similarity (words and word pairs) must clear
   :data:`MATCH_THRESHOLD` and beat every other input by :data:`MARGIN`.
4. Only an exact copy may name another input than the index the model wrote; a part or
   a similar text must agree with its index (or, with no valid index, win by
   :data:`REALIGN_MARGIN`). Otherwise the item is ambiguous and re-asked.
5. A restatement that holds another input's whole text (two questions copied as one, or
   a prompt line joined as a wrapped line) is ambiguous: whose answer follows is unknown.
6. A restatement that copies a *distractor* (a text the prompt shows but whose answer
   belongs to no input: a demonstration's question, an example in the chat context)
   at least as well as an input is rejected. Retrieved demonstrations are chosen for
   being similar to the inputs, so a model that re-answers one must not have that
   answer placed on the input it resembles.
7. An answer without a restatement is placed only where nothing else could be meant: the
   call holds one input. In ``batch`` mode, which asks for no restatements, the index is
   all there is, and the engine checks the completion's indices as a whole.

The completion as a whole (:class:`~langchain_autodemo.engine.CallSession`) then decides
whether an exact copy under another input's index may move its answer: only with
corroboration. The index it leaves must carry nothing else, and its own input must have
been restated exactly elsewhere under another index, and so on, until the chain closes
(a swap, a rotation) or runs out of the batch's range (a renumbering); a copy under an
index out of range moves only when its input's own index carries such a move (the end
of a renumbering). A model that slips
on a digit ("Q[1]: What is 13 - 4?" for "What is 31 - 4?") or that skipped a question
and renumbered the rest leaves the index's own input unaccounted for: those items are
re-asked, since the answer may be the one asked at that index. An uncorroborated move
delivers nothing and vetoes a different answer at both inputs it could belong to, and
an answer moved in never counts towards stopping the read early.

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
    "heads_distinguishable",
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
_SEVERAL = "restated question matches several inputs"
_CONTAINS_OTHER = "restated question contains another input of the batch"
_NOT_ITS_INDEX = "restated question does not clearly match its index"

# A number keeps its decimal point and its digit-group separators ("7.3", "80,000"); a
# leading point (".5") too.
_TOKEN = re.compile(r"(?:(?<![\w.])\.)?\d+(?:[.,]\d+)*|\w+|[^\w\s]")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
# Scripts written without spaces between words (Han, kana, Thai, Lao, Khmer, Myanmar):
# compared character by character, since a copy may add or drop spaces anywhere.
_NO_SPACES = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
)
# Diacritics a faithful copy may drop (Latin/Greek/Cyrillic accents after NFD, Arabic
# harakat, Hebrew points, combining extensions), variation selectors (U+FE0F after an
# emoji) and the Arabic tatweel. The spelling marks of Indic and Southeast Asian scripts
# are letters there and stay.
_OPTIONAL_MARKS = re.compile(
    "[\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7"
    "\u0610-\u061a\u0640\u064b-\u065f\u0670\u06d6-\u06dc\u06df-\u06e4\u06e7\u06e8"
    "\u06ea-\u06ed\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe00-\ufe0f\ufe20-\ufe2f"
    "\U000e0100-\U000e01ef]"
)
# Spellings of the same operator.
_OPERATORS = str.maketrans(
    {"\u2212": "-", "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-",
     "\u00d7": "*", "\u2217": "*", "\u22c5": "*", "\u00f7": "/", "\u2215": "/"}
)  # fmt: skip
_BRACKETS = frozenset("()[]{}")
_OPERAND_NEIGHBOURS = frozenset("()[]{}.+-*/=<>^%")


# Unicode's format characters (category Cf: zero-width spaces and joiners, bidi marks,
# BOMs, tag characters) are invisible; a regex strips them ~50x faster than a per-character
# category check on a 20k-character input.
_INVISIBLE = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f]"
)


def _neighbour(text: str, at: int, step: int) -> str:
    """The nearest non-space character from ``at`` in direction ``step`` ("" at an end)."""
    while 0 <= at < len(text):
        if not text[at].isspace():
            return text[at]
        at += step
    return ""


def _keeps(text: str, start: int) -> bool:
    """Whether the punctuation character at ``start`` is part of a formula: a minus sign
    or dash, ``*``, ``/``, ``%`` or a bracket next to a number or another operator, or a
    binary ``-``/``*``/``/`` between two operands ("x - y", "and/or")."""
    char = text[start]
    before, after = _neighbour(text, start - 1, -1), _neighbour(text, start + 1, 1)
    numeric = before.isdigit() or after.isdigit()
    if char in _BRACKETS:
        return numeric or before in _OPERAND_NEIGHBOURS or after in _OPERAND_NEIGHBOURS
    if char == "%":
        return before.isdigit()
    if char not in "-*/":
        return False
    if numeric or before in _BRACKETS or after in _BRACKETS:
        return True
    if not (before.isalnum() and after.isalnum()):
        return False
    # between two operands: "x - y" and "and/or" count, a word's hyphen ("well-known") not
    return char != "-" or text[start - 1].isspace() or text[start + 1].isspace()


def _normalise(text: str, marks: bool) -> str:
    # NFKC folds look-alike forms (full-width digits and punctuation, ligatures).
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    if not text.isascii():
        if marks:
            decomposed = unicodedata.normalize("NFD", text)
            text = unicodedata.normalize("NFC", _OPTIONAL_MARKS.sub("", decomposed))
        text = _NO_SPACES.sub(r" \g<0> ", text.translate(_OPERATORS))
    return text.casefold()


def _tokens(original: str, *, marks: bool = True) -> list[str]:
    text = _normalise(original, marks)
    words: list[str] = []
    tokens: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        tokens.append(token)
        if token[0].isdigit() or (token[0] == "." and len(token) > 1):
            words.append(token.replace(",", "") if _THOUSANDS.fullmatch(token) else token)
        elif (
            len(token) > 1
            or not unicodedata.category(token).startswith("P")
            or _keeps(text, match.start())
        ):
            words.append(token)
    if not tokens and marks:  # an input of nothing but marks keeps them
        return _tokens(original, marks=False)
    # Sentence punctuation is dropped so that a restatement without the final "?" still
    # matches, unless it is all there is ("?!" and emoji-only inputs keep their symbols).
    return words or tokens


def comparison_key(text: str) -> str:
    """What a restatement must reproduce to count as an exact copy of ``text``.

    What a faithful copy may change does not count: case, Unicode width, invisible
    characters, variation selectors, optional diacritics (accents, Arabic harakat),
    spacing (also inside scripts written without spaces, compared by characters),
    sentence punctuation and thousands separators. Words, numbers, their order, the
    operators, signs and decimal points of a formula, and symbols such as emoji do.

    Example:
        >>> comparison_key("Is 3 greater than 7?")
        'is 3 greater than 7'
        >>> comparison_key("What is -7.5 * 3?")
        'what is - 7.5 * 3'
        >>> comparison_key("我有 3 个") == comparison_key("我有3个")
        True
        >>> comparison_key("😀😀") == comparison_key("😡")
        False
    """
    return " ".join(_tokens(text))


def _contains(outer: str, inner: str) -> int:
    """How often key ``inner`` occurs word-aligned in key ``outer`` (occurrences that
    share their separating space count: "a b a b" holds "a b" twice)."""
    if not inner:
        return 0
    text, needle = f" {outer} ", f" {inner} "
    count, at = 0, text.find(needle)
    while at >= 0:
        count += 1
        at = text.find(needle, at + 1)
    return count


def _shingles(tokens: Sequence[str]) -> frozenset[str]:
    pairs = (f"{a}\x00{b}" for a, b in zip(tokens, tokens[1:], strict=False))
    return frozenset((*tokens, *pairs))


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard similarity of two shingle sets (words and consecutive word pairs)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def containment(part: frozenset[str], whole: frozenset[str]) -> float:
    """The share of ``part``'s shingles that ``whole`` holds (1.0: a verbatim part)."""
    return len(part & whole) / len(part) if part else 1.0


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


def _starts(key: str, prefix: str) -> bool:
    """Whether key ``prefix`` is a word-aligned start of ``key`` (or equal to it)."""
    return key == prefix or key.startswith(prefix + " ")


def heads_distinguishable(heads: Sequence[str], texts: Sequence[str]) -> bool:
    """Whether a restatement of each of ``heads`` (the start of the text at the same place
    in ``texts``) can only name that text among all of ``texts``.

    ``texts`` are every text the prompt shows whose restatement could come back: the
    call's inputs first, then its demonstrations and context questions; ``heads`` may be
    shorter (the inputs' heads alone). A head that is a word-aligned start of another
    text (two inputs that open alike, an input that opens like a demonstration, a short
    input that is the start of a longer one) could be a copy of either: a call with such
    heads restates in full, where exact keys tell every pair apart.

    Example:
        >>> heads_distinguishable(["Tom has 3", "Ann has 4"], ["Tom has 3 cats.", "Ann has 4."])
        True
        >>> heads_distinguishable(["Tom has 3", "Tom has 3"], ["Tom has 3 cats.", "Tom has 3."])
        False
    """
    keys = [comparison_key(text) for text in texts]
    for place, head in enumerate(heads):
        key = comparison_key(head)
        if not key:
            return False
        if any(other != place and _starts(k, key) for other, k in enumerate(keys)):
            return False
    return True


@dataclass(frozen=True, slots=True)
class ItemVerdict:
    """Where a parsed item goes: ``position`` in the call (0-based), or ``None`` with a
    ``reason`` when it cannot be attributed to exactly one input.

    ``realigned``: the position differs from the index the model wrote. ``exact``: the
    restatement's key equals the input's (the only evidence strong enough to move an
    answer, see the module docstring). ``ambiguous``: rejected because it fits more than
    one input, or another input than its index; such a block casts doubt on its index.
    """

    position: int | None
    reason: str | None = None
    realigned: bool = False
    exact: bool = False
    ambiguous: bool = False


class EchoMatcher:
    """Attribute parsed items to the positions of one call.

    ``expected`` are the questions as rendered in the prompt, in marker order. With
    ``require_echo`` (Auto-Demo mode) an item must carry a restatement that identifies
    its input, unless the call asks a single question. ``distractors`` are other texts
    the prompt shows (demonstration questions, context messages): a restatement that
    copies one of them is attributed to no input.

    ``heads`` (a ``head`` restatement call, see
    :class:`~langchain_autodemo.prompts.Restate`): what the prompt asked each input's
    restatement to be, and ``distractor_heads`` the same of each distractor. A copy of a
    head is an exact copy of its input, which the caller must have checked with
    :func:`heads_distinguishable`; a shorter or longer copy goes through the part and
    similarity rules as any other.

    Example:
        >>> from langchain_autodemo.parser import ParsedItem
        >>> matcher = EchoMatcher(["Is 3 greater than 7?", "Is 7 greater than 3?"])
        >>> swapped = ParsedItem(1, "Is 7 greater than 3?", "Yes.", "yes", "next_marker")
        >>> matcher.verdict(swapped)
        ItemVerdict(position=1, reason=None, realigned=True, exact=True, ambiguous=False)
    """

    def __init__(
        self,
        expected: Sequence[str],
        *,
        require_echo: bool = True,
        distractors: Sequence[str] = (),
        heads: Sequence[str] | None = None,
        distractor_heads: Sequence[str] = (),
    ) -> None:
        self._expected = list(expected)
        tokens = [_tokens(text) for text in self._expected]
        self._keys = [" ".join(t) for t in tokens]
        self._shingles = [_shingles(t) for t in tokens]
        self._by_key: dict[str, int | None] = {}
        exact_keys = list(enumerate(self._keys))
        # Without heads each input's "head" is its whole text: the similarity rule then
        # compares with the text alone.
        self._head_shingles = self._shingles
        if heads is not None:
            if len(heads) != len(self._expected):
                raise ValueError("heads must give one head per expected question")
            head_tokens = [_tokens(head) for head in heads]
            self._head_shingles = [_shingles(t) for t in head_tokens]
            exact_keys += [(position, " ".join(t)) for position, t in enumerate(head_tokens)]
        for position, key in exact_keys:
            # Two equal keys in one call are never planned; if given, neither is trusted.
            seen = self._by_key.get(key, position)
            self._by_key[key] = position if seen == position else None
        # An input's own text wins over an equal distractor: the exact copy is its question.
        distractor_tokens = [_tokens(text) for text in (*distractors, *distractor_heads)]
        self._distractor_keys = {" ".join(t) for t in distractor_tokens} - self._by_key.keys()
        self._distractor_shingles = [
            _shingles(t) for t in distractor_tokens if " ".join(t) in self._distractor_keys
        ]
        self._require_echo = require_echo

    def __len__(self) -> int:
        return len(self._expected)

    @property
    def keys(self) -> list[str]:
        """The :func:`comparison_key` of each expected question, in position order."""
        return list(self._keys)

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
            return ItemVerdict(claimed, exact=True)
        return self.match(item.question, claimed if in_range else None)

    def _one_containing(self, contains: Callable[[str], bool]) -> int | ItemVerdict | None:
        """The input the restatement is a part of (``None``: of none).

        Part of exactly one input: its position; of a demonstration too: a copy of the
        demonstration; of several inputs: ambiguous, re-asked.
        """
        inside = [p for p, k in enumerate(self._keys) if contains(k)]
        if not inside:
            return None
        if any(contains(d) for d in self._distractor_keys):
            return ItemVerdict(None, _COPIES_DISTRACTOR)
        if len(inside) > 1:
            return ItemVerdict(None, _SEVERAL, ambiguous=True)
        return inside[0]

    def match(self, restated: str, claimed: int | None = None) -> ItemVerdict:
        """Which input ``restated`` copies (``claimed``: the index the model wrote)."""
        tokens = _tokens(restated)
        key = " ".join(tokens)
        if key in self._by_key:
            position = self._by_key[key]
            if position is None:
                return ItemVerdict(None, _SEVERAL, ambiguous=True)
            return ItemVerdict(position, realigned=position != claimed, exact=True)
        if key in self._distractor_keys:
            return ItemVerdict(None, _COPIES_DISTRACTOR)
        shingles = _shingles(tokens)
        found: int | ItemVerdict | None = None
        if len(key) >= PREFIX_MIN_CHARS:
            found = self._one_containing(lambda k: k.startswith(key))
        if found is None and len(tokens) >= FRAGMENT_MIN_TOKENS and len(key) >= FRAGMENT_MIN_CHARS:
            # A verbatim part of one input (RTE: the model copies only the hypothesis; see
            # docs/design/measured-choices.md).
            found = self._one_containing(lambda k: f" {key} " in f" {k} ")
        if isinstance(found, ItemVerdict):
            return found
        if found is not None:
            verdict = self._part(found, shingles, claimed)
        else:
            verdict = self._similar(shingles, claimed)
        if verdict.position is not None:
            return self._merged(key, verdict)
        return verdict

    def _part(self, position: int, shingles: frozenset[str], claimed: int | None) -> ItemVerdict:
        """A prefix or verbatim part of one input meets the similarity rule's bar: no other
        input holds nearly as much of it (:data:`MARGIN`, :data:`REALIGN_MARGIN` to move
        it away from its index)."""
        own = containment(shingles, self._shingles[position])
        runner_up = max(
            (containment(shingles, s) for p, s in enumerate(self._shingles) if p != position),
            default=0.0,
        )
        return self._placed(position, own - runner_up, claimed)

    def _similar(self, shingles: frozenset[str], claimed: int | None) -> ItemVerdict:
        scores = [
            max(similarity(shingles, whole), similarity(shingles, head))
            for whole, head in zip(self._shingles, self._head_shingles, strict=True)
        ]
        best = max(range(len(scores)), key=scores.__getitem__)
        runner_up = max((s for i, s in enumerate(scores) if i != best), default=0.0)
        if scores[best] < MATCH_THRESHOLD:
            return ItemVerdict(None, "restated question matches no input of the batch")
        decoy = max((similarity(shingles, d) for d in self._distractor_shingles), default=0.0)
        if decoy > scores[best] - MARGIN:
            return ItemVerdict(None, _COPIES_DISTRACTOR)
        return self._placed(best, scores[best] - runner_up, claimed)

    @staticmethod
    def _placed(position: int, margin: float, claimed: int | None) -> ItemVerdict:
        """An inexact restatement clear of the runner-up by ``margin``: it answers the
        index the model wrote, never another one (only an exact copy can move an answer);
        without a valid index it needs :data:`REALIGN_MARGIN`."""
        if margin < MARGIN:
            return ItemVerdict(None, _SEVERAL, ambiguous=True)
        if claimed is not None and position != claimed:
            return ItemVerdict(None, _NOT_ITS_INDEX, ambiguous=True)
        if claimed is None and margin < REALIGN_MARGIN:
            return ItemVerdict(None, _NOT_ITS_INDEX, ambiguous=True)
        return ItemVerdict(position, realigned=claimed is None)

    def _merged(self, key: str, verdict: ItemVerdict) -> ItemVerdict:
        """Reject a restatement that holds another input's whole text (more often than its
        own input does): two questions copied as one, so whose answer follows is unknown."""
        assert verdict.position is not None
        own = self._keys[verdict.position]
        for position, other in enumerate(self._keys):
            if (
                position != verdict.position
                and other
                and _contains(key, other) > _contains(own, other)
            ):
                return ItemVerdict(None, _CONTAINS_OTHER, ambiguous=True)
        return verdict
