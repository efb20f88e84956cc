"""What the cookbook notebooks share: their model server (``$AUTODEMO_MODEL``), tables, ports.

Every notebook talks to its model the LangChain way, through an OpenAI-compatible
endpoint on 127.0.0.1::

    server = start_model_server()
    llm = ChatOpenAI(base_url=server.base_url, api_key="none", model=server.model, temperature=0)

and this module only decides which server that is:

==================================  =====================================================
``AUTODEMO_MODEL``                  server
==================================  =====================================================
*(unset)*                           the local Qwen2.5-Coder-1.5B-Instruct (``make models``)
                                    on a llama.cpp server started here, on a free port
``llamacpp:KEY_OR_PATH``            another GGUF file the same way (``llamacpp:smollm2``)
``openai-compatible:URL[#MODEL]``   a server that is already running; nothing is started
``fake:``                           the test suite's scripted chat server (a test double,
                                    ``tests/scripted_chat_server.py``: it answers with the
                                    sum of the numbers in each question, in milliseconds)
==================================  =====================================================

For an API model, leave this module out: ``ChatOpenAI(model="gpt-4o-mini")`` is the
same runner's model.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_autodemo.llamacpp import LlamaCppServer

__all__ = ["DEFAULT_SPEC", "ModelServer", "free_port", "start_model_server", "table", "wait_for"]

#: What the notebooks run on when ``$AUTODEMO_MODEL`` is unset (their saved outputs).
DEFAULT_SPEC = "llamacpp:qwen2.5-coder-1.5b"

_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ModelServer:
    """An OpenAI-compatible chat endpoint: where it is, which model, how to stop it."""

    base_url: str
    model: str
    description: str
    spec: str
    _stop: Callable[[], None] = field(default=lambda: None, repr=False)

    @property
    def cli_spec(self) -> str:
        """The same endpoint as an ``autodemo --model`` spec (one server for the CLI too)."""
        return f"openai-compatible:{self.base_url}#{self.model}"

    @property
    def is_test_double(self) -> bool:
        return self.spec.startswith("fake:")

    def stop(self) -> None:
        """Stop the server if this module started it (safe to call twice)."""
        stop, self._stop = self._stop, lambda: None
        stop()


def start_model_server(spec: str | None = None, *, n_ctx: int = 8192) -> ModelServer:
    """Start (or find) the server ``spec`` names, default ``$AUTODEMO_MODEL``.

    It is stopped by :meth:`ModelServer.stop`, and at the latest when the notebook's
    kernel exits.
    """
    spec = (spec if spec is not None else os.environ.get("AUTODEMO_MODEL", "")).strip()
    spec = spec or DEFAULT_SPEC
    kind, _, target = spec.partition(":")
    if kind == "llamacpp":
        # (LlamaCppServer starts it with --interrupt_requests False: concurrent requests
        # queue instead of cutting each other's streams off.)
        llama = LlamaCppServer(target, n_ctx=n_ctx, startup_timeout=600).start()
        atexit.register(llama.stop)
        return ModelServer(
            llama.base_url,
            llama.model_alias,
            f"{llama.model_path.name} on a local llama.cpp server ({llama.n_threads} CPU threads)",
            spec,
            llama.stop,
        )
    if kind == "openai-compatible":
        url, _, model = target.partition("#")
        return ModelServer(url.rstrip("/"), model or "default", f"{model} at {url}", spec)
    if kind == "fake":
        return _scripted_server(target, spec)
    raise ValueError(
        f"AUTODEMO_MODEL={spec!r}: use llamacpp:KEY_OR_PATH, openai-compatible:URL#MODEL or "
        "fake: (or leave it unset for the local Qwen model)"
    )


def _scripted_server(options: str, spec: str) -> ModelServer:
    path = os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.scripted_chat_server"],
        stdout=subprocess.PIPE,
        cwd=_ROOT,
        env=env,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"the scripted chat server did not start: {line!r}")

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)

    atexit.register(stop)
    model = f"scripted:{options}" if options else "scripted"
    return ModelServer(
        f"http://127.0.0.1:{int(line.split()[1])}/v1",
        model,
        "the scripted test double (answers = the sum of the numbers in each question; "
        "not a real model: these outputs only show that the notebook runs)",
        spec,
        stop,
    )


def table(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Rows of dicts as a Markdown table (rendered in Jupyter and on GitHub)."""
    from IPython.display import Markdown

    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
        *("| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows),
    ]
    return Markdown("\n".join(lines))


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[Any] | None = None, timeout: float = 120) -> None:
    """Wait until ``GET url`` answers (any HTTP status); fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - 127.0.0.1 only
                return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answered at {url} within {timeout:.0f} s") from None
            time.sleep(0.2)
