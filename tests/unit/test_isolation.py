"""Serving isolation and in-process coalescing: one caller never sees another's text,
isolation keys keep tenants out of each other's calls, and compositions that call the
runner one input at a time pack through the coalescer."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoItemError
from langchain_autodemo.serving import create_app
from tests.fakes import ScriptedChatModel, asked_questions, solver, well_formed

SECRETS = [
    f"(patient: {name} Doe, secret {name.lower()}word)" for name in ("Jane", "John", "Ada", "Max")
]
QUESTIONS = [f"What is {i} + {i}? {secret}" for i, secret in enumerate(SECRETS, 1)]


@pytest.fixture(autouse=True)
def _fresh_sse_exit_event():
    from sse_starlette.sse import AppStatus

    AppStatus.should_exit_event = None
    yield
    AppStatus.should_exit_event = None


def client_for(app, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://app", headers=headers)


def others(index: int) -> list[str]:
    return [s for i, s in enumerate(SECRETS) if i != index]


# -- what a served client can see ----------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["invoke", "stream", "stream_log", "stream_events"])
async def test_packed_clients_never_see_each_others_text(endpoint: str) -> None:
    """Worst case: packing across clients allowed. Every response body and stream of a
    request holds its own question and none of its neighbours' secrets."""
    model = ScriptedChatModel(script=solver())
    app = create_app(
        AutoDemoBatchRunnable(model, batch_size=4), max_wait_seconds=0.3, isolate_by="none"
    )
    async with client_for(app) as client:
        responses = await asyncio.gather(
            *(client.post(f"/autodemo/{endpoint}", json={"input": q}) for q in QUESTIONS)
        )
    assert len(model.calls) == 1  # the four requests really shared one packed call
    for index, response in enumerate(responses):
        assert response.status_code == 200
        body = response.text
        assert str(2 * (index + 1)) in body
        for secret in others(index):
            assert secret not in body, (endpoint, index, secret)


async def test_a_neighbours_text_quoted_in_a_rejection_never_reaches_the_caller() -> None:
    """The model writes a neighbour's question (with its secret) under this request's
    index every time: the request fails, and its error names no neighbour's text."""

    def script(messages: list[BaseMessage], n: int) -> str:
        questions = asked_questions(messages)
        if len(questions) == 1:  # asked alone: restate the other client's question
            stolen = QUESTIONS[1] if questions[0] == QUESTIONS[0] else questions[0]
            return f"Q[1]: {stolen} Also what is 9 + 9?\nA[1]: The answer is 1978."
        blocks = well_formed(questions, lambda q: "2" if "1 + 1" in q else "4").split("\n\n")
        return "\n\n".join(
            b.replace(QUESTIONS[0], QUESTIONS[1] + " Also what is 9 + 9?") for b in blocks
        )

    model = ScriptedChatModel(script=script)
    app = create_app(
        AutoDemoBatchRunnable(model, batch_size=2, retry_initial_delay=0),
        max_wait_seconds=0.3,
        isolate_by="none",
    )
    async with client_for(app) as client:
        first, _ = await asyncio.gather(
            client.post("/autodemo/invoke", json={"input": QUESTIONS[0]}),
            client.post("/autodemo/invoke", json={"input": QUESTIONS[1]}),
        )
        log = await client.post("/autodemo/stream_log", json={"input": QUESTIONS[0]})
    assert first.status_code == 502
    for text in (first.text, log.text):
        assert SECRETS[1] not in text
    assert "<model text>" in first.json()["detail"]["message"]


# -- isolation keys -------------------------------------------------------------------------


def _questions_per_call(model: ScriptedChatModel) -> list[set[str]]:
    return [set(asked_questions(call)) or {call[-1].content} for call in model.calls]


async def test_tenants_never_share_a_call_and_one_tenants_requests_do() -> None:
    model = ScriptedChatModel(script=solver())
    app = create_app(
        AutoDemoBatchRunnable(model, batch_size=8),
        max_wait_seconds=0.3,
        isolate_by="header:X-Tenant",
    )
    tenant_of = {q: ("a" if i % 2 == 0 else "b") for i, q in enumerate(QUESTIONS)}
    async with client_for(app) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/autodemo/invoke", json={"input": q}, headers={"X-Tenant": tenant_of[q]}
                )
                for q in QUESTIONS
            )
        )
    assert [r.json()["output"] for r in responses] == ["2", "4", "6", "8"]
    calls = _questions_per_call(model)
    assert len(calls) == 2  # one per tenant: isolation costs one call per extra tenant here
    for asked in calls:
        assert len({tenant_of[q] for q in asked}) == 1


