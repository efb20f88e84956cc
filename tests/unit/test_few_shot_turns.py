"""A chat prompt's few-shot turns reach a packed call as solved demonstrations in the
package's layout (issue 22): a ``FewShotChatMessagePromptTemplate`` before the question
no longer shows the model plain turns right before a ``Q[i]/A[i]`` request."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import (
    ChatPromptTemplate,
    FewShotChatMessagePromptTemplate,
)

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.prompts import few_shot_turns
from langchain_autodemo.testing import ScriptedChatModel
from tests.fakes import asked_questions, well_formed

EXAMPLES = [
    {"review": "a joyous, moving film", "label": "positive"},
    {"review": "dull and far too long", "label": "negative"},
]


def prompt() -> ChatPromptTemplate:
    shots = FewShotChatMessagePromptTemplate(
        examples=EXAMPLES,
        example_prompt=ChatPromptTemplate.from_messages([("human", "{review}"), ("ai", "{label}")]),
    )
    return ChatPromptTemplate.from_messages(
        [("system", "Classify the sentiment: positive or negative."), shots, ("human", "{review}")]
    )


def labeller() -> ScriptedChatModel:
    def script(messages: list[Any], _: int) -> str:
        questions = asked_questions(messages)
        if not questions:  # single: the last human message is the question
            return "The answer is positive." if "good" in str(messages[-1].content) else (
                "The answer is negative.")  # fmt: skip
        return well_formed(questions, lambda q: "positive" if "good" in q else "negative")

    return ScriptedChatModel(script=script)


def test_the_templates_turns_are_split_from_the_system_prompt() -> None:
    messages = prompt().invoke({"review": "good"}).to_messages()[:-1]
    rest, shots = few_shot_turns(messages)
    assert [m.type for m in rest] == ["system"]
    assert shots == (("a joyous, moving film", "positive"), ("dull and far too long", "negative"))


def test_a_context_that_is_not_only_plain_pairs_stays_as_it_is() -> None:
    system = SystemMessage("Be brief.")
    tool_call = AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": "1"}])
    for context in (
        [system, HumanMessage("hi")],  # an unanswered turn
        [system, AIMessage("hello")],  # an AI message alone
        [system, HumanMessage("hi"), tool_call, ToolMessage("x", tool_call_id="1")],
        [system, HumanMessage("hi"), AIMessage("")],  # an empty answer
        [system, HumanMessage([{"type": "text", "text": "hi"}]), AIMessage("ok")],  # parts
    ):
        assert few_shot_turns(context) == (tuple(context), ())
    assert few_shot_turns([]) == ((), ())


def test_a_packed_call_shows_the_turns_as_demonstrations_in_its_own_layout() -> None:
    model = labeller()
    runner = AutoDemoBatchRunnable(model, batch_size=4, reasoning=True)
    chain = prompt() | runner
    reviews = ["good fun", "bad acting", "good cast", "bad plot"]
    assert chain.batch([{"review": r} for r in reviews]) == [
        "positive", "negative", "positive", "negative",
    ]  # fmt: skip
    [messages] = model.calls
    assert [m.type for m in messages] == ["system", "human", "ai", "human"]
    assert "Classify the sentiment" in str(messages[0].content)
    assert "Q[1]: a joyous, moving film" in str(messages[1].content)
    assert str(messages[2].content).startswith("Q[1]: a joyous, moving film\nA[1]: positive")
    assert asked_questions(messages) == reviews


def test_a_single_call_keeps_them_as_turns_and_terse_runs_show_final_answers() -> None:
    model = labeller()
    runner = AutoDemoBatchRunnable(model, mode="single", reasoning=False)
    assert (prompt() | runner).invoke({"review": "good fun"}) == "positive"
    [messages] = model.calls
    assert [m.type for m in messages] == ["system", "human", "ai", "human", "ai", "human"]
    assert [str(m.content) for m in messages[1:5]] == [
        "a joyous, moving film", "positive", "dull and far too long", "negative",
    ]  # fmt: skip


def test_a_restatement_of_a_turns_question_is_no_inputs_answer() -> None:
    def script(messages: list[Any], call: int) -> str:
        questions = asked_questions(messages)
        if call == 1:  # re-answers the first example in place of the first input
            return well_formed(["a joyous, moving film", *questions[1:]], lambda q: "positive")
        return well_formed(questions, lambda q: "negative")

    model = ScriptedChatModel(script=script)
    runner = AutoDemoBatchRunnable(model, batch_size=2)
    results = (prompt() | runner).batch([{"review": "meh"}, {"review": "so-so"}])
    assert results == ["negative", "positive"]  # the first was re-asked, never "positive"
    assert len(model.calls) == 2
