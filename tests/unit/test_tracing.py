"""Tracing: every input's callbacks see the model run that served it, and each input's run
records which call answered it and its share of that call's tokens."""

from __future__ import annotations

import asyncio
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers.context import collect_runs

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.serving import MicroBatcher
from tests.fakes import ScriptedChatModel, solver

QUESTIONS = [f"What is {i} + {10 * i}?" for i in range(1, 7)]
USAGE = {"input_tokens": 400, "output_tokens": 120, "total_tokens": 520}


def reporting_solver(messages, n):
    return solver()(messages, n), {"usage": USAGE}


def make_runner(**kwargs) -> tuple[AutoDemoBatchRunnable, ScriptedChatModel]:
    model = ScriptedChatModel(script=reporting_solver)
    kwargs.setdefault("batch_size", 4)
    return AutoDemoBatchRunnable(model, instructions="Add the numbers.", **kwargs), model


class Seen(BaseCallbackHandler):
    """One item's own handler: which runs and model runs it is told about."""

    def __init__(self) -> None:
        self.chains: list[UUID] = []
        self.models: list[tuple[UUID, UUID | None, dict]] = []
        self.tokens = 0

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kw) -> None:
        self.chains.append(run_id)

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kw):
        self.models.append((run_id, parent_run_id, kw.get("metadata", {})))

    def on_llm_new_token(self, token, **kw) -> None:
        self.tokens += 1


def test_each_items_own_handlers_see_the_model_run_that_served_it() -> None:
    runner, model = make_runner()
    handlers = [Seen() for _ in QUESTIONS]
    runner.batch(QUESTIONS, [{"callbacks": [h]} for h in handlers])
    assert len(model.calls) == 2  # items 0-3, then 4-5
    for index, handler in enumerate(handlers):
        ((_, parent, metadata),) = handler.models  # exactly once, not once per item
        assert index in metadata["autodemo_items"]
        leader = 0 if index < 4 else 4
        assert parent == handlers[leader].chains[0]  # parented under the leader's run
        assert handler.tokens > 0  # and its streamed tokens
    assert handlers[1].models[0][0] == handlers[3].models[0][0]  # one run, seen by both
    assert handlers[1].models[0][0] != handlers[4].models[0][0]


def test_a_handler_shared_by_every_item_sees_each_model_run_once() -> None:
    runner, _ = make_runner()
    shared = Seen()
    runner.batch(QUESTIONS, {"callbacks": [shared]})
    assert len(shared.models) == 2 and len(shared.chains) == 6


def test_collect_runs_nests_each_call_under_its_leader_and_records_every_items_call() -> None:
    runner, _ = make_runner()
    with collect_runs() as collected:
        assert runner.batch(QUESTIONS) == [str(11 * i) for i in range(1, 7)]
    items = sorted(collected.traced_runs, key=lambda run: QUESTIONS.index(run.inputs["input"]))
    assert len(items) == 6  # one root run per input
    calls = {}
    for run in items:
        for child in run.child_runs:
            assert child.run_type == "llm"
            calls[child.extra["metadata"]["autodemo_call_id"]] = child
    assert len(calls) == 2  # each model call traced once, under its first item
    for index, run in enumerate(items):
        metadata = run.extra["metadata"]
        call = calls[metadata["autodemo_call_id"]]
        assert index in call.extra["metadata"]["autodemo_items"]
        share = len(call.extra["metadata"]["autodemo_items"])
        assert metadata["autodemo_input_tokens"] == USAGE["input_tokens"] / share
        assert metadata["autodemo_output_tokens"] == USAGE["output_tokens"] / share
        assert metadata["autodemo_attempts"] == 1
        assert run.outputs == {"output": str(11 * (index + 1))}  # the answer, unchanged


async def test_astream_events_v2_of_coalesced_requests_each_show_the_model_run() -> None:
    runner, model = make_runner()
    batcher = MicroBatcher(runner, max_wait_seconds=0.3)

    async def events(question: str) -> list[dict]:
        return [event async for event in batcher.astream_events(question, version="v2")]

    streams = await asyncio.gather(*(events(q) for q in QUESTIONS[:3]))
    assert len(model.calls) == 1  # three requests, one packed call
    model_runs = set()
    for question, stream in zip(QUESTIONS[:3], streams, strict=True):
        kinds = [event["event"] for event in stream]
        assert kinds[0] == "on_chain_start" and kinds[-1] == "on_chain_end"
        assert "on_chat_model_start" in kinds and "on_chat_model_stream" in kinds
        model_runs |= {e["run_id"] for e in stream if e["event"] == "on_chat_model_start"}
        end = stream[-1]
        assert end["data"]["output"] == str(11 * (QUESTIONS.index(question) + 1))
        assert end["metadata"]["autodemo_call_id"] == 0
        assert end["metadata"]["autodemo_output_tokens"] == USAGE["output_tokens"] / 3
    assert len(model_runs) == 1  # the same model run, in every request's events


def test_langsmith_tracers_of_one_project_post_the_model_run_once() -> None:
    from langchain_core.tracers.langchain import LangChainTracer
    from langsmith import Client

    from langchain_autodemo.runnable import _same_sink

    # A client that can reach nothing: the default one looks up api.smith.langchain.com.
    offline = Client(api_url="http://127.0.0.1:9", api_key="offline", auto_batch_tracing=False)
    first = LangChainTracer(project_name="p", client=offline)
    second = LangChainTracer(project_name="p", client=offline)
    assert _same_sink(first, second)  # one per input's run, one destination
    assert not _same_sink(first, LangChainTracer(project_name="other", client=offline))
    assert not _same_sink(Seen(), Seen())  # two users' handlers: each sees the call
