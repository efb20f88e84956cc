"""Scripted chat models for unit tests: they read the Auto-Demo prompt and answer it.

Only unit tests use these; integration tests talk to a real llama.cpp server.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, PrivateAttr

_QUESTION_LINE = re.compile(r"^Q\[(\d+)\]: (.*)$", re.MULTILINE)

Reply = str | BaseException | tuple[str, dict[str, Any]]
"""A completion; an exception to raise (after streaming the text before it, if a tuple
("text", {"raise": exc})); or text with response metadata such as a finish reason."""


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


class ScriptedChatModel(BaseChatModel):
    """Answers each call with ``script(messages, call_number)``, streamed in small chunks.

    The script returns the completion text, or ``(text, {"finish_reason": ...,
    "usage": {...}, "raise": exc})`` to add metadata or fail after streaming ``text``.
    """

    script: Callable[[list[BaseMessage], int], Reply]
    chunk_size: int = 7
    model_config = ConfigDict(arbitrary_types_allowed=True)
    _calls: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    @property
    def calls(self) -> list[list[BaseMessage]]:
        return list(self._calls)

    def _reply(self, messages: list[BaseMessage]) -> tuple[str, dict[str, Any]]:
        with self._lock:
            self._calls.append(messages)
            number = len(self._calls)
        reply = self.script(messages, number)
        if isinstance(reply, BaseException):
            return "", {"raise": reply}
        if isinstance(reply, tuple):
            return reply
        return reply, {}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text, meta = self._reply(messages)
        if "raise" in meta:
            raise meta["raise"]
        message = AIMessage(content=text, usage_metadata=meta.get("usage"))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        text, meta = self._reply(messages)
        size = self.chunk_size
        for start in range(0, len(text), size):
            yield ChatGenerationChunk(message=AIMessageChunk(content=text[start : start + size]))
        if "raise" in meta:
            raise meta["raise"]
        response_metadata = (
            {"finish_reason": meta["finish_reason"]} if "finish_reason" in meta else {}
        )
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=meta.get("usage"),
                response_metadata=response_metadata,
            )
        )


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
