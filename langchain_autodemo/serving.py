"""Serve Auto-Demo batching behind an endpoint: coalesce concurrent requests into packed calls.

Clients of an HTTP endpoint send one question per request. A
:class:`~langchain_autodemo.coalescing.MicroBatcher` holds each request for at most
``max_wait_seconds`` and packs whatever arrived meanwhile from the same isolation group
into one ``abatch()`` of the wrapped runner. :func:`create_app` puts that behind a
LangServe app.

What a client can see: its own question, its own answer, and how it was served (a
child run ``autodemo_call`` with the call id, its position in the call, the attempts
and its share of the tokens), in ``/invoke``, ``/stream``, ``/stream_log``,
``/stream_events`` and the playground alike. Never another request's text: the packed
model run (every question of the call, the whole completion) goes only to the
``call_callbacks`` the operator passes (and to tracing the operator's environment
turns on), and error messages lose the model text they would quote.

What the model sees: every question packed into the call. So requests are packed only
with requests of the same isolation group (``isolate_by``): by default the caller's
``Authorization`` header and address, so that different API keys, or different
hosts without one, never share a call; ``"header:X-Tenant"`` groups by a header the
operator's gateway sets. ``"none"`` packs across all clients: more packing, but one
client's text then sits in the model's context while it answers another's (a prompt
injected in one request can steer a neighbour's answer); use it only where every
client is trusted alike.

Errors are per request: a bad input is that request's 422, a model failure that
request's 502 (429 when the provider rate-limited), never a neighbour's.

Example:
    .. code-block:: python

        from langchain_autodemo import AutoDemoBatchRunnable
        from langchain_autodemo.serving import create_app

        app = create_app(
            AutoDemoBatchRunnable(llm, instructions="Classify the sentiment."),
            isolate_by="header:X-Tenant",
        )
        # uvicorn module:app  ->  POST /autodemo/invoke {"input": "I loved it"}
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model, model_validator

from langchain_autodemo.audit import _DEFAULT_GROUP
from langchain_autodemo.coalescing import MicroBatcher
from langchain_autodemo.engine import redact_model_text
from langchain_autodemo.errors import (
    AutoDemoError,
    AutoDemoInputError,
    AutoDemoItemError,
    AutoDemoModelCallError,
    ConfigurationError,
)
from langchain_autodemo.runnable import AutoDemoBatchRunnable

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

    from langchain_autodemo.audit import AuditedRunnable, AuditPolicy

__all__ = [
    "ISOLATION_METADATA_KEY",
    "CallLog",
    "MicroBatcher",
    "ServedError",
    "create_app",
    "isolation_key",
    "prometheus_metrics",
    "served_error",
]

#: The request metadata key that holds its isolation group (a salted hash, never the
#: header or address itself).
ISOLATION_METADATA_KEY = "autodemo_isolation_group"


# -- schemas ------------------------------------------------------------------------------


def _input_model(runner: AutoDemoBatchRunnable) -> Any:
    """The input a served runner takes: its template's fields, else one question."""
    if runner.input_template is None:
        return _Question
    return runner.get_input_schema()


class _Question(RootModel[str]):
    """One question: a string, or ``{"question": "..."}``."""

    # The playground labels a plain-string input with the schema's title.
    model_config = ConfigDict(title="question")

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, value: Any) -> Any:
        # The schema is titled "question": a client that sends {"question": ...} means it.
        if isinstance(value, dict) and set(value) == {"question"}:
            return value["question"]
        return value


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
            message=f"no answer after {error.attempts} model call(s): "
            f"{redact_model_text(error.reason)}",
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
        return _input_model(self.batcher.runner)

    @property
    def OutputType(self) -> Any:  # noqa: N802
        answer = self.batcher.OutputType
        return Annotated[Union[answer, ServedError], Field(union_mode="left_to_right")]  # noqa: UP007

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        model = self.InputType
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model
        return super().get_input_schema(config)  # type: ignore[return-value]

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


