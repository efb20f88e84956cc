"""Pack concurrent single calls: ``invoke`` from threads and ``ainvoke`` from tasks.

A driver of the runner, beside its own ``batch()`` loops: :class:`MicroBatcher` holds
each single call for at most ``max_wait_seconds``, packs whatever arrived meanwhile
(with the same isolation key) into one ``batch()``/``abatch()`` of the runner, and
hands each caller its own result or its own error. ``autodemo serve`` puts one in
front of its endpoint; :meth:`AutoDemoBatchRunnable.with_coalescing` gives one for
in-process use, where compositions call the runner one input at a time.

Which compositions pack (``runner`` is an :class:`AutoDemoBatchRunnable`):

==========================================================  ==========  ==============
composition                                                 ``runner``  ``coalesced``
==========================================================  ==========  ==============
``runner.batch(xs)``, ``(prompt | runner | p).batch(xs)``   packs       packs
``runner.abatch(xs)`` and both ``as_completed`` on runner   packs       packs
``(prompt | runner | p).batch_as_completed(xs)``            one call    packs
                                                            per input
``RunnableParallel(a=runner, ...).batch(xs)``               one call    packs
                                                            per input
``asyncio.gather(*(runner.ainvoke(x) for x in xs))``        one call    packs
                                                            per input
sequential ``invoke`` in one thread                         one call    one call
                                                            each        each, after
                                                                        the wait
==========================================================  ==========  ==============

Isolation: every caller's traces are isolated (the packed model run goes only to the
operator's ``call_callbacks``; each caller's run gets a per-item view, see
:meth:`AutoDemoBatchRunnable.isolating_traces`). Packing still puts the callers' texts
in one model context, where a prompt injected by one caller can steer another's
answer: ``isolate_by`` maps a caller's config to a key, and only equal keys share a
call.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config, get_callback_manager_for_config

from langchain_autodemo._validation import require_max_concurrency, require_positive_int
from langchain_autodemo.errors import (
    AutoDemoInputError,
    AutoDemoItemError,
    AutoDemoModelCallError,
    ConfigurationError,
    model_call_error,
)
from langchain_autodemo.runnable import RunnerWrapper

if TYPE_CHECKING:
    from langchain_autodemo.audit import AuditedRunnable, AuditPolicy
    from langchain_autodemo.runnable import AutoDemoBatchRunnable

__all__ = ["MicroBatcher", "IsolationKey"]

log = logging.getLogger(__name__)

IsolationKey = Callable[[RunnableConfig], Hashable]
"""Maps a caller's config to the key of the callers it may share a model call with."""


@dataclass
class _Request:
    input: Any
    config: RunnableConfig
    future: Any  # asyncio.Future or concurrent.futures.Future


@dataclass
class _Queue:
    requests: list[_Request] = field(default_factory=list)
    timer: Any = None  # asyncio.TimerHandle or threading.Timer


