"""Structured output as models write it: fenced JSON (```json ... ```), JSON over several
lines, JSON after "The answer is", in single and packed calls, with and without reasoning,
sync and async. LangChain's own PydanticOutputParser reads each of these from a whole
completion; an answer cut out of a packed one must read the same."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from pydantic import BaseModel

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.markers import Markers
from langchain_autodemo.parser import CompletionScanner, json_candidate
from langchain_autodemo.testing import ScriptedChatModel
from tests.fakes import asked_questions


class Sentiment(BaseModel):
    label: str
    score: float


OBJECT = '{"label": "pos", "score": 0.9}'
LAYOUTS = {
    "fenced": f"```json\n{OBJECT}\n```",
    "fenced_plain": f"```\n{OBJECT}\n```",
    "multi_line": '{\n  "label": "pos",\n  "score": 0.9\n}',
    "one_line": OBJECT,
}
REASONED = {
    "after_the_answer_is_fenced": f"Let me think.\nThe answer is ```json\n{OBJECT}\n```",
    "after_the_answer_is": f"Let me think.\nThe answer is {OBJECT}.",
    **LAYOUTS,
}


def _runner(text: str, mode: str, reasoning: bool) -> AutoDemoBatchRunnable:
    def script(messages: list[BaseMessage], _: int) -> str:
        questions = asked_questions(messages)
        if not questions:
            return text
        restate = mode == "auto_demo"
        return "\n\n".join(
            (f"Q[{i}]: {q}\n" if restate else "") + f"A[{i}]: {text}"
            for i, q in enumerate(questions, 1)
        )

    return AutoDemoBatchRunnable(
        ScriptedChatModel(script=script),
        mode=mode,
        batch_size=3,
        reasoning=reasoning,
        output_parser=Sentiment,
        max_attempts=1,
    )


QUESTIONS = ["Is 'great film' positive?", "Is 'loved it' positive?", "Is 'superb' positive?"]


@pytest.mark.parametrize("mode", ["single", "batch", "auto_demo"])
@pytest.mark.parametrize("layout", sorted(REASONED))
@pytest.mark.parametrize("entry", ["batch", "abatch"])
def test_reasoned_answers_parse_in_every_mode(mode: str, layout: str, entry: str) -> None:
    runner = _runner(REASONED[layout], mode, reasoning=True)
    results = (
        runner.batch(QUESTIONS, return_exceptions=True)
        if entry == "batch"
        else asyncio.run(runner.abatch(QUESTIONS, return_exceptions=True))
    )
    assert results == [Sentiment(label="pos", score=0.9)] * 3, results


@pytest.mark.parametrize("mode", ["single", "batch", "auto_demo"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_terse_answers_parse_in_every_mode(mode: str, layout: str) -> None:
    runner = _runner(LAYOUTS[layout], mode, reasoning=False)
    assert (
        runner.batch(QUESTIONS, return_exceptions=True) == [Sentiment(label="pos", score=0.9)] * 3
    )


def test_a_fenced_answer_is_read_to_its_closing_fence_chunk_by_chunk() -> None:
    text = (
        'A[1]: Thinking.\nThe answer is ```json\n{\n"label": "neg",\n"score": 0.1}\n```\n\nA[2]: x'
    )
    for size in (1, 3, 7, 1000):
        scanner = CompletionScanner(Markers(), reasoning=True)
        items = []
        for at in range(0, len(text), size):
            items += scanner.feed(text[at : at + size])
        items += scanner.finish()
        first = items[0]
        assert first.index == 1 and first.value == '{\n"label": "neg",\n"score": 0.1}', size


def test_an_unclosed_json_answer_is_not_guessed() -> None:
    """A terse answer that opens a JSON value the next marker cuts: no value is read from
    it; the item is re-asked (here: its one attempt ends in an error)."""
    runner = _runner('{"label": "pos",', "auto_demo", reasoning=False)
    results = runner.batch(QUESTIONS, return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)


def test_json_candidate() -> None:
    assert json_candidate(f"json\n{OBJECT}\n```") == OBJECT
    assert json_candidate(f"Here it is: {OBJECT} done") == OBJECT
    assert json_candidate("[1, 2]") == "[1, 2]"
    assert json_candidate("no json") is None
    assert json_candidate("{broken") is None
    draft = '{"label": "neg", "score": 0.2}'
    assert json_candidate(f"First thought {draft}, but no: {OBJECT}") == OBJECT


def test_a_plain_label_answer_is_unchanged() -> None:
    """Nothing of this touches answers that are not JSON or fenced."""

    def script(messages: list[BaseMessage], _: int) -> Any:
        return "\n".join(f"A[{i}]: positive" for i, _q in enumerate(asked_questions(messages), 1))

    runner = AutoDemoBatchRunnable(
        ScriptedChatModel(script=script), mode="batch", batch_size=3, reasoning=False
    )
    assert runner.batch(QUESTIONS) == ["positive"] * 3


@pytest.mark.parametrize("reasoning", [True, False])
def test_the_packed_layout_asks_for_the_json_object_where_it_asks_for_each_answer(
    reasoning: bool,
) -> None:
    """A small model follows the layout's "A[i]: <final answer>" and forgets a schema given
    above it (Qwen 1.5B: 0/16 parsed in batch and auto_demo before): the layout says it."""
    seen: list[list[BaseMessage]] = []

    def script(messages: list[BaseMessage], _: int) -> str:
        seen.append(messages)
        return "\n".join(f"A[{i}]: {OBJECT}" for i in range(1, 4))

    runner = AutoDemoBatchRunnable(
        ScriptedChatModel(script=script), mode="batch", batch_size=3, reasoning=reasoning,
        output_parser=Sentiment, max_attempts=1,
    )  # fmt: skip
    runner.batch(QUESTIONS, return_exceptions=True)
    layout = str(seen[0][-1].content)
    assert "one JSON object on one line" in layout
    plain = AutoDemoBatchRunnable(ScriptedChatModel(script=script), mode="batch", batch_size=3)
    assert plain.settings.answer_format is None  # free text: the layout is unchanged
