"""`autodemo serve` really listens on 127.0.0.1, coalesces concurrent HTTP requests, and keeps
every request's errors, runs and events its own.

The served model is a scripted double (``tests.fakes.RefusingAutoDemoModel``: sums the
numbers, never answers a question containing "unanswerable"), so answers and failures can
be checked exactly; everything else (the CLI, uvicorn, LangServe, HTTP) is the real thing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import autodemo_serve

SERVE = ["--model", "import:tests.fakes:refusing_model", "--instructions", "Add the numbers.",
         "--batch-size", "4", "--max-wait", "0.3"]  # fmt: skip


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    with autodemo_serve(*SERVE) as base:
        yield base


async def test_concurrent_invoke_requests_get_their_own_answers(served: str) -> None:
    questions = [f"What is {i} + {i}?" for i in range(1, 7)]
    async with httpx.AsyncClient(base_url=served, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post("/autodemo/invoke", json={"input": q}) for q in questions)
        )
    assert [r.json()["output"] for r in responses] == [str(2 * i) for i in range(1, 7)]


async def test_a_bad_request_is_its_own_422_and_never_fails_its_neighbours(served: str) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=30) as client:
        before, blank, failing, after = await asyncio.gather(
            client.post("/autodemo/invoke", json={"input": "What is 1 + 2?"}),
            client.post("/autodemo/invoke", json={"input": "   "}),
            client.post("/autodemo/invoke", json={"input": "What is the unanswerable 5 + 5?"}),
            client.post("/autodemo/invoke", json={"input": "What is 3 + 4?"}),
        )
    assert (before.status_code, before.json()["output"]) == (200, "3")
    assert (after.status_code, after.json()["output"]) == (200, "7")
    assert blank.status_code == 422
    assert blank.json()["detail"]["message"] == "the input is empty"
    assert failing.status_code == 502
    assert failing.json()["detail"] == {
        "error": "AutoDemoItemError",
        "status_code": 502,
        "message": "no answer after 3 model call(s): missing from the completion",
        "attempts": 3,
    }


def test_batch_endpoint_returns_per_item_results_and_errors(served: str) -> None:
    response = httpx.post(
        f"{served}/autodemo/batch",
        json={"inputs": ["1 + 2?", "", "unanswerable 2 + 2?", "5 + 5?"]},
        timeout=30,
    )
    assert response.status_code == 200
    output = response.json()["output"]
    assert output[0] == "3" and output[3] == "10"
    assert (output[1]["status_code"], output[1]["message"]) == (422, "the input is empty")
    assert (output[2]["status_code"], output[2]["error"]) == (502, "AutoDemoItemError")


def events(response: httpx.Response) -> list[tuple[str, object]]:
    found = []
    for block in response.text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], json.loads(fields.get("data", "null"))))
    return found


def test_stream_log_and_stream_events_carry_the_run(served: str) -> None:
    log = httpx.post(f"{served}/autodemo/stream_log", json={"input": "2 + 9?"}, timeout=30)
    ops = [op for kind, data in events(log) if kind == "data" for op in data["ops"]]
    assert {"op": "replace", "path": "/final_output", "value": "11"} in ops
    assert any("/logs/" in op["path"] for op in ops)  # the model run, under the request's run

    streamed = httpx.post(f"{served}/autodemo/stream_events", json={"input": "2 + 9?"}, timeout=30)
    kinds = [data["event"] for kind, data in events(streamed) if kind == "data"]
    assert kinds[0] == "on_chain_start" and kinds[-1] == "on_chain_end"
    assert "on_chat_model_stream" in kinds
    failed = httpx.post(
        f"{served}/autodemo/stream_events", json={"input": "unanswerable 1 + 1"}, timeout=30
    )
    kind, data = events(failed)[-1]
    assert kind == "error" and data["status_code"] == 502  # not LangServe's bare 500


def test_input_and_output_schemas_follow_the_runner(served: str) -> None:
    question = httpx.get(f"{served}/autodemo/input_schema", timeout=10).json()
    assert (question["type"], question["title"]) == ("string", "question")
    with autodemo_serve(
        *SERVE, "--template", "Premise: {premise} Hypothesis: {hypothesis}"
    ) as base:
        schema = httpx.get(f"{base}/autodemo/input_schema", timeout=10).json()
        answer = httpx.post(
            f"{base}/autodemo/invoke",
            json={"input": {"premise": "1 + 1", "hypothesis": "2 + 2"}},
            timeout=30,
        )
        missing = httpx.post(
            f"{base}/autodemo/invoke", json={"input": {"premise": "1 + 1"}}, timeout=30
        )
    assert set(schema["properties"]) == {"premise", "hypothesis"}
    assert answer.json()["output"] == "6"
    assert missing.status_code == 422 and "hypothesis" in missing.text


async def test_coalesced_stream_events_requests_each_carry_the_model_run(served: str) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=30) as client:
        responses = await asyncio.gather(
            *(
                client.post("/autodemo/stream_events", json={"input": f"{i} + {i}?"})
                for i in range(1, 4)
            )
        )
    model_runs, call_ids = set(), set()
    for i, response in enumerate(responses, 1):
        data = [d for kind, d in events(response) if kind == "data"]
        assert data[-1]["event"] == "on_chain_end" and data[-1]["data"]["output"] == str(2 * i)
        call_ids.add(data[-1]["metadata"]["autodemo_call_id"])  # the request's run records it
        assert data[-1]["metadata"]["autodemo_output_tokens"] > 0
        model_runs |= {d["run_id"] for d in data if d["event"] == "on_chat_model_start"}
        assert any(d["event"] == "on_chat_model_stream" for d in data)
    assert len(model_runs) == 1 and len(call_ids) == 1  # one packed call, seen by all three
