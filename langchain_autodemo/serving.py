"""Serve Auto-Demo batching behind an endpoint: coalesce concurrent requests into packed calls.

Clients of an HTTP endpoint send one question per request. :class:`MicroBatcher` holds
each request for at most ``max_wait_seconds``, packs whatever arrived meanwhile into one
``abatch()`` of the wrapped runner, and hands each caller its own result (or its own
error). :func:`create_app` puts that behind a LangServe app.

Example:
    .. code-block:: python

        from langchain_autodemo import AutoDemoBatchRunnable
        from langchain_autodemo.serving import create_app

        app = create_app(AutoDemoBatchRunnable(llm, instructions="Classify the sentiment."))
        # uvicorn module:app  ->  POST /autodemo/invoke {"input": "I loved it"}
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import Runnable, RunnableConfig

from langchain_autodemo._validation import require_positive_int
from langchain_autodemo.runnable import AutoDemoBatchRunnable

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["MicroBatcher", "create_app"]


class MicroBatcher(Runnable[Any, Any]):
    """Coalesce concurrent ``ainvoke`` calls into batches of up to ``max_batch_size``.

    A batch is sent when it is full or when its first request has waited
    ``max_wait_seconds``. Explicit ``batch()``/``abatch()`` calls go straight to the
    runner (they are packed already). Per-item errors stay per item: one caller's
    failed question never fails another caller's request.
    """

    def __init__(
        self,
        runner: AutoDemoBatchRunnable,
        *,
        max_batch_size: int | None = None,
        max_wait_seconds: float = 0.05,
    ) -> None:
        if max_wait_seconds < 0:
            raise ValueError("max_wait_seconds must be >= 0")
        self.runner = runner
        self.max_batch_size = require_positive_int(
            "max_batch_size", runner.batch_size if max_batch_size is None else max_batch_size
        )
        self.max_wait_seconds = max_wait_seconds
        self._waiting: list[tuple[Any, asyncio.Future[Any]]] = []
        self._timer: asyncio.TimerHandle | None = None

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.runner.invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((input, future))
        if len(self._waiting) >= self.max_batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait_seconds, self._flush)
        return await future

    def batch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
        return self.runner.batch(inputs, config, **kwargs)

    async def abatch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
        return await self.runner.abatch(inputs, config, **kwargs)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, []
        if waiting:
            asyncio.ensure_future(self._answer(waiting))

    async def _answer(self, waiting: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            results = await self.runner.abatch(
                [item for item, _ in waiting], return_exceptions=True
            )
        except Exception as exc:  # e.g. a bad input: fail every request of this batch
            results = [exc] * len(waiting)
        for (_, future), result in zip(waiting, results, strict=True):
            if future.done():
                continue  # the caller went away
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def create_app(
    runner: AutoDemoBatchRunnable,
    *,
    path: str = "/autodemo",
    max_wait_seconds: float = 0.05,
    title: str = "langchain-autodemo",
) -> FastAPI:
    """A FastAPI app with LangServe routes (``/invoke``, ``/batch``, ``/stream``, ...) at ``path``,
    whose single ``invoke`` requests are coalesced by a :class:`MicroBatcher`."""
    from fastapi import FastAPI
    from langserve import add_routes

    app = FastAPI(title=title)
    batcher = MicroBatcher(runner, max_wait_seconds=max_wait_seconds).with_types(
        input_type=str, output_type=str
    )
    add_routes(app, batcher, path=path)
    return app
