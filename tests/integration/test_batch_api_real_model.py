"""Online and through the Batch API emulator, on the real SmolLM2 llama.cpp server: the
same items get the same answers and the same accounting.

Both paths use one ``ChatOpenAI`` on the server at temperature 0, never streamed (so the
server reports its token usage on both), and the emulator runs one request at a time in
file order, which is the order the online driver sends them with ``max_concurrency=1``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoItemError, track_usage
from langchain_autodemo.batch_api import BatchApiJob, OpenAIBatchProvider
from langchain_autodemo.evaluation.datasets import load_dataset
from langchain_autodemo.llamacpp import LlamaCppServer
from tests.integration.batch_api_servers import emulator


@pytest.fixture(scope="module")
def batch_url(smollm2_server: LlamaCppServer) -> Iterator[str]:
    with emulator(smollm2_server.base_url) as url:
        yield url


def _comparable(results: list) -> list:
    return [r.reason if isinstance(r, AutoDemoItemError) else r for r in results]


def test_online_and_batch_api_give_the_same_answers_and_tokens(
    smollm2_server: LlamaCppServer, batch_url: str
) -> None:
    questions = [example.text for example in load_dataset("gsm8k", limit=4).examples]
    llm = smollm2_server.chat_model(streaming=False, disable_streaming=True, max_tokens=160)
    runner = AutoDemoBatchRunnable(
        llm,
        instructions="Solve the math word problem.",
        batch_size=4,
        max_attempts=2,
        max_output_tokens=160,
    )
    with track_usage() as online_usage:
        online = runner.batch(questions, {"max_concurrency": 1}, return_exceptions=True)

    provider = OpenAIBatchProvider(llm, client=llm.root_client.with_options(base_url=batch_url))
    job = BatchApiJob(runner, questions, provider=provider)
    batched = job.wait(poll_interval=0.2, return_exceptions=True)

    assert len(batched) == len(online) == 4
    assert _comparable(batched) == _comparable(online)
    usage = job.usage
    assert not online_usage.estimated_tokens and not usage.estimated_tokens
    assert (usage.calls, usage.reasks, usage.items, usage.failed_items) == (
        online_usage.calls,
        online_usage.reasks,
        online_usage.items,
        online_usage.failed_items,
    )
    assert (usage.input_tokens, usage.output_tokens) == (
        online_usage.input_tokens,
        online_usage.output_tokens,
    )
