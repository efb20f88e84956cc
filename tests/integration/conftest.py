"""Fixtures for the integration tests: real llama.cpp servers on 127.0.0.1.

Every test under ``tests/integration`` is marked ``integration`` and
``enable_socket`` (pytest-socket) here, so none needs to repeat the markers.
The model files are assembled by ``make models``; nothing is downloaded here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from langchain_autodemo.llamacpp import LlamaCppServer
from langchain_autodemo.local_models import TEST_MODEL, find_model

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.enable_socket)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF (``make models`` puts it in ``models/``; see
    :func:`~langchain_autodemo.local_models.find_model`)."""
    return find_model(TEST_MODEL)


@pytest.fixture(scope="session")
def smollm2_server(smollm2_path: Path) -> Iterator[LlamaCppServer]:
    """One llama.cpp server on SmolLM2-135M for the whole session.

    ``n_ctx`` 8192 so that batch prompts fit; completions default to 512 tokens
    (``server.chat_model(max_tokens=...)`` overrides it) to keep tests fast.
    """
    with LlamaCppServer(smollm2_path, n_ctx=8192, max_tokens=512) as server:
        yield server


REPO_ROOT = _HERE.parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def autodemo_serve(*args: str) -> Iterator[str]:
    """``autodemo serve ARGS`` as a real process on 127.0.0.1; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "langchain_autodemo.cli", "serve", *args, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise AssertionError(f"autodemo serve exited early:\n{output}")
            try:
                httpx.get(f"{base}/docs", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
