"""`autodemo serve` really listens on 127.0.0.1 and coalesces concurrent HTTP requests."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def served() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "langchain_autodemo.cli", "serve", "--model", "fake:answer=sum",
         "--instructions", "Add the numbers.", "--batch-size", "4", "--max-wait", "0.3",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(process.stdout.read().decode() if process.stdout else "")
            try:
                httpx.get(f"{base}/docs", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


async def test_concurrent_invoke_requests_get_their_own_answers(served: str) -> None:
    questions = [f"What is {i} + {i}?" for i in range(1, 7)]
    async with httpx.AsyncClient(base_url=served, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post("/autodemo/invoke", json={"input": q}) for q in questions)
        )
    assert [r.json()["output"] for r in responses] == [str(2 * i) for i in range(1, 7)]


def test_batch_endpoint_keeps_input_order(served: str) -> None:
    response = httpx.post(
        f"{served}/autodemo/batch", json={"inputs": ["1 + 2?", "5 + 5?"]}, timeout=30
    )
    assert response.json()["output"] == ["3", "10"]
