"""Errors the package raises or returns per item."""

from __future__ import annotations

__all__ = ["AutoDemoItemError"]


class AutoDemoItemError(Exception):
    """An input that got no trustworthy answer after every allowed attempt.

    Raised by ``batch()`` (or returned in its place with ``return_exceptions=True``),
    it says which input and why, so an item is never silently empty.

    Attributes:
        index: position of the input in the list given to ``batch()``.
        reason: why the last attempt failed (missing, truncated, misaligned, ...).
        attempts: how many model calls tried to answer it.
    """

    def __init__(self, index: int, reason: str, attempts: int) -> None:
        super().__init__(f"item {index}: {reason} (after {attempts} attempt(s))")
        self.index = index
        self.reason = reason
        self.attempts = attempts

    def __reduce__(self):  # keep the structured fields across pickling (e.g. LangServe)
        return (type(self), (self.index, self.reason, self.attempts))
