"""Argument checks shared by the package's constructors and functions: one rule, one
message, one error type (:class:`~langchain_autodemo.errors.ConfigurationError`, which is
also a ``ValueError``)."""

from __future__ import annotations

import numbers
from typing import Any

from langchain_autodemo.errors import ConfigurationError

__all__ = [
    "require_max_concurrency",
    "require_positive_int",
    "require_share",
    "require_timeout",
]


def require_positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is an integer >= 1, else an error naming ``name``.

    Any integral type counts (``numpy.int64`` from an array), ``bool`` does not.

    Example:
        >>> require_positive_int("batch_size", 8)
        8
        >>> require_positive_int("batch_size", 0)
        Traceback (most recent call last):
        ...
        langchain_autodemo.errors.ConfigurationError: batch_size must be a positive integer, got 0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def require_share(name: str, value: Any) -> float:
    """``value`` as a ``float`` if it is a number from 0 to 1, else an error naming
    ``name``: an audit rate, an escalation share.

    Example:
        >>> require_share("escalate", 0.25)
        0.25
    """
    if not _number(value) or not 0 <= value <= 1:
        raise ConfigurationError(f"{name} must be a number from 0 to 1, got {value!r}")
    return float(value)


def require_timeout(name: str, value: Any) -> float | None:
    """``value`` as a ``float`` if it is a number > 0, or ``None`` (no limit); else an
    error naming ``name``."""
    if value is None:
        return None
    if not _number(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a number > 0 or None, got {value!r}")
    return float(value)


def require_max_concurrency(limit: Any) -> None:
    """A config's ``max_concurrency``: ``None`` or a positive integer."""
    if limit is not None:
        require_positive_int("max_concurrency", limit)
