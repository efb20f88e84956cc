"""Which inputs go into which model call: batch plans, token budgets, recovery plans.

Pure functions over indices and token estimates; no I/O.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

__all__ = [
    "PlannedBatch",
    "BatchSelector",
    "Demonstration",
    "SequentialSelector",
    "escalation_picks",
    "estimate_message_tokens",
    "estimate_tokens",
    "ITEM_MARKER_TOKENS",
    "TOKENS_PER_WORD",
    "restatement_tokens",
    "split_by_token_budget",
    "recovery_batches",
    "rejected_for_content",
    "retry_delay",
]

Demonstration = tuple[str, str]
"""A solved example shown before a batch: (question, answer text ending with the
final-answer line)."""


@dataclass(frozen=True)
class PlannedBatch:
    """One packed model call.

    ``indices`` are positions in the caller's input list, in prompt order. ``keep`` is
    the subset whose answers are kept (``None``: all of them); the paper's ``neighbors``
    selection packs an input with its nearest neighbours but keeps only its own answer.
    ``demonstrations`` are solved (question, answer) examples shown before the batch.
    ``context`` holds the chat messages every input of the batch shares (a system
    prompt, few-shot example messages, history), sent once before the packed questions;
    inputs whose contexts differ are never planned into one batch.
    """

    indices: tuple[int, ...]
    keep: frozenset[int] | None = None
    demonstrations: tuple[Demonstration, ...] = field(default=())
    context: tuple[BaseMessage, ...] = field(default=(), hash=False)

    def __post_init__(self) -> None:
        if not self.indices:
            raise ValueError("a planned batch needs at least one index")
        if len(set(self.indices)) != len(self.indices):
            raise ValueError(f"a planned batch repeats an index: {self.indices}")
        if self.keep is not None and not self.keep <= set(self.indices):
            raise ValueError("keep must be a subset of indices")

    @property
    def kept(self) -> tuple[int, ...]:
        if self.keep is None:
            return self.indices
        return tuple(i for i in self.indices if i in self.keep)

    def part(self, indices: Sequence[int], keep: frozenset[int] | None = None) -> PlannedBatch:
        """A batch of some of these inputs (a split, a re-ask) with the same
        demonstrations and context."""
        return replace(self, indices=tuple(indices), keep=keep)


class BatchSelector:
    """Groups inputs into batches. Subclass and override :meth:`plan`.

    :class:`~langchain_autodemo.selector.SimilarityBatchSelector` is the similarity-
    based planner; :class:`SequentialSelector` keeps input order.
    """

    def plan(self, texts: Sequence[str], batch_size: int) -> list[PlannedBatch]:
        raise NotImplementedError

    async def aplan(self, texts: Sequence[str], batch_size: int) -> list[PlannedBatch]:
        return self.plan(texts, batch_size)


class SequentialSelector(BatchSelector):
    """Consecutive inputs share a batch (plain batch prompting)."""

    def plan(self, texts: Sequence[str], batch_size: int) -> list[PlannedBatch]:
        return [
            PlannedBatch(tuple(range(start, min(start + batch_size, len(texts)))))
            for start in range(0, len(texts), batch_size)
        ]


def estimate_tokens(text: str) -> int:
    """A cheap, tokenizer-free token estimate (about four characters per token)."""
    return len(text) // 4 + 1


#: Output tokens a packed item costs besides its restatement and its answer: its answer
#: marker (``A[3]:``) and line break.
ITEM_MARKER_TOKENS = 4
#: Tokens per English word: a head restatement's size where only the question's size is
#: known (the tuner's cost proxy), not its text.
TOKENS_PER_WORD = 4 / 3


def restatement_tokens(
    question_tokens: float, *, restated: bool, head_tokens: float | None = None
) -> float:
    """The output tokens one item's restatement costs: the restatement-cost estimate of the
    engine's token budget, the Batch API's cost report and the tuner's cost proxy.

    ``restated``: the mode copies the question back (only ``auto_demo`` does; nothing
    otherwise). ``head_tokens``: the size of a ``head`` copy (``None``: the full question
    is copied); a head is never longer than the question.

    Example:
        >>> restatement_tokens(40, restated=True), restatement_tokens(40, restated=False)
        (40, 0)
        >>> restatement_tokens(40, restated=True, head_tokens=16.0)
        16.0
        >>> restatement_tokens(10, restated=True, head_tokens=16.0)
        10
    """
    if not restated:
        return 0
    return question_tokens if head_tokens is None else min(question_tokens, head_tokens)


def estimate_message_tokens(messages: Iterable[BaseMessage]) -> int:
    """:func:`estimate_tokens` of a prompt: the sum over its messages' text (the one
    estimate every cost line, job and engine uses where the model reports no usage)."""
    from langchain_autodemo.messages import text_of

    return sum(estimate_tokens(text_of(message)) for message in messages)


def split_by_token_budget(
    batch: PlannedBatch,
    output_tokens: Callable[[int], int],
    budget: int | None,
) -> list[PlannedBatch]:
    """Split ``batch`` so that each part's expected output fits ``budget`` tokens.

    ``output_tokens(i)`` estimates what input ``i`` costs in the completion (its
    restatement plus its answer). A single input that alone exceeds the budget still
    gets its own batch: refusing it would lose it.
    """
    if budget is None:
        return [batch]
    parts: list[list[int]] = [[]]
    used = 0
    for index in batch.indices:
        cost = output_tokens(index)
        if parts[-1] and used + cost > budget:
            parts.append([])
            used = 0
        parts[-1].append(index)
        used += cost
    if len(parts) == 1:
        return [batch]
    result = []
    for part in parts:
        keep = None if batch.keep is None else batch.keep & set(part)
        if keep is not None and not keep:
            continue  # context-only neighbours that lost their target
        result.append(batch.part(part, keep))
    return result


def recovery_batches(
    failed: Sequence[int], batch_size: int, next_attempt: int, max_attempts: int
) -> list[tuple[int, ...]]:
    """How to re-ask the items a call failed to deliver: smaller, then alone.

    The second attempt packs the failed items into batches of half the original size;
    every later attempt asks each item alone. Returns nothing once ``max_attempts`` is
    reached: those items get an explicit error instead.

    Example:
        >>> recovery_batches([4, 5, 6], batch_size=8, next_attempt=2, max_attempts=3)
        [(4, 5, 6)]
        >>> recovery_batches([4, 5, 6], batch_size=8, next_attempt=3, max_attempts=3)
        [(4,), (5,), (6,)]
    """
    if next_attempt > max_attempts or not failed:
        return []
    size = max(1, math.ceil(batch_size / 2)) if next_attempt == 2 else 1
    return [tuple(failed[i : i + size]) for i in range(0, len(failed), size)]


def escalation_picks(
    answered: Sequence[tuple[int, int, float | None]],
    share: float,
    below: float | None = None,
    slot_accuracy: Sequence[float] = (),
) -> set[int]:
    """Which answers of one packed call to ask again alone (selective escalation).

    ``answered`` holds ``(index, slot, confidence)`` for each answer the call delivered
    (``slot``: its 0-based position in the prompt; ``confidence``: the probability the
    model gave the final answer's tokens, ``None`` where the provider sends no
    log-probabilities). The least confident ``round(share * len(answered))`` answers are
    picked (halves round up), and, with ``below``, every answer less confident than that.
    Without log-probabilities the slot is the fallback's measure of doubt: the slots of
    lowest ``slot_accuracy`` (packed accuracy by slot, as ``autodemo tune`` measured it;
    a slot past the list counts as the last one measured) go first, and without it the
    later slots, since packed accuracy falls with the slot (docs/findings.md). Ties go
    to the later slot. Pure and order-free, so ``autodemo tune`` replays it exactly on a
    measured sample.

    Example:
        >>> sorted(escalation_picks([(10, 0, 0.99), (11, 1, 0.40), (12, 2, 0.95)], 0.34))
        [11]
        >>> sorted(escalation_picks([(10, 0, None), (11, 1, None), (12, 2, None)], 0.34))
        [12]
        >>> sorted(escalation_picks([(10, 0, None), (11, 1, None), (12, 2, None)], 0.34,
        ...                         slot_accuracy=(0.9, 0.6, 0.8)))
        [11]
    """
    if not answered:
        return set()
    count = min(len(answered), math.floor(share * len(answered) + 0.5)) if share > 0 else 0

    def measured(slot: int) -> float:
        return slot_accuracy[min(slot, len(slot_accuracy) - 1)] if slot_accuracy else 0.0

    def doubt(entry: tuple[int, int, float | None]) -> tuple[float, float, int]:
        _, slot, confidence = entry
        # no confidence: doubted first, the least accurate slots first, then later slots
        if confidence is None:
            return (-1.0, measured(slot), -slot)
        return (confidence, 0.0, -slot)

    ranked = sorted(answered, key=doubt)
    picked = {index for index, _, _ in ranked[:count]}
    if below is not None:
        picked |= {i for i, _, c in answered if c is not None and c < below}
    return picked


#: HTTP statuses with which a provider refuses a request for what it holds (a malformed
#: or filtered input, a body too large): the same members fail the same way every time,
#: so the call is split instead of re-sent. Auth (401/403), missing models (404) and
#: throttling (408/409/429) are the same for every member and are not split.
CONTENT_REJECTION_STATUSES = frozenset({400, 413, 422})


def _status(error: BaseException) -> int | None:
    for owner in (error, getattr(error, "response", None)):
        for name in ("status_code", "status", "http_status"):
            value = getattr(owner, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def rejected_for_content(error: BaseException) -> bool:
    """Whether a failed model call was refused for what it holds (HTTP 400, 413 or 422,
    e.g. a content filter's 400): re-sending the same members cannot succeed, so the
    engine bisects the call until the input that causes it stands alone.

    Example:
        >>> class BadRequest(Exception):
        ...     status_code = 400
        >>> rejected_for_content(BadRequest("content filter")), rejected_for_content(TimeoutError())
        (True, False)
    """
    return _status(error) in CONTENT_REJECTION_STATUSES


def _retry_after(error: BaseException) -> float | None:
    """The wait a provider asked for, in seconds: a ``retry_after`` attribute, or the
    ``Retry-After`` / ``retry-after-ms`` header of the HTTP response the error carries
    (openai and anthropic errors carry ``.response``)."""
    value = getattr(error, "retry_after", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    headers = getattr(getattr(error, "response", None), "headers", None)
    if headers is None or not hasattr(headers, "get"):
        return None
    try:
        milliseconds = headers.get("retry-after-ms")
        if milliseconds is not None:
            return max(0.0, float(milliseconds) / 1000)
        seconds = headers.get("retry-after")
        if seconds is None:
            return None
        return max(0.0, float(seconds))
    except (TypeError, ValueError, OverflowError):  # an HTTP date needs a clock: back off instead
        return None


def retry_delay(
    error: BaseException,
    failures: int,
    *,
    initial: float,
    maximum: float,
    rng: random.Random,
) -> float:
    """Seconds to wait before re-asking after the ``failures``-th failed model call.

    The provider's ``Retry-After`` wins when it gives one (capped at ``maximum``);
    otherwise exponential backoff with full jitter: uniform in ``[d/2, d]`` for
    ``d = initial * 2 ** (failures - 1)``, so many clients that failed together do not
    come back together.

    Example:
        >>> retry_delay(TimeoutError(), 3, initial=1.0, maximum=30.0, rng=random.Random(0)) <= 4.0
        True
    """
    asked = _retry_after(error)
    if asked is not None:
        return min(asked, maximum)
    delay = min(maximum, initial * 2 ** max(0, failures - 1))
    return delay / 2 + rng.random() * delay / 2
