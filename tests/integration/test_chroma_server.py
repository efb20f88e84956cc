"""SimilarityBatchSelector against a real Chroma server (``chroma run``) on 127.0.0.1.

The server is the CLI that ships with chromadb; the fixture picks a free port, waits for
the heartbeat, and stops the process (and removes its data) at the end.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from langchain_autodemo.selector import SimilarityBatchSelector


def groups(selector, texts, batch_size):
    """The index groups of a selector's plan: which inputs share each call."""
    return [list(plan.indices) for plan in selector.plan(texts, batch_size)]


pytestmark = [pytest.mark.integration, pytest.mark.enable_socket]

GSM8K = [
    Path(__file__).resolve().parents[2] / "langchain_autodemo/datasets/data/gsm8k_test.jsonl",
    Path("/work/shared/data/gsm8k_test.jsonl"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _chroma_cli() -> str:
    candidate = Path(sys.executable).with_name("chroma")
    if not candidate.exists():
        pytest.skip("the chroma CLI (shipped with chromadb) is not installed")
    return str(candidate)


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A ``chroma run`` server on a free port; yields (host, port)."""
    host, port = "127.0.0.1", _free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    log = (data / "server.log").open("wb")
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    process = subprocess.Popen(
        [_chroma_cli(), "run", "--host", host, "--port", str(port), "--path", str(data / "db")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # so that stopping it never signals the test runner
    )
    try:
        _wait_for_heartbeat(host, port, process, timeout=60)
        yield host, port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _wait_for_heartbeat(host: str, port: int, process: subprocess.Popen, timeout: float) -> None:
    import chromadb
    from chromadb.config import Settings

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chroma run exited early with code {process.returncode}")
        try:
            client = chromadb.HttpClient(
                host=host, port=port, settings=Settings(anonymized_telemetry=False)
            )
            client.heartbeat()
            return
        except Exception as error:  # noqa: BLE001 - not up yet
            last_error = error
            time.sleep(0.25)
    raise TimeoutError(f"chroma run on {host}:{port} never answered: {last_error}")


@pytest.fixture
def http_client(chroma_server: tuple[str, int]):  # noqa: ANN201 - chromadb ClientAPI
    import chromadb
    from chromadb.config import Settings

    host, port = chroma_server
    return chromadb.HttpClient(host=host, port=port, settings=Settings(anonymized_telemetry=False))


class CountingEmbeddings(Embeddings):
    def __init__(self, inner: Embeddings) -> None:
        self.inner = inner
        self.count = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.count += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def _gsm8k_questions(limit: int) -> list[str]:
    for path in GSM8K:
        if path.exists():
            with path.open() as lines:
                return [json.loads(line)["question"] for line in itertools.islice(lines, limit)]
    pytest.skip("no GSM8K test file")


def test_partition_through_a_chroma_server_caches_vectors_on_the_server(http_client) -> None:
    questions = _gsm8k_questions(200)
    first = SimilarityBatchSelector(client=http_client, collection_name="server-cache")
    batches = groups(first, questions, 16)
    assert sorted(i for b in batches for i in b) == list(range(200))
    assert len(batches) == math.ceil(200 / 16)
    assert first.collection.count() == len(set(questions))

    counting = CountingEmbeddings(first.embeddings)
    second = SimilarityBatchSelector(counting, client=http_client, collection_name="server-cache")
    second.embedding_key = first.embedding_key  # same model behind a counting wrapper
    assert groups(second, questions, 16) == batches
    assert counting.count == 0 and second.last_stats.cached == len(set(questions))


async def test_async_neighbors_mode_through_a_chroma_server(http_client) -> None:
    questions = _gsm8k_questions(40)
    selector = SimilarityBatchSelector(
        client=http_client, collection_name="server-neighbors", grouping="neighbors"
    )
    plans = await selector.aplan(questions, 4)
    assert len(plans) == 40
    assert all(p.indices[0] == i and p.keep == frozenset({i}) for i, p in enumerate(plans))


def test_demo_pool_is_retrieved_from_a_collection_on_the_server(http_client) -> None:
    questions = _gsm8k_questions(60)
    pool = [(q, f"answer {i}") for i, q in enumerate(questions[20:])]
    selector = SimilarityBatchSelector(
        client=http_client,
        collection_name="server-demos",
        grouping="demo_pool",
        demo_pool=pool,
        demos_per_batch=3,
    )
    plans = selector.plan(questions[:25], 8)  # inputs 20..24 are also in the pool
    assert len(plans) == 4
    names = {c.name if hasattr(c, "name") else c for c in http_client.list_collections()}
    assert any(str(n).startswith("server-demos-pool-") for n in names)
    for plan in plans:
        own = {questions[i] for i in plan.indices}
        assert len(plan.demonstrations) == 3
        assert not own & {q for q, _ in plan.demonstrations}


def test_a_server_collection_with_another_dimension_is_a_clear_error(http_client) -> None:
    groups(
        SimilarityBatchSelector(
            DeterministicFakeEmbedding(size=8), client=http_client, collection_name="server-dims"
        ),
        ["a", "b"],
        2,
    )
    other = SimilarityBatchSelector(
        DeterministicFakeEmbedding(size=24), client=http_client, collection_name="server-dims"
    )
    with pytest.raises(ValueError, match="'server-dims'.*8-dimensional.*24-dimensional"):
        groups(other, ["c"], 2)
