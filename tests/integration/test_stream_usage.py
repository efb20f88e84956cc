"""`openai-compatible:` models ask for usage in streams and use it where the server sends it.

Two servers on 127.0.0.1: the real llama.cpp server (llama-cpp-python 0.3.36, which accepts
``stream_options`` and sends no usage chunk), and ``UsageReportingServerDouble``, a test
double of an OpenAI-compatible API that reports usage only when the request asks for it
(as OpenAI and vLLM do). No such API runs offline here, hence the double.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from langchain_core.messages import convert_to_messages

from langchain_autodemo import AutoDemoBatchRunnable, track_usage
from langchain_autodemo.llamacpp import LlamaCppServer
from langchain_autodemo.models import open_model
from langchain_autodemo.testing import ScriptedAutoDemoModel

REPORTED = {"prompt_tokens": 120, "completion_tokens": 215, "total_tokens": 335}


class UsageReportingServerDouble(ThreadingHTTPServer):
    """Test double: streams Auto-Demo answers (sum of the numbers) in OpenAI's SSE format,
    with a final usage chunk when ``stream_options.include_usage`` is set."""

    def __init__(self, *, reports_usage: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.reports_usage = reports_usage
        self.requests: list[dict[str, Any]] = []
        self.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: UsageReportingServerDouble

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.requests.append(body)
        messages = convert_to_messages([(m["role"], m["content"]) for m in body["messages"]])
        text = ScriptedAutoDemoModel()._completion(messages)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        base = {"id": "double", "object": "chat.completion.chunk", "created": 0, "model": "double"}

        def send(payload: dict[str, Any]) -> None:
            self.wfile.write(f"data: {json.dumps({**base, **payload})}\n\n".encode())

        for start in range(0, len(text), 9):
            delta = {"content": text[start : start + 9]}
            send({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        send({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if self.server.reports_usage and (body.get("stream_options") or {}).get("include_usage"):
            send({"choices": [], "usage": REPORTED})
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(params=[True, False], ids=["reports-usage", "ignores-include-usage"])
def double(request: pytest.FixtureRequest) -> Iterator[UsageReportingServerDouble]:
    server = UsageReportingServerDouble(reports_usage=request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


QUESTIONS = ["What is 1 + 2?", "What is 3 + 4?", "What is 5 + 6?"]


async def test_usage_is_requested_and_taken_from_the_stream(
    double: UsageReportingServerDouble,
) -> None:
    with open_model(f"openai-compatible:{double.base_url}#double") as opened:
        runner = AutoDemoBatchRunnable(opened.llm, instructions="Add.", batch_size=3)
        with track_usage() as usage:
            assert runner.batch(QUESTIONS) == ["3", "7", "11"]
            assert await runner.abatch(QUESTIONS) == ["3", "7", "11"]
    assert all(
        r["stream"] and r["stream_options"] == {"include_usage": True} for r in double.requests
    )
    assert usage.calls == 2
    if double.reports_usage:
        assert not usage.estimated_tokens
        assert (usage.input_tokens, usage.output_tokens) == (2 * 120, 2 * 215)
    else:  # nothing reported: estimated, and flagged as such
        assert usage.estimated_tokens
        assert usage.output_tokens > 0


def test_llama_cpp_server_accepts_the_request_and_reports_no_stream_usage(
    smollm2_server: LlamaCppServer,
) -> None:
    spec = f"openai-compatible:{smollm2_server.base_url}#{smollm2_server.model_alias}"
    with open_model(spec, max_tokens=24) as opened:
        assert opened.llm.stream_usage
        chunks = list(opened.llm.stream("Say hi."))
        runner = AutoDemoBatchRunnable(opened.llm, instructions="Add.", max_attempts=1)
        with track_usage() as usage:
            runner.batch(["What is 1 + 1?"], return_exceptions=True)
    assert "".join(str(c.content) for c in chunks).strip()
    # llama-cpp-python 0.3.36 ignores stream_options.include_usage: no usage chunk arrives
    assert not any(c.usage_metadata for c in chunks)
    assert usage.calls == 1 and usage.estimated_tokens and usage.output_tokens > 0