class CallLog(BaseCallbackHandler):
    """An operator's handler: appends each packed model call (its messages and its
    completion) as one JSON line to ``path``. Pass it in ``call_callbacks``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._open: dict[Any, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def on_chat_model_start(
        self, serialized: Any, messages: list[list[Any]], *, run_id: Any, **kwargs: Any
    ) -> None:
        self._open[run_id] = {
            "metadata": kwargs.get("metadata") or {},
            "messages": [{"type": m.type, "content": m.content} for m in messages[0]],
        }

    def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
        self._write(run_id, completion="".join(g.text for g in response.generations[0]))

    def on_llm_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        self._write(run_id, error=f"{type(error).__name__}: {error}")

    def _write(self, run_id: Any, **outcome: Any) -> None:
        record = self._open.pop(run_id, None)
        if record is None:
            return
        line = json.dumps({**record, **outcome}, ensure_ascii=False, default=str)
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")


def isolation_key(spec: str) -> Callable[[Request], str] | None:
    """What groups requests for packing, from ``--isolate-by``: ``"client"`` (the
    ``Authorization`` header and the caller's address), ``"header:NAME"``, or
    ``"none"`` (no grouping: every client may share a call)."""
    spec = spec.strip()
    if spec == "none":
        return None
    if spec == "client":

        def client(request: Request) -> str:
            host = request.client.host if request.client is not None else ""
            return f"{request.headers.get('authorization', '')}\x00{host}"

        return client
    kind, _, name = spec.partition(":")
    if kind == "header" and name.strip():
        header = name.strip()

        def by_header(request: Request) -> str:
            return request.headers.get(header, "")

        return by_header
    raise ConfigurationError(
        f"isolate_by {spec!r}: use 'client', 'header:NAME' (e.g. header:X-Tenant) or 'none'"
    )


def create_app(
    runner: AutoDemoBatchRunnable,
    *,
    path: str = "/autodemo",
    max_wait_seconds: float = 0.05,
    isolate_by: str = "client",
    call_callbacks: Sequence[BaseCallbackHandler] | None = None,
    audit: AuditPolicy | None = None,
    title: str = "langchain-autodemo",
) -> FastAPI:
    """A FastAPI app with LangServe routes (``/invoke``, ``/batch``, ``/stream``,
    ``/stream_log``, ``/stream_events``, ``/playground``) at ``path``, whose single
    requests are coalesced by a :class:`MicroBatcher` within their isolation group.

    ``isolate_by``: ``"client"`` (default: the ``Authorization`` header and the
    caller's address), ``"header:NAME"`` (a tenant header your gateway sets), or
    ``"none"`` (pack across all clients; see the module docstring for the risk).
    ``call_callbacks``: the operator's handlers, the only ones that see packed model
    runs (every question of a call). ``audit``: re-ask a share of the served items alone
    and estimate the agreement of packed and single answers
    (:class:`~langchain_autodemo.audit.AuditPolicy`); the estimate is served at
    ``/metrics`` in Prometheus text format.

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

    group_of = isolation_key(isolate_by)
    salt = secrets.token_bytes(16)  # groups are compared, never shown or reversible

    def tag_request(config: dict[str, Any], request: Request) -> dict[str, Any]:
        if group_of is None:
            return config
        digest = hashlib.sha256(salt + group_of(request).encode()).hexdigest()[:16]
        # Set last, over anything the body sent: a client cannot pick another's group.
        return {
            **config,
            "metadata": {**config.get("metadata", {}), ISOLATION_METADATA_KEY: digest},
        }

    def group(config: RunnableConfig) -> Hashable:
        return config.get("metadata", {}).get(ISOLATION_METADATA_KEY, "")

    app = FastAPI(title=title)
    batcher = MicroBatcher(
        runner,
        max_wait_seconds=max_wait_seconds,
        isolate_by=None if group_of is None else group,
        call_callbacks=call_callbacks,
        audit=audit,
    )
    served = _Served(batcher)
    app.state.autodemo_batcher = batcher
    streams: tuple[Literal["stream", "stream_log", "stream_events"], ...] = (
        "stream",
        "stream_log",
        "stream_events",
    )
    add_routes(
        app, served, path=path, disabled_endpoints=streams, per_req_config_modifier=tag_request
    )

    handler = APIHandler(served, path=path, per_req_config_modifier=tag_request)

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

    if batcher.audited is not None:
        from fastapi.responses import PlainTextResponse

        audited = batcher.audited

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> PlainTextResponse:
            return PlainTextResponse(
                prometheus_metrics([audited]), media_type="text/plain; version=0.0.4"
            )

    app.add_exception_handler(AutoDemoError, package_error)
    app.add_exception_handler(ValidationError, invalid_input)
    return app


# -- Prometheus -------------------------------------------------------------------------


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_metrics(audited_runnables: Iterable[AuditedRunnable]) -> str:
    """The audit metrics in Prometheus' text format, one ``runner`` label per wrapper
    (its name) and one ``group`` label per context group.

    Counters: ``autodemo_audit_items_total``, ``autodemo_audit_agreed_total`` (per
    group), ``autodemo_audit_calls_total``, ``autodemo_audit_tokens_total`` (by
    ``direction``), ``autodemo_audit_errors_total`` (audits whose single or shadow
    answer failed), ``autodemo_audit_abandoned_total`` (audits that never finished);
    gauges: ``autodemo_audit_agreement_low`` (per group, the Wilson lower bound over
    every audit), ``autodemo_audit_window_agreement_low`` (the same over the audits
    since the last switch: what the fallback acts on) and
    ``autodemo_audit_fallback_active``. An agreement bound with no audit behind it is
    ``NaN`` (unknown), never a misleading 0.
    """
    wrappers = list(audited_runnables)
    per_group: dict[str, list[tuple[str, float]]] = {
        "autodemo_audit_items_total": [],
        "autodemo_audit_agreed_total": [],
        "autodemo_audit_agreement_low": [],
        "autodemo_audit_window_agreement_low": [],
    }
    per_runner: dict[str, list[tuple[str, float]]] = {
        "autodemo_audit_fallback_active": [],
        "autodemo_audit_calls_total": [],
        "autodemo_audit_tokens_total": [],
        "autodemo_audit_errors_total": [],
        "autodemo_audit_abandoned_total": [],
    }
    for audited in wrappers:
        runner = _escape(audited.get_name())
        groups = audited.groups() or [_DEFAULT_GROUP]
        for group in groups:
            estimate = audited.agreement(group)
            labels = f'runner="{runner}",group="{_escape(group)}"'
            per_group["autodemo_audit_items_total"].append((labels, estimate.audited))
            per_group["autodemo_audit_agreed_total"].append((labels, estimate.agreed))
            low = estimate.low if estimate.audited else math.nan
            window_low = estimate.window_low if estimate.window_audited else math.nan
            per_group["autodemo_audit_agreement_low"].append((labels, low))
            per_group["autodemo_audit_window_agreement_low"].append((labels, window_low))
        overall = audited.agreement()
        labels = f'runner="{runner}"'
        per_runner["autodemo_audit_fallback_active"].append((labels, int(overall.fallback_active)))
        per_runner["autodemo_audit_calls_total"].append((labels, overall.audit_calls))
        per_runner["autodemo_audit_errors_total"].append((labels, overall.audit_errors))
        per_runner["autodemo_audit_abandoned_total"].append((labels, overall.audits_abandoned))
        for direction, tokens in (
            ("input", overall.audit_input_tokens),
            ("output", overall.audit_output_tokens),
        ):
            per_runner["autodemo_audit_tokens_total"].append(
                (f'{labels},direction="{direction}"', tokens)
            )
    lines: list[str] = []
    for name, samples in {**per_group, **per_runner}.items():
        kind = "counter" if name.endswith("_total") else "gauge"
        lines.append(f"# TYPE {name} {kind}")
        lines += [f"{name}{{{labels}}} {_number(value)}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))
