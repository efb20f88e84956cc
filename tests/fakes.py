"""Scripts for the scripted chat model: they read the Auto-Demo prompt and answer it.

Unit tests use these; integration tests talk to a real llama.cpp server, except those of
`autodemo serve`, which serve these doubles (``--model import:tests.fakes:FACTORY``) so that
they can check answers and failures exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage

from langchain_autodemo.testing import Reply, ScriptedAutoDemoModel, ScriptedChatModel

__all__ = [
    "RefusingAutoDemoModel",
    "ScriptedChatModel",
    "StoppedServerModel",
    "arithmetic_answer",
    "asked_questions",
    "feed_completion",
    "single_question",
    "solver",
    "well_formed",
]

_QUESTION_LINE = re.compile(r"^Q\[(\d+)\]: (.*)$", re.MULTILINE)


def feed_completion(session: Any, completion: str, *, chunk: int = 3, finish: str | None = "stop"):
    """Feed ``completion`` to an engine ``CallSession`` in ``chunk``-character chunks, as a
    stream would, stopping where the session stops reading; then judge it."""
    for i in range(0, len(completion), chunk):
        session.feed(AIMessageChunk(content=completion[i : i + chunk]))
        if session.done_reading:
            break
    else:
        if finish is not None:
            session.feed(AIMessageChunk(content="", response_metadata={"finish_reason": finish}))
    return session.finish()


def asked_questions(messages: list[BaseMessage]) -> list[str]:
    """The questions of the last human message, in prompt order (empty in single mode)."""
    last = [m for m in messages if isinstance(m, HumanMessage)][-1]
    return [text for _, text in _QUESTION_LINE.findall(str(last.content))]


def single_question(messages: list[BaseMessage]) -> str:
    return str([m for m in messages if isinstance(m, HumanMessage)][-1].content)


def well_formed(questions: list[str], answer: Callable[[str], str], restate: bool = True) -> str:
    blocks = []
    for i, question in enumerate(questions, 1):
        head = f"Q[{i}]: {question}\n" if restate else ""
        blocks.append(f"{head}A[{i}]: Working it out.\nThe answer is {answer(question)}.")
    return "\n\n".join(blocks)


def arithmetic_answer(question: str) -> str:
    """Questions look like ``What is 12 + 30?``: answer with the sum."""
    numbers = [int(n) for n in re.findall(r"\d+", question)]
    return str(sum(numbers))


def solver(restate: bool = True) -> Callable[[list[BaseMessage], int], Reply]:
    """A script that answers every asked question correctly, in the requested format."""

    def script(messages: list[BaseMessage], _: int) -> Reply:
        questions = asked_questions(messages)
        if not questions:
            return f"Working it out.\nThe answer is {arithmetic_answer(single_question(messages))}."
        return well_formed(questions, arithmetic_answer, restate)

    return script


class RefusingAutoDemoModel(ScriptedAutoDemoModel):
    """Test double: answers like ``fake:answer=sum`` but never a question containing
    ``unanswerable``, so that item ends in an error after every attempt."""

    def _completion(self, messages: list[BaseMessage]) -> str:
        blocks = super()._completion(messages).split("\n\n")
        return "\n\n".join(block for block in blocks if "unanswerable" not in block)


def refusing_model() -> RefusingAutoDemoModel:
    return RefusingAutoDemoModel()


class StoppedServerModel(ScriptedAutoDemoModel):
    """Test double: every call fails, as a stopped llama.cpp server's would."""

    def _completion(self, messages: list[BaseMessage]) -> str:
        raise ConnectionRefusedError("connection refused")
