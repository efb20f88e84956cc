"""The Batch API path without a network: request lines, result parsing, state, cost, and
the job's round logic on an in-memory provider (a test double of the provider protocol).

End-to-end tests against the real emulator and the real openai SDK are in
``tests/integration/test_batch_api_*.py``.
"""

from __future__ import annotations

import doctest
import json
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, convert_to_messages
from langchain_openai import ChatOpenAI

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoItemError
from langchain_autodemo.batch_api import (
    BatchApiJob,
    BatchJobStateError,
    BatchProvider,
    BatchRequestError,
    OpenAIBatchProvider,
    Outcome,
    Price,
    PriceTable,
    RemoteBatch,
    openai_provider,
)
from langchain_autodemo.batch_api import cost as cost_module
from langchain_autodemo.batch_api.openai_provider import parse_result_lines
from langchain_autodemo.errors import AutoDemoError, ConfigurationError
from langchain_autodemo.testing import ScriptedAutoDemoModel


def _chat(**settings: Any) -> ChatOpenAI:
    # no socket-option probe (it opens a socket, which unit tests forbid)
    defaults: dict[str, Any] = {"model": "gpt-4o-mini", "api_key": "sk-test", "temperature": 0,
                                "http_socket_options": ()}  # fmt: skip
    return ChatOpenAI(**{**defaults, **settings})


MESSAGES = [SystemMessage("Add the numbers."), HumanMessage("Q[1]: What is 1 + 2?")]


@pytest.mark.parametrize("module", [openai_provider, cost_module])
def test_docstring_examples(module: Any) -> None:
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


# -- request lines ----------------------------------------------------------------------


def test_request_body_is_the_chat_models_own_payload_without_streaming() -> None:
    llm = _chat(max_tokens=300, streaming=True, seed=7, stop=["END"],
                model_kwargs={"user": "batch"},
                extra_body={"cache_prompt": True})  # fmt: skip
    line = OpenAIBatchProvider(llm).request("c0-a1", MESSAGES)
    assert (line["custom_id"], line["method"], line["url"]) == (
        "c0-a1", "POST", "/v1/chat/completions"
    )  # fmt: skip
    body = line["body"]
    expected = llm._get_request_payload(MESSAGES)
    expected.pop("stream")
    expected.update(expected.pop("extra_body"))
    assert body == expected
    assert "stream" not in body and body["cache_prompt"] is True
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0 and body["seed"] == 7
    assert body["max_completion_tokens"] == 300 and body["stop"] == ["END"]
    assert body["messages"] == [
        {"role": "system", "content": "Add the numbers."},
        {"role": "user", "content": "Q[1]: What is 1 + 2?"},
    ]
    json.dumps(line)  # a request line is plain JSON


def test_arguments_bound_to_the_model_reach_the_body() -> None:
    body = OpenAIBatchProvider(_chat().bind(stop=["Q[9]:"], top_p=0.5)).request("x", MESSAGES)[
        "body"
    ]
    assert body["stop"] == ["Q[9]:"] and body["top_p"] == 0.5


def test_only_chat_completions_models_are_accepted() -> None:
    with pytest.raises(ConfigurationError, match="ChatOpenAI"):
        OpenAIBatchProvider(ScriptedAutoDemoModel())
    with pytest.raises(ConfigurationError, match="Responses API"):
        OpenAIBatchProvider(_chat(use_responses_api=True)).request("x", MESSAGES)


# -- result lines -----------------------------------------------------------------------


