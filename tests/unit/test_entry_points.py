"""Every entry point asks the same prompt for the same inputs: they all go through the
runner's one planning step (``runner.plan``), so chat context (a system message, few-shot
turns), per-item templates and shared exemplars reach the model alike from ``batch``,
``abatch``, both ``as_completed`` variants, the in-process coalescer and a Batch API job."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.prompts import ChatPromptTemplate

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.testing import ScriptedAutoDemoModel
from tests.unit.test_batch_api import InMemoryBatchProvider

QUESTION_LINE = re.compile(r"^Q\[\d+\]: .*$", re.MULTILINE)
PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "You are a careful calculator."),
        ("human", "What is 100 + 1?"),
        ("ai", "The answer is 101."),
        ("human", "{q}"),
    ]
)
CHAT_INPUTS = [PROMPT.invoke({"q": f"What is {i} + {i}?"}) for i in range(1, 5)]
DICT_INPUTS = [{"a": str(i), "b": str(10 * i)} for i in range(1, 5)]
EXEMPLARS = [("What is 7 + 7?", "Seven and seven.\nThe answer is 14.")]


def _call_shape(messages: list[BaseMessage]) -> tuple[Any, ...]:
    """A call as the model sees it; the questions as a set (a coalescer packs them in
    arrival order)."""
    *head, last = messages
    text = str(last.content)
    return (
        tuple((m.type, str(m.content)) for m in head),
        QUESTION_LINE.sub("Q[i]: ...", text),
        frozenset(line.split(": ", 1)[1] for line in QUESTION_LINE.findall(text)),
    )


def _runner(model: ScriptedAutoDemoModel, **kwargs: Any) -> AutoDemoBatchRunnable:
    return AutoDemoBatchRunnable(
        model, instructions="Add.", batch_size=4, demonstrations=EXEMPLARS, **kwargs
    )


def _via_batch_api(inputs: list[Any], **kwargs: Any) -> list[tuple[Any, ...]]:
    provider = InMemoryBatchProvider()
    runner = _runner(ScriptedAutoDemoModel(), **kwargs)
    job = runner.submit_batch_job(inputs, provider=provider)
    job.wait(poll_interval=0)
    sent = [line["body"]["messages"] for _, lines in provider.batches.values() for line in lines]
    return [_call_shape(convert_to_messages(messages)) for messages in sent]


def _online(entry: str, inputs: list[Any], **kwargs: Any) -> list[tuple[Any, ...]]:
    model = ScriptedAutoDemoModel()
    runner = _runner(model, **kwargs)
    if entry == "batch":
        runner.batch(inputs)
    elif entry == "abatch":
        asyncio.run(runner.abatch(inputs))
    elif entry == "batch_as_completed":
        list(runner.batch_as_completed(inputs))
    elif entry == "abatch_as_completed":

        async def drain() -> None:
            async for _ in runner.abatch_as_completed(inputs):
                pass

        asyncio.run(drain())
    elif entry == "coalesced_invoke":
        coalesced = runner.with_coalescing(max_wait_seconds=0.5)
        threads = [threading.Thread(target=coalesced.invoke, args=(x,)) for x in inputs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    elif entry == "coalesced_ainvoke":
        coalesced = runner.with_coalescing(max_wait_seconds=0.5)

        async def gather() -> None:
            await asyncio.gather(*(coalesced.ainvoke(x) for x in inputs))

        asyncio.run(gather())
    return [_call_shape(call) for call in model.calls]


ENTRIES = [
    "batch",
    "abatch",
    "batch_as_completed",
    "abatch_as_completed",
    "coalesced_invoke",
    "coalesced_ainvoke",
]


@pytest.mark.parametrize("entry", ENTRIES + ["batch_api"])
@pytest.mark.parametrize(
    ("inputs", "kwargs"),
    [(CHAT_INPUTS, {}), (DICT_INPUTS, {"input_template": "What is {a} + {b}?"})],
    ids=["chat-prompt", "template"],
)
def test_every_entry_point_sends_the_same_messages(entry: str, inputs, kwargs) -> None:
    expected = _online("batch", inputs, **kwargs)
    sent = (
        _via_batch_api(inputs, **kwargs)
        if entry == "batch_api"
        else _online(entry, inputs, **kwargs)
    )
    assert sent == expected
    (call,) = expected  # one packed call of four
    assert len(call[2]) == 4 and any("What is 7 + 7?" in c for _, c in call[0])  # exemplar
    if inputs is DICT_INPUTS:
        assert "What is 1 + 10?" in call[2]  # rendered by the template
        return
    head = dict(enumerate(call[0]))  # the chat context is shared, not mixed
    assert head[0][0] == "system" and head[0][1].startswith("You are a careful calculator.")
    # the chat prompt's (human, AI) example becomes a solved demonstration after the shared
    # exemplar, in the call's Q[i]/A[i] layout (prompts.few_shot_turns)
    demos = next(content for role, content in call[0] if role == "ai")
    assert "Q[1]: What is 7 + 7?" in demos  # shared exemplar
    assert "Q[2]: What is 100 + 1?\nA[2]: The answer is 101." in demos
    assert len(call[2]) == 4


def test_the_batch_api_keeps_two_chat_contexts_apart() -> None:
    other = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{q}")])
    inputs = [*CHAT_INPUTS[:2], other.invoke({"q": "What is 9 + 9?"})]
    sent = _via_batch_api(inputs)
    assert sorted(map(str, sent)) == sorted(map(str, _online("batch", inputs)))
    systems = {call[0][0][1].split("\n")[0] for call in sent}
    assert systems == {"You are a careful calculator.", "Be brief."}


def test_plan_is_pure_and_names_the_contexts() -> None:
    runner = _runner(ScriptedAutoDemoModel())
    plan = runner.plan(CHAT_INPUTS)
    assert plan.texts == tuple(f"What is {i} + {i}?" for i in range(1, 5))
    (batch,) = plan.batches
    assert batch.indices == (0, 1, 2, 3)
    # the runner's exemplars, then the chat prompt's example turns as demonstrations
    assert batch.demonstrations == (*EXEMPLARS, ("What is 100 + 1?", "The answer is 101."))
    assert [m.type for m in batch.context] == ["system"]
