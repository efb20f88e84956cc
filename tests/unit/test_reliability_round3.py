"""Reliability round 3 (engine and runner level): no neighbour's text in any error or
detail an isolated caller sees, and one poison input fails only itself.

The completions are the attacks' own: a restatement that merges two inputs on one line,
then failing re-asks; a provider that refuses (HTTP 400) every call holding one input.
"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import BaseMessage

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoItemError
from langchain_autodemo.engine import ItemResult, redact_model_text
from langchain_autodemo.errors import Rejection, model_call_error
from langchain_autodemo.planning import rejected_for_content
from langchain_autodemo.testing import ScriptedChatModel
from tests.fakes import arithmetic_answer, asked_questions, single_question, well_formed

A = "What is 2 + 3?"
B = "What is 4 + 5? SECRET-of-B 7781"
SECRET = "SECRET-of-B"


def _merged_then(after: str):
    """Call 1 restates A and B merged on A's line; later calls about A fail
    (``after="fail"``) or are answered (``after="answer"``); B is always answered."""

    def script(messages: list[BaseMessage], number: int) -> Any:
        questions = asked_questions(messages) or [single_question(messages)]
        if number == 1:
            return (
                f"Q[1]: {A} {B}\nA[1]: Working it out.\nThe answer is 5.\n\n"
                f"Q[2]: {B}\nA[2]: Working it out.\nThe answer is 9."
            )
        if after == "fail" and any(q.startswith(A) for q in questions):
            return ConnectionError("connection reset")
        return well_formed(questions, arithmetic_answer)

    return script


def _runner(script: Any, **kwargs: Any) -> AutoDemoBatchRunnable:
    options: dict[str, Any] = {"batch_size": 2, "retry_initial_delay": 0.0, "retry_max_delay": 0.0}
    return AutoDemoBatchRunnable(ScriptedChatModel(script=script), **{**options, **kwargs})


class _Errors(BaseCallbackHandler):
    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.outputs: list[Any] = []

    def on_chain_error(self, error: BaseException, **kwargs: Any) -> None:
        self.errors.append(error)

    def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        self.outputs.append(outputs)


class _AsyncErrors(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.outputs: list[Any] = []

    async def on_chain_error(self, error: BaseException, **kwargs: Any) -> None:
        self.errors.append(error)

    async def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        self.outputs.append(outputs)


def _everything_said(error: BaseException) -> str:
    parts = [str(error), repr(error), repr(getattr(error, "reason", ""))]
    parts += [repr(r) for r in getattr(error, "reasons", ())]
    parts += [repr(a) for a in error.args]
    return "\n".join(parts)


# -- 1. a model call error after a merged restatement -------------------------------------


def test_the_unisolated_runner_still_shows_its_own_caller_what_the_model_wrote() -> None:
    runner = _runner(_merged_then("fail"))
    results = runner.batch([A, B], return_exceptions=True)
    assert isinstance(results[0], AutoDemoItemError)
    assert isinstance(results[0], ConnectionError)  # the provider's type, as before
    assert SECRET in str(results[0])  # one caller owns both inputs: nothing hidden
    assert results[1] == "9"


@pytest.mark.parametrize("entry", ["batch", "abatch"])
def test_an_isolated_callers_model_call_error_never_quotes_a_neighbour(entry: str) -> None:
    handler: Any = _Errors() if entry == "batch" else _AsyncErrors()
    runner = _runner(_merged_then("fail")).isolating_traces()
    config: Any = [{"callbacks": [handler]}, {}]  # A's own runs only
    if entry == "batch":
        results = runner.batch([A, B], config=config, return_exceptions=True)
    else:
        results = asyncio.run(runner.abatch([A, B], config=config, return_exceptions=True))
    error = results[0]
    assert isinstance(error, AutoDemoItemError) and isinstance(error, ConnectionError)
    assert error.index == 0 and error.attempts == 3
    assert SECRET not in _everything_said(error)
    assert "<model text>" in str(error)  # the reason is kept, its quote is not
    assert results[1] == "9"
    assert handler.errors, "the item's run must end with its error"
    for seen in handler.errors:
        assert SECRET not in _everything_said(seen)


def test_a_coalesced_callers_model_call_error_never_quotes_a_neighbour() -> None:
    coalesced = _runner(_merged_then("fail")).with_coalescing(max_wait_seconds=0.2)

    async def both() -> list[Any]:
        return await asyncio.gather(
            coalesced.ainvoke(A), coalesced.ainvoke(B), return_exceptions=True
        )

    first, second = asyncio.run(both())
    assert isinstance(first, AutoDemoItemError)
    assert SECRET not in _everything_said(first)
    assert second == "9"


# -- 2. include_details reasons ------------------------------------------------------------


@pytest.mark.parametrize("entry", ["batch", "abatch"])
def test_an_isolated_callers_details_never_quote_a_neighbour(entry: str) -> None:
    handler: Any = _Errors() if entry == "batch" else _AsyncErrors()
    runner = _runner(_merged_then("answer"), include_details=True).isolating_traces()
    config: Any = [{"callbacks": [handler]}, {}]  # A's own runs only
    if entry == "batch":
        results = runner.batch([A, B], config=config)
    else:
        results = asyncio.run(runner.abatch([A, B], config=config))
    first = results[0]
    assert isinstance(first, ItemResult) and first.answer == "5"
    assert first.reasons, "the first attempt was rejected: its reason is kept"
    assert all(SECRET not in r for r in first.reasons)
    assert all(isinstance(r, Rejection) for r in first.reasons)
    assert SECRET not in repr(handler.outputs)


def test_unisolated_details_keep_the_quote_apart_from_the_reason() -> None:
    results = _runner(_merged_then("answer"), include_details=True).batch([A, B])
    (reason,) = results[0].reasons
    assert isinstance(reason, Rejection)
    assert reason.quote is not None and SECRET in reason.quote
    assert SECRET not in reason.message and SECRET not in reason.kind
    assert SECRET not in reason.redacted()
    assert reason == reason.message + repr(reason.quote)  # still the same string as before


def test_a_rejection_survives_pickling_with_its_parts() -> None:
    reason = Rejection("answer could not be parsed: ", quote="bad text", plain=True, slots=(2,))
    again = pickle.loads(pickle.dumps(reason))
    assert (again, again.quote, again.message, again.slots) == (
        reason,
        "bad text",
        "answer could not be parsed: ",
        (2,),
    )
    assert again.redacted() == "answer could not be parsed: <model text>"


def test_redaction_of_a_model_call_error_drops_every_quoted_earlier_reason() -> None:
    earlier = Rejection(
        "restated question matches no input: restated as ", quote="A and B's secret"
    )
    error = model_call_error(ConnectionError("reset"), 0, 3, (earlier, "model call failed: x"))
    assert "B's secret" in str(error)
    clean = error.redacted()
    assert isinstance(clean, ConnectionError) and isinstance(clean, AutoDemoItemError)
    assert "B's secret" not in _everything_said(clean)
    assert clean.__cause__ is error.__cause__


def test_plain_string_reasons_are_still_redacted_by_pattern() -> None:
    assert redact_model_text("x: restated as 'secret'") == "x: restated as <model text>"


# -- 4. one poison input -------------------------------------------------------------------


class _ContentFilter(Exception):
    status_code = 400


class _Unauthorized(Exception):
    status_code = 401


POISON = "What is 6 + 6? POISON"


def _refusing(error_type: type[Exception] = _ContentFilter):
    def script(messages: list[BaseMessage], _: int) -> Any:
        questions = asked_questions(messages) or [single_question(messages)]
        if any("POISON" in q for q in questions):
            return error_type("content filter: the request was refused")
        return well_formed(questions, arithmetic_answer)

    return script


INPUTS = [f"What is {i} + {i}?" for i in range(1, 8)]


@pytest.mark.parametrize("position", [0, 3, 7])
@pytest.mark.parametrize("entry", ["batch", "abatch"])
def test_a_poison_input_fails_alone_and_its_neighbours_are_answered(
    position: int, entry: str
) -> None:
    inputs = INPUTS[:position] + [POISON] + INPUTS[position:]
    runner = _runner(_refusing(), batch_size=8)
    if entry == "batch":
        results = runner.batch(inputs, return_exceptions=True)
    else:
        results = asyncio.run(runner.abatch(inputs, return_exceptions=True))
    for i, (text, result) in enumerate(zip(inputs, results, strict=True)):
        if i == position:
            assert isinstance(result, AutoDemoItemError) and isinstance(result, _ContentFilter)
            assert result.index == position
        else:
            assert result == arithmetic_answer(text), (i, result)
    # bisection: at most 2 * log2(8) + 1 calls hold the poison, and nobody else is re-sent
    calls = runner.llm.calls  # type: ignore[attr-defined]
    assert len(calls) <= 2 * 8


def test_a_refusal_for_the_whole_provider_is_not_bisected() -> None:
    runner = _runner(_refusing(_Unauthorized), batch_size=8)
    inputs = INPUTS[:3] + [POISON] + INPUTS[3:]
    results = runner.batch(inputs, return_exceptions=True)
    # a 401 says nothing about which input: the call is re-sent whole, as before
    assert all(isinstance(r, _Unauthorized) for r in results)
    assert len(runner.llm.calls) == 3  # type: ignore[attr-defined]


def test_served_groups_across_clients_keep_their_answers_beside_a_poison() -> None:
    coalesced = _runner(_refusing(), batch_size=8).with_coalescing(max_wait_seconds=0.2)

    async def everyone() -> list[Any]:
        asks = [coalesced.ainvoke(text) for text in [*INPUTS[:3], POISON, *INPUTS[3:]]]
        return await asyncio.gather(*asks, return_exceptions=True)

    results = asyncio.run(everyone())
    assert isinstance(results[3], AutoDemoItemError)
    texts = [*INPUTS[:3], *INPUTS[3:]]
    answers = results[:3] + results[4:]
    assert answers == [arithmetic_answer(t) for t in texts]


def test_content_rejection_statuses() -> None:
    class Response:
        status_code = 422

    class Wrapped(Exception):
        response = Response()

    assert rejected_for_content(Wrapped())
    assert not rejected_for_content(_Unauthorized())
    assert not rejected_for_content(ValueError("400"))


def test_one_positive_integer_rule_everywhere() -> None:
    """numpy integers (from an array) count, booleans do not: the runner, the audit policy
    and the Batch API job check with the same rule (they disagreed)."""
    import numpy as np

    from langchain_autodemo.audit import AuditPolicy

    runner = _runner(_refusing(), batch_size=np.int64(4), max_attempts=np.int32(2))
    assert runner.batch_size == 4 and type(runner.settings.batch_size) is int
    assert AuditPolicy(min_samples=np.int64(5)).min_samples == 5
    for bad in (True, 0, 2.5):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            _runner(_refusing(), batch_size=bad)
