"""Test double: a tiny OpenAI-compatible chat server that answers Auto-Demo prompts.

Run as ``python -m tests.scripted_chat_server`` (it prints ``PORT <n>`` once listening).
It answers ``POST /v1/chat/completions`` with the scripted Auto-Demo model of
:mod:`langchain_autodemo.testing` (every ``Q[i]`` answered with the sum of
its numbers), so tests of the Batch API path run against a real HTTP server behind the
real emulator, in milliseconds instead of a model's seconds.

The request's ``model`` chooses the behaviour, so one server serves every test:
``scripted`` answers well; ``scripted:OPTION,...`` with options

- ``skip=N``: leave out every N-th item of a batch the first time it is asked;
- ``fail=WORD``: HTTP 500 the first time a call asks questions containing WORD
  (a later call asking only questions already failed once is answered);
- ``failall=WORD``: HTTP 500 every time a question containing WORD is asked;
- ``corrupt=WORD``: the first time, restate those questions as another one (misaligned);
- ``truncate=WORD``: the first time, stop before the first such question's answer,
  ``finish_reason: "length"``;
- ``delay=SECONDS``: wait before answering.

``GET /stats`` returns how many completions were requested per model string.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from langchain_core.messages import HumanMessage, convert_to_messages

from langchain_autodemo.testing import ScriptedAutoDemoModel

_QUESTION = re.compile(r"^Q\[(\d+)\]: (.*)$", re.MULTILINE)
_lock = threading.Lock()
_models: dict[str, ScriptedAutoDemoModel] = {}
_seen: set[tuple[str, str]] = set()
_calls: Counter[str] = Counter()


def _options(model: str) -> dict[str, str]:
    _, _, spec = model.partition(":")
    pairs = (part.partition("=") for part in spec.split(",") if part.strip())
    return {key.strip(): value.strip() for key, _, value in pairs}


def _first_time(kind: str, question: str) -> bool:
    with _lock:
        if (kind, question) in _seen:
            return False
        _seen.add((kind, question))
        return True


def complete(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    model_name = str(body.get("model", "scripted"))
    options = _options(model_name)
    with _lock:
        _calls[model_name] += 1
        model = _models.get(model_name)
        if model is None:
            model = _models[model_name] = ScriptedAutoDemoModel(skip=int(options.get("skip", 0)))
    if options.get("delay"):
        time.sleep(float(options["delay"]))
    messages = convert_to_messages(body.get("messages", []))
    user = str([m for m in messages if isinstance(m, HumanMessage)][-1].content)
    questions = [text for _, text in _QUESTION.findall(user)] or [user]
    for word_key, once in (("fail", True), ("failall", False)):
        word = options.get(word_key)
        hit = [q for q in questions if word and word in q]
        # all(...) would stop at the first seen question; mark every one as asked
        fresh = [_first_time("fail", q) for q in hit] if once else []
        if hit and (not once or any(fresh)):
            return 500, {
                "error": {
                    "message": f"scripted failure for {hit[0]!r}",
                    "type": "server_error",
                    "code": "scripted_failure",
                }
            }
    text = str(model.invoke(messages).content)
    finish = "stop"
    corrupt = options.get("corrupt")
    hit = [q for q in questions if corrupt and corrupt in q]
    if any([_first_time("corrupt", q) for q in hit]):
        for question in hit:
            text = text.replace(question, "How many legs does a spider have?", 1)
    truncate = options.get("truncate")
    hit = [q for q in questions if truncate and truncate in q]
    if any([_first_time("truncate", q) for q in hit]) and text.find(hit[0]) >= 0:
        text, finish = text[: text.find(hit[0]) + len(hit[0])], "length"
    prompt_tokens = sum(len(str(m.content)) for m in messages) // 4 + 1
    completion_tokens = len(text) // 4 + 1
    return 200, {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
        elif self.path == "/stats":
            with _lock:
                self._send(200, dict(_calls))
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": "not found"}})
            return
        status, payload = complete(body)
        if body.get("stream") and status == 200:
            choice = payload["choices"][0]
            chunks = [
                {"choices": [{"index": 0, "delta": {"role": "assistant",
                              "content": choice["message"]["content"]}, "finish_reason": None}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]},
            ]  # fmt: skip
            stream = b"".join(
                b"data: " + json.dumps({"id": payload["id"], "object": "chat.completion.chunk",
                                        "model": payload["model"], **c}).encode() + b"\n\n"
                for c in chunks
            ) + b"data: [DONE]\n\n"  # fmt: skip
            self._send(200, stream, "text/event-stream")
            return
        self._send(status, payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
