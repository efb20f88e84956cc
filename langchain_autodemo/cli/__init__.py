"""``autodemo``: run and evaluate Auto-Demo batch prompting from the command line.

- ``autodemo run INPUT.jsonl -o OUTPUT.jsonl``: answer every record, resumably.
- ``autodemo eval --dataset gsm8k``: compare methods and batch sizes; JSON, Markdown, plots.
- ``autodemo serve``: a LangServe endpoint whose concurrent requests share packed calls.
- ``autodemo models fetch NAME`` / ``autodemo models list``: the local GGUF models.

The command needs the ``cli`` extra (``pip install 'langchain-autodemo[cli]'``); the
library itself does not. Importing this package changes nothing in its host: the
environment and logging tweaks the commands want are made when a command runs.
docs/guides/cli.md is the guide and docs/reference/cli.md the generated reference.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

__all__ = ["app", "main"]

#: What the ``cli`` extra installs (and ``autodemo`` imports).
CLI_EXTRA_MODULES = ("typer", "tqdm", "matplotlib")


def main() -> None:
    """The ``autodemo`` console script: a one-line message if the ``cli`` extra is missing."""
    missing = [name for name in CLI_EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(
            f"autodemo needs the 'cli' extra, and {', '.join(missing)} is not installed: "
            "pip install 'langchain-autodemo[cli]'"
        )
    from langchain_autodemo.cli.commands import app

    app()


def __getattr__(name: str) -> Any:  # typer loads only when the command line is used
    if name == "app":
        from langchain_autodemo.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
