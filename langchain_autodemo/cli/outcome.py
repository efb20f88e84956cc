"""What one way of answering a ``autodemo run`` job's items did (:class:`RunOutcome`).

Its own module so that each way of answering (online in :mod:`langchain_autodemo.cli.run`,
a Batch API job in :mod:`langchain_autodemo.cli.batch_api`, a Ray Data job in
:mod:`langchain_autodemo.cli.ray_run`) reports the same record without importing the
others (``cli.run`` picks among them).
"""

from __future__ import annotations

from dataclasses import dataclass

from langchain_autodemo.usage import UsageStats

__all__ = ["RunOutcome"]


@dataclass(frozen=True)
class RunOutcome:
    """What one way of answering (online, or a Batch API job) did with the items asked."""

    written: int
    failed: int
    usage: UsageStats
    interrupted: bool
    wall_time_s: float
    calls_label: str = "calls"
    notes: tuple[str, ...] = ()
    """Lines for the summary (the Batch API's cost)."""
    interrupted_hint: str | None = None
    """What to do after Ctrl-C (default: re-run the same command)."""
    shared_prefix_tokens: tuple[float, ...] = ()
    """Per call, the input tokens of the prefix it shares with a recent call (what a
    provider's prompt cache could serve); empty where the calls were not seen."""
    reused_prefix_tokens: tuple[float, ...] = ()
    """Per call, in the same order: the input tokens of its prefix a later call shares
    (what it writes to a provider's cache); empty where not seen."""
    rewritten: int = 0
    """Items answered again after the audit tripped (their earlier records superseded)."""
