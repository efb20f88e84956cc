"""One caller's config or callbacks never fail a neighbour's request.

Through ``runner.with_coalescing()`` (MicroBatcher) several callers share one packed
``batch()``: a caller's unusable config is refused when it submits (its own
``ConfigurationError``, before it joins a batch), and a caller whose own callbacks raise
(``raise_error=True``) gets that exception while its neighbours get their answers. The
same per-item isolation holds in the runner's drivers, for ``batch(..., configs,
return_exceptions=True)``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from langchain_autodemo import AutoDemoBatchRunnable, ConfigurationError
from tests.fakes import ScriptedChatModel, asked_questions, solver

QUESTIONS = [f"What is {i} + {i}?" for i in range(1, 4)]
ANSWERS = ["2", "4", "6"]


class Raising(BaseCallbackHandler):
    """A caller's handler that raises (and asks LangChain to propagate it)."""

    raise_error = True

    def __init__(self, when: str) -> None:
        self.when = when

    def on_chain_start(self, *args: Any, **kwargs: Any) -> None:
        if self.when == "start":
            raise RuntimeError("the caller's own handler failed at start")

    def on_chain_end(self, *args: Any, **kwargs: Any) -> None:
        if self.when == "end":
            raise RuntimeError("the caller's own handler failed at end")


class Ends(BaseCallbackHandler):
    def __init__(self) -> None:
        self.ends: list[Any] = []

    def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        if kwargs.get("parent_run_id") is None:
            self.ends.append(outputs)


def runner_and_model() -> tuple[AutoDemoBatchRunnable, ScriptedChatModel]:
    model = ScriptedChatModel(script=solver())
    return AutoDemoBatchRunnable(model, batch_size=8, max_attempts=1), model


# Each case: the odd caller's config, the error it alone must get, and whether its
# question may still have been asked (a config refused on arrival never joins a call).
BAD_CONFIGS = {
    "max_concurrency=0": ({"max_concurrency": 0}, ConfigurationError, False),
    "max_concurrency='2'": ({"max_concurrency": "2"}, ConfigurationError, False),
    "callbacks=42": ({"callbacks": 42}, ConfigurationError, False),
    "raising at start": ({"callbacks": [Raising("start")]}, RuntimeError, True),
    "raising at end": ({"callbacks": [Raising("end")]}, RuntimeError, True),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
async def test_ainvoke_one_callers_config_fails_that_caller_only(case: str) -> None:
    bad, error, may_be_asked = BAD_CONFIGS[case]
    runner, model = runner_and_model()
    # The batch is sent when full: a refused request never joins it.
    size = 4 if may_be_asked else 3
    coalesced = runner.with_coalescing(max_wait_seconds=10.0, max_batch_size=size)
    ends = Ends()
    good = {"callbacks": [ends]}
    results = await asyncio.gather(
        coalesced.ainvoke(QUESTIONS[0], good),
        coalesced.ainvoke(QUESTIONS[1], bad),
        coalesced.ainvoke(QUESTIONS[2], good),
        coalesced.ainvoke("What is 9 + 9?", good),
        return_exceptions=True,
    )
    assert isinstance(results[1], error), results
    assert [results[0], results[2], results[3]] == ["2", "6", "18"]
    assert sorted(ends.ends) == ["18", "2", "6"]
    asked = [q for call in model.calls for q in asked_questions(call)]
    assert (QUESTIONS[1] in asked) is may_be_asked


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_invoke_from_threads_one_callers_config_fails_that_caller_only(case: str) -> None:
    bad, error, _ = BAD_CONFIGS[case]
    runner, _ = runner_and_model()
    expected_batch = 2 if error is ConfigurationError else 3  # a refused one never joins
    coalesced = runner.with_coalescing(max_wait_seconds=10.0, max_batch_size=expected_batch)
    configs = [None, bad, None]
    with ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(coalesced.invoke, q, c) for q, c in zip(QUESTIONS, configs, strict=True)
        ]
        for i in (0, 2):
            assert futures[i].result(timeout=60) == ANSWERS[i]
        with pytest.raises(error):
            futures[1].result(timeout=60)


def test_the_coalesced_batch_takes_no_callers_max_concurrency() -> None:
    runner, _ = runner_and_model()
    coalesced = runner.with_coalescing()
    own = coalesced._own_config({"max_concurrency": 1, "tags": ["mine"]})
    assert "max_concurrency" not in own and own["tags"] == ["mine"]


# -- the drivers, where the callers' items meet --------------------------------------------


@pytest.mark.parametrize("when", ["start", "end"])
@pytest.mark.parametrize("driver", ["batch", "abatch"])
async def test_an_items_raising_callback_fails_that_item_only(driver: str, when: str) -> None:
    runner, model = runner_and_model()
    configs: list[Any] = [{}, {"callbacks": [Raising(when)]}, {}]
    if driver == "batch":
        results = runner.batch(QUESTIONS, configs, return_exceptions=True)
    else:
        results = await runner.abatch(QUESTIONS, configs, return_exceptions=True)
    assert results[0] == "2" and results[2] == "6"
    assert isinstance(results[1], RuntimeError) and when in str(results[1])
    assert len(model.calls) == 1


@pytest.mark.parametrize("driver", ["batch", "abatch"])
async def test_without_return_exceptions_a_raising_callback_is_raised(driver: str) -> None:
    runner, _ = runner_and_model()
    configs: list[Any] = [{}, {"callbacks": [Raising("end")]}, {}]
    with pytest.raises(RuntimeError, match="at end"):
        if driver == "batch":
            runner.batch(QUESTIONS, configs)
        else:
            await runner.abatch(QUESTIONS, configs)


def test_as_completed_gives_each_index_once_when_a_callback_raises() -> None:
    runner, _ = runner_and_model()
    configs: list[Any] = [{}, {"callbacks": [Raising("start")]}, {}]
    got = list(runner.batch_as_completed(QUESTIONS, configs, return_exceptions=True))
    assert sorted(i for i, _ in got) == [0, 1, 2]
    results = dict(got)
    assert results[0] == "2" and results[2] == "6" and isinstance(results[1], RuntimeError)


async def test_isolated_traces_keep_a_raising_callback_to_its_item() -> None:
    runner, _ = runner_and_model()
    isolated = runner.isolating_traces()
    configs: list[Any] = [{"callbacks": [Raising("end")]}, {}, {}]
    results = await isolated.abatch(QUESTIONS, configs, return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1:] == ["4", "6"]
