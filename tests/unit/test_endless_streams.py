"""Streams that never end with text: empty chunks, or reasoning alone (what reasoning
models send while they think). The engine counts reasoning against the output budget
and bounds the chunks that carry nothing; the drivers' stall timer does not take an
empty chunk for a sign of life. Every such call ends with an explicit per-item error.

Hang guards only: each driver runs in a thread that must finish within a generous
timeout; what is asserted is the outcome, never a duration.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import PrivateAttr

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoItemError
from langchain_autodemo.engine import Engine, EngineSettings
from langchain_autodemo.parser import reasoning_of, text_of
from langchain_autodemo.planning import PlannedBatch
from tests.fakes import ScriptedChatModel

#: A stream read this far was read forever: a hang.
HANG_CHUNKS = 60_000
THOUGHT = "Let me think about this a little more. "  # 40 characters


def blank(_: int) -> AIMessageChunk:
    return AIMessageChunk(content="")


def reasoning_kwargs(_: int) -> AIMessageChunk:
    return AIMessageChunk(content="", additional_kwargs={"reasoning_content": THOUGHT})


def reasoning_block(_: int) -> AIMessageChunk:
    return AIMessageChunk(content=[{"type": "reasoning", "reasoning": THOUGHT, "index": 0}])


def thinking_block(_: int) -> AIMessageChunk:
    # A thinking block that looks like answers: it must never be parsed as text.
    return AIMessageChunk(
        content=[{"type": "thinking", "thinking": "Q[1]: 1 + 1?\nA[1]: The answer is 7.\n"}]
    )


KINDS: dict[str, Callable[[int], AIMessageChunk]] = {
    "blank": blank,
    "reasoning_kwargs": reasoning_kwargs,
    "reasoning_block": reasoning_block,
    "thinking_block": thinking_block,
}


class EndlessModel(ScriptedChatModel):
    """Streams ``kind`` chunks forever (up to :data:`HANG_CHUNKS`, then counts a hang),
    ``pause`` seconds apart."""

    kind: str = "blank"
    pause: float = 0.0
    _hangs: list[int] = PrivateAttr(default_factory=list)

    @property
    def hangs(self) -> int:
        return len(self._hangs)

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Any:  # fmt: skip
        self._reply(messages)  # logs the call
        make = KINDS[self.kind]
        for n in range(HANG_CHUNKS):
            if self.pause:
                time.sleep(self.pause)
            yield ChatGenerationChunk(message=make(n))
        self._hangs.append(1)

    async def _astream(self, messages: list[BaseMessage], stop: Any = None,
                       run_manager: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        self._reply(messages)
        make = KINDS[self.kind]
        for n in range(HANG_CHUNKS):
            await asyncio.sleep(self.pause)
            yield ChatGenerationChunk(message=make(n))
        self._hangs.append(1)


def _script(messages: list[BaseMessage], n: int) -> str:
    return ""


def run_guarded(target: Callable[[], Any], timeout: float = 120.0) -> Any:
    """``target()`` in a daemon thread; fails (instead of hanging) if it does not end."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = target()
        except BaseException as exc:  # pragma: no cover - surfaced below
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the call never ended: it read an endless stream forever"
    if "error" in box:
        raise box["error"]
    return box["result"]


def call(driver: str, runner: AutoDemoBatchRunnable, inputs: list[str]) -> list[Any]:
    if driver == "batch":
        return run_guarded(lambda: runner.batch(inputs, return_exceptions=True))
    return run_guarded(lambda: asyncio.run(runner.abatch(inputs, return_exceptions=True)))


# -- the engine (pure) ------------------------------------------------------------------


def session(max_output_tokens: int | None = None) -> Any:
    settings = EngineSettings(max_output_tokens=max_output_tokens)
    engine = Engine(["What is 1 + 1?", "What is 2 + 2?"], [PlannedBatch((0, 1))], settings)
    return engine.open(engine.initial_calls()[0])


def feed_until_done(s: Any, make: Callable[[int], AIMessageChunk], limit: int) -> int:
    for n in range(limit):
        s.feed(make(n))
        if s.done_reading:
            return n + 1
    return limit


def test_reasoning_is_not_text_and_text_is_not_reasoning() -> None:
    assert text_of(reasoning_kwargs(0)) == "" and reasoning_of(reasoning_kwargs(0)) == THOUGHT
    assert text_of(reasoning_block(0)) == "" and reasoning_of(reasoning_block(0)) == THOUGHT
    assert text_of(thinking_block(0)) == "" and "answer is 7" in reasoning_of(thinking_block(0))
    summary = AIMessageChunk(
        content=[{"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text",
                                                                  "text": "Adding."}]}]
    )  # fmt: skip
    assert text_of(summary) == "" and reasoning_of(summary) == "Adding."
    mixed = AIMessageChunk(content=[{"type": "thinking", "thinking": "hm"}, {"type": "text",
                                                                             "text": "Q[1]"}])  # fmt: skip
    assert text_of(mixed) == "Q[1]" and reasoning_of(mixed) == "hm"


