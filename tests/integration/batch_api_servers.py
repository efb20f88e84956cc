"""Start the Batch API test servers as real processes on 127.0.0.1.

- :func:`scripted_upstream`: the test double chat server (:mod:`tests.scripted_chat_server`);
- :func:`emulator`: ``autodemo emulate-batch-api`` in front of an upstream.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def environment() -> dict[str, str]:
    """This checkout first on the path, for every process a test starts."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextmanager
def scripted_upstream() -> Iterator[str]:
    """The scripted chat server (a test double); yields its base URL (``.../v1``)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.scripted_chat_server"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=environment(),
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("PORT "), f"the scripted server did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        _stop(process)


@contextmanager
def emulator(upstream: str, *args: str) -> Iterator[str]:
    """``autodemo emulate-batch-api --upstream UPSTREAM ARGS``; yields its base URL."""
    port = _free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "langchain_autodemo.cli", "emulate-batch-api",
             "--upstream", upstream, "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=environment(),
            start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise AssertionError(f"the emulator exited: {log.read().decode()}")
                try:
                    with urllib.request.urlopen(f"{url}/batches", timeout=2):
                        break
                except (urllib.error.URLError, OSError):
                    assert time.monotonic() < deadline, "the emulator did not start"
                    time.sleep(0.1)
            yield url
        finally:
            _stop(process)
