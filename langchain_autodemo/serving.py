"""Serve Auto-Demo batching behind an endpoint: coalesce concurrent requests into packed calls.

Clients of an HTTP endpoint send one question per request. :class:`MicroBatcher` holds
each request for at most ``max_wait_seconds``, packs whatever arrived meanwhile into one
``abatch()`` of the wrapped runner, with each request's own config (callbacks, tags,
metadata, run name, run id) given to that request's own item run, and hands each
caller its own result or its own error. :func:`create_app` puts that behind a LangServe
app whose errors are per request: a bad input is that request's 422, a model failure
that request's 502 (429 when the provider rate-limited), never a neighbour's.

Example:
    .. code-block:: python

        from langchain_autodemo import AutoDemoBatchRunnable
        from langchain_autodemo.serving import create_app

        app = create_app(AutoDemoBatchRunnable(llm, instructions="Classify the sentiment."))
        # uvicorn module:app  ->  POST /autodemo/invoke {"input": "I loved it"}
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from langchain_core.output_parsers import BaseOutputParser
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config
from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model

from langchain_autodemo._validation import require_positive_int
from langchain_autodemo.engine import ItemResult
from langchain_autodemo.errors import (
    AutoDemoError,
    AutoDemoInputError,
    AutoDemoItemError,
    AutoDemoModelCallError,
    model_call_error,
)
from langchain_autodemo.runnable import AutoDemoBatchRunnable, _template_fields

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["MicroBatcher", "ServedError", "create_app", "served_error"]

log = logging.getLogger(__name__)


@dataclass
class _Request:
    input: Any
    config: RunnableConfig
    future: asyncio.Future[Any]


class MicroBatcher(Runnable[Any, Any]):
    """Coalesce concurrent ``ainvoke`` calls into batches of up to ``max_batch_size``.

    A batch is sent when it is full or when its first request has waited
    ``max_wait_seconds``. Each request's config goes to its own item run in the packed
    ``abatch()``, so its callbacks, tags, metadata, run name and run id (and LangServe's
    ``stream_log``/``stream_events`` handlers) see its own run. Explicit
    ``batch()``/``abatch()`` calls go straight to the runner (they are packed already).

    Errors stay per request: an input that cannot be asked raises
    :class:`~langchain_autodemo.errors.AutoDemoInputError` at once, before it joins a
    batch, and an item the model failed raises that request's
    :class:`~langchain_autodemo.errors.AutoDemoItemError` (with ``index`` 0, its
    position in the caller's one-item request), never a neighbour's.

    Input and output schemas follow the runner: a string ``input_template`` makes the
    input a dict of its fields, ``include_details`` makes the output an ``ItemResult``,
    an ``output_parser`` its parsed type.
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
        self._waiting: list[_Request] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until done

    # -- schemas ------------------------------------------------------------------------

    @property
    def InputType(self) -> Any:  # noqa: N802 (LangChain's name)
        return _input_model(self.runner)

    @property
    def OutputType(self) -> Any:  # noqa: N802 (LangChain's name)
        return _output_type(self.runner)

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return _input_model(self.runner)

    # -- Runnable interface -------------------------------------------------------------

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.runner.invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        self._check(input)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        # ensure_config here, in the caller's context: a config inherited from an
        # enclosing chain belongs to this request, not to the batch it joins.
        self._waiting.append(_Request(input, ensure_config(config), future))
        if len(self._waiting) >= self.max_batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait_seconds, self._flush)
        return await future

    def batch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
        return self.runner.batch(inputs, config, **kwargs)

    async def abatch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
        return await self.runner.abatch(inputs, config, **kwargs)

    # -- coalescing ---------------------------------------------------------------------

    def _check(self, input: Any) -> None:
        """Refuse an input that cannot be asked now, so it never joins (or fails) a batch."""
        try:
            self.runner._render(0, input)
        except AutoDemoInputError as exc:
            raise AutoDemoInputError(0, exc.reason) from None

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, []
        if waiting:
            # A fresh context: the batch must not inherit the first caller's context
            # variables (its parent run, its usage tracker) for everyone else's items.
            task = contextvars.Context().run(asyncio.ensure_future, self._answer(waiting))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, waiting: list[_Request]) -> None:
        try:
            results = await self.runner.abatch(
                [r.input for r in waiting],
                [r.config for r in waiting],
                return_exceptions=True,
            )
        except Exception as exc:  # not a per-item failure (inputs were checked on arrival)
            log.exception("a coalesced batch of %d request(s) failed", len(waiting))
            results = [exc] * len(waiting)
        for request, result in zip(waiting, results, strict=True):
            if request.future.done():
                continue  # the caller went away
            if isinstance(result, BaseException):
                request.future.set_exception(_as_own_request(result))
            else:
                request.future.set_result(result)


