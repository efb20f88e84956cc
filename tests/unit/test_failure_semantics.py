"""Issue 7: failures keep their true type, back off, and never hang or take neighbours down."""

from __future__ import annotations

import asyncio
import random
import re
import time

import httpx
import openai
import pytest
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableLambda

from langchain_autodemo import (
    AutoDemoBatchRunnable,
    AutoDemoError,
    AutoDemoInputError,
    AutoDemoItemError,
    AutoDemoModelCallError,
    ConfigurationError,
)
from langchain_autodemo.engine import Engine, EngineSettings
from langchain_autodemo.planning import SequentialSelector, retry_delay
from tests.fakes import ScriptedChatModel, solver

QUESTIONS = [f"What is {i} + {10 * i}?" for i in range(1, 41)]
EXPECTED = [str(11 * i) for i in range(1, 41)]


def rate_limit(retry_after: str | None = None) -> openai.RateLimitError:
    headers = {"retry-after": retry_after} if retry_after else {}
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(429, headers=headers, request=request)
    return openai.RateLimitError("Rate limit reached", response=response, body=None)


def runner_for(script, **kwargs) -> tuple[AutoDemoBatchRunnable, ScriptedChatModel]:
    model = ScriptedChatModel(script=script)
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("retry_initial_delay", 0.0)
    return AutoDemoBatchRunnable(model, **kwargs), model


# -- the caller catches the provider's own exception types --------------------------------


def test_a_failed_model_call_raises_the_providers_exception_type_with_the_item() -> None:
    runner, _ = runner_for(lambda m, n: rate_limit())
    with pytest.raises(openai.RateLimitError) as info:
        runner.batch(QUESTIONS[:3])
    error = info.value
    assert isinstance(error, AutoDemoItemError) and isinstance(error, AutoDemoModelCallError)
    assert error.index == 0 and error.attempts == 3
    assert isinstance(error.__cause__, openai.RateLimitError)
    assert error.status_code == 429  # the provider's attributes are kept
    assert str(error).startswith("item 0 ('What is 1 + 10?'): model call failed: RateLimitError")


def test_return_exceptions_gives_each_item_its_provider_error() -> None:
    runner, _ = runner_for(lambda m, n: TimeoutError("read timed out"))
    results = runner.batch(QUESTIONS[:3], return_exceptions=True)
    assert [type(r).__mro__[1] for r in results] == [AutoDemoModelCallError] * 3
    assert all(isinstance(r, TimeoutError) and r.index == i for i, r in enumerate(results))


def test_with_retry_on_the_providers_type_retries_the_failed_items() -> None:
    runner, model = runner_for(
        lambda m, n: rate_limit() if n == 1 else solver()(m, n), max_attempts=1
    )
    retrying = runner.with_retry(
        retry_if_exception_type=(openai.RateLimitError,),
        stop_after_attempt=2,
        wait_exponential_jitter=False,
    )
    assert retrying.batch(QUESTIONS[:3]) == EXPECTED[:3]
    assert len(model.calls) == 2
    runner, model = runner_for(
        lambda m, n: rate_limit() if n == 1 else solver()(m, n), max_attempts=1
    )
    not_retried = runner.with_retry(retry_if_exception_type=(KeyError,), stop_after_attempt=2)
    with pytest.raises(openai.RateLimitError):
        not_retried.batch(QUESTIONS[:3])


def test_with_fallbacks_handles_the_providers_type() -> None:
    runner, _ = runner_for(lambda m, n: rate_limit(), max_attempts=1)
    backup = RunnableLambda(lambda question: "fallback")
    chain = runner.with_fallbacks([backup], exceptions_to_handle=(openai.RateLimitError,))
    assert chain.invoke(QUESTIONS[0]) == "fallback"
    other = runner.with_fallbacks([backup], exceptions_to_handle=(KeyError,))
    with pytest.raises(openai.RateLimitError):
        other.invoke(QUESTIONS[0])


def test_format_failures_stay_autodemo_item_errors() -> None:
    runner, _ = runner_for(lambda m, n: "No idea.")
    [error] = runner.batch(QUESTIONS[:1], return_exceptions=True)
    assert type(error) is AutoDemoItemError and not isinstance(error, AutoDemoModelCallError)


# -- backoff -----------------------------------------------------------------------------


