"""Argument checks shared by the package's constructors and functions: one rule, one
message, one error type (:class:`~langchain_autodemo.errors.ConfigurationError`, which is
also a ``ValueError``)."""

from __future__ import annotations

import numbers
from typing import Any

from langchain_autodemo.errors import ConfigurationError

__all__ = ["require_positive_int"]


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
