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
    # the request's own view of its call, never the packed model run
    assert any(op["path"].startswith("/logs/autodemo_call") for op in ops)

    streamed = httpx.post(f"{served}/autodemo/stream_events", json={"input": "2 + 9?"}, timeout=30)
    kinds = [data["event"] for kind, data in events(streamed) if kind == "data"]
    assert kinds[0] == "on_chain_start" and kinds[-1] == "on_chain_end"
    assert "on_chat_model_stream" not in kinds
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


SECRETS = ["(patient: Jane Doe, born in March)", "(patient: John Roe, born in May)",
           "(patient: Ada Poe, born in June)", "(patient: Max Moe, born in July)"]  # fmt: skip


async def _ask_all(base: str, endpoint: str, headers=None) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"/autodemo/{endpoint}",
                    json={"input": f"What is {i} + {i}? {secret}"},
                    headers=(headers or {}) | {"X-Tenant": f"t{i % 2}"},
                )
                for i, secret in enumerate(SECRETS, 1)
            )
        )


async def test_packed_clients_never_see_each_others_text_over_http(tmp_path) -> None:
    """Three rounds of four concurrent clients on every endpoint, packing across clients
    allowed: no response or stream holds a neighbour's secret; the operator's call log
    shows that they really shared calls."""
    log = tmp_path / "calls.jsonl"
    with autodemo_serve(*SERVE, "--isolate-by", "none", "--call-log", str(log)) as base:
        for endpoint in ("invoke", "stream_log", "stream_events"):
            responses = await _ask_all(base, endpoint)
            for i, response in enumerate(responses):
                assert response.status_code == 200
                assert str(2 * (i + 1)) in response.text
                leaked = [s for j, s in enumerate(SECRETS) if j != i and s in response.text]
                assert leaked == [], (endpoint, i, leaked)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    packed = [c for c in calls if sum(s in c["messages"][-1]["content"] for s in SECRETS) > 1]
    assert packed  # clients did share calls: the isolation above is not a lack of packing


async def test_tenants_of_the_isolation_header_never_share_a_call(tmp_path) -> None:
    log = tmp_path / "calls.jsonl"
    with autodemo_serve(*SERVE, "--isolate-by", "header:X-Tenant", "--call-log", str(log)) as base:
        responses = await _ask_all(base, "invoke")
    assert [r.json()["output"] for r in responses] == ["2", "4", "6", "8"]
    for call in (json.loads(line) for line in log.read_text().splitlines()):
        asked = call["messages"][-1]["content"]
        tenants = {i % 2 for i, s in enumerate(SECRETS, 1) if s in asked}
        assert len(tenants) == 1, asked