def _ok(custom_id: str, content: Any, **extra: Any) -> bytes:
    body = {"choices": [{"message": {"content": content, **extra}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3}}  # fmt: skip
    return json.dumps({"custom_id": custom_id, "response": {"status_code": 200, "body": body},
                       "error": None}).encode()  # fmt: skip


def test_result_lines_of_every_shape() -> None:
    lines = [
        _ok("ok", "A[1]: 3"),
        json.dumps({"custom_id": "http500", "response": {"status_code": 500, "body": {
            "error": {"message": "overloaded", "code": "server_error"}}}, "error": None}).encode(),
        json.dumps({"custom_id": "expired", "response": None,
                    "error": {"code": "batch_expired", "message": "too late"}}).encode(),
        b'{"custom_id": "torn", "response": {"status_co',
        json.dumps({"response": {"status_code": 200}}).encode(),  # no custom_id
        json.dumps({"custom_id": "nochoices", "response": {"status_code": 200,
                    "body": {"object": "chat.completion"}}}).encode(),
        _ok("refusal", None, refusal="I cannot help with that."),
        json.dumps({"custom_id": "html", "response": {"status_code": 502,
                    "body": "<html>bad gateway</html>"}}).encode(),
        b"",
    ]  # fmt: skip
    outcomes = dict(parse_result_lines(b"\n".join(lines), "batch_1"))
    assert set(outcomes) == {"ok", "http500", "expired", "nochoices", "refusal", "html"}
    ok = outcomes["ok"]
    assert ok.ok and (ok.content, ok.finish_reason, ok.input_tokens, ok.output_tokens) == (
        "A[1]: 3", "length", 11, 3
    )  # fmt: skip
    assert (outcomes["http500"].error_code, outcomes["http500"].status_code) == (
        "server_error",
        500,
    )
    assert outcomes["expired"].error_code == "batch_expired"
    assert outcomes["nochoices"].error_code == "malformed_response"
    assert outcomes["refusal"].content == "I cannot help with that."
    assert not outcomes["html"].ok and "502" in outcomes["html"].error_message
    assert all(o.batch_id == "batch_1" for o in outcomes.values())


def test_an_outcome_becomes_the_message_the_engine_reads() -> None:
    outcome = Outcome(content="A[1]: 3", finish_reason="stop", input_tokens=9, output_tokens=4)
    message = outcome.message()
    assert message.content == "A[1]: 3"
    assert message.response_metadata == {"finish_reason": "stop"}
    assert message.usage_metadata == {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}
    assert Outcome.from_dict(json.loads(json.dumps(outcome.as_dict()))) == outcome
    assert Outcome(content="x").message().usage_metadata is None


def test_batch_request_errors_name_their_request_and_survive_pickling() -> None:
    error = Outcome.failure("overloaded", code="server_error", status_code=500,
                            batch_id="batch_9").error("c3-a1")  # fmt: skip
    assert isinstance(error, AutoDemoError) and isinstance(error, BatchRequestError)
    assert str(error) == "server_error: overloaded [500] (request c3-a1 of batch_9)"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.status_code, copy.batch_id, copy.custom_id, str(copy)) == (
        "server_error", 500, "batch_9", "c3-a1", str(error)
    )  # fmt: skip


# -- prices -----------------------------------------------------------------------------


def test_price_table_lookup_and_override(tmp_path: Path) -> None:
    table = PriceTable.default()
    assert table.price("gpt-4o-2024-08-06") == table.price("gpt-4o")
    assert table.price("gpt-4o-mini-2024-07-18") == table.price("gpt-4o-mini")  # longest prefix
    assert (table.price("gpt-4o-mini").input, table.price("gpt-4o-mini").output) == (0.15, 0.60)
    with pytest.raises(ConfigurationError, match="no price for model 'llama'"):
        table.price("llama")
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"llama": {"input": 1, "output": 2, "batch_discount": 0.25}}))
    custom = PriceTable.from_file(path)
    assert custom.price("llama") == Price(1.0, 2.0, 0.25)
    assert custom.price("gpt-4o") == table.price("gpt-4o")
    assert custom.price("llama").cost(1e6, 1e6, batch=True) == pytest.approx(2.25)
    path.write_text(json.dumps({"bad": {"input": "cheap"}}))
    with pytest.raises(ConfigurationError, match="'bad' needs numeric"):
        PriceTable.from_file(path)
    with pytest.raises(ConfigurationError, match="cannot read"):
        PriceTable.from_file(tmp_path / "missing.json")


# -- the job, on an in-memory provider ----------------------------------------------------


class InMemoryBatchProvider:
    """Test double of :class:`BatchProvider`: batches finish on the first poll, answered by
    the scripted Auto-Demo model; ``script`` may replace or drop any request's outcome."""

    name = "memory"

    def __init__(self, skip: int = 0, end_state: str = "completed", drop: int = 0) -> None:
        self.model = ScriptedAutoDemoModel(skip=skip)
        self.end_state = end_state
        self.drop = drop  # leave the first ``drop`` results out of the first batch's output
        self.batches: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self.submissions: list[str] = []

    def request(self, custom_id: str, messages: Sequence[BaseMessage]) -> dict[str, Any]:
        return {"custom_id": custom_id, "body": {
            "messages": [{"role": m.type if m.type != "human" else "user",
                          "content": m.content} for m in messages]}}  # fmt: skip

    def submit(self, lines: Sequence[bytes], *, tag: str) -> str:
        batch_id = f"mem_{len(self.batches)}"
        self.batches[batch_id] = (tag, [json.loads(line) for line in lines])
        self.submissions.append(tag)
        return batch_id

    def find(self, tag: str, *, since: float) -> str | None:
        return next((b for b, (t, _) in self.batches.items() if t == tag), None)

    def retrieve(self, batch_id: str) -> RemoteBatch:
        n = len(self.batches[batch_id][1])
        return RemoteBatch(batch_id, self.end_state, self.end_state, n, n, 0)  # type: ignore[arg-type]

    def outcomes(self, batch: RemoteBatch) -> Iterator[tuple[str, Outcome]]:
        for number, line in enumerate(self.batches[batch.batch_id][1]):
            if self.end_state == "failed" or (batch.batch_id == "mem_0" and number < self.drop):
                continue
            messages = convert_to_messages(line["body"]["messages"])
            text = str(self.model.invoke(messages).content)
            yield (
                line["custom_id"],
                Outcome(
                    content=text,
                    finish_reason="stop",
                    input_tokens=10,
                    output_tokens=len(text) // 4,
                ),
            )

    def cancel(self, batch_id: str) -> None:
        pass


