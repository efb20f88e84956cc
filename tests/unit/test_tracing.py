"""Tracing: every input's callbacks see the model run that served it, and each input's run
records which call answered it and its share of that call's tokens."""

from __future__ import annotations

import asyncio
import json
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers.context import collect_runs

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.runnable import ITEM_VIEW_RUN
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


class Recorder(BaseCallbackHandler):
    """Everything a handler is told, as text (to look for other inputs' questions)."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.model_starts: list[str] = []

    def on_chain_start(self, serialized, inputs, **kw) -> None:
        self.text.append(json.dumps([inputs, kw.get("metadata")], default=str))

    def on_chain_end(self, outputs, **kw) -> None:
        self.text.append(json.dumps(outputs, default=str))

    def on_chain_error(self, error, **kw) -> None:
        self.text.append(str(error))

    def on_chat_model_start(self, serialized, messages, **kw) -> None:
        self.model_starts.append(json.dumps([[m.content for m in ms] for ms in messages]))
        self.text.append(self.model_starts[-1])

    def on_llm_new_token(self, token, **kw) -> None:
        self.text.append(token)

    def on_llm_end(self, response, **kw) -> None:
        self.text.append(str(response))


def test_a_runner_isolating_traces_keeps_each_users_callbacks_to_their_own_text() -> None:
    """One runner serving several users of an app: each user's handler sees its own
    question and answer, and a per-item view; the operator's handler sees the calls."""
    runner, model = make_runner()
    operator = Recorder()
    shared = runner.isolating_traces(call_callbacks=[operator])
    users = [Recorder() for _ in QUESTIONS]
    answers = shared.batch(QUESTIONS, [{"callbacks": [u]} for u in users])
    assert answers == [str(11 * i) for i in range(1, 7)]
    assert len(model.calls) == 2
    for index, user in enumerate(users):
        seen = "\n".join(user.text)
        assert QUESTIONS[index] in seen and ITEM_VIEW_RUN in seen
        assert user.model_starts == []
        for other, question in enumerate(QUESTIONS):
            assert (question in seen) == (other == index), (index, other)
    assert len(operator.model_starts) == 2


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


async def test_coalesced_requests_each_see_only_their_own_text_and_how_they_were_served() -> None:
    """Three callers packed into one call: each caller's events hold its own question, its
    own answer and a per-item view of the call, never a neighbour's text; the packed
    model run goes to the operator's handler only."""
    runner, model = make_runner()
    operator = Recorder()
    batcher = MicroBatcher(runner, max_wait_seconds=0.3, call_callbacks=[operator])

    async def events(question: str) -> list[dict]:
        return [event async for event in batcher.astream_events(question, version="v2")]

    streams = await asyncio.gather(*(events(q) for q in QUESTIONS[:3]))
    assert len(model.calls) == 1  # three requests, one packed call
    for question, stream in zip(QUESTIONS[:3], streams, strict=True):
        kinds = [event["event"] for event in stream]
        assert kinds[0] == "on_chain_start" and kinds[-1] == "on_chain_end"
        assert not {"on_chat_model_start", "on_chat_model_stream"} & set(kinds)
        text = json.dumps(stream, default=str)
        for other in QUESTIONS[:3]:
            assert (other in text) == (other == question), (question, other)
        view = next(
            e for e in stream if e["name"] == ITEM_VIEW_RUN and e["event"] == "on_chain_end"
        )
        assert view["metadata"]["autodemo_call_id"] == 0
        assert view["metadata"]["autodemo_call_items"] == 3
        end = stream[-1]
        assert end["data"]["output"] == str(11 * (QUESTIONS.index(question) + 1))
        assert end["metadata"]["autodemo_call_id"] == 0
        assert abs(end["metadata"]["autodemo_output_tokens"] - USAGE["output_tokens"] / 3) <= 1
    assert len(operator.model_starts) == 1  # the packed run, at the operator's handler
    assert all(q in operator.model_starts[0] for q in QUESTIONS[:3])


def test_langsmith_tracers_of_one_project_post_the_model_run_once() -> None:
    from langchain_core.tracers.langchain import LangChainTracer
    from langsmith import Client

    from langchain_autodemo.tracing import same_sink as _same_sink

    # A client that can reach nothing: the default one looks up api.smith.langchain.com.
    offline = Client(api_url="http://127.0.0.1:9", api_key="offline", auto_batch_tracing=False)
    first = LangChainTracer(project_name="p", client=offline)
    second = LangChainTracer(project_name="p", client=offline)
    assert _same_sink(first, second)  # one per input's run, one destination
    assert not _same_sink(first, LangChainTracer(project_name="other", client=offline))
    assert not _same_sink(Seen(), Seen())  # two users' handlers: each sees the call
