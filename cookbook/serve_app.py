"""The LangServe app of notebook 4: an Auto-Demo runner behind ``/autodemo``.

Run it yourself (the notebook does the same in a subprocess)::

    MODEL_BASE_URL=http://127.0.0.1:8080/v1 MODEL_NAME=qwen \
        uvicorn --factory serve_app:make_app --host 127.0.0.1 --port 8000

Concurrent ``/autodemo/invoke`` requests wait at most ``MAX_WAIT_SECONDS`` and share one
packed model call (up to ``batch_size`` questions). ``GET /stats`` says how many model
calls the server has made, so a client can see the coalescing.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_openai import ChatOpenAI

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.serving import create_app

MAX_WAIT_SECONDS = 0.5


class CountModelCalls(BaseCallbackHandler):
    """Counts the chat-model runs of every request (thread-safe)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self.calls += 1


def make_app() -> Any:
    counter = CountModelCalls()
    llm = ChatOpenAI(
        base_url=os.environ["MODEL_BASE_URL"],
        api_key="none",
        model=os.environ["MODEL_NAME"],
        temperature=0,
        max_tokens=1200,
        extra_body={"max_tokens": 1200},  # llama.cpp's server reads only this name
        callbacks=[counter],
    )
    runner = AutoDemoBatchRunnable(
        llm, instructions="Solve the math word problem.", batch_size=8, answer_tokens=128
    )
    app = create_app(runner, max_wait_seconds=MAX_WAIT_SECONDS)

    @app.get("/stats")
    def stats() -> dict[str, int]:
        return {"model_calls": counter.calls}

    return app