def _runner(**settings: Any) -> AutoDemoBatchRunnable:
    settings.setdefault("batch_size", 4)
    return AutoDemoBatchRunnable(ScriptedAutoDemoModel(), instructions="Add.", **settings)


def _questions(n: int) -> list[str]:
    return [f"What is {i} + {10 * i}?" for i in range(1, n + 1)]


def _sums(n: int) -> list[str]:
    return [str(11 * i) for i in range(1, n + 1)]


def test_the_in_memory_double_is_a_provider() -> None:
    assert isinstance(InMemoryBatchProvider(), BatchProvider)
    assert isinstance(OpenAIBatchProvider(_chat()), BatchProvider)


def test_rounds_split_by_request_count_and_bytes() -> None:
    provider = InMemoryBatchProvider(skip=3)
    job = BatchApiJob(_runner(), _questions(20), provider=provider, max_requests_per_file=2)
    assert job.wait(poll_interval=0) == _sums(20)
    first_round = [t for t in provider.submissions if "-r1-" in t]
    assert len(first_round) == 3  # 5 requests, 2 per file
    assert all(len(p.custom_ids) <= 2 for p in job.state.parts(0))
    provider = InMemoryBatchProvider()
    job = BatchApiJob(_runner(), _questions(8), provider=provider, max_bytes_per_file=1000)
    assert job.wait(poll_interval=0) == _sums(8)
    assert len(provider.submissions) == 2  # each request line is over 500 bytes


def test_a_request_over_the_byte_limit_names_its_items() -> None:
    job = BatchApiJob(_runner(), _questions(4), provider=InMemoryBatchProvider(),
                      max_bytes_per_file=50)  # fmt: skip
    with pytest.raises(ConfigurationError, match=r"item\(s\) \[0, 1, 2, 3\].*50-byte limit"):
        job.step()


def test_a_request_missing_from_the_output_is_asked_again() -> None:
    provider = InMemoryBatchProvider(drop=1)
    job = BatchApiJob(_runner(), _questions(8), provider=provider)
    assert job.wait(poll_interval=0) == _sums(8)
    assert len(provider.submissions) == 2 and job.usage.reasks == 1
    missing = job.state.outcomes(["c0-a1"])["c0-a1"]
    assert missing.error_code == "missing_result"


def test_a_failed_batch_fails_its_items_after_every_attempt() -> None:
    job = BatchApiJob(_runner(max_attempts=2), _questions(3),
                      provider=InMemoryBatchProvider(end_state="failed"))  # fmt: skip
    results = job.wait(poll_interval=0, return_exceptions=True)
    assert all(isinstance(r, AutoDemoItemError) and r.attempts == 2 for r in results)
    assert "batch_failed" in str(results[0])


