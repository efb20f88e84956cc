"""OpenAI's Batch API (and any server that speaks it, such as ``autodemo emulate-batch-api``).

Request bodies come from the wrapped ``ChatOpenAI``'s own request payload
(``_get_request_payload``), so model, temperature, max tokens, stop sequences, seed,
``model_kwargs`` and ``extra_body`` are exactly those an online call would send; only
``stream`` is dropped (a batch request is never streamed). Files and batches go through
the model's own ``openai.OpenAI`` client (``root_client``): same base URL, key,
organisation, timeouts and retries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableBinding

from langchain_autodemo.batch_api.protocol import BatchState, Outcome, RemoteBatch
from langchain_autodemo.errors import ConfigurationError

__all__ = ["ENDPOINT", "OpenAIBatchProvider", "parse_result_lines"]

ENDPOINT = "/v1/chat/completions"
TAG_KEY = "autodemo_tag"

_log = logging.getLogger(__name__)

_STATES: dict[str, BatchState] = {
    "validating": "pending",
    "in_progress": "running",
    "finalizing": "running",
    "cancelling": "running",
    "completed": "completed",
    "expired": "expired",
    "cancelled": "cancelled",
    "failed": "failed",
}


def _unwrap(llm: Runnable[Any, Any]) -> tuple[Any, dict[str, Any]]:
    """The ``BaseChatOpenAI`` inside ``llm`` and the call arguments bound to it."""
    from langchain_openai.chat_models.base import BaseChatOpenAI

    kwargs: dict[str, Any] = {}
    while isinstance(llm, RunnableBinding):
        kwargs = {**llm.kwargs, **kwargs}
        llm = llm.bound
    if not isinstance(llm, BaseChatOpenAI):
        raise ConfigurationError(
            "the OpenAI Batch API needs a ChatOpenAI (or AzureChatOpenAI) model, "
            f"got {type(llm).__name__}"
        )
    return llm, kwargs


class OpenAIBatchProvider:
    """:class:`~langchain_autodemo.batch_api.protocol.BatchProvider` for OpenAI's Batch API.

    Args:
        llm: the runner's chat model: a ``ChatOpenAI``, possibly with bound arguments.
        client: an ``openai.OpenAI`` client; default: the model's own.
        completion_window: the batch's completion window (OpenAI accepts ``"24h"``).
    """

    name = "openai"

    def __init__(
        self, llm: Runnable[Any, Any], *, client: Any = None, completion_window: str = "24h"
    ) -> None:
        self.chat, self._bound = _unwrap(llm)
        self.client = client if client is not None else self.chat.root_client
        if self.client is None:
            raise ConfigurationError("the ChatOpenAI model has no client (root_client is None)")
        self.completion_window = completion_window

    @property
    def model(self) -> str:
        return str(self.chat.model_name)

    def request(self, custom_id: str, messages: Sequence[BaseMessage]) -> dict[str, Any]:
        body = self.chat._get_request_payload(list(messages), **self._bound)
        if self.chat._use_responses_api(body):
            raise ConfigurationError(
                "the model is set to use the Responses API; batch jobs use "
                f"{ENDPOINT} (set use_responses_api=False)"
            )
        body.pop("stream", None)
        body.pop("stream_options", None)
        # What the openai SDK does with extra_body: merge it into the JSON body.
        body.update(body.pop("extra_body", None) or {})
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}

    def submit(self, lines: Sequence[bytes], *, tag: str) -> str:
        uploaded = self.client.files.create(
            file=(f"{tag}.jsonl", b"".join(lines), "application/jsonl"), purpose="batch"
        )
        batch = self.client.batches.create(
            input_file_id=uploaded.id,
            endpoint=ENDPOINT,
            completion_window=self.completion_window,
            metadata={TAG_KEY: tag},
        )
        return str(batch.id)

    def find(self, tag: str, *, since: float) -> str | None:
        # Batches are listed newest first: stop at the first one older than the job
        # (with a margin for clock skew between this machine and the provider).
        for batch in self.client.batches.list(limit=100):
            if batch.created_at < since - 600:
                return None
            if (batch.metadata or {}).get(TAG_KEY) == tag:
                return str(batch.id)
        return None

    def retrieve(self, batch_id: str) -> RemoteBatch:
        batch = self.client.batches.retrieve(batch_id)
        counts = batch.request_counts
        errors = ""
        if batch.errors is not None and batch.errors.data:
            errors = "; ".join(
                f"{e.code or 'error'}: {e.message or ''}"
                + (f" (line {e.line})" if e.line is not None else "")
                for e in batch.errors.data
            )
        return RemoteBatch(
            batch_id=str(batch.id),
            state=_STATES.get(batch.status, "running"),
            provider_status=str(batch.status),
            total=counts.total if counts else 0,
            completed=counts.completed if counts else 0,
            failed=counts.failed if counts else 0,
            errors=errors,
            raw=batch,
        )

    def outcomes(self, batch: RemoteBatch) -> Iterator[tuple[str, Outcome]]:
        raw = batch.raw if batch.raw is not None else self.client.batches.retrieve(batch.batch_id)
        # Errors first: a request listed in both files keeps its completion.
        for file_id in (raw.error_file_id, raw.output_file_id):
            if file_id:
                content = self.client.files.content(file_id).content
                yield from parse_result_lines(content, batch.batch_id)

    def cancel(self, batch_id: str) -> None:
        self.client.batches.cancel(batch_id)


def parse_result_lines(data: bytes, batch_id: str | None = None) -> Iterator[tuple[str, Outcome]]:
    """``(custom_id, outcome)`` for each line of a Batch API output or error file.

    A line that is not JSON or names no ``custom_id`` is skipped (logged): its request
    then has no result, and the job treats it as failed, so its items are re-asked.

    Example:
        >>> line = (b'{"custom_id": "c1", "response": {"status_code": 200, "body": '
        ...         b'{"choices": [{"message": {"content": "A[1]: 4"}, "finish_reason": "stop"}],'
        ...         b' "usage": {"prompt_tokens": 20, "completion_tokens": 5}}}, "error": null}')
        >>> [(cid, o.content, o.input_tokens) for cid, o in parse_result_lines(line + b"\\n{torn")]
        [('c1', 'A[1]: 4', 20)]
    """
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            _log.warning("batch %s: result line %d is not JSON; skipped", batch_id, number)
            continue
        custom_id = record.get("custom_id") if isinstance(record, dict) else None
        if not isinstance(custom_id, str):
            _log.warning("batch %s: result line %d has no custom_id; skipped", batch_id, number)
            continue
        yield custom_id, _outcome(record, batch_id)


def _outcome(record: dict[str, Any], batch_id: str | None) -> Outcome:
    error = record.get("error")
    response: dict[str, Any] = record.get("response") or {}
    if not isinstance(response, dict):
        response = {}
    status = response.get("status_code")
    body = response.get("body")
    if error:
        if isinstance(error, dict):
            message, code = str(error.get("message") or error), error.get("code")
        else:
            message, code = str(error), None
        return Outcome.failure(message, code=code, status_code=status, batch_id=batch_id)
    if not isinstance(status, int) or not 200 <= status < 300:
        detail = body.get("error") if isinstance(body, dict) else None
        if isinstance(detail, dict):
            message = str(detail.get("message") or detail)
            code = detail.get("code") or detail.get("type")
        else:
            message, code = f"HTTP {status}: {str(body)[:200]}", None
        return Outcome.failure(message, code=code, status_code=status, batch_id=batch_id)
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return Outcome.failure(
            "the response body has no choices", code="malformed_response", batch_id=batch_id
        )
    choice: dict[str, Any] = choices[0]
    reply = choice.get("message")
    reply = reply if isinstance(reply, dict) else {}
    content = reply.get("content")
    if content is None:
        content = reply.get("refusal") or ""
    usage = body.get("usage") if isinstance(body, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    return Outcome(
        content=content if isinstance(content, str) else json.dumps(content),
        finish_reason=choice.get("finish_reason"),
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        status_code=status,
        batch_id=batch_id,
        logprobs=choice.get("logprobs") or None,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
