"""The drivers of one ``batch()``: they move text between the model and the engine.

One :class:`Dispatch` holds every decision a driver makes (which calls are due, at
most ``max_concurrency`` in flight, each read bounded by its deadline, reports turned
into results, item runs closed); :func:`run_sync` drives it under threads and
:func:`run_async` under asyncio, as httpx drives one auth flow twice. A driver asks
through the runner's public planning step (:class:`Asker`), never around it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import heapq
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list

from langchain_autodemo._validation import require_max_concurrency
from langchain_autodemo.engine import CallReport, CallSession, Engine, ItemResult, ModelCall
from langchain_autodemo.errors import AutoDemoError
from langchain_autodemo.tracing import (
    ItemRun,
    View,
    aend_item_run,
    astart_item_run,
    call_config,
    end_item_run,
    item_view,
    start_item_run,
)
from langchain_autodemo.usage import UsageStats, active_trackers

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "Asker",
    "Dispatch",
    "InFlightCall",
    "Planned",
    "aclose_stream",
    "close_stream",
    "configs_for",
    "run_async",
    "run_sync",
]

log = logging.getLogger("langchain_autodemo.runnable")  # where users' filters look
_T = TypeVar("_T")

#: Model calls in flight at once when the config sets no ``max_concurrency``.
DEFAULT_MAX_CONCURRENCY = 32

Result = Any  # the answer (str or parsed object), an ItemResult, or an AutoDemoError
_Event = tuple[ModelCall, CallReport]
_Run = ItemRun


class Planned(Protocol):
    """What a driver needs of a planned ``batch()`` (the runner's
    :class:`~langchain_autodemo.runnable.Plan`)."""

    @property
    def texts(self) -> tuple[str, ...]: ...

    def engine(self) -> Engine: ...


class Asker(Protocol):
    """What a driver needs of the runner: its planning step, its model, what a caller
    gets for a result, and how calls are bounded and traced."""

    call_timeout: float | None
    stall_timeout: float | None

    @property
    def model(self) -> Runnable[Any, Any]: ...

    @property
    def traces_isolated(self) -> bool: ...

    @property
    def call_callbacks(self) -> Sequence[BaseCallbackHandler]: ...

    def get_name(self) -> str: ...

    def plan(self, inputs: Sequence[Any], *, return_exceptions: bool = False) -> Planned: ...

    async def aplan(self, inputs: Sequence[Any], *, return_exceptions: bool = False) -> Planned: ...

    def output(self, result: Any) -> Any: ...


class InFlightCall:
    """One model call in flight: its session, and the deadline that bounds its read.

    The read ends at ``call_timeout`` after the call started, or ``stall_timeout``
    after its last chunk that carried something (text, reasoning, usage or a finish
    reason: see :attr:`CallSession.progress`; a stream of empty chunks is a stall),
    whichever comes first; then the call counts as failed (a ``TimeoutError``) and its
    items are re-asked after a backoff. Closed exactly once: by its worker at the end of
    the stream, or by the loop at the deadline.
    """

    def __init__(
        self,
        call: ModelCall,
        session: CallSession,
        started: float,
        call_timeout: float | None,
        stall_timeout: float | None,
    ) -> None:
        self.call = call
        self.session = session
        self.lock = threading.Lock()
        self.closed = False
        self._started = self._last = started
        self._call_timeout = call_timeout
        self._stall_timeout = stall_timeout

    def feed(self, chunk: Any) -> None:
        progress = self.session.progress
        self.session.feed(chunk)
        if self.session.progress != progress:  # an empty chunk is no sign of life
            self._last = time.monotonic()

    def deadline(self) -> float | None:
        limits = []
        if self._call_timeout is not None:
            limits.append(self._started + self._call_timeout)
        if self._stall_timeout is not None:
            limits.append(self._last + self._stall_timeout)
        return min(limits, default=None)

    def time_left(self, now: float) -> float | None:
        deadline = self.deadline()
        return None if deadline is None else max(0.0, deadline - now)

    def timeout_error(self, now: float) -> TimeoutError:
        if self._call_timeout is not None and now >= self._started + self._call_timeout:
            return TimeoutError(
                f"the model call took longer than call_timeout={self._call_timeout} s"
            )
        return TimeoutError(
            f"no chunk with text, reasoning or a finish reason from the model for "
            f"stall_timeout={self._stall_timeout} s"
        )

    def close(self, error: BaseException | None) -> CallReport | None:
        """Judge the call (once); ``None`` if it was already closed."""
        with self.lock:
            if self.closed:
                return None
            self.closed = True
            return self.session.finish(error)


class Dispatch:
    """Setup, step and teardown of one ``batch()``, shared by the sync and async loops.

    It schedules the engine's calls (each after its backoff delay, at most
    ``max_concurrency`` in flight), bounds every read by its deadline, turns
    reports into results and closes the item runs. The loops only start workers and
    wait for events.

    Each item's run speaks to that item's own callbacks only, through :meth:`guard`:
    with ``return_exceptions`` a handler that raises (``raise_error``) fails its own
    item with that exception and no other (the inputs of one ``batch()`` may come from
    different callers, as the coalescer's do); without, it is raised as LangChain does.
    """

    def __init__(
        self,
        runner: Asker,
        plan: Planned,
        configs: list[RunnableConfig],
        return_exceptions: bool = False,
    ) -> None:
        self._runner = runner
        self._return_exceptions = return_exceptions
        self.hook_errors: dict[int, BaseException] = {}
        """Items whose own callbacks raised, with the exception (their result)."""
        self.engine = plan.engine()
        self._texts = plan.texts
        self.limit = configs[0].get("max_concurrency") or DEFAULT_MAX_CONCURRENCY
        self._waiting: list[tuple[float, int, ModelCall]] = []  # a heap: (due, id, call)
        self._calls: dict[int, InFlightCall] = {}
        self._trackers = active_trackers()
        self.outputs: dict[int, Result] = {}
        self.usage = UsageStats()

    def initial(self) -> list[tuple[int, Result]]:
        """The inputs final before any call (bad inputs); schedules the first calls."""
        emitted = []
        for index, result in sorted(self.engine.results.items()):
            self.outputs[index] = self._runner.output(result)
            emitted.append((index, self.hook_errors.get(index, self.outputs[index])))
        self._schedule(self.engine.initial_calls())
        return emitted

    def guard(self, index: int, step: Callable[[], _T], *, after: bool = False) -> _T | None:
        """``step()``, a callback of item ``index``'s own run; if it raises, the error
        is that item's result (with ``return_exceptions``), else raised. ``after``: the
        item's result is out already (the error is logged, not returned)."""
        try:
            return step()
        except Exception as exc:
            self._hook_failed(index, exc, after)
            return None

    async def aguard(
        self, index: int, step: Callable[[], Awaitable[_T]], *, after: bool = False
    ) -> _T | None:
        try:
            return await step()
        except Exception as exc:
            self._hook_failed(index, exc, after)
            return None

    def _hook_failed(self, index: int, error: Exception, after: bool) -> None:
        if not self._return_exceptions and not after:
            raise error
        log.warning(
            "a callback of item %d raised %s: that item fails, no other",
            index,
            type(error).__name__,
            exc_info=error,
        )
        if not after:
            self.hook_errors.setdefault(index, error)

    @property
    def busy(self) -> bool:
        return bool(self._waiting or self._calls)

    def ready(self, now: float) -> list[ModelCall]:
        """Calls due now, as many as the concurrency limit lets start."""
        due: list[ModelCall] = []
        while (
            self._waiting
            and self._waiting[0][0] <= now
            and len(self._calls) + len(due) < self.limit
        ):
            due.append(heapq.heappop(self._waiting)[2])
        return due

    def open(self, call: ModelCall, now: float) -> InFlightCall:
        flight = InFlightCall(
            call, self.engine.open(call), now, self._runner.call_timeout, self._runner.stall_timeout
        )
        self._calls[call.call_id] = flight
        return flight

    def overdue(self, now: float) -> list[_Event]:
        """Close the calls past their deadline, as failed calls."""
        events: list[_Event] = []
        for flight in list(self._calls.values()):
            deadline = flight.deadline()
            if deadline is not None and now >= deadline:
                report = flight.close(flight.timeout_error(now))
                if report is not None:
                    events.append((flight.call, report))
        return events

    def wait(self, now: float) -> float | None:
        """How long the loop may block before a deadline or a backoff is due."""
        times = [d for d in (s.deadline() for s in self._calls.values()) if d is not None]
        if self._waiting and len(self._calls) < self.limit:
            times.append(self._waiting[0][0])
        # A floor: a deadline just passed is handled on the next turn, without spinning.
        return max(0.005, min(times) - now) if times else None

    def handle(self, event: _Event) -> list[tuple[int, Result]]:
        call, report = event
        self._calls.pop(call.call_id, None)
        self.usage.record_call(report.usage, reask=call.is_reask, escalation=call.escalation)
        final, follow_ups = self.engine.complete(call, report)
        self._schedule(follow_ups)
        emitted = []
        for index, result in final:
            self.outputs[index] = self._runner.output(result)
            emitted.append((index, self.hook_errors.get(index, self.outputs[index])))
        return emitted

    def _schedule(self, calls: Sequence[ModelCall]) -> None:
        now = time.monotonic()
        for call in calls:
            heapq.heappush(self._waiting, (now + call.delay, call.call_id, call))

    def _finish_usage(self) -> None:
        failed = sum(isinstance(o, AutoDemoError) for o in self.outputs.values())
        self.usage.record_items(len(self.outputs) - failed, failed)
        for tracker in self._trackers:
            tracker.merge(self.usage)

    def close_runs(self, runs: Sequence[_Run]) -> list[tuple[int, Result]]:
        """End every item's run; the items whose own callbacks raised now, with their
        errors (they replace the results given before)."""
        self._finish_usage()
        before = set(self.hook_errors)
        for index, run in enumerate(runs):
            if run is not None:
                self.guard(index, functools.partial(self._close_run, index, run))
        return [(i, e) for i, e in self.hook_errors.items() if i not in before]

    async def aclose_runs(self, runs: Sequence[_Run]) -> list[tuple[int, Result]]:
        self._finish_usage()
        before = set(self.hook_errors)
        for index, run in enumerate(runs):
            if run is not None:
                await self.aguard(index, functools.partial(self._aclose_run, index, run))
        return [(i, e) for i, e in self.hook_errors.items() if i not in before]

    def _closing(self, index: int) -> tuple[BaseException | None, Any, View | None]:
        """How item ``index``'s run ends, decided once for both drivers: (its error, or
        ``None``; its output; the item view to trace first when traces are isolated)."""
        output = self.outputs[index]
        error = self.hook_errors.get(index)
        if error is not None or isinstance(output, AutoDemoError):
            return error or output, output, None
        if not self._runner.traces_isolated:
            return None, output, None
        result = self.engine.results[index]
        assert isinstance(result, ItemResult)
        return None, output, item_view(result, self._texts[index])

    def _close_run(self, index: int, run: Any) -> None:
        end_item_run(run, *self._closing(index), self.engine.results.get(index))

    async def _aclose_run(self, index: int, run: Any) -> None:
        await aend_item_run(run, *self._closing(index), self.engine.results.get(index))


def configs_for(inputs: Sequence[Any], config: Any) -> list[RunnableConfig]:
    if not isinstance(inputs, Sequence) or isinstance(inputs, (str, bytes)):
        raise TypeError(f"batch() takes a list of inputs, got {type(inputs).__name__}")
    if not inputs:
        return []
    configs = get_config_list(config, len(inputs))
    for c in configs:
        require_max_concurrency(c.get("max_concurrency"))
    return configs


def run_sync(
    runner: Asker, inputs: Sequence[Any], config: Any, return_exceptions: bool
) -> Iterator[tuple[int, Any]]:
    """Answer ``inputs`` under threads (one daemon thread per model call in flight):
    ``(index, result)`` as each call is judged, then the late callback errors."""
    configs = configs_for(inputs, config)
    plan = runner.plan(inputs, return_exceptions=return_exceptions)
    if not plan.texts:
        return
    dispatch = Dispatch(runner, plan, configs, return_exceptions)
    name = runner.get_name()
    runs = [
        dispatch.guard(index, functools.partial(start_item_run, name, item, c))
        for index, (item, c) in enumerate(zip(inputs, configs, strict=True))
    ]
    events: queue.Queue[_Event | BaseException] = queue.Queue()

    def _config(flight: InFlightCall) -> RunnableConfig:
        return call_config(
            flight.call, configs, runs, name=name, isolated=runner.traces_isolated,
            call_callbacks=runner.call_callbacks,
        )  # fmt: skip

    stopping = threading.Event()

    def work(flight: InFlightCall) -> None:
        error: BaseException | None = None
        try:
            stream = runner.model.stream(flight.call.messages, _config(flight))
            try:
                for chunk in stream:
                    with flight.lock:
                        if flight.closed:
                            break
                        flight.feed(chunk)
                        if flight.session.done_reading:
                            break
                    if stopping.is_set():
                        break
            except Exception as exc:  # the model call failed: its items are re-asked
                error = exc
            finally:
                close_stream(stream)
            report = flight.close(error)
            if report is not None:
                events.put((flight.call, report))
        except BaseException as crash:  # a bug or an interrupt must surface, not hang
            events.put(crash)

    def start(call: ModelCall) -> None:
        flight = dispatch.open(call, time.monotonic())
        # A daemon thread per call (calls are few and coarse): a stream that never
        # yields again is abandoned at its deadline and cannot keep the process alive.
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(work, flight), daemon=True).start()

    try:
        yield from dispatch.initial()
        while dispatch.busy:
            now = time.monotonic()
            for call in dispatch.ready(now):
                start(call)
            for overdue in dispatch.overdue(now):
                events.put(overdue)
            try:
                event = events.get(timeout=dispatch.wait(time.monotonic()))
            except queue.Empty:
                continue
            if isinstance(event, BaseException):
                raise event
            yield from dispatch.handle(event)
    except BaseException as exc:
        stopping.set()  # workers still streaming stop at their next chunk
        for index, run in enumerate(runs):
            if run is not None:
                dispatch.guard(index, functools.partial(run.on_chain_error, exc), after=True)
        raise
    stopping.set()
    yield from dispatch.close_runs(runs)


