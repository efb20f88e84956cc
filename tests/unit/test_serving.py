"""MicroBatcher and the LangServe app: single requests coalesce into packed calls."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from pydantic import BaseModel

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoItemError
from langchain_autodemo.errors import AutoDemoInputError
from langchain_autodemo.serving import MicroBatcher, create_app
from tests.fakes import ScriptedChatModel, arithmetic_answer, asked_questions, solver, well_formed

QUESTIONS = [f"What is {i} + {i}?" for i in range(1, 11)]


@pytest.fixture(autouse=True)
def _fresh_sse_exit_event():
    """sse-starlette keeps one exit event per process, bound to the first event loop that
    streamed; every test here runs on its own loop (in a server there is only one)."""
    from sse_starlette.sse import AppStatus

    AppStatus.should_exit_event = None
    yield
    AppStatus.should_exit_event = None


def make_runner(script=None, **kwargs):
    model = ScriptedChatModel(script=script or solver())
    return AutoDemoBatchRunnable(model, batch_size=4, **kwargs), model


async def test_concurrent_requests_are_packed_into_batches() -> None:
    runner, model = make_runner()
    batcher = MicroBatcher(runner, max_wait_seconds=0.5)
    answers = await asyncio.gather(*(batcher.ainvoke(q) for q in QUESTIONS))
    assert answers == [str(2 * i) for i in range(1, 11)]
    assert [len(asked_questions(call)) for call in model.calls] == [4, 4, 2]


async def test_a_lone_request_is_sent_after_the_wait() -> None:
    runner, model = make_runner()
    assert await MicroBatcher(runner, max_wait_seconds=0.01).ainvoke("What is 1 + 1?") == "2"
    assert len(model.calls) == 1


async def test_one_callers_failed_item_does_not_fail_the_others() -> None:
    runner, _ = make_runner(skip_first_question, max_attempts=1)
    batcher = MicroBatcher(runner, max_wait_seconds=0.5)
    results = await asyncio.gather(
        *(batcher.ainvoke(q) for q in QUESTIONS[:4]), return_exceptions=True
    )
    assert isinstance(results[0], AutoDemoItemError)
    assert results[1:] == ["4", "6", "8"]


def test_negative_wait_is_rejected() -> None:
    runner, _ = make_runner()
    with pytest.raises(ValueError, match="max_wait_seconds"):
        MicroBatcher(runner, max_wait_seconds=-1)


async def test_langserve_app_answers_invoke_and_batch_requests() -> None:
    runner, model = make_runner()
    app = create_app(runner, max_wait_seconds=0.2)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        single = await asyncio.gather(
            *(client.post("/autodemo/invoke", json={"input": q}) for q in QUESTIONS[:4])
        )
        batch = await client.post("/autodemo/batch", json={"inputs": QUESTIONS[4:8]})
    assert [r.json()["output"] for r in single] == ["2", "4", "6", "8"]
    assert batch.json()["output"] == ["10", "12", "14", "16"]
    assert len(model.calls) == 2  # four HTTP requests coalesced into one call, plus the batch


# -- each request's config reaches its own item run ----------------------------------------


class ItemRuns(BaseCallbackHandler):
    """Records the root runs (one per served request) and the chat-model runs it sees."""

    def __init__(self) -> None:
        self.starts: list[dict] = []
        self.ends: list[object] = []
        self.models = 0

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kw) -> None:
        if parent_run_id is None:
            self.starts.append({"run_id": run_id, "input": inputs, **kw})

    def on_chain_end(self, outputs, *, run_id, parent_run_id=None, **kw) -> None:
        if parent_run_id is None:
            self.ends.append(outputs)

    def on_chat_model_start(self, *args, **kw) -> None:
        self.models += 1


async def test_each_request_config_reaches_its_own_item_run_in_the_coalesced_batch() -> None:
    runner, model = make_runner()
    batcher = MicroBatcher(runner, max_wait_seconds=0.5)
    handlers = [ItemRuns() for _ in range(3)]
    run_ids = [uuid.uuid4() for _ in range(3)]
    answers = await asyncio.gather(
        *(
            batcher.ainvoke(
                QUESTIONS[i],
                {
                    "callbacks": [handlers[i]],
                    "tags": [f"client-{i}"],
                    "metadata": {"request": i},
                    "run_name": f"request-{i}",
                    "run_id": run_ids[i],
                },
            )
            for i in range(3)
        )
    )
    assert answers == ["2", "4", "6"]
    assert len(model.calls) == 1  # one packed call served all three
    for i, handler in enumerate(handlers):
        (start,) = handler.starts
        assert start["input"] == QUESTIONS[i]
        assert start["run_id"] == run_ids[i]
        assert start["name"] == f"request-{i}"
        assert f"client-{i}" in start["tags"]
        assert start["metadata"]["request"] == i
        assert handler.ends == [str(2 * (i + 1))]


async def test_a_blank_request_fails_alone_and_its_neighbours_are_answered() -> None:
    runner, model = make_runner()
    batcher = MicroBatcher(runner, max_wait_seconds=0.3)
    results = await asyncio.gather(
        batcher.ainvoke(QUESTIONS[0]),
        batcher.ainvoke("   "),
        batcher.ainvoke(42),
        batcher.ainvoke(QUESTIONS[1]),
        return_exceptions=True,
    )
    assert results[0] == "2" and results[3] == "4"
    assert isinstance(results[1], AutoDemoInputError) and results[1].index == 0
    assert "empty" in results[1].reason
    assert isinstance(results[2], AutoDemoInputError) and "int" in results[2].reason
    assert [asked_questions(call) for call in model.calls] == [QUESTIONS[:2]]


async def test_a_failed_item_is_numbered_as_its_callers_only_item() -> None:
    runner, _ = make_runner(skip_first_question, max_attempts=1)
    batcher = MicroBatcher(runner, max_wait_seconds=0.3)
    results = await asyncio.gather(
        batcher.ainvoke(QUESTIONS[1]), batcher.ainvoke(QUESTIONS[0]), return_exceptions=True
    )
    assert results[0] == "4"
    assert isinstance(results[1], AutoDemoItemError) and results[1].index == 0
    assert str(results[1]).startswith(f"item 0 ({QUESTIONS[0]!r}):")  # the caller's own input


def skip_first_question(messages, n):
    """Leaves out the block of QUESTIONS[0], keeping every other block's own index (a
    renumbered skip is a move without corroboration: every shifted item is re-asked)."""
    blocks = well_formed(asked_questions(messages), arithmetic_answer).split("\n\n")
    return "\n\n".join(b for b in blocks if f": {QUESTIONS[0]}\n" not in b)


# -- the LangServe app: per-request status codes, per-item /batch results ----------------


class RateLimited(Exception):
    status_code = 429


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


async def test_http_bad_input_is_that_requests_422_and_neighbours_get_200() -> None:
    runner, model = make_runner()
    async with client_for(create_app(runner, max_wait_seconds=0.3)) as client:
        good, blank, other = await asyncio.gather(
            client.post("/autodemo/invoke", json={"input": QUESTIONS[0]}),
            client.post("/autodemo/invoke", json={"input": " \n "}),
            client.post("/autodemo/invoke", json={"input": QUESTIONS[1]}),
        )
        typed = await client.post("/autodemo/invoke", json={"input": 7})
    assert (good.status_code, good.json()["output"]) == (200, "2")
    assert (other.status_code, other.json()["output"]) == (200, "4")
    assert blank.status_code == 422
    assert blank.json()["detail"] == {
        "error": "AutoDemoInputError",
        "status_code": 422,
        "message": "the input is empty",
        "attempts": None,
    }
    assert typed.status_code == 422
    assert len(model.calls) == 1


async def test_http_item_failures_have_a_clear_status_and_message() -> None:
    def script(messages, n):
        questions = asked_questions(messages)
        if QUESTIONS[2] in questions:
            return RateLimited("slow down")
        return skip_first_question(messages, n)

    runner, _ = make_runner(script, max_attempts=1)
    async with client_for(create_app(runner, max_wait_seconds=0.3)) as client:
        missing, answered = await asyncio.gather(
            client.post("/autodemo/invoke", json={"input": QUESTIONS[0]}),
            client.post("/autodemo/invoke", json={"input": QUESTIONS[1]}),
        )
        limited = await client.post("/autodemo/invoke", json={"input": QUESTIONS[2]})
    assert (answered.status_code, answered.json()["output"]) == (200, "4")
    assert missing.status_code == 502
    assert missing.json()["detail"]["error"] == "AutoDemoItemError"
    assert missing.json()["detail"]["message"] == (
        "no answer after 1 model call(s): missing from the completion"
    )
    assert limited.status_code == 429
    assert limited.json()["detail"]["error"] == "AutoDemoModelCallError"
    assert "RateLimited: slow down" in limited.json()["detail"]["message"]


async def test_http_batch_returns_per_item_results_and_errors() -> None:
    runner, _ = make_runner(skip_first_question, max_attempts=1)
    async with client_for(create_app(runner)) as client:
        response = await client.post(
            "/autodemo/batch", json={"inputs": [QUESTIONS[1], "", QUESTIONS[0], QUESTIONS[2]]}
        )
    assert response.status_code == 200
    output = response.json()["output"]
    assert output[0] == "4" and output[3] == "6"
    assert output[1]["status_code"] == 422 and output[1]["message"] == "the input is empty"
    assert output[2]["status_code"] == 502 and output[2]["error"] == "AutoDemoItemError"
    assert len(response.json()["metadata"]["run_ids"]) == 4


def sse_events(text: str) -> list[tuple[str, object]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"]) if "data" in lines else None))
    return events


async def test_stream_log_and_stream_events_carry_the_requests_run() -> None:
    runner, _ = make_runner()
    async with client_for(create_app(runner)) as client:
        log = await client.post("/autodemo/stream_log", json={"input": QUESTIONS[2]})
        events = await client.post("/autodemo/stream_events", json={"input": QUESTIONS[2]})
        streamed = await client.post("/autodemo/stream", json={"input": QUESTIONS[2]})
    ops = [op for kind, data in sse_events(log.text) if kind == "data" for op in data["ops"]]
    assert {"op": "replace", "path": "/final_output", "value": "6"} in ops
    # the request's view of its call, never the packed model run (it holds neighbours)
    assert any(op["path"].startswith("/logs/autodemo_call") for op in ops)
    assert not any(op["path"].startswith("/logs/ScriptedChatModel") for op in ops)
    kinds = [data["event"] for kind, data in sse_events(events.text) if kind == "data"]
    assert kinds[0] == "on_chain_start" and kinds[-1] == "on_chain_end"
    assert "on_chat_model_stream" not in kinds and "on_chat_model_start" not in kinds
    last = [data for kind, data in sse_events(events.text) if kind == "data"][-1]
    assert last["data"]["output"] == "6"
    assert ("data", "6") in sse_events(streamed.text)


@pytest.mark.parametrize("endpoint", ["stream", "stream_log", "stream_events"])
async def test_a_failed_stream_ends_with_the_requests_own_error_event(endpoint: str) -> None:
    runner, _ = make_runner(skip_first_question, max_attempts=1)
    async with client_for(create_app(runner)) as client:
        blank = await client.post(f"/autodemo/{endpoint}", json={"input": " "})
        missing = await client.post(f"/autodemo/{endpoint}", json={"input": QUESTIONS[0]})
    assert sse_events(blank.text)[-1] == (
        "error",
        {"error": "AutoDemoInputError", "status_code": 422, "message": "the input is empty",
         "attempts": None},
    )  # fmt: skip
    kind, data = sse_events(missing.text)[-1]
    assert kind == "error" and data["status_code"] == 502 and data["error"] == "AutoDemoItemError"


# -- schemas follow the runner -------------------------------------------------------------


class Verdict(BaseModel):
    label: str
    confidence: float


async def schemas(runner) -> tuple[dict, dict]:
    async with client_for(create_app(runner)) as client:
        inputs = (await client.get("/autodemo/input_schema")).json()
        outputs = (await client.get("/autodemo/output_schema")).json()
    return inputs, outputs


async def test_a_plain_runner_takes_a_question_and_answers_text() -> None:
    inputs, outputs = await schemas(make_runner()[0])
    assert (inputs["type"], inputs["title"]) == ("string", "question")
    assert {"type": "string"} in outputs["anyOf"]  # or a ServedError in /batch


async def test_an_input_template_gives_a_dict_schema_with_its_keys() -> None:
    runner, _ = make_runner(input_template="Premise: {premise} Hypothesis: {hypothesis}")
    inputs, _ = await schemas(runner)
    assert inputs["type"] == "object"
    assert set(inputs["properties"]) == {"premise", "hypothesis"}
    assert set(inputs["required"]) == {"premise", "hypothesis"}
    app = create_app(runner)
    async with client_for(app) as client:
        missing = await client.post("/autodemo/invoke", json={"input": {"premise": "1 + 1"}})
        ok = await client.post(
            "/autodemo/invoke", json={"input": {"premise": "1 + 1", "hypothesis": "2 + 2"}}
        )
    assert missing.status_code == 422 and "hypothesis" in missing.text
    assert ok.json()["output"] == "6"


async def test_include_details_gives_an_item_result_schema() -> None:
    runner, _ = make_runner(include_details=True)
    _, outputs = await schemas(runner)
    names = {ref["$ref"].rsplit("/", 1)[-1] for ref in outputs["anyOf"] if "$ref" in ref}
    assert "ItemResult" in names
    assert {"answer", "call_id", "input_tokens"} <= set(
        outputs["$defs"]["ItemResult"]["properties"]
    )
    async with client_for(create_app(runner)) as client:
        response = await client.post("/autodemo/invoke", json={"input": QUESTIONS[0]})
    body = response.json()
    assert body["output"]["answer"] == "2", body


async def test_a_pydantic_output_parser_gives_its_schema() -> None:
    runner, _ = make_runner(output_parser=Verdict)
    _, outputs = await schemas(runner)
    assert "Verdict" in outputs["$defs"]
