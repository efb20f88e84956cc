"""What every ``autodemo`` command shares: messages on stderr, user errors, host set-up."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from langchain_autodemo.errors import ConfigurationError, EvaluationError

__all__ = ["echo", "fail", "prepare_host", "user_errors"]


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
