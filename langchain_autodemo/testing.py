"""Test doubles: scripted chat models for tests and offline smoke runs, never for answers.

Shipped with the package (the way httpx ships ``MockTransport``) so that an application's
own tests can drive an :class:`~langchain_autodemo.AutoDemoBatchRunnable` without a model:

- :class:`ScriptedChatModel`: each completion comes from a script you write (text, an
  exception, finish reasons, usage), streamed in chunks the way servers stream.
- :class:`ScriptedAutoDemoModel`: answers every ``Q[i]`` of an Auto-Demo prompt by a rule.

:class:`ScriptedAutoDemoModel` reads the prompt the way a well-behaved model would: every
``Q[i]: ...`` line of the last user message is one question; in ``auto_demo`` prompts
(which ask to copy the question) it restates ``Q[i]`` before ``A[i]``; a prompt without
markers is one question. The answer is computed by a small rule:

- ``sum``: the sum of the numbers in the question (``What is 3 + 4?`` -> 7),
- ``echo``: the question text itself,
- ``const:TEXT``: always ``TEXT``.

Reachable from the CLI as the test-only model spec ``fake:answer=sum,delay=0.1,skip=3``
(``delay`` seconds per call; ``skip=N`` leaves out every N-th item of a batch the first
time it is asked, to exercise the runner's recovery; ``drop=TEXT`` never answers a
question containing ``TEXT``, so that it ends in an explicit error).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

__all__ = ["ScriptedChatModel", "ScriptedAutoDemoModel", "answer_rule", "parse_fake_spec"]

_QUESTION_LINE = re.compile(r"^\s*Q\[(\d+)\]:\s?(.*)$", re.MULTILINE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def answer_rule(rule: str, question: str) -> str:
    if rule == "sum":
        total = float(sum(float(n) for n in _NUMBER.findall(question)))
        return str(int(total)) if total.is_integer() else f"{total:g}"
    if rule == "echo":
        return question.strip()
    if rule.startswith("const:"):
        return rule.partition(":")[2]
    raise ValueError(f"unknown fake answer rule {rule!r} (use sum, echo or const:TEXT)")


Reply = str | BaseException | tuple[str, dict[str, Any]]
"""A scripted completion: its text; an exception to raise; or ``(text, metadata)`` where
metadata may hold ``finish_reason``, ``usage`` (token counts) and ``raise`` (an exception
raised after streaming ``text``)."""


class ScriptedChatModel(BaseChatModel):
    """A chat model whose completions come from ``script(messages, call_number)``.

    Streams each completion in ``chunk_size``-character chunks (``0``: line by line), with
    any finish reason and usage on the last chunk, so tests can reproduce what servers do.
    Thread-safe; ``calls`` lists the messages of every call so far.
    """

    script: Callable[[list[BaseMessage], int], Reply] | None = None
    chunk_size: int = 7
    _call_log: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _log_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    @property
    def calls(self) -> list[list[BaseMessage]]:
        with self._log_lock:
            return list(self._call_log)

    def _script(self, messages: list[BaseMessage], call_number: int) -> Reply:
        if self.script is None:
            raise NotImplementedError("give a script or override _script")
        return self.script(messages, call_number)

    def _reply(self, messages: list[BaseMessage]) -> tuple[str, dict[str, Any]]:
        with self._log_lock:
            self._call_log.append(messages)
            number = len(self._call_log)
        reply = self._script(messages, number)
        if isinstance(reply, BaseException):
            return "", {"raise": reply}
        return reply if isinstance(reply, tuple) else (reply, {})

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
        pieces = (
            text.splitlines(keepends=True)
            if size <= 0
            else [text[i : i + size] for i in range(0, len(text), size)]
        )
        # A script may give token log-probabilities: meta["logprob"](offset, piece) for
        # each streamed piece, sent as OpenAI-compatible servers send them.
        logprob = meta.get("logprob")
        offset = 0
        for piece in pieces:
            metadata = {}
            if logprob is not None:
                value = float(logprob(offset, piece))
                token = {"token": piece, "logprob": value, "bytes": None, "top_logprobs": []}
                metadata = {"logprobs": {"content": [token]}}
            offset += len(piece)
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(content=piece, response_metadata=metadata)
            )
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        if "raise" in meta:
            raise meta["raise"]
        # Real providers end a complete stream with a finish reason; a script can leave it
        # out ("finish_reason": None) to play a stream cut before its last chunk.
        reason = meta.get("finish_reason", "stop")
        finish = {"finish_reason": reason} if reason else {}
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="", usage_metadata=meta.get("usage"), response_metadata=finish
            )
        )


class ScriptedAutoDemoModel(ScriptedChatModel):
    """Answers every ``Q[i]`` of the prompt by :func:`answer_rule`; thread-safe."""

    answer: str = "sum"
    delay: float = 0.0
    skip: int = 0
    drop: str = ""
    chunk_size: int = 0
    _seen: set[str] = PrivateAttr(default_factory=set)

    @property
    def _llm_type(self) -> str:
        return "scripted-autodemo-fake"

    def _script(self, messages: list[BaseMessage], call_number: int) -> Reply:
        text = self._completion(messages)
        return text, {"usage": self._usage(messages, text)}

    def _completion(self, messages: list[BaseMessage]) -> str:
        if self.delay:
            time.sleep(self.delay)
        system = str(messages[0].content) if messages else ""
        user = next((str(m.content) for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        questions = _QUESTION_LINE.findall(user)
        if not questions:
            if self.drop and self.drop in user:
                return ""
            if "final answer only" in system.lower():
                return answer_rule(self.answer, user)
            return f"Let me think.\nThe answer is {answer_rule(self.answer, user)}."
        prompt = f"{system}\n{user}"
        # reasoning=False prompts ask for the final answer alone
        terse = "final answer only" in prompt.lower()
        # auto_demo prompts ask for the restatement (the wording may move between turns)
        restate = "copy the question" in prompt.lower() or "\nQ[i]:" in prompt
        # restate="head" prompts ask for the first N words
        head = re.search(r"copy the first (\d+) words", prompt.lower())
        blocks = []
        for index, text in questions:
            with self._log_lock:
                first_time = text not in self._seen
                self._seen.add(text)
            if self.skip and first_time and int(index) % self.skip == 0:
                continue
            if self.drop and self.drop in text:
                continue
            copied = " ".join(text.split()[: int(head.group(1))]) if head else text
            echo = f"Q[{index}]: {copied}\n" if restate else ""
            value = answer_rule(self.answer, text)
            body = value if terse else f"Working it out.\nThe answer is {value}."
            blocks.append(f"{echo}A[{index}]: {body}")
        return "\n\n".join(blocks)

    @staticmethod
    def _usage(messages: list[BaseMessage], text: str) -> dict[str, int]:
        prompt = sum(len(str(m.content)) for m in messages) // 4 + 1
        output = len(text) // 4 + 1
        return {"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output}


def parse_fake_spec(options: str) -> ScriptedAutoDemoModel:
    """``answer=sum,delay=0.1,skip=3,drop=TEXT`` -> a :class:`ScriptedAutoDemoModel`."""
    settings: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in options.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in {"answer", "delay", "skip", "drop"}:
            raise ValueError(f"bad fake model option {part!r} (answer=, delay=, skip=, drop=)")
        settings[key] = float(value) if key == "delay" else int(value) if key == "skip" else value
    model = ScriptedAutoDemoModel(**settings)
    answer_rule(model.answer, "1")  # validate now
    return model