def _as_own_request(error: BaseException) -> BaseException:
    """The same error, numbered as the caller's only item (not its place in the batch)."""
    if isinstance(error, AutoDemoModelCallError) and error.__cause__ is not None:
        return model_call_error(error.__cause__, 0, error.attempts, error.reasons)
    if isinstance(error, AutoDemoItemError):
        return AutoDemoItemError(0, error.reason, error.attempts, error.reasons)
    return error


# -- schemas ------------------------------------------------------------------------------


def _input_model(runner: AutoDemoBatchRunnable) -> type[BaseModel]:
    """The input a served runner takes: its template's fields, else one question."""
    template = runner.input_template
    if isinstance(template, str):
        names = _template_fields(template)
        fields: dict[str, Any] = {name: (str, ...) for name in dict.fromkeys(names)}
        # Named after its fields: LangServe keeps one model per name and process, and
        # renames (breaking) a second, different model of the same name.
        title = "".join(re.sub(r"\W", "", name).title() for name in fields) + "Input"
        return create_model(title, **fields)
    if callable(template):
        return create_model("RecordInput", root=(dict[str, Any], ...), __base__=RootModel)
    return _Question


class _Question(RootModel[str]):
    """One question (a string)."""

    # The playground labels a plain-string input with the schema's title.
    model_config = ConfigDict(title="question")


def _answer_type(runner: AutoDemoBatchRunnable) -> Any:
    parser: Any = getattr(runner, "output_parser", None)
    if parser is None:
        return str
    if isinstance(parser, type) and issubclass(parser, BaseModel):
        return parser
    if isinstance(parser, BaseOutputParser):
        try:
            return parser.OutputType
        except (TypeError, NotImplementedError):
            return Any
    return Any


def _output_type(runner: AutoDemoBatchRunnable) -> Any:
    return ItemResult if runner.include_details else _answer_type(runner)


# -- errors over HTTP ---------------------------------------------------------------------


class ServedError(BaseModel):
    """A request (or, in ``/batch``, an item) that got no answer: the body of an error
    response, an error event of a stream, or an entry of ``/batch``'s ``output``."""

    error: str = Field(description="the error class, e.g. AutoDemoInputError")
    status_code: int = Field(description="422 bad input, 429 rate-limited, 502 model failed")
    message: str
    attempts: int | None = Field(default=None, description="model calls that tried it")


def served_error(error: AutoDemoError) -> ServedError:
    """How an error of the package reads over HTTP: status and a message for the client."""
    if isinstance(error, AutoDemoInputError):
        return ServedError(error="AutoDemoInputError", status_code=422, message=error.reason)
    if isinstance(error, AutoDemoItemError):
        cause = error.__cause__ if isinstance(error, AutoDemoModelCallError) else None
        status = 429 if getattr(cause, "status_code", None) == 429 else 502
        kind = "AutoDemoModelCallError" if cause is not None else "AutoDemoItemError"
        return ServedError(
            error=kind,
            status_code=status,
            message=f"no answer after {error.attempts} model call(s): {error.reason}",
            attempts=error.attempts,
        )
    return ServedError(error=type(error).__name__, status_code=500, message=str(error))