def test_forty_items_against_a_failing_server_cost_one_request_per_batch_and_attempt() -> None:
    runner, model = runner_for(lambda m, n: ConnectionError("refused"))
    results = runner.batch(QUESTIONS, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    # 5 batches x 3 attempts; re-splitting a batch cannot help against a failing server.
    assert len(model.calls) == 15


def test_re_asks_after_a_model_error_wait_and_honour_retry_after() -> None:
    settings = EngineSettings(batch_size=2, retry_initial_delay=1.0, retry_max_delay=30.0)
    engine = Engine(
        QUESTIONS[:2], SequentialSelector().plan(QUESTIONS[:2], 2), settings, rng=random.Random(7)
    )
    [call] = engine.initial_calls()
    assert call.delay == 0
    _, [follow_up] = engine.complete(call, engine.open(call).finish(rate_limit("12")))
    assert follow_up.delay == 12.0 and follow_up.batch.indices == (0, 1)
    _, [third] = engine.complete(follow_up, engine.open(follow_up).finish(TimeoutError()))
    assert 1.0 <= third.delay <= 2.0  # backoff for the 2nd failure: uniform in [d/2, d], d=2


def test_format_failures_are_re_asked_at_once() -> None:
    settings = EngineSettings(batch_size=2)
    engine = Engine(QUESTIONS[:2], SequentialSelector().plan(QUESTIONS[:2], 2), settings)
    [call] = engine.initial_calls()
    session = engine.open(call)
    session.feed("nothing useful")
    _, follow_ups = engine.complete(call, session.finish())
    assert follow_ups and all(f.delay == 0.0 for f in follow_ups)


@pytest.mark.parametrize(
    ("failures", "low", "high"), [(1, 0.5, 1.0), (3, 2.0, 4.0), (10, 15.0, 30.0)]
)
def test_retry_delay_doubles_with_jitter_and_is_capped(failures, low, high) -> None:
    delays = [
        retry_delay(TimeoutError(), failures, initial=1.0, maximum=30.0, rng=random.Random(s))
        for s in range(50)
    ]
    assert all(low <= d <= high for d in delays) and len(set(delays)) > 1


def test_retry_after_is_capped_by_the_maximum_delay() -> None:
    assert retry_delay(rate_limit("3600"), 1, initial=1, maximum=30, rng=random.Random()) == 30


def _timed_script(retry_after: str):
    """A model whose first call is rate-limited; records when each call started."""
    started: list[float] = []
    calls = iter([rate_limit(retry_after)])

    def script(messages: list[BaseMessage], n: int):
        started.append(time.monotonic())
        return next(calls, None) or solver()(messages, n)

    return script, started


def test_the_sync_driver_really_waits_the_backoff() -> None:
    script, started = _timed_script("0.3")
    runner, _ = runner_for(script, retry_initial_delay=1.0)
    assert runner.batch(QUESTIONS[:2]) == EXPECTED[:2]
    assert len(started) == 2 and started[1] - started[0] >= 0.3


async def test_the_async_driver_really_waits_the_backoff() -> None:
    script, started = _timed_script("0.3")
    runner, _ = runner_for(script, retry_initial_delay=1.0)
    assert await runner.abatch(QUESTIONS[:2]) == EXPECTED[:2]
    assert len(started) == 2 and started[1] - started[0] >= 0.3


def _one_limited_call_then_fast():
    """Call 0 is rate-limited for 0.5 s; every other call answers at once."""
    started: list[tuple[float, tuple[str, ...]]] = []
    limited = iter([rate_limit("0.5")])

    def script(messages: list[BaseMessage], n: int):
        questions = tuple(q for q in QUESTIONS[:4] if q in messages[-1].content)
        started.append((time.monotonic(), questions))
        if QUESTIONS[0] in questions:
            error = next(limited, None)
            if error is not None:
                return error
        return solver()(messages, n)

    return script, started


@pytest.mark.parametrize("driver", ["batch", "abatch"])
async def test_a_call_waiting_out_its_backoff_holds_no_concurrency_slot(driver: str) -> None:
    """max_concurrency=1, batch_size=1: while the first question waits 0.5 s after its
    rate limit, the others are asked (sync and async alike)."""
    script, started = _one_limited_call_then_fast()
    runner, _ = runner_for(script, batch_size=1, retry_initial_delay=1.0)
    config = {"max_concurrency": 1}
    if driver == "batch":
        answers = await asyncio.to_thread(runner.batch, QUESTIONS[:4], config)
    else:
        answers = await runner.abatch(QUESTIONS[:4], config)
    assert answers == EXPECTED[:4]
    order = [questions for _, questions in started]
    assert order[0] == (QUESTIONS[0],) and order[-1] == (QUESTIONS[0],)  # retried last
    assert started[-1][0] - started[0][0] >= 0.5


# -- bad inputs --------------------------------------------------------------------------


BAD = [
    ("", "the input is empty"),
    (42, "expected str, dict, prompt value or message, got int"),
    ({}, "a dict input with 0 keys needs an input_template"),
    ({"q": None}, "the value of key 'q' is None"),
    ("\u200b\u200d\ufeff", "made only of invisible characters"),
    (None, "got NoneType"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD)
def test_return_exceptions_covers_bad_inputs_and_answers_the_others(bad, reason) -> None:
    runner, model = runner_for(solver(), batch_size=4)
    results = runner.batch([QUESTIONS[0], bad, QUESTIONS[1]], return_exceptions=True)
    assert results[0] == EXPECTED[0] and results[2] == EXPECTED[1]
    assert isinstance(results[1], AutoDemoInputError) and isinstance(results[1], ValueError)
    assert results[1].index == 1 and reason in str(results[1])
    assert len(model.calls) == 1


@pytest.mark.parametrize(("bad", "reason"), BAD)
async def test_without_return_exceptions_a_bad_input_is_raised_before_any_call(bad, reason):
    runner, model = runner_for(solver())
    pattern = f"item 1: .*{re.escape(reason)}"
    with pytest.raises(AutoDemoInputError, match=pattern):
        runner.batch([QUESTIONS[0], bad])
    with pytest.raises(AutoDemoInputError, match=pattern):
        await runner.abatch([QUESTIONS[0], bad])
    assert model.calls == []


def test_a_missing_template_key_is_that_items_error() -> None:
    runner, _ = runner_for(solver(), input_template="What is {a} + {b}?")
    results = runner.batch([{"a": 1, "b": 10}, {"a": 1}], return_exceptions=True)
    assert results[0] == "11"
    assert isinstance(results[1], AutoDemoInputError) and "['b']" in str(results[1])


@pytest.mark.parametrize("template", ["{0} and {1}", "{} plus", "{a.b}", "{a[0]}", "{a"])
def test_templates_that_cannot_name_dict_keys_are_refused_at_construction(template) -> None:
    with pytest.raises(ConfigurationError, match="input_template"):
        runner_for(solver(), input_template=template)


@pytest.mark.parametrize("not_a_list", [None, "a question", 42])
def test_batch_of_something_that_is_not_a_list_says_so(not_a_list) -> None:
    runner, _ = runner_for(solver())
    with pytest.raises(TypeError, match="batch\\(\\) takes a list of inputs"):
        runner.batch(not_a_list)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
async def test_max_concurrency_must_be_positive_in_both_drivers(limit) -> None:
    runner, model = runner_for(solver())
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        runner.batch(QUESTIONS[:2], {"max_concurrency": limit})
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        await runner.abatch(QUESTIONS[:2], {"max_concurrency": limit})
    assert model.calls == []


def test_every_error_the_package_raises_is_an_autodemo_error() -> None:
    for cls in (AutoDemoInputError, AutoDemoItemError, AutoDemoModelCallError, ConfigurationError):
        assert issubclass(cls, AutoDemoError)


# -- never hang --------------------------------------------------------------------------


class Interrupt(BaseException):
    """Not an Exception: like KeyboardInterrupt or CancelledError."""


# (KeyboardInterrupt and SystemExit are left out: asyncio re-raises them out of the loop.)
@pytest.mark.parametrize("raised", [asyncio.CancelledError, Interrupt])
async def test_abatch_never_hangs_when_a_model_stream_raises_a_base_exception(raised) -> None:
    runner, _ = runner_for(lambda m, n: raised())
    with pytest.raises(raised):
        await asyncio.wait_for(runner.abatch(QUESTIONS[:4], {"max_concurrency": 2}), 10)


@pytest.mark.parametrize("raised", [Interrupt, KeyboardInterrupt])
def test_batch_raises_a_base_exception_from_a_model_stream(raised) -> None:
    runner, _ = runner_for(lambda m, n: raised())
    with pytest.raises(raised):
        runner.batch(QUESTIONS[:4])


async def test_abatch_as_completed_never_hangs_on_a_crashing_model() -> None:
    runner, _ = runner_for(lambda m, n: Interrupt())

    async def consume() -> list:
        return [x async for x in runner.abatch_as_completed(QUESTIONS[:3])]

    with pytest.raises(Interrupt):
        await asyncio.wait_for(consume(), 10)
