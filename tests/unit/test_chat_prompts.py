"""Chat prompts: shared context goes once into the packed call, each item's own last human
message is its question, and items whose contexts differ never share a call."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, FewShotChatMessagePromptTemplate

from langchain_autodemo import AutoDemoBatchRunnable, PlannedBatch
from langchain_autodemo.errors import AutoDemoInputError
from langchain_autodemo.planning import BatchSelector, SequentialSelector, split_by_token_budget
from langchain_autodemo.prompts import build_batch_messages, context_key, split_chat
from tests.fakes import (
    ScriptedChatModel,
    arithmetic_answer,
    asked_questions,
    solver,
    well_formed,
)

SYSTEM = "You are a terse calculator."
QUESTIONS = [f"What is {i} + {10 * i}?" for i in range(1, 7)]
EXPECTED = [str(11 * i) for i in range(1, 7)]


def make_runner(script=None, **kwargs) -> tuple[AutoDemoBatchRunnable, ScriptedChatModel]:
    model = ScriptedChatModel(script=script or solver())
    kwargs.setdefault("batch_size", 4)
    return AutoDemoBatchRunnable(model, **kwargs), model


def roles(messages: list[BaseMessage]) -> list[str]:
    return [m.type for m in messages]


# -- the pure split ---------------------------------------------------------------------


def test_split_chat_keeps_everything_before_the_last_human_message_as_context() -> None:
    messages = [SystemMessage(SYSTEM), HumanMessage("1+1?"), AIMessage("2"), HumanMessage("2+2?")]
    context, question = split_chat(messages)
    assert context == tuple(messages[:3]) and question == "2+2?"


@pytest.mark.parametrize(
    "messages", [[], [SystemMessage(SYSTEM)], [HumanMessage("1+1?"), AIMessage("2")]]
)
def test_split_chat_needs_a_last_human_message(messages) -> None:
    with pytest.raises(ValueError):
        split_chat(messages)


def test_context_key_ignores_message_ids_but_not_content_or_role() -> None:
    assert context_key([SystemMessage(SYSTEM, id="a")]) == context_key([SystemMessage(SYSTEM)])
    assert context_key([SystemMessage(SYSTEM)]) != context_key([SystemMessage("Be kind.")])
    assert context_key([SystemMessage(SYSTEM)]) != context_key([HumanMessage(SYSTEM)])


def test_the_context_comes_once_before_the_packed_turn_and_system_prompts_merge() -> None:
    context = [SystemMessage(SYSTEM), HumanMessage("1+1?"), AIMessage("2")]
    messages = build_batch_messages(["3+3?", "4+4?"], instructions="Add.", context=context)
    assert roles(messages) == ["system", "human", "ai", "human"]
    assert messages[0].content == f"{SYSTEM}\n\nAdd."
    assert messages[1:3] == context[1:]
    # without the runner's own instructions the user's system prompt stands alone
    assert build_batch_messages(["3+3?"], context=context)[0].content == SYSTEM


def test_split_and_recovery_batches_inherit_the_context() -> None:
    context = (SystemMessage(SYSTEM),)
    plan = PlannedBatch((0, 1, 2), None, (("1+1?", "2"),), context)
    (first, second) = split_by_token_budget(plan, lambda i: 10, 20)
    assert first.context == second.context == context
    assert first.demonstrations == plan.demonstrations
    assert plan.part([2]).context == context


# -- through the runnable ---------------------------------------------------------------


def test_a_system_prompt_goes_once_into_the_packed_call_not_into_every_question() -> None:
    runner, model = make_runner(instructions="Add the numbers.")
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    answers = (prompt | runner).batch([{"question": q} for q in QUESTIONS[:4]])
    assert answers == EXPECTED[:4]
    (call,) = model.calls
    assert roles(call) == ["system", "human"]
    assert call[0].content == f"{SYSTEM}\n\nAdd the numbers."
    assert asked_questions(call) == QUESTIONS[:4]  # no "System: ..." copied into them
    assert sum(str(m.content).count(SYSTEM) for m in call) == 1


async def test_few_shot_example_messages_are_sent_once_as_solved_demonstrations() -> None:
    examples = [
        {"question": "What is 2 + 2?", "answer": "4"},
        {"question": "What is 5 + 1?", "answer": "6"},
    ]
    few_shot = FewShotChatMessagePromptTemplate(
        examples=examples,
        example_prompt=ChatPromptTemplate.from_messages(
            [("human", "{question}"), ("ai", "{answer}")]
        ),
    )
    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM), few_shot, ("human", "{question}")]
    )
    runner, model = make_runner()
    assert await (prompt | runner).abatch([{"question": q} for q in QUESTIONS[:3]]) == EXPECTED[:3]
    (call,) = model.calls
    # the (human, AI) example pairs become the packed call's solved demonstrations, shown
    # once in its own Q[i]/A[i] layout (prompts.few_shot_turns), not as plain turns
    assert roles(call) == ["system", "human", "ai", "human"]
    assert "Q[1]: What is 2 + 2?\nQ[2]: What is 5 + 1?" in str(call[1].content)
    assert str(call[2].content) == "Q[1]: What is 2 + 2?\nA[1]: 4\n\nQ[2]: What is 5 + 1?\nA[2]: 6"
    assert asked_questions(call) == QUESTIONS[:3]


def test_items_with_different_system_prompts_land_in_separate_calls() -> None:
    runner, model = make_runner()
    prompt = ChatPromptTemplate.from_messages([("system", "{persona}"), ("human", "{question}")])
    personas = ["You are a pirate.", "You are a judge.", "You are a pirate.", "You are a judge."]
    inputs = [{"persona": p, "question": q} for p, q in zip(personas, QUESTIONS, strict=False)]
    assert (prompt | runner).batch(inputs) == EXPECTED[:4]  # still in input order
    assert len(model.calls) == 2
    by_system = {str(call[0].content): asked_questions(call) for call in model.calls}
    assert by_system == {
        "You are a pirate.": [QUESTIONS[0], QUESTIONS[2]],
        "You are a judge.": [QUESTIONS[1], QUESTIONS[3]],
    }


def test_the_planner_is_asked_once_per_context_group() -> None:
    seen: list[list[str]] = []

    class Recording(BatchSelector):
        def plan(self, texts, batch_size):
            seen.append(list(texts))
            return SequentialSelector().plan(texts, batch_size)

    runner, _ = make_runner(selector=Recording())
    inputs = [[SystemMessage(f"Mood {i % 2}."), HumanMessage(q)] for i, q in enumerate(QUESTIONS)]
    assert runner.batch(inputs) == EXPECTED
    assert seen == [QUESTIONS[0::2], QUESTIONS[1::2]]


def test_a_list_of_messages_is_an_input_and_plain_strings_still_mix_in() -> None:
    runner, model = make_runner()
    inputs = [
        [SystemMessage(SYSTEM), HumanMessage(QUESTIONS[0])],
        [("system", SYSTEM), ("human", QUESTIONS[1])],  # message-like tuples
        QUESTIONS[2],  # no context: its own group
    ]
    assert runner.batch(inputs) == EXPECTED[:3]
    assert sorted(len(asked_questions(call)) for call in model.calls) == [1, 2]


def test_re_asked_items_keep_their_context() -> None:
    def skips_first_time(messages, n):
        questions = asked_questions(messages)
        if n == 1:
            questions = questions[1:]
        return well_formed(questions, arithmetic_answer)

    runner, model = make_runner(skips_first_time)
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    assert (prompt | runner).batch([{"question": q} for q in QUESTIONS[:3]]) == EXPECTED[:3]
    assert len(model.calls) >= 2  # re-asks (a renumbered skip re-asks the shifted items)
    assert all(call[0].content.startswith(SYSTEM) for call in model.calls)


def test_single_mode_puts_the_context_before_the_question() -> None:
    runner, model = make_runner(solver(), mode="single")
    history = [SystemMessage(SYSTEM), HumanMessage("What is 1 + 1?"), AIMessage("2")]
    assert runner.batch([[*history, HumanMessage(QUESTIONS[0])]]) == EXPECTED[:1]
    (call,) = model.calls
    assert roles(call) == ["system", "human", "ai", "human"]
    assert str(call[0].content).startswith(SYSTEM)
    assert call[-1].content == QUESTIONS[0]


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ([SystemMessage(SYSTEM), HumanMessage("1+1?"), AIMessage("2")], "must end with"),
        ([SystemMessage(SYSTEM)], "must end with"),
    ],
)
def test_a_chat_input_without_a_last_question_is_refused_naming_the_item(item, reason) -> None:
    runner, model = make_runner()
    results = runner.batch([QUESTIONS[0], item], return_exceptions=True)
    assert results[0] == EXPECTED[0]
    assert isinstance(results[1], AutoDemoInputError) and results[1].index == 1
    assert reason in results[1].reason
