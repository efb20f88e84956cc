"""Usage accounting: model calls, re-asks and tokens, per run and per item.

Example:
    >>> from langchain_autodemo import track_usage
    >>> with track_usage() as usage:  # doctest: +SKIP
    ...     answers = runner.batch(questions)
    >>> usage.calls, usage.reasks, usage.input_tokens, usage.output_tokens  # doctest: +SKIP
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_autodemo.pricing import Price

__all__ = ["CallUsage", "UsageStats", "reported_usage", "track_usage"]


@dataclass(frozen=True, slots=True)
class CallUsage:
    """Tokens of one model call. ``estimated`` is True when the model reported no usage
    (e.g. llama.cpp while streaming) and the numbers were estimated instead."""

    input_tokens: int
    output_tokens: int
    estimated: bool = False
    cached_input_tokens: int = 0
    """The part of ``input_tokens`` the provider reported as served from its prompt cache
    (``usage_metadata["input_token_details"]["cache_read"]``)."""
    reasoning_tokens: int = 0
    """The part of ``output_tokens`` the provider reported as reasoning
    (``usage_metadata["output_token_details"]["reasoning"]``)."""


def reported_usage(message: Any) -> CallUsage | None:
    """The tokens a model reported for ``message`` (a message or chunk; anything else
    reports nothing): its ``usage_metadata``'s input, output, cached input
    (``cache_read``) and reasoning tokens, ``None`` where it has none (a missing or empty
    ``usage_metadata``, e.g. llama.cpp while streaming). The one reader of
    ``usage_metadata`` in the package.

    Example:
        >>> from langchain_core.messages import AIMessage
        >>> usage = {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17,
        ...          "input_token_details": {"cache_read": 8}}
        >>> reported = reported_usage(AIMessage("4", usage_metadata=usage))
        >>> reported.input_tokens, reported.output_tokens, reported.cached_input_tokens
        (12, 5, 8)
        >>> reported_usage(AIMessage("4")) is None
        True
    """
    usage = getattr(message, "usage_metadata", None)
    if not usage:
        return None
    cached = (usage.get("input_token_details") or {}).get("cache_read", 0)
    reasoning = (usage.get("output_token_details") or {}).get("reasoning", 0)
    return CallUsage(
        int(usage.get("input_tokens", 0)),
        int(usage.get("output_tokens", 0)),
        cached_input_tokens=int(cached or 0),
        reasoning_tokens=int(reasoning or 0),
    )


@dataclass
class UsageStats:
    """Running totals over one or more ``batch()`` calls. Thread-safe to update."""

    calls: int = 0
    reasks: int = 0
    """Model calls that re-asked items an earlier call did not deliver (garbled, missing,
    ambiguous, cut off, or its call failed): every call after an item's first attempt."""
    input_tokens: int = 0
    output_tokens: int = 0
    reask_input_tokens: int = 0
    """The part of ``input_tokens`` spent by re-asks."""
    reask_output_tokens: int = 0
    """The part of ``output_tokens`` spent by re-asks."""
    cached_input_tokens: int = 0
    """The part of ``input_tokens`` the provider reported as cached (0 where it reports
    nothing: local models, or a provider without prompt caching)."""
    escalations: int = 0
    """Single calls that re-asked a packed answer chosen for escalation (low confidence)."""
    escalation_input_tokens: int = 0
    """The part of ``input_tokens`` spent by escalations."""
    escalation_output_tokens: int = 0
    """The part of ``output_tokens`` spent by escalations."""
    items: int = 0
    failed_items: int = 0
    estimated_tokens: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_call(self, usage: CallUsage, *, reask: bool, escalation: bool = False) -> None:
        with self._lock:
            self.calls += 1
            self.reasks += int(reask)
            if escalation:
                self.escalations += 1
                self.escalation_input_tokens += usage.input_tokens
                self.escalation_output_tokens += usage.output_tokens
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
            self.cached_input_tokens += usage.cached_input_tokens
            if reask:
                self.reask_input_tokens += usage.input_tokens
                self.reask_output_tokens += usage.output_tokens
            self.estimated_tokens |= usage.estimated

    def record_items(self, done: int, failed: int) -> None:
        with self._lock:
            self.items += done
            self.failed_items += failed

    def merge(self, other: UsageStats) -> None:
        with self._lock:
            self.calls += other.calls
            self.reasks += other.reasks
            self.input_tokens += other.input_tokens
            self.output_tokens += other.output_tokens
            self.reask_input_tokens += other.reask_input_tokens
            self.reask_output_tokens += other.reask_output_tokens
            self.cached_input_tokens += other.cached_input_tokens
            self.escalations += other.escalations
            self.escalation_input_tokens += other.escalation_input_tokens
            self.escalation_output_tokens += other.escalation_output_tokens
            self.items += other.items
            self.failed_items += other.failed_items
            self.estimated_tokens |= other.estimated_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def usd(
        self,
        price: Price,
        *,
        batch: bool = False,
        tier: str | None = None,
        written_tokens: float = 0,
    ) -> float:
        """What these tokens cost at ``price`` and ``tier`` (default: the price's; ``batch``:
        the Batch API; see :mod:`langchain_autodemo.pricing`), the provider-reported cached
        input at the cached price and ``written_tokens`` (input written to the provider's
        cache, where it charges writes) at the cache-write price.

        Example:
            >>> from langchain_autodemo.pricing import PriceTable
            >>> stats = UsageStats(input_tokens=1_000_000, output_tokens=100_000)
            >>> round(stats.usd(PriceTable.default().price("gpt-4o-mini")), 4)
            0.21
        """
        return price.cost(
            self.input_tokens,
            self.output_tokens,
            batch=batch,
            cached_tokens=self.cached_input_tokens,
            written_tokens=written_tokens,
            tier=tier,
        )

    def usd_per_1k_items(
        self,
        price: Price,
        *,
        batch: bool = False,
        tier: str | None = None,
        written_tokens: float = 0,
    ) -> float | None:
        """:meth:`usd` per 1,000 items answered or failed (``None`` before any item)."""
        items = self.items + self.failed_items
        usd = self.usd(price, batch=batch, tier=tier, written_tokens=written_tokens)
        return 1000 * usd / items if items else None

    # Deprecated names: "retry" is the backoff after a failed model call
    # (retry_initial_delay); these count re-asks of any cause.
    @property
    def retries(self) -> int:
        """Deprecated: :attr:`reasks`."""
        _renamed("retries", "reasks")
        return self.reasks

    @property
    def retry_input_tokens(self) -> int:
        """Deprecated: :attr:`reask_input_tokens`."""
        _renamed("retry_input_tokens", "reask_input_tokens")
        return self.reask_input_tokens

    @property
    def retry_output_tokens(self) -> int:
        """Deprecated: :attr:`reask_output_tokens`."""
        _renamed("retry_output_tokens", "reask_output_tokens")
        return self.reask_output_tokens

    def as_dict(self) -> dict[str, int | bool]:
        return {
            "items": self.items,
            "failed_items": self.failed_items,
            "calls": self.calls,
            "reasks": self.reasks,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "reask_input_tokens": self.reask_input_tokens,
            "reask_output_tokens": self.reask_output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "escalations": self.escalations,
            "escalation_input_tokens": self.escalation_input_tokens,
            "escalation_output_tokens": self.escalation_output_tokens,
            "estimated_tokens": self.estimated_tokens,
        }


def _renamed(old: str, new: str) -> None:
    warnings.warn(f"UsageStats.{old} is deprecated: use {new}", DeprecationWarning, stacklevel=3)


_trackers: ContextVar[tuple[UsageStats, ...]] = ContextVar("autodemo_usage", default=())


@contextmanager
def track_usage() -> Iterator[UsageStats]:
    """Collect the usage of every Auto-Demo run started inside the ``with`` block.

    Nested blocks each see the runs inside them.
    """
    stats = UsageStats()
    token = _trackers.set((*_trackers.get(), stats))
    try:
        yield stats
    finally:
        _trackers.reset(token)


def active_trackers() -> tuple[UsageStats, ...]:
    return _trackers.get()
