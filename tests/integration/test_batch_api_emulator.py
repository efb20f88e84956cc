"""The Batch API emulator, driven by the real ``openai`` SDK over 127.0.0.1.

Upstream is the scripted chat server (a test double, :mod:`tests.scripted_chat_server`)
started as its own process; the emulator is ``autodemo emulate-batch-api``, also a real
process. Nothing is patched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import openai
import pytest

from tests.integration.batch_api_servers import emulator, scripted_upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with scripted_upstream() as url:
        yield url


@pytest.fixture(scope="module")
def client(upstream: str) -> Iterator[openai.OpenAI]:
    with emulator(upstream, "--max-requests-per-file", "5") as url:
        yield openai.OpenAI(base_url=url, api_key="none", max_retries=0)


def _line(custom_id: str, question: str, model: str = "scripted") -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "temperature": 0,
                 "messages": [{"role": "user", "content": question}]},
    }  # fmt: skip


def _upload(client: openai.OpenAI, lines: list[dict] | bytes) -> str:
    data = (
        lines
        if isinstance(lines, bytes)
        else b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    )
    return client.files.create(file=("in.jsonl", data), purpose="batch").id


def _wait(client: openai.OpenAI, batch_id: str, timeout: float = 30) -> openai.types.Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.05)


def _jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).content.splitlines()]


def test_a_batch_runs_every_request_and_splits_output_and_errors(client: openai.OpenAI) -> None:
    model = "scripted:failall=tomatoes"
    file_id = _upload(
        client,
        [_line("ok-1", "What is 2 + 3?", model), _line("bad", "What is 4 + 4 tomatoes?", model),
         _line("ok-2", "What is 10 + 20?", model)],
    )  # fmt: skip
    created = client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"autodemo_tag": "conformance"},
    )
    assert created.status == "validating" and created.input_file_id == file_id
    batch = _wait(client, created.id)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed,
            batch.request_counts.failed) == (3, 2, 1)  # fmt: skip
    assert batch.metadata == {"autodemo_tag": "conformance"}
    output = {r["custom_id"]: r for r in _jsonl(client, batch.output_file_id)}
    errors = {r["custom_id"]: r for r in _jsonl(client, batch.error_file_id)}
    assert set(output) == {"ok-1", "ok-2"} and set(errors) == {"bad"}
    answer = output["ok-1"]["response"]["body"]["choices"][0]["message"]["content"]
    assert answer.endswith("The answer is 5.")
    assert output["ok-1"]["response"]["status_code"] == 200
    assert errors["bad"]["response"]["status_code"] == 500
    assert "tomatoes" in errors["bad"]["response"]["body"]["error"]["message"]
    usage = [r["response"]["body"]["usage"] for r in output.values()]
    assert batch.usage is not None
    assert batch.usage.input_tokens == sum(u["prompt_tokens"] for u in usage)
    assert batch.usage.output_tokens == sum(u["completion_tokens"] for u in usage)
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"
    listed = [b.id for b in client.batches.list(limit=100)]
    assert created.id in listed


def test_invalid_lines_fail_the_batch_naming_the_line(client: openai.OpenAI) -> None:
    good = json.dumps(_line("a", "What is 1 + 1?")).encode()
    duplicate = json.dumps(_line("a", "What is 2 + 2?")).encode()
    batch = _wait(
        client,
        client.batches.create(
            input_file_id=_upload(client, good + b"\n" + duplicate + b"\n{not json\n"),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        ).id,
    )
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.code, e.line) for e in batch.errors.data] == [
        ("duplicate_custom_id", 2),
        ("invalid_json_line", 3),
    ]
    assert batch.output_file_id is None


def test_one_model_per_batch(client: openai.OpenAI) -> None:
    lines = [_line("a", "What is 1 + 1?"), _line("b", "What is 1 + 2?", "scripted:delay=0")]
    batch = _wait(
        client,
        client.batches.create(
            input_file_id=_upload(client, lines),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        ).id,
    )
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert batch.errors.data[0].code == "mixed_models"


def test_the_per_file_request_limit_is_enforced(client: openai.OpenAI) -> None:
    lines = [_line(f"r{i}", f"What is {i} + 1?") for i in range(6)]  # the emulator allows 5
    batch = _wait(
        client,
        client.batches.create(
            input_file_id=_upload(client, lines),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        ).id,
    )
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert batch.errors.data[0].code == "too_many_requests"


def test_bad_batch_parameters_are_api_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file_missing", endpoint="/v1/chat/completions", completion_window="24h"
        )
    file_id = _upload(client, [_line("a", "What is 1 + 1?")])
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")


def test_cancel_stops_the_requests_not_yet_started(client: openai.OpenAI) -> None:
    lines = [_line(f"slow-{i}", f"What is {i} + 2?", "scripted:delay=0.3") for i in range(5)]
    created = client.batches.create(
        input_file_id=_upload(client, lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    time.sleep(0.5)
    assert client.batches.cancel(created.id).status == "cancelling"
    batch = _wait(client, created.id)
    assert batch.status == "cancelled"
    assert batch.request_counts is not None
    done = batch.request_counts.completed
    assert 1 <= done < 5
    errors = _jsonl(client, batch.error_file_id)
    assert len(errors) == 5 - done
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(_wait(client, client.batches.create(
            input_file_id=_upload(client, [_line("x", "What is 1 + 1?")]),
            endpoint="/v1/chat/completions", completion_window="24h").id).id)  # fmt: skip


def test_list_pages_newest_first(client: openai.OpenAI) -> None:
    file_id = _upload(client, [_line("p", "What is 3 + 3?")])
    ids = [
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(3)
    ]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    walked = [b.id for b in client.batches.list(limit=2)]  # the SDK follows the pages
    assert walked[:3] == ids[::-1] and len(walked) == len(set(walked))


def test_chat_completions_pass_through_to_the_upstream(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "What is 20 + 22?"}]
    )
    assert reply.choices[0].message.content.endswith("The answer is 42.")
    stream = client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "What is 1 + 2?"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.endswith("The answer is 3.")