def test_replay_from_the_state_file_asks_nothing_again(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    provider = InMemoryBatchProvider(skip=2)
    first = BatchApiJob(_runner(), _questions(8), provider=provider, state=state,
                        metadata={"input_lines": list(range(1, 9))})  # fmt: skip
    assert first.wait(poll_interval=0) == _sums(8)
    submitted = len(provider.submissions)
    events: list[str] = []
    again = BatchApiJob(_runner(), _questions(8), provider=provider, state=state,
                        on_event=events.append)  # fmt: skip
    assert again.reattached and again.done
    seen: list[tuple[int, Any]] = []
    assert again.wait(poll_interval=0, on_result=lambda i, r: seen.append((i, r))) == _sums(8)
    assert sorted(seen) == list(enumerate(_sums(8)))  # replayed results are delivered too
    assert len(provider.submissions) == submitted
    assert again.usage.calls == first.usage.calls
    assert any("Replayed 2 finished round(s)" in e for e in events)
    assert BatchApiJob.stored(state) == {"job_id": first.job_id, "items": 8, "done": True,
                                         "metadata": {"input_lines": list(range(1, 9))}}  # fmt: skip
    assert BatchApiJob.stored(tmp_path / "none.sqlite") is None
    with pytest.raises(BatchJobStateError, match="another batch job"):
        BatchApiJob(_runner(batch_size=2), _questions(8), provider=provider, state=state)


def test_options_are_checked_and_no_inputs_need_no_batch() -> None:
    with pytest.raises(ConfigurationError, match="follow_ups"):
        BatchApiJob(_runner(), ["x"], provider=InMemoryBatchProvider(), follow_ups="later")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_requests_per_file"):
        BatchApiJob(_runner(), ["x"], provider=InMemoryBatchProvider(), max_requests_per_file=0)
    with pytest.raises(ValueError, match="item 1"):
        BatchApiJob(_runner(), ["x", "  "], provider=InMemoryBatchProvider())
    empty = BatchApiJob(_runner(), [], provider=InMemoryBatchProvider())
    assert empty.done and empty.wait(poll_interval=0) == []


def test_cost_report_lines() -> None:
    job = BatchApiJob(_runner(), _questions(8), provider=InMemoryBatchProvider())
    job.wait(poll_interval=0)
    report = job.cost(model="gpt-4o")
    batch, online, single = report.lines
    assert (batch.input_tokens, batch.output_tokens) == (job.usage.input_tokens,
                                                         job.usage.output_tokens)  # fmt: skip
    assert batch.usd == pytest.approx(online.usd / 2)
    assert online.usd == pytest.approx((20 * 2.5 + batch.output_tokens * 10) / 1e6)
    assert single.input_tokens > 0 and single.output_tokens < batch.output_tokens  # no echo
    assert report.as_dict()["lines"][0]["label"] == "Batch API, this job"


def test_cost_report_prices_single_with_caching_and_per_1000_items() -> None:
    from langchain_autodemo.pricing import Price

    shots = [(f"What is {i} + {i}? Show the steps. " * 40, f"The answer is {2 * i}.")
             for i in range(6)]  # fmt: skip
    runner = _runner().__class__(
        _runner().llm, batch_size=4, demonstrations=shots, instructions="Add the numbers."
    )
    job = BatchApiJob(runner, _questions(8), provider=InMemoryBatchProvider())
    job.wait(poll_interval=0)
    job.usage.input_tokens = job.prompt_estimate  # the double reports 10 per request
    report = job.cost(model="gpt-4o-mini")
    single = report.lines[2]
    cached = report.single_cached
    assert cached is not None and cached.input_tokens == single.input_tokens
    assert cached.usd < single.usd  # the long shared prefix is served from the cache
    price = Price(0.15, 0.60, cached_input=0.075)
    assert single.usd - cached.usd <= 7 * single.input_tokens / 8 * (0.15 - 0.075) / 1e6
    table = report.table()
    assert "USD per 1,000 items" in table and "with prompt caching" in table
    assert "with prompt caching" in report.summary()
    assert price.cacheable(100) == 0  # a short prefix would not be cached at all


def test_escalations_are_a_follow_up_round_with_confidence_from_the_outcomes() -> None:
    """A Batch API job escalates as batch() does: the doubtful answers of a round go out
    alone in the next round; the outcome's log-probabilities give the confidence, and they
    survive the state file."""
    import math

    class Doubtful(InMemoryBatchProvider):
        def outcomes(self, batch: RemoteBatch) -> Iterator[tuple[str, Outcome]]:
            for custom_id, outcome in super().outcomes(batch):
                text = outcome.content or ""
                # every token sure, but the answer to "What is 3 + 30?" (33) doubtful
                tokens = [{"token": ch, "logprob": math.log(0.2 if text[max(0, k - 1) : k + 1] == "33" or text[k : k + 2] == "33" else 0.99)}  # noqa: E501
                          for k, ch in enumerate(text)]  # fmt: skip
                yield custom_id, replace(outcome, logprobs={"content": tokens})

    provider = Doubtful()
    runner = _runner(escalate_below=0.5, include_details=True)
    job = BatchApiJob(runner, _questions(8), provider=provider)
    results = job.wait(poll_interval=0)
    assert [r.answer for r in results] == _sums(8)
    assert [r.index for r in results if r.escalated] == [2]
    assert results[2].confidence is not None  # the single answer's own confidence
    assert job.usage.escalations == 1 and job.usage.reasks == 0
    assert len(provider.submissions) == 2  # round 1, then the escalation round
    restored = Outcome.from_dict(json.loads(json.dumps(
        Outcome(content="x", logprobs={"content": [{"token": "x", "logprob": -1.0}]}).as_dict()
    )))  # fmt: skip
    assert restored.message().response_metadata["logprobs"]["content"][0]["logprob"] == -1.0
