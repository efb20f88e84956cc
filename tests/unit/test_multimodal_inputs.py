"""A question with an image (or audio, a file) is never answered from its text alone.

The runner sends questions as text: an input whose question message (or system prompt)
holds non-text parts gets an explicit per-item ``AutoDemoInputError`` naming the item
and the kinds of content, in every mode and through every entry point; its neighbours
are answered. Content blocks of text only are joined as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.errors import AutoDemoInputError
from langchain_autodemo.parser import non_text_kinds
from tests.fakes import ScriptedChatModel, solver

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
PARTS = [{"type": "text", "text": "What is 3 + 4 in the picture?"}, IMAGE]


def multimodal_inputs() -> dict[str, Any]:
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer."),
            (
                "human",
                [
                    {"type": "text", "text": "{question}"},
                    {"type": "image_url", "image_url": {"url": "{image}"}},
                ],
            ),
        ]
    )
    return {
        "message": HumanMessage(content=PARTS),
        "message list": [SystemMessage("Answer."), HumanMessage(content=PARTS)],
        "message dicts": [{"role": "user", "content": PARTS}],
        "chat prompt value": prompt.invoke(
            {"question": "What is 3 + 4?", "image": "data:image/png;base64,AA"}
        ),
        "audio": [
            HumanMessage(
                content=[
                    {"type": "text", "text": "1 + 2?"},
                    {"type": "input_audio", "input_audio": {}},
                ]
            )
        ],
        "image in the system prompt": [
            SystemMessage(content=[{"type": "text", "text": "Use this chart."}, IMAGE]),
            HumanMessage("What is 3 + 4?"),
        ],
    }


def make_runner(**kwargs: Any) -> tuple[AutoDemoBatchRunnable, ScriptedChatModel]:
    model = ScriptedChatModel(script=solver())
    return AutoDemoBatchRunnable(model, batch_size=4, **kwargs), model


def sent_text(model: ScriptedChatModel) -> str:
    return "\n".join(str(m.content) for call in model.calls for m in call)


def test_non_text_kinds_names_what_text_cannot_carry() -> None:
    assert non_text_kinds(HumanMessage(content=PARTS)) == ["image_url"]
    assert non_text_kinds(HumanMessage(content=[{"type": "text", "text": "a"}, "b"])) == []
    assert non_text_kinds(HumanMessage("plain")) == []


@pytest.mark.parametrize("mode", ["auto_demo", "batch", "single"])
@pytest.mark.parametrize("kind", list(multimodal_inputs()))
def test_a_multimodal_input_is_its_own_explicit_error(kind: str, mode: str) -> None:
    runner, model = make_runner(mode=mode)
    item = multimodal_inputs()[kind]
    results = runner.batch(["What is 1 + 1?", item, "What is 2 + 2?"], return_exceptions=True)
    assert results[0] == "2" and results[2] == "4"
    error = results[1]
    assert isinstance(error, AutoDemoInputError) and error.index == 1
    assert "non-text content" in str(error) and "ask it alone" in str(error)
    expected = "input_audio" if kind == "audio" else "image_url"
    assert expected in str(error)
    assert "3 + 4" not in sent_text(model)  # never asked from its text alone


def test_without_return_exceptions_it_is_raised_before_any_call() -> None:
    runner, model = make_runner()
    with pytest.raises(AutoDemoInputError, match="image_url"):
        runner.batch(["What is 1 + 1?", HumanMessage(content=PARTS)])
    assert model.calls == []


def test_abatch_and_the_coalescer_refuse_it_for_its_caller_alone() -> None:
    runner, model = make_runner()

    async def main() -> list[Any]:
        coalesced = runner.with_coalescing(max_wait_seconds=0.2)
        return await asyncio.gather(
            runner.abatch([HumanMessage(content=PARTS)], return_exceptions=True),
            coalesced.ainvoke([HumanMessage(content=PARTS)]),
            coalesced.ainvoke("What is 5 + 5?"),
            return_exceptions=True,
        )

    (from_abatch,), from_coalescer, neighbour = asyncio.run(main())
    assert isinstance(from_abatch, AutoDemoInputError) and "image_url" in str(from_abatch)
    assert isinstance(from_coalescer, AutoDemoInputError) and from_coalescer.index == 0
    assert neighbour == "10"
    assert "3 + 4" not in sent_text(model)


def test_text_only_content_blocks_are_still_asked() -> None:
    runner, _ = make_runner()
    blocks = HumanMessage(content=[{"type": "text", "text": "What is 3 + 4?"}])
    assert runner.batch([blocks, [blocks]]) == ["7", "7"]


def test_an_image_in_the_shared_context_is_sent_as_it_is() -> None:
    # Context turns other than the system prompt are sent as messages, parts and all.
    runner, model = make_runner()
    context = [HumanMessage(content=PARTS), AIMessage("It shows 3 and 4.")]
    assert runner.batch([[*context, HumanMessage("What is 3 + 4?")]]) == ["7"]
    sent = [m for call in model.calls for m in call]
    assert any(isinstance(m.content, list) and IMAGE in m.content for m in sent)