class MicroBatcher(RunnerWrapper):
    """Coalesce concurrent ``invoke``/``ainvoke`` calls into batches of up to
    ``max_batch_size``.

    A batch is sent when it is full or when its first request has waited
    ``max_wait_seconds``. Requests are grouped by ``isolate_by(config)`` (``None``:
    one group) and never share a call across groups. Each request's config goes to its
    own item run, whose callbacks see only that request's question, answer and a
    per-item view of the call (the packed model run goes to ``call_callbacks`` only).
    Explicit ``batch()``/``abatch()`` calls go straight to the runner (they are packed
    already, and belong to one caller).

    Errors stay per request: an input that cannot be asked raises
    :class:`~langchain_autodemo.errors.AutoDemoInputError` at once, before it joins a
    batch, and so does a config that cannot be used
    (:class:`~langchain_autodemo.errors.ConfigurationError`: a bad ``max_concurrency``,
    callbacks that cannot be set up); an item the model failed raises that request's
    :class:`~langchain_autodemo.errors.AutoDemoItemError` (with ``index`` 0, its
    position in the caller's one-item request), never a neighbour's; a request whose
    own callbacks raise (``raise_error``) gets that exception, and its neighbours their
    answers. The packed batch runs with settings of its own, not a caller's: a caller's
    ``max_concurrency`` (a setting of a whole batch) is checked and then left out.
    """

    def __init__(
        self,
        runner: AutoDemoBatchRunnable,
        *,
        max_batch_size: int | None = None,
        max_wait_seconds: float = 0.05,
        isolate_by: IsolationKey | None = None,
        call_callbacks: Sequence[BaseCallbackHandler] | None = None,
        audit: AuditPolicy | None = None,
    ) -> None:
        if max_wait_seconds < 0:
            raise ValueError("max_wait_seconds must be >= 0")
        self.runner = runner.isolating_traces(call_callbacks)
        self.audited: AuditedRunnable | None = (
            None if audit is None else self.runner.with_audit(audit, callbacks=call_callbacks)
        )
        """The audit of the coalesced batches (``audit``), whose estimate ``/metrics`` shows."""
        self.max_batch_size = require_positive_int(
            "max_batch_size", runner.batch_size if max_batch_size is None else max_batch_size
        )
        self.max_wait_seconds = max_wait_seconds
        self.isolate_by = isolate_by
        self.calls = 0
        """Packed batches sent so far (each is one ``batch()`` of the runner)."""
        self._async: dict[tuple[int, Hashable], _Queue] = {}
        self._sync: dict[Hashable, _Queue] = {}
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until done

    # -- Runnable interface -------------------------------------------------------------

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        self._check(input)
        future: Future[Any] = Future()
        request = _Request(input, self._own_config(config), future)
        key = self._key(request.config)
        with self._lock:
            waiting = self._sync.setdefault(key, _Queue())
            waiting.requests.append(request)
            full = len(waiting.requests) >= self.max_batch_size
            if full:
                self._sync.pop(key)
                if waiting.timer is not None:
                    waiting.timer.cancel()
            elif waiting.timer is None:
                waiting.timer = threading.Timer(self.max_wait_seconds, self._flush_sync, (key,))
                waiting.timer.daemon = True
                waiting.timer.start()
        if full:
            self._answer_sync(waiting.requests)
        return future.result()

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        self._check(input)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        request = _Request(input, self._own_config(config), future)
        key = (id(loop), self._key(request.config))
        waiting = self._async.setdefault(key, _Queue())
        waiting.requests.append(request)
        if len(waiting.requests) >= self.max_batch_size:
            self._flush_async(key)
        elif waiting.timer is None:
            waiting.timer = loop.call_later(self.max_wait_seconds, self._flush_async, key)
        return await future

    def batch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
        return self.runner.batch(inputs, config, **kwargs)

    async def abatch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
        return await self.runner.abatch(inputs, config, **kwargs)

    # -- coalescing ---------------------------------------------------------------------

    def _key(self, config: RunnableConfig) -> Hashable:
        return None if self.isolate_by is None else self.isolate_by(config)

    @staticmethod
    def _own_config(config: RunnableConfig | None) -> RunnableConfig:
        """The request's config, checked now (so its error is raised to this caller
        alone), without what belongs to a whole batch (``max_concurrency``).

        Made here, in the caller's context: a config inherited from an enclosing chain
        belongs to this request, not to the batch it joins."""
        try:
            own = ensure_config(config)
            get_callback_manager_for_config(own)  # its callbacks, tags and metadata
        except Exception as exc:
            raise ConfigurationError(
                f"the config cannot be used: {type(exc).__name__}: {exc}"
            ) from exc
        require_max_concurrency(own.get("max_concurrency"))
        own.pop("max_concurrency", None)
        return own

    def _check(self, input: Any) -> None:
        """Refuse an input that cannot be asked now, so it never joins (or fails) a batch."""
        self.runner.render(input, 0)

    def _flush_sync(self, key: Hashable) -> None:
        with self._lock:
            waiting = self._sync.pop(key, None)
        if waiting is not None and waiting.requests:
            self._answer_sync(waiting.requests)

    def _answer_sync(self, requests: list[_Request]) -> None:
        with self._lock:  # flushed from callers' threads and timer threads alike
            self.calls += 1
        # A fresh context: the batch must not inherit the first caller's context
        # variables (its parent run, its usage tracker) for everyone else's items.
        contextvars.Context().run(self._run_sync, requests)

    def _run_sync(self, requests: list[_Request]) -> None:
        answering = self.audited or self.runner
        try:
            results = answering.batch(
                [r.input for r in requests], [r.config for r in requests], return_exceptions=True
            )
        except Exception as exc:  # not a per-item failure (inputs were checked on arrival)
            log.exception("a coalesced batch of %d request(s) failed", len(requests))
            results = [exc] * len(requests)
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, BaseException):
                request.future.set_exception(as_own_request(result))
            else:
                request.future.set_result(result)

    def _flush_async(self, key: tuple[int, Hashable]) -> None:
        waiting = self._async.pop(key, None)
        if waiting is None:
            return
        if waiting.timer is not None:
            waiting.timer.cancel()
        if waiting.requests:
            self.calls += 1
            task = contextvars.Context().run(
                asyncio.ensure_future, self._answer_async(waiting.requests)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer_async(self, requests: list[_Request]) -> None:
        answering = self.audited or self.runner
        try:
            results = await answering.abatch(
                [r.input for r in requests], [r.config for r in requests], return_exceptions=True
            )
        except Exception as exc:  # not a per-item failure (inputs were checked on arrival)
            log.exception("a coalesced batch of %d request(s) failed", len(requests))
            results = [exc] * len(requests)
        for request, result in zip(requests, results, strict=True):
            if request.future.done():
                continue  # the caller went away
            if isinstance(result, BaseException):
                request.future.set_exception(as_own_request(result))
            else:
                request.future.set_result(result)


def as_own_request(error: BaseException) -> BaseException:
    """The same error, numbered as the caller's only item (not its place in the batch),
    still quoting the caller's input."""
    excerpt = getattr(error, "input_excerpt", None)
    if isinstance(error, AutoDemoModelCallError) and error.__cause__ is not None:
        return model_call_error(
            error.__cause__, 0, error.attempts, error.reasons, input_excerpt=excerpt
        )
    if isinstance(error, AutoDemoItemError):
        return AutoDemoItemError(
            0, error.reason, error.attempts, error.reasons, input_excerpt=excerpt
        )
    if isinstance(error, AutoDemoInputError):
        return AutoDemoInputError(0, error.reason, input_excerpt=excerpt)
    return error
