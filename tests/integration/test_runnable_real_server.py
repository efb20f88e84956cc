"""AutoDemoBatchRunnable against a real llama.cpp server (SmolLM2-135M) over HTTP.

SmolLM2 follows the Auto-Demo format badly, which is the point: its real output drives
the recovery paths (missing, garbled, runaway and truncated items). Whatever it writes,
every input must come back exactly once, in order, as an answer or an explicit error.
"""

from __future__ import annotations

import pytest

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoItemError, ItemResult, track_usage
from langchain_autodemo.llamacpp import LlamaCppServer
from langchain_autodemo.prompts import one_line

QUESTIONS = [
    "What is 2 + 3?",
    "What is 10 - 4?",
    "What is the capital of France?",
    "How many legs does a dog have?",
    "What is 6 times 7?",
    "What colour is the sky on a clear day?",
]


def runner_for(server: LlamaCppServer, **kwargs) -> AutoDemoBatchRunnable:
    return AutoDemoBatchRunnable(
        server.chat_model(max_tokens=200),
        instructions="Answer each question briefly.",
        batch_size=3,
        max_attempts=2,
        include_details=True,
        **kwargs,
    )


def assert_one_result_per_input_in_order(results: list, inputs: list[str]) -> None:
    assert len(results) == len(inputs)
    for index, result in enumerate(results):
        if isinstance(result, AutoDemoItemError):
            assert result.index == index and result.reason
            continue
        assert isinstance(result, ItemResult) and result.index == index
        assert str(result.answer).strip()
        if result.restated_question is not None:  # the echo matched this very input
            assert result.restated_question.split()[:2] == one_line(inputs[index]).split()[:2]


def test_batch_over_streaming_http_gives_every_item_a_result_or_error(
    smollm2_server: LlamaCppServer,
) -> None:
    with track_usage() as usage:
        results = runner_for(smollm2_server).batch(QUESTIONS, return_exceptions=True)
    assert_one_result_per_input_in_order(results, QUESTIONS)
    assert usage.calls >= 2 and usage.items + usage.failed_items == len(QUESTIONS)
    # counted by the server's tokenizer, or estimated (flagged) for a stream read only in part
    assert usage.output_tokens > 0


async def test_abatch_over_streaming_http_gives_every_item_a_result_or_error(
    smollm2_server: LlamaCppServer,
) -> None:
    results = await runner_for(smollm2_server, mode="batch").abatch(
        QUESTIONS[:4], return_exceptions=True
    )
    assert_one_result_per_input_in_order(results, QUESTIONS[:4])


def test_batch_as_completed_yields_each_index_once(smollm2_server: LlamaCppServer) -> None:
    seen = [
        index
        for index, _ in runner_for(smollm2_server).batch_as_completed(
            QUESTIONS[:4], return_exceptions=True
        )
    ]
    assert sorted(seen) == [0, 1, 2, 3]


@pytest.mark.parametrize("max_tokens", [40])
def test_a_tight_token_limit_ends_in_answers_or_explicit_truncation_errors(
    smollm2_server: LlamaCppServer, max_tokens: int
) -> None:
    runner = AutoDemoBatchRunnable(
        smollm2_server.chat_model(max_tokens=max_tokens), batch_size=3, max_attempts=2
    )
    results = runner.batch(QUESTIONS[:3], return_exceptions=True)
    assert len(results) == 3
    assert all(isinstance(r, (str, AutoDemoItemError)) for r in results)