async def test_by_default_different_api_keys_never_share_a_call() -> None:
    model = ScriptedChatModel(script=solver())
    app = create_app(AutoDemoBatchRunnable(model, batch_size=8), max_wait_seconds=0.3)
    async with (
        client_for(app, Authorization="Bearer key-a") as a,
        client_for(app, Authorization="Bearer key-b") as b,
    ):
        await asyncio.gather(
            *(
                (a if i < 2 else b).post("/autodemo/invoke", json={"input": q})
                for i, q in enumerate(QUESTIONS)
            )
        )
    calls = _questions_per_call(model)
    assert sorted(map(sorted, calls)) == sorted([sorted(QUESTIONS[:2]), sorted(QUESTIONS[2:])])


async def test_a_client_cannot_join_another_group_through_its_request_config() -> None:
    model = ScriptedChatModel(script=solver())
    app = create_app(
        AutoDemoBatchRunnable(model, batch_size=8),
        max_wait_seconds=0.3,
        isolate_by="header:X-Tenant",
    )
    async with client_for(app) as client:
        forged = {"metadata": {"autodemo_isolation_group": "whatever"}}
        await asyncio.gather(
            client.post(
                "/autodemo/invoke", json={"input": QUESTIONS[0]}, headers={"X-Tenant": "a"}
            ),
            client.post(
                "/autodemo/invoke",
                json={"input": QUESTIONS[1], "config": forged},
                headers={"X-Tenant": "b"},
            ),
        )
    assert len(model.calls) == 2


def test_an_unknown_isolation_spec_is_refused() -> None:
    from langchain_autodemo.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="header:NAME"):
        create_app(AutoDemoBatchRunnable(ScriptedChatModel(script=solver())), isolate_by="ip")


async def test_a_question_object_matches_the_question_schema() -> None:
    app = create_app(AutoDemoBatchRunnable(ScriptedChatModel(script=solver())))
    async with client_for(app) as client:
        response = await client.post("/autodemo/invoke", json={"input": {"question": "1 + 5?"}})
    assert (response.status_code, response.json()["output"]) == (200, "6")


def test_the_runner_has_a_real_input_schema() -> None:
    runner = AutoDemoBatchRunnable(ScriptedChatModel(script=solver()))
    schema = runner.get_input_jsonschema()
    assert schema.get("anyOf") or schema.get("type") not in (None, "object")
    assert json.dumps(schema).count("string") >= 1
    templated = AutoDemoBatchRunnable(
        ScriptedChatModel(script=solver()), input_template="{premise} / {hypothesis}"
    )
    assert set(templated.get_input_jsonschema()["properties"]) == {"premise", "hypothesis"}


# -- in-process coalescing: which compositions pack ------------------------------------------


def _model_and_runner(**kwargs) -> tuple[ScriptedChatModel, AutoDemoBatchRunnable]:
    model = ScriptedChatModel(script=solver())
    return model, AutoDemoBatchRunnable(model, batch_size=8, **kwargs)


def test_chain_batch_as_completed_packs_through_the_coalescer() -> None:
    questions = [f"What is {i} + 1?" for i in range(7)]
    prompt = RunnableLambda(lambda q: q)
    plain_model, plain = _model_and_runner()
    model, runner = _model_and_runner()
    plain_out = dict((prompt | plain).batch_as_completed(questions))
    out = dict(
        (prompt | runner.with_coalescing(max_wait_seconds=0.3)).batch_as_completed(questions)
    )
    assert out == plain_out == {i: str(i + 1) for i in range(7)}
    assert len(plain_model.calls) == 7  # LangChain calls invoke once per input
    assert len(model.calls) <= 2  # the coalescer packs concurrent invokes


def test_runnable_parallel_batch_packs_through_the_coalescer() -> None:
    model, runner = _model_and_runner()
    coalesced = runner.with_coalescing(max_wait_seconds=0.3)
    parallel = RunnableParallel(a=coalesced, b=RunnableLambda(len))
    out = parallel.batch(["1 + 1?", "2 + 2?", "3 + 3?"])
    assert [o["a"] for o in out] == ["2", "4", "6"]
    assert len(model.calls) == 1