class _Served(Runnable[Any, Any]):
    """What LangServe serves: the batcher, with ``/batch`` errors as per-item entries."""

    def __init__(self, batcher: MicroBatcher) -> None:
        self.batcher = batcher
        self.name = "autodemo"

    @property
    def InputType(self) -> Any:  # noqa: N802
        return self.batcher.InputType

    @property
    def OutputType(self) -> Any:  # noqa: N802
        answer = self.batcher.OutputType
        return Annotated[Union[answer, ServedError], Field(union_mode="left_to_right")]  # noqa: UP007

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return self.batcher.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        # One name per answer type (see _input_model on why names must not repeat).
        answer = self.batcher.OutputType
        name = getattr(answer, "__name__", None) or re.sub(r"\W", "", str(answer))
        return create_model(
            f"{name[:1].upper()}{name[1:]}OrError", root=(self.OutputType, ...), __base__=RootModel
        )

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.batcher.invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self.batcher.ainvoke(input, config, **kwargs)

    async def abatch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
        results = await self.batcher.abatch(inputs, config, return_exceptions=True)
        return [served_error(r) if isinstance(r, AutoDemoError) else r for r in results]


async def _clear_stream_errors(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """LangServe ends a failed stream with ``{"status_code": 500, ...}`` and re-raises the
    error: replace that event with the request's own status and message."""
    held = None
    try:
        async for event in events:
            if isinstance(event, dict) and event.get("event") == "error":
                held = event  # the exception itself comes next
                continue
            yield event
    except AutoDemoError as exc:
        yield {"event": "error", "data": served_error(exc).model_dump_json()}
        return
    except Exception:
        if held is not None:
            yield held
        raise
    if held is not None:
        yield held


def create_app(
    runner: AutoDemoBatchRunnable,
    *,
    path: str = "/autodemo",
    max_wait_seconds: float = 0.05,
    title: str = "langchain-autodemo",
) -> FastAPI:
    """A FastAPI app with LangServe routes (``/invoke``, ``/batch``, ``/stream``,
    ``/stream_log``, ``/stream_events``, ``/playground``) at ``path``, whose single
    requests are coalesced by a :class:`MicroBatcher`.

    Errors are per request: ``/invoke`` answers a bad input with 422 and a model failure
    with 502 (429 when the provider rate-limited), with a :class:`ServedError` as
    ``detail``; streams end with an ``error`` event carrying the same; ``/batch``
    returns a :class:`ServedError` in the place of each failed item.
    """
    from fastapi import FastAPI, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse
    from langserve import APIHandler, add_routes
    from pydantic import ValidationError

    app = FastAPI(title=title)
    served = _Served(MicroBatcher(runner, max_wait_seconds=max_wait_seconds))
    streams: tuple[Literal["stream", "stream_log", "stream_events"], ...] = (
        "stream",
        "stream_log",
        "stream_events",
    )
    add_routes(app, served, path=path, disabled_endpoints=streams)

    handler = APIHandler(served, path=path)

    def stream_route(name: str) -> Callable[..., Any]:
        method = getattr(handler, "astream_events" if name == "stream_events" else name)

        async def route(request: Request, config_hash: str = "") -> Any:
            response = await method(request, config_hash=config_hash)
            response.body_iterator = _clear_stream_errors(response.body_iterator)
            return response

        route.__name__ = f"{path.strip('/')}_{name}"
        # FastAPI reads these to inject the request (postponed annotations are strings
        # it would resolve in this module's globals, where Request is not imported).
        route.__annotations__ = {"request": Request, "config_hash": str, "return": Any}
        return route

    for name in streams:
        app.post(f"{path}/{name}", include_in_schema=False)(stream_route(name))
        app.post(f"{path}/c/{{config_hash}}/{name}", include_in_schema=False)(stream_route(name))

    async def package_error(request: Request, exc: Exception) -> JSONResponse:
        body = served_error(exc)  # type: ignore[arg-type]
        return JSONResponse({"detail": body.model_dump()}, status_code=body.status_code)

    async def invalid_input(request: Request, exc: Exception) -> JSONResponse:
        # LangServe validates /batch inputs outside its own 422 translation.
        assert isinstance(exc, ValidationError)
        errors = exc.errors(include_url=False, include_context=False)
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    app.add_exception_handler(AutoDemoError, package_error)
    app.add_exception_handler(ValidationError, invalid_input)
    return app