async def run_async(
    runner: Asker, inputs: Sequence[Any], config: Any, return_exceptions: bool
) -> AsyncIterator[tuple[int, Any]]:
    """:func:`run_sync` under asyncio (one task per model call in flight)."""
    configs = configs_for(inputs, config)
    plan = await runner.aplan(inputs, return_exceptions=return_exceptions)
    if not plan.texts:
        return
    dispatch = Dispatch(runner, plan, configs, return_exceptions)
    name = runner.get_name()
    runs = [
        await dispatch.aguard(index, functools.partial(astart_item_run, name, item, c))
        for index, (item, c) in enumerate(zip(inputs, configs, strict=True))
    ]
    events: asyncio.Queue[_Event | BaseException] = asyncio.Queue()

    def _config(flight: InFlightCall) -> RunnableConfig:
        return call_config(
            flight.call, configs, runs, name=name, isolated=runner.traces_isolated,
            call_callbacks=runner.call_callbacks,
        )  # fmt: skip

    async def work(flight: InFlightCall) -> None:
        error: BaseException | None = None
        try:
            stream = runner.model.astream(flight.call.messages, _config(flight))
            try:
                async for chunk in stream:
                    if flight.closed:
                        break
                    flight.feed(chunk)
                    if flight.session.done_reading:
                        break
            except Exception as exc:  # the model call failed: its items are re-asked
                error = exc
            finally:
                await aclose_stream(stream)
            report = flight.close(error)
            if report is not None:
                events.put_nowait((flight.call, report))
        except asyncio.CancelledError:
            if not flight.closed:  # cancelled from outside, not at its deadline
                events.put_nowait(asyncio.CancelledError())
        except BaseException as crash:  # a bug must surface, never hang
            events.put_nowait(crash)

    tasks: dict[int, asyncio.Task[None]] = {}

    def start(call: ModelCall) -> None:
        task = asyncio.ensure_future(work(dispatch.open(call, time.monotonic())))
        tasks[call.call_id] = task
        task.add_done_callback(lambda _: tasks.pop(call.call_id, None))

    try:
        for item in dispatch.initial():
            yield item
        while dispatch.busy:
            now = time.monotonic()
            for call in dispatch.ready(now):
                start(call)
            for overdue in dispatch.overdue(now):
                task = tasks.get(overdue[0].call_id)
                if task is not None:
                    task.cancel()  # a stream that never yields again is dropped
                events.put_nowait(overdue)
            try:
                event = await asyncio.wait_for(events.get(), dispatch.wait(time.monotonic()))
            except asyncio.TimeoutError:
                continue
            if isinstance(event, BaseException):
                raise event
            for emitted in dispatch.handle(event):
                yield emitted
    except BaseException as exc:
        for task in list(tasks.values()):
            task.cancel()
        for index, run in enumerate(runs):
            if run is not None:
                error = functools.partial(run.on_chain_error, exc)
                await dispatch.aguard(index, error, after=True)
        raise
    for emitted in await dispatch.aclose_runs(runs):
        yield emitted


def close_stream(stream: Any) -> None:
    close = getattr(stream, "close", None)  # release the HTTP connection of a dropped stream
    if close is not None:
        close()


async def aclose_stream(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