async def test_gathered_ainvokes_pack_through_the_coalescer() -> None:
    plain_model, plain = _model_and_runner()
    model, runner = _model_and_runner()
    coalesced = runner.with_coalescing(max_wait_seconds=0.3)
    questions = [f"{i} + {i}?" for i in range(6)]
    assert await asyncio.gather(*(plain.ainvoke(q) for q in questions)) == [
        str(2 * i) for i in range(6)
    ]
    assert await asyncio.gather(*(coalesced.ainvoke(q) for q in questions)) == [
        str(2 * i) for i in range(6)
    ]
    assert (len(plain_model.calls), len(model.calls)) == (6, 1)


def test_coalesced_chat_prompts_keep_their_system_message() -> None:
    model, runner = _model_and_runner()
    prompt = ChatPromptTemplate.from_messages([("system", "Be exact."), ("human", "{q}")])
    chain = prompt | runner.with_coalescing(max_wait_seconds=0.3)
    results = dict(chain.batch_as_completed([{"q": "1 + 2?"}, {"q": "3 + 4?"}]))
    assert results == {0: "3", 1: "7"}
    assert all(call[0].content == "Be exact." for call in model.calls)


def test_a_failed_coalesced_item_is_the_callers_own_error() -> None:
    model = ScriptedChatModel(script=lambda m, n: "no markers at all")
    runner = AutoDemoBatchRunnable(model, batch_size=8, max_attempts=1)
    coalesced = runner.with_coalescing(max_wait_seconds=0.2)
    errors: list[BaseException] = []

    def ask(q: str) -> None:
        try:
            coalesced.invoke(q)
        except AutoDemoItemError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(f"{i} + 1?",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(errors) == 3 and all(e.index == 0 for e in errors)


# -- no stream is read forever -------------------------------------------------------------


class _StallingModel(BaseChatModel):
    """Streams one chunk, then never another (until released)."""

    release: threading.Event
    calls: int = 0

    model_config = {"arbitrary_types_allowed": True}

    @property
    def _llm_type(self) -> str:
        return "stalling-fake"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        raise NotImplementedError

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        self.calls += 1
        yield ChatGenerationChunk(message=AIMessageChunk(content="Q[1]: "))
        self.release.wait(30)

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
        self.calls += 1
        yield ChatGenerationChunk(message=AIMessageChunk(content="Q[1]: "))
        for _ in range(300):
            if self.release.is_set():
                return
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("driver", ["batch", "abatch"])
async def test_a_stalled_stream_fails_its_call_and_is_retried_then_errors(driver: str) -> None:
    release = threading.Event()
    model = _StallingModel(release=release)
    runner = AutoDemoBatchRunnable(
        model, stall_timeout=0.3, max_attempts=2, retry_initial_delay=0.0
    )
    started = time.monotonic()
    try:
        if driver == "batch":
            results = await asyncio.to_thread(runner.batch, ["1 + 1?"], return_exceptions=True)
        else:
            results = await runner.abatch(["1 + 1?"], return_exceptions=True)
    finally:
        release.set()
    elapsed = time.monotonic() - started
    (error,) = results
    assert isinstance(error, AutoDemoItemError) and isinstance(error, TimeoutError)
    assert "stall_timeout" in str(error) and error.attempts == 2
    assert model.calls == 2 and elapsed < 5


@pytest.mark.parametrize("driver", ["batch", "abatch"])
async def test_a_call_timeout_bounds_a_slow_trickle(driver: str) -> None:
    def script(messages, n):
        return ("Q[1]: 1 + 1?\nA[1]: " + "thinking " * 400, {"finish_reason": "stop"})

    class Slow(ScriptedChatModel):
        def _stream(self, *args, **kwargs):
            for chunk in super()._stream(*args, **kwargs):
                time.sleep(0.01)
                yield chunk

        async def _astream(self, *args, **kwargs):
            for chunk in super()._stream(*args, **kwargs):
                await asyncio.sleep(0.01)
                yield chunk

    model = Slow(script=script, chunk_size=1)
    runner = AutoDemoBatchRunnable(model, call_timeout=0.3, max_attempts=1)
    started = time.monotonic()
    if driver == "batch":
        results = await asyncio.to_thread(runner.batch, ["1 + 1?"], return_exceptions=True)
    else:
        results = await runner.abatch(["1 + 1?"], return_exceptions=True)
    (error,) = results
    assert isinstance(error, TimeoutError) and "call_timeout" in str(error)
    assert time.monotonic() - started < 3
