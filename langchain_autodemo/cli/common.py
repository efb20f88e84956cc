"""What every ``autodemo`` command shares: messages on stderr, user errors, host set-up."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import typer

from langchain_autodemo.errors import ConfigurationError, EvaluationError

__all__ = ["changed_settings", "check_same_settings", "echo", "fail", "prepare_host", "user_errors"]


def echo(message: str) -> None:
    """Progress and summaries go to stderr; stdout carries only a command's result."""
    typer.echo(message, err=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one clear line and exit status 2."""
    try:
        yield
    except (ConfigurationError, EvaluationError) as exc:
        raise fail(str(exc)) from None


def prepare_host() -> None:
    """Set up the process for a command; called when one runs, never at import time."""
    # Chroma (behind --select / similarity methods) must not phone home: nothing leaves the host.
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    # Chroma turns on INFO logging, which would print every model request over the progress bar.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def changed_settings(
    earlier: Mapping[str, Any],
    now: Mapping[str, Any],
    keys: Iterable[str],
    defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """``"KEY: was OLD, now NEW"`` for each of ``keys`` whose value differs.

    ``defaults`` gives the value of a key that a record lacks (one written before the
    key existed), so adding a setting does not make every earlier record differ.
    """
    defaults = defaults or {}
    changes = []
    for key in keys:
        before, after = earlier.get(key, defaults.get(key)), now.get(key, defaults.get(key))
        if before != after:
            changes.append(f"{key}: was {before!r}, now {after!r}")
    return changes


def check_same_settings(
    earlier: Mapping[str, Any],
    now: Mapping[str, Any],
    *,
    keys: Iterable[str],
    what: str,
    fix: str,
    defaults: Mapping[str, Any] | None = None,
    error: type[ConfigurationError] = ConfigurationError,
) -> None:
    """Refuse to resume results written with other settings, naming every change.

    Raises ``error("{what}: {changes}; {fix}")`` when any of ``keys`` differs between
    the ``earlier`` and the ``now`` settings (see :func:`changed_settings`).
    """
    changes = changed_settings(earlier, now, keys, defaults)
    if changes:
        raise error(f"{what}: {'; '.join(changes)}. Resuming would mix answers of both; {fix}")