def test_empty_chunks_are_no_progress_and_end_the_read_at_the_budget() -> None:
    s = session()
    read = feed_until_done(s, blank, HANG_CHUNKS)
    assert read < HANG_CHUNKS and read == s.output_budget + 1
    assert s.progress == 0 and "carried nothing" in s.runaway
    report = s.finish()
    assert set(report.failures) == {0, 1} and not report.accepted
    assert all("carried nothing" in reason for reason in report.failures.values())


@pytest.mark.parametrize("kind", ["reasoning_kwargs", "reasoning_block", "thinking_block"])
def test_reasoning_counts_against_max_output_tokens(kind: str) -> None:
    s = session(max_output_tokens=200)
    read = feed_until_done(s, KINDS[kind], HANG_CHUNKS)
    # about 10 tokens (characters / 4) a chunk against a budget of 1.5 x 200 + 16 tokens
    per_chunk = len(reasoning_of(KINDS[kind](0))) // 4
    assert read <= s.output_budget // per_chunk + 2
    assert s.progress == read and s.reasoning_tokens == s.output_tokens
    assert "output budget" in s.runaway and "reasoning" in s.runaway
    assert not s.finish().accepted  # the thinking block's "answer" is no answer


def test_without_a_limit_reasoning_gets_an_allowance_then_is_a_runaway() -> None:
    s = session()
    thoughts = (s.output_budget + 32_000) // 10  # 10 tokens a chunk
    assert feed_until_done(s, reasoning_kwargs, thoughts - 5) == thoughts - 5
    assert s.runaway is None  # a reasoning model may think, within the allowance
    read = feed_until_done(s, reasoning_kwargs, HANG_CHUNKS)
    assert read < 100 and "output budget" in s.runaway


def test_reported_reasoning_tokens_count_against_the_budget() -> None:
    s = session(max_output_tokens=200)
    s.feed(
        AIMessageChunk(
            content="",
            usage_metadata={
                "input_tokens": 10,
                "output_tokens": 400,
                "total_tokens": 410,
                "output_token_details": {"reasoning": 400},
            },
        )
    )
    assert s.progress == 1 and s.reasoning_tokens == 400
    assert s.runaway is not None and "400 of them reasoning" in s.runaway


def test_a_finish_reason_is_progress() -> None:
    s = session()
    s.feed(AIMessageChunk(content=""))
    s.feed(AIMessageChunk(content="", response_metadata={"finish_reason": "stop"}))
    assert s.progress == 1


# -- the drivers: batch and abatch --------------------------------------------------------


@pytest.mark.parametrize("driver", ["batch", "abatch"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_an_endless_stream_without_text_ends_with_per_item_errors(driver: str, kind: str) -> None:
    model = EndlessModel(script=_script, kind=kind)
    runner = AutoDemoBatchRunnable(
        model, max_output_tokens=200, max_attempts=2, retry_initial_delay=0.0, batch_size=2
    )
    results = call(driver, runner, ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?"])
    assert model.hangs == 0
    assert len(results) == 3
    for index, error in enumerate(results):
        assert isinstance(error, AutoDemoItemError) and error.index == index
        assert error.attempts == 2
        expected = "carried nothing" if kind == "blank" else "reasoning"
        assert expected in str(error)


@pytest.mark.parametrize("driver", ["batch", "abatch"])
def test_endless_reasoning_without_max_output_tokens_is_bounded(driver: str) -> None:
    model = EndlessModel(script=_script, kind="reasoning_kwargs")
    runner = AutoDemoBatchRunnable(model, max_attempts=1)
    (error,) = call(driver, runner, ["What is 1 + 1?"])
    assert model.hangs == 0
    assert isinstance(error, AutoDemoItemError) and "output budget" in str(error)


@pytest.mark.parametrize("driver", ["batch", "abatch"])
def test_empty_chunks_do_not_reset_the_stall_timer(driver: str) -> None:
    # Empty chunks every 20 ms: the blank-chunk bound (over 1000 chunks) would take 20 s
    # or more; the stall timer, which they no longer reset, ends the call first.
    model = EndlessModel(script=_script, kind="blank", pause=0.02)
    runner = AutoDemoBatchRunnable(model, stall_timeout=0.3, max_attempts=1)
    (error,) = call(driver, runner, ["What is 1 + 1?"])
    assert isinstance(error, TimeoutError) and isinstance(error, AutoDemoItemError)
    assert "stall_timeout" in str(error)
