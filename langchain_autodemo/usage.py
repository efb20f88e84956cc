"""Usage accounting: model calls, retries and tokens, per run and per item.

Example:
    >>> from langchain_autodemo import track_usage
    >>> with track_usage() as usage:  # doctest: +SKIP
    ...     answers = runner.batch(questions)
    >>> usage.calls, usage.retries, usage.input_tokens, usage.output_tokens  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["CallUsage", "UsageStats", "track_usage"]


@dataclass(frozen=True, slots=True)
class CallUsage:
    """Tokens of one model call. ``estimated`` is True when the model reported no usage
    (e.g. llama.cpp while streaming) and the numbers were estimated instead."""

    input_tokens: int
    output_tokens: int
    estimated: bool = False


@dataclass
class UsageStats:
    """Running totals over one or more ``batch()`` calls. Thread-safe to update."""

    calls: int = 0
    retries: int = 0
    """Model calls that re-asked items a previous call failed to deliver."""
    input_tokens: int = 0
    output_tokens: int = 0
    retry_input_tokens: int = 0
    """The part of ``input_tokens`` spent by retry calls (re-asks)."""
    retry_output_tokens: int = 0
    """The part of ``output_tokens`` spent by retry calls (re-asks)."""
    items: int = 0
    failed_items: int = 0
    estimated_tokens: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_call(self, usage: CallUsage, *, retry: bool) -> None:
        with self._lock:
            self.calls += 1
            self.retries += int(retry)
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
            if retry:
                self.retry_input_tokens += usage.input_tokens
                self.retry_output_tokens += usage.output_tokens
            self.estimated_tokens |= usage.estimated

    def record_items(self, done: int, failed: int) -> None:
        with self._lock:
            self.items += done
            self.failed_items += failed

    def merge(self, other: UsageStats) -> None:
        with self._lock:
            self.calls += other.calls
            self.retries += other.retries
            self.input_tokens += other.input_tokens
            self.output_tokens += other.output_tokens
            self.retry_input_tokens += other.retry_input_tokens
            self.retry_output_tokens += other.retry_output_tokens
            self.items += other.items
            self.failed_items += other.failed_items
            self.estimated_tokens |= other.estimated_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def per_item(self) -> dict[str, float]:
        n = max(self.items, 1)
        return {
            "calls": self.calls / n,
            "input_tokens": self.input_tokens / n,
            "output_tokens": self.output_tokens / n,
        }

    def as_dict(self) -> dict[str, int | bool]:
        return {
            "items": self.items,
            "failed_items": self.failed_items,
            "calls": self.calls,
            "retries": self.retries,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "retry_input_tokens": self.retry_input_tokens,
            "retry_output_tokens": self.retry_output_tokens,
            "estimated_tokens": self.estimated_tokens,
        }


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
