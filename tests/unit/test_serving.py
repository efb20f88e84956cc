"""MicroBatcher and the LangServe app: single requests coalesce into packed calls."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoItemError
from langchain_autodemo.serving import MicroBatcher, create_app
from tests.fakes import ScriptedChatModel, arithmetic_answer, asked_questions, solver, well_formed

QUESTIONS = [f"What is {i} + {i}?" for i in range(1, 11)]


def make_runner(script=None, **kwargs):
    model = ScriptedChatModel(script=script or solver())
    return AutoDemoBatchRunnable(model, batch_size=4, **kwargs), model


async def test_concurrent_requests_are_packed_into_batches() -> None:
    runner, model = make_runner()
    batcher = MicroBatcher(runner, max_wait_seconds=0.5)
    answers = await asyncio.gather(*(batcher.ainvoke(q) for q in QUESTIONS))
    assert answers == [str(2 * i) for i in range(1, 11)]
    assert [len(asked_questions(call)) for call in model.calls] == [4, 4, 2]


async def test_a_lone_request_is_sent_after_the_wait() -> None:
    runner, model = make_runner()
    assert await MicroBatcher(runner, max_wait_seconds=0.01).ainvoke("What is 1 + 1?") == "2"
    assert len(model.calls) == 1


async def test_one_callers_failed_item_does_not_fail_the_others() -> None:
    def skips_first(messages, n):
        return well_formed(
            [q for q in asked_questions(messages) if q != QUESTIONS[0]], arithmetic_answer
        )

    runner, _ = make_runner(skips_first, max_attempts=1)
    batcher = MicroBatcher(runner, max_wait_seconds=0.5)
    results = await asyncio.gather(
        *(batcher.ainvoke(q) for q in QUESTIONS[:4]), return_exceptions=True
    )
    assert isinstance(results[0], AutoDemoItemError)
    assert results[1:] == ["4", "6", "8"]


def test_negative_wait_is_rejected() -> None:
    runner, _ = make_runner()
    with pytest.raises(ValueError, match="max_wait_seconds"):
        MicroBatcher(runner, max_wait_seconds=-1)


async def test_langserve_app_answers_invoke_and_batch_requests() -> None:
    runner, model = make_runner()
    app = create_app(runner, max_wait_seconds=0.2)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        single = await asyncio.gather(
            *(client.post("/autodemo/invoke", json={"input": q}) for q in QUESTIONS[:4])
        )
        batch = await client.post("/autodemo/batch", json={"inputs": QUESTIONS[4:8]})
    assert [r.json()["output"] for r in single] == ["2", "4", "6", "8"]
    assert batch.json()["output"] == ["10", "12", "14", "16"]
    assert len(model.calls) == 2  # four HTTP requests coalesced into one call, plus the batch
