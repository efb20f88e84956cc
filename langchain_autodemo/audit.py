"""Audit sampling: know in production whether packing hurts.

A configuration tuned on a labelled sample meets unlabelled, drifting traffic. An
:class:`AuditedRunnable` answers every input with the packed runner as usual and, in the
background, asks a random, seeded share of the inputs again on their own (a copy of the
runner in ``single`` mode), compares the two answers and keeps a live estimate of how
often they agree (a Wilson score interval, per runner and per group of inputs). When the
interval's upper bound falls below ``min_agreement`` it switches to a safer setting (one
input per call, or a smaller batch size) until the evidence says packing agrees again.

The returned answers are never changed nor delayed by the audit: audits run after the
answers are in, in daemon threads (``batch``: a hung audit never keeps the process
alive) or as asyncio tasks (``abatch``). Every audit model call is bounded
(``AuditPolicy.call_timeout``); an audit that fails counts in ``audit_errors``, one that
never finished (its loop closed, its process exited) in ``audits_abandoned``.

Example:
    >>> from langchain_autodemo.audit import AuditedRunnable, AuditPolicy
    >>> audited = AuditedRunnable(runner, AuditPolicy(rate=0.05, seed=7))  # doctest: +SKIP
    >>> answers = audited.batch(questions)  # doctest: +SKIP
    >>> audited.agreement().summary()  # doctest: +SKIP
    'Audit: agreed 19/20 (rate 0.950, 95% CI [0.764, 0.991]); fallback: off'

See ``docs/design/audit.md`` for the design and its costs.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import copy
import functools
import logging
import queue
import random
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.callbacks.manager import (
    AsyncCallbackManager,
    CallbackManager,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    get_config_list,
)

from langchain_autodemo._validation import require_positive_int, require_share, require_timeout
from langchain_autodemo.agreement import answers_agree, normalise_answer, wilson_interval
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.prompts import Mode
from langchain_autodemo.runnable import AutoDemoBatchRunnable, RunnerWrapper
from langchain_autodemo.usage import UsageStats, track_usage

__all__ = [
    "AUDIT_EVENT",
    "DEFAULT_AUDIT_CALL_TIMEOUT",
    "DEFAULT_MIN_AGREEMENT",
    "FALLBACK_EVENT",
    "AgreementEstimate",
    "AuditPolicy",
    "AuditedRunnable",
    "answers_agree",
    "normalise_answer",
    "wilson_interval",
]

logger = logging.getLogger(__name__)

_Manager = TypeVar("_Manager", CallbackManager, AsyncCallbackManager)

#: Custom callback event sent for each audited item (to that item's own callbacks).
AUDIT_EVENT = "autodemo_audit"
#: Custom callback event sent when the wrapper switches to or from its safer setting.
FALLBACK_EVENT = "autodemo_audit_fallback"
#: Packed answers must agree with single answers this often (see the design note).
DEFAULT_MIN_AGREEMENT = 0.9
#: Seconds one audit model call may take before it fails (and its audit counts as an error).
DEFAULT_AUDIT_CALL_TIMEOUT = 120.0
_DEFAULT_GROUP = "default"


@dataclass(frozen=True)
class AgreementEstimate:
    """How often packed answers agreed with single answers.

    ``audited``, ``agreed``, ``rate``, ``low`` and ``high`` count every audit so far.
    The fallback is decided on the ``window_*`` fields instead: the audits since the
    wrapper last switched setting (a drift is judged on fresh evidence).
    """

    audited: int
    agreed: int
    rate: float | None
    """``agreed / audited``; ``None`` before the first audit."""
    low: float
    high: float
    fallback_active: bool
    audit_calls: int
    audit_input_tokens: int
    audit_output_tokens: int
    window_audited: int = 0
    window_agreed: int = 0
    window_low: float = 0.0
    window_high: float = 1.0
    audit_errors: int = 0
    """Audits dropped because the single (or shadow) answer failed (a timed-out audit
    call included)."""
    audits_abandoned: int = 0
    """Audits that never finished: cancelled with their event loop (``asyncio.run``
    ending before :meth:`AuditedRunnable.adrain`), or left running by ``close(timeout)``
    or at interpreter exit."""

    def summary(self) -> str:
        """``Audit: agreed A/N (rate R, 95% CI [lo, hi]); fallback: off|on``."""
        rate = "n/a" if self.rate is None else f"{self.rate:.3f}"
        switch = "on" if self.fallback_active else "off"
        return (
            f"Audit: agreed {self.agreed}/{self.audited} (rate {rate}, 95% CI "
            f"[{self.low:.3f}, {self.high:.3f}]); fallback: {switch}"
        )


@dataclass
class _Tally:
    window_audited: int = 0
    window_agreed: int = 0
    audited: int = 0
    agreed: int = 0

    def add(self, agreed: bool, *, current: bool) -> None:
        self.audited += 1
        self.agreed += int(agreed)
        if current:
            self.window_audited += 1
            self.window_agreed += int(agreed)


# -- the policy -----------------------------------------------------------------------


@dataclass(frozen=True)
class AuditPolicy:
    """What to audit and when to fall back.

    Args:
        rate: the share of inputs asked again on their own (0 to 1).
        seed: seeds the sampling, so the same inputs in the same order are audited again.
        comparator: ``(packed, single) -> bool``; default :func:`answers_agree`.
        min_agreement: the agreement packing must keep. Fallback starts when the
            Wilson upper bound falls below it, and ends (with ``recover``) when the
            lower bound rises above it.
        min_samples: audits needed (since the last switch) before either decision.
        fallback: the safer setting: ``"single"``, a smaller batch size, or ``None``
            (estimate only, never switch).
        recover: switch back when the evidence allows; otherwise stay in fallback until
            :meth:`AuditedRunnable.reset`.
        group_by: maps an input to its context group (estimated separately); default:
            one group.
        max_workers: threads for the background audits of ``batch()`` (daemon
            threads: they never keep the process from exiting).
        call_timeout: seconds one audit model call (single or shadow) may take; past it
            the call fails as a ``TimeoutError`` (its audit counts in ``audit_errors``).
            ``None``: only the runner's own ``call_timeout``/``stall_timeout``.
        warmup: start in the safer setting and pack only once the evidence says packing
            agrees (the Wilson lower bound above ``min_agreement``, after at least
            ``min_samples`` audits): until then the answers are the safer runner's and
            packing runs as an audited shadow at ``warmup_rate``. An online service then
            never serves packed answers the evidence has not yet vouched for; the cost is
            the warm-up's items asked both ways (about 35 items when packing agrees:
            ``docs/design/audit.md``).
        warmup_rate: the audit rate during the warm-up (every item, by default: the
            warm-up ends as soon as the evidence allows).
    """

    rate: float = 0.05
    seed: int | None = None
    comparator: Callable[[Any, Any], bool] | None = None
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    min_samples: int = 20
    fallback: Literal["single"] | int | None = "single"
    recover: bool = True
    group_by: Callable[[Any], Hashable] | None = None
    max_workers: int = 2
    call_timeout: float | None = DEFAULT_AUDIT_CALL_TIMEOUT
    warmup: bool = False
    warmup_rate: float = 1.0

    def __post_init__(self) -> None:
        for name in ("rate", "warmup_rate"):
            require_share(f"audit {name}", getattr(self, name))
        if self.warmup and self.fallback is None:
            raise ConfigurationError("warmup needs a fallback to answer with until it ends")
        if not 0 < self.min_agreement <= 1:
            raise ConfigurationError(f"min_agreement must be in (0, 1], got {self.min_agreement!r}")
        for name in ("min_samples", "max_workers"):
            require_positive_int(name, getattr(self, name))
        require_timeout("call_timeout", self.call_timeout)
        fallback = self.fallback
        if (fallback is not None and fallback != "single") and (
            isinstance(fallback, bool) or not isinstance(fallback, int) or fallback < 1
        ):
            raise ConfigurationError(
                f"fallback must be 'single', a batch size or None, got {fallback!r}"
            )


# -- the wrapper ----------------------------------------------------------------------


@dataclass
class _Audit:
    """One item to audit: its place in the caller's call, the user's answer, its group."""

    index: int
    input: Any
    answer: Any
    group: Hashable
    config: RunnableConfig


@dataclass
class _Job:
    """The audits of one call, all submitted together."""

    items: list[_Audit]
    epoch: int
    inputs: Sequence[Any] = ()
    """In fallback: every input of the call, asked packed as a shadow."""
    answers_are_single: bool = False
    """In ``single`` fallback the user's answers are the single answers."""
    results: list[tuple[_Audit, Any, Any]] = field(default_factory=list)
    recorded: bool = False
    """Its outcome is in the estimate (or in ``audit_errors``)."""
    abandoned: bool = False
    """Given up before it was recorded (counted in ``audits_abandoned``)."""


@dataclass
class _Call:
    """One call of an :class:`AuditedRunnable` (``batch``, ``abatch`` and their
    ``as_completed`` twins): the runner that answers and the audit job of its answers,
    decided here once; each twin only makes the call."""

    audited: AuditedRunnable
    inputs: Sequence[Any]
    config: Any
    chosen: set[int]
    """The indices drawn for an audit."""
    epoch: int
    fallback: bool

    @property
    def runner(self) -> AutoDemoBatchRunnable:
        return self.audited._runner_for(self.fallback)

    def job(self, results: Sequence[Any] | dict[int, Any]) -> _Job | None:
        """The audit job of the answers: every answer in input order, or (``as_completed``)
        those that arrived by index (only those are audited)."""
        chosen = self.chosen
        if isinstance(results, dict):
            chosen = chosen & set(results)
            results = [results.get(i) for i in range(len(self.inputs))]
        return self.audited._job(
            self.inputs, self.config, results, chosen, self.epoch, self.fallback
        )


class _DaemonPool:
    """``workers`` daemon threads that run submitted functions.

    Not a ``ThreadPoolExecutor``: its workers are joined at interpreter exit, so one
    audit call that hangs would keep the process alive after every answer was given.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[None], Callable[[], None]] | None] = (
            queue.SimpleQueue()
        )
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        future: Future[None] = Future()
        self._queue.put((future, fn))
        return future

    def shutdown(self) -> None:
        """Let the workers end once the queue is done (without waiting for them)."""
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while (task := self._queue.get()) is not None:
            future, fn = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                fn()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)


class AuditedRunnable(RunnerWrapper):
    """An :class:`AutoDemoBatchRunnable` whose packed answers are audited against single
    answers on a sample of the traffic, with a fallback to a safer setting.

    It is a ``Runnable``: ``invoke``/``ainvoke``/``batch``/``abatch`` and both
    ``batch_as_completed`` variants return exactly what the wrapped runner returns (or,
    in fallback, what the safer runner returns); compose it like the runner
    (``audited | parser``).

    Audits never delay the answers: ``batch`` submits them to a thread pool, ``abatch``
    starts asyncio tasks on the caller's loop. :meth:`drain` / :meth:`adrain` wait for
    them (tests, shutdown). Audit model calls run without the caller's callbacks and are
    counted apart from the caller's :func:`~langchain_autodemo.track_usage` (see
    :meth:`agreement`). Each audited item's callbacks get one ``autodemo_audit`` custom
    event with its own answers only (under an ``autodemo_audit`` run); ``callbacks``
    (the operator's handlers) get every audit event and the ``autodemo_audit_fallback``
    events.

    In fallback, audits go on as a shadow: for a call with sampled items, the original
    (packed) runner answers the call's inputs in the background and its answers to the
    sampled items are compared with single answers (the returned ones in ``single``
    fallback), so recovery is judged on the packed setting itself.
    """

    def __init__(
        self,
        runner: AutoDemoBatchRunnable,
        policy: AuditPolicy | None = None,
        *,
        callbacks: Sequence[BaseCallbackHandler] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(runner, AutoDemoBatchRunnable):
            raise TypeError(f"AuditedRunnable wraps an AutoDemoBatchRunnable, got {type(runner)!r}")
        self.runner = runner
        self.policy = policy or AuditPolicy()
        self.name = name or runner.name
        self.callbacks = tuple(callbacks or ())
        self.single = runner.with_settings(mode=Mode.SINGLE)
        # The audit's own calls (single answers, packed shadows) are bounded: an audit
        # must end, even against a model that never answers.
        self._auditor = _bounded(self.single, self.policy.call_timeout)
        self._shadow = _bounded(runner, self.policy.call_timeout)
        fallback = self.policy.fallback
        if fallback is None:
            self.safer: AutoDemoBatchRunnable | None = None
        elif fallback == "single":
            self.safer = self.single
        else:
            self.safer = runner.with_settings(batch_size=int(fallback))
        self._compare = self.policy.comparator or answers_agree
        self._rng = random.Random(self.policy.seed)
        self._lock = threading.RLock()
        self._overall = _Tally()
        self._groups: dict[Hashable, _Tally] = {}
        self._usage = UsageStats()
        self._errors = 0
        self._abandoned = 0
        self._warned_abandoned = False
        # A warm-up answers with the safer runner until the evidence vouches for packing.
        self._warming = self.policy.warmup and self.safer is not None
        self._fallback = self._warming
        self._epoch = 0
        self._executor: _DaemonPool | None = None
        self._futures: dict[Future[None], _Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        _LIVE.add(self)

    # -- what is known --------------------------------------------------------------

    @property
    def fallback_active(self) -> bool:
        return self._fallback

    @property
    def vouched(self) -> bool:
        """Whether the current evidence vouches for packing: not in fallback, and the
        window's agreement known good (at least ``min_samples`` audits, the Wilson lower
        bound above ``min_agreement``: the rule that ends a fallback)."""
        with self._lock:
            return not self._fallback and self._window_vouches()

    def _window_vouches(self) -> bool:
        n, k = self._overall.window_audited, self._overall.window_agreed
        policy = self.policy
        return n >= policy.min_samples and wilson_interval(k, n)[0] > policy.min_agreement

    @property
    def warming_up(self) -> bool:
        """Still in the warm-up (``AuditPolicy.warmup``): answering with the safer runner
        until the evidence vouches for packing."""
        return self._warming

    @property
    def current(self) -> AutoDemoBatchRunnable:
        """The runner that answers now: the packed one, or the safer one in fallback."""
        return self.safer if self._fallback and self.safer is not None else self.runner

    def agreement(self, group: Hashable | None = None) -> AgreementEstimate:
        """The live estimate, over every group or for one (``group_by``'s key)."""
        with self._lock:
            tally = self._overall if group is None else self._groups.get(group, _Tally())
            n, k = tally.audited, tally.agreed
            low, high = wilson_interval(k, n)
            window_low, window_high = wilson_interval(tally.window_agreed, tally.window_audited)
            return AgreementEstimate(
                audited=n,
                agreed=k,
                rate=k / n if n else None,
                low=low,
                high=high,
                fallback_active=self._fallback,
                audit_calls=self._usage.calls,
                audit_input_tokens=self._usage.input_tokens,
                audit_output_tokens=self._usage.output_tokens,
                window_audited=tally.window_audited,
                window_agreed=tally.window_agreed,
                window_low=window_low,
                window_high=window_high,
                audit_errors=self._errors,
                audits_abandoned=self._abandoned,
            )

    def groups(self) -> list[Hashable]:
        with self._lock:
            return list(self._groups)

    def reset(self) -> None:
        """Back to the packed setting with fresh evidence (lifetime counters stay)."""
        with self._lock:
            self._fallback = self._warming = False
            self._new_window()

    # -- Runnable ---------------------------------------------------------------------

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        return self.runner.get_name(suffix, name=name or self.name)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.batch([input], config, **kwargs)[0]

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return (await self.abatch([input], config, **kwargs))[0]

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        call = self._call(inputs, config)
        results = call.runner.batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        self._submit(call.job(results))
        return results

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        call = self._call(inputs, config)
        results = await call.runner.abatch(
            inputs, config, return_exceptions=return_exceptions, **kwargs
        )
        self._start_task(call.job(results))
        return results

    def batch_as_completed(  # type: ignore[override]
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> Iterator[tuple[int, Any]]:
        call = self._call(inputs, config)
        results: dict[int, Any] = {}
        for index, result in call.runner.batch_as_completed(
            inputs, config, return_exceptions=return_exceptions, **kwargs
        ):
            results[index] = result
            yield index, result
        self._submit(call.job(results))

    async def abatch_as_completed(  # type: ignore[override]
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> AsyncIterator[tuple[int, Any]]:
        call = self._call(inputs, config)
        results: dict[int, Any] = {}
        async for index, result in call.runner.abatch_as_completed(
            inputs, config, return_exceptions=return_exceptions, **kwargs
        ):
            results[index] = result
            yield index, result
        self._start_task(call.job(results))

    # -- waiting for the audits -------------------------------------------------------

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for the background audits of ``batch()``; ``True`` if none is left.

        Each audit call is bounded by ``AuditPolicy.call_timeout``, so with one set
        (the default) the wait ends even against a model that never answers."""
        with self._lock:
            pending = set(self._futures)
        if not pending:
            return True
        _, not_done = wait_futures(pending, timeout=timeout)
        return not not_done

    async def adrain(self) -> None:
        """Wait for the audits of ``abatch()`` started on this loop (and of ``batch()``)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await asyncio.to_thread(self.drain)

    def close(self, timeout: float | None = None) -> bool:
        """Wait for the background audits (at most ``timeout`` seconds) and stop the
        audit threads; the audits still running then are abandoned (counted in
        ``audits_abandoned``). ``True`` if every audit finished."""
        finished = self.drain(timeout)
        with self._lock:
            executor, self._executor = self._executor, None
            left = [job for future, job in self._futures.items() if not future.done()]
            for future in list(self._futures):
                future.cancel()  # those not started yet never start
        for job in left:
            self._abandon(job, "were still running when the wrapper was closed")
        if executor is not None:
            executor.shutdown()
        return finished

    def _abandon(self, job: _Job, why: str) -> None:
        """Count a job that will not be recorded, and say so (once per wrapper)."""
        with self._lock:
            if job.recorded or job.abandoned:
                return
            job.abandoned = True
            self._abandoned += len(job.items)
            warn, self._warned_abandoned = not self._warned_abandoned, True
        if warn:
            logger.warning(
                "%s: %d audit(s) %s: they are counted in audits_abandoned, not in the "
                "estimate (await adrain() before the event loop ends, or drain() before "
                "the process exits, to keep them)",
                self.get_name(),
                len(job.items),
                why,
            )

    # -- sampling and scheduling ------------------------------------------------------

    def _call(self, inputs: Sequence[Any], config: Any) -> _Call:
        """One call of the wrapper, decided once for its sync and async twins: which
        runner answers and which items are audited (see :class:`_Call`)."""
        chosen, epoch, fallback = self._choose(inputs)
        return _Call(self, inputs, config, chosen, epoch, fallback)

    def _choose(self, inputs: Sequence[Any]) -> tuple[set[int], int, bool]:
        """The indices to audit (seeded draws, one per input, in input order), the
        evidence window they belong to, and whether the safer runner answers."""
        with self._lock:
            rate = self.policy.warmup_rate if self._warming else self.policy.rate
            chosen = {i for i in range(len(inputs)) if self._rng.random() < rate}
            return chosen, self._epoch, self._fallback and self.safer is not None

    def _runner_for(self, fallback: bool) -> AutoDemoBatchRunnable:
        return self.safer if fallback and self.safer is not None else self.runner

    def _job(
        self,
        inputs: Sequence[Any],
        config: Any,
        results: Sequence[Any],
        chosen: set[int],
        epoch: int,
        fallback: bool,
    ) -> _Job | None:
        items = [i for i in sorted(chosen) if not isinstance(results[i], BaseException)]
        if not items:
            return None
        configs = get_config_list(config, len(inputs))
        group_by = self.policy.group_by
        audits = []
        for i in items:
            try:
                group = _DEFAULT_GROUP if group_by is None else group_by(inputs[i])
            except Exception:  # a group key must never fail the caller
                logger.exception("audit group_by failed for item %d", i)
                group = _DEFAULT_GROUP
            item_config = {k: v for k, v in configs[i].items() if k != "run_id"}
            audits.append(_Audit(i, inputs[i], results[i], group, item_config))  # type: ignore[arg-type]
        if not fallback:
            return _Job(audits, epoch)
        return _Job(
            audits, epoch, inputs=list(inputs), answers_are_single=self.safer is self.single
        )

    def _submit(self, job: _Job | None) -> None:
        if job is None:
            return
        with self._lock:
            if self._executor is None:
                self._executor = _DaemonPool(self.policy.max_workers, "autodemo-audit")
            # A fresh context: the caller's track_usage() and run context stay out.
            run = functools.partial(contextvars.Context().run, self._run_job, job)
            future = self._executor.submit(run)
            self._futures[future] = job
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            job = self._futures.pop(future, None)
        if future.cancelled():
            if job is not None:
                self._abandon(job, "were cancelled before they started")
        elif future.exception() is not None:
            logger.error("audit failed", exc_info=future.exception())

    def _start_task(self, job: _Job | None) -> None:
        if job is None:
            return
        # A fresh context: the caller's track_usage() and run context stay out. The
        # task is kept (self._tasks) until done; cancelled before it recorded (its loop
        # closed under it), it is counted as abandoned, never lost silently.
        task = contextvars.Context().run(asyncio.ensure_future, self._arun_job(job))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._forget_task, job))

    def _forget_task(self, job: _Job, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            self._abandon(job, "were cancelled before they finished (their event loop closed?)")
        elif task.exception() is not None:
            logger.error("audit failed", exc_info=task.exception())

    # -- one job: ask, compare, record, report ----------------------------------------

    _CALL_CONFIG: RunnableConfig = {"callbacks": [], "tags": [], "metadata": {}}

    def _run_job(self, job: _Job) -> None:
        with track_usage() as usage:
            replies = {
                name: runner.batch(inputs, self._CALL_CONFIG, return_exceptions=True)
                for name, runner, inputs in self._job_calls(job)
            }
        self._finish(job, replies, usage)
        for audit, outcome, switch in job.results:
            with self._reporting(audit):
                self._report(audit, outcome, switch)

    async def _arun_job(self, job: _Job) -> None:
        with track_usage() as usage:
            replies = {
                name: await runner.abatch(inputs, self._CALL_CONFIG, return_exceptions=True)
                for name, runner, inputs in self._job_calls(job)
            }
        self._finish(job, replies, usage)
        for audit, outcome, switch in job.results:
            with self._reporting(audit):
                await self._areport(audit, outcome, switch)

    def _job_calls(self, job: _Job) -> list[tuple[str, AutoDemoBatchRunnable, list[Any]]]:
        """The audit calls of a job, in order, for :meth:`_run_job` and :meth:`_arun_job` to
        make: ``shadow`` (in fallback: every input asked packed again, whose answers are
        the packed ones) and ``single`` (each audited input alone; not in ``single``
        fallback, where the returned answers are the single ones)."""
        calls: list[tuple[str, AutoDemoBatchRunnable, list[Any]]] = []
        if job.inputs:
            calls.append(("shadow", self._shadow, list(job.inputs)))
        if not job.answers_are_single:
            calls.append(("single", self._auditor, [a.input for a in job.items]))
        return calls

    @staticmethod
    @contextlib.contextmanager
    def _reporting(audit: _Audit) -> Iterator[None]:
        """One item's callbacks must not cost the others their events."""
        try:
            yield
        except Exception:
            logger.exception("the audit event of item %d failed", audit.index)

    @staticmethod
    def _packed_answers(job: _Job, shadow: Sequence[Any] | None) -> list[Any]:
        """The packed answer of each audited item: the returned one, or the shadow's."""
        if shadow is None:
            return [a.answer for a in job.items]
        return [shadow[a.index] for a in job.items]

    def _finish(self, job: _Job, replies: dict[str, list[Any]], usage: UsageStats) -> None:
        """Compare the answers of :meth:`_job_calls`' ``replies``, record, and decide on the
        fallback; ``job.results`` gets, per item, (its outcome: the answer pair and whether
        they agreed, the switch it caused). A failed audit counts in ``audit_errors``."""
        packed = self._packed_answers(job, shadow=replies.get("shadow"))
        single = replies.get("single")
        if single is None:  # single fallback: the returned answers are the single ones
            single = [a.answer for a in job.items]
        compared: list[tuple[_Audit, Any, Any]] = []
        for audit, mine, theirs in zip(job.items, packed, single, strict=True):
            if isinstance(mine, BaseException) or isinstance(theirs, BaseException):
                compared.append((audit, None, None))
                continue
            try:
                agreed = bool(self._compare(mine, theirs))
            except Exception:
                logger.exception("audit comparator failed for item %d", audit.index)
                compared.append((audit, None, None))
                continue
            compared.append((audit, (mine, theirs), agreed))
        with self._lock:
            if job.abandoned:  # given up on (and counted) already
                return
            job.recorded = True
            self._usage.merge(usage)
            for audit, pair, agreed in compared:
                if pair is None:
                    self._errors += 1
                    continue
                current = job.epoch == self._epoch
                self._overall.add(agreed, current=current)
                self._groups.setdefault(audit.group, _Tally()).add(agreed, current=current)
                switch = self._decide()
                job.results.append((audit, {"pair": pair, "agreed": agreed}, switch))

    def _decide(self) -> dict[str, Any] | None:
        """Switch to or from the safer setting on the current evidence (under the lock)."""
        policy = self.policy
        if self.safer is None:
            return None
        n, k = self._overall.window_audited, self._overall.window_agreed
        if n < policy.min_samples:
            return None
        low, high = wilson_interval(k, n)
        if not self._fallback and high < policy.min_agreement:
            reason = (
                f"packed answers agreed with single answers {k}/{n} times: 95% CI "
                f"[{low:.3f}, {high:.3f}] lies below min_agreement={policy.min_agreement}"
            )
            active = True
        elif self._fallback and (policy.recover or self._warming) and self._window_vouches():
            reason = (
                f"packed answers agreed with single answers {k}/{n} times: 95% CI "
                f"[{low:.3f}, {high:.3f}] lies above min_agreement={policy.min_agreement}"
            )
            active = False
        else:
            return None
        self._fallback = active
        warmed = self._warming and not active
        self._warming = False
        if warmed:
            reason = "warm-up over: " + reason
        self._new_window()
        setting = f"fallback={policy.fallback!r}" if active else "the packed setting"
        logger.warning("%s: switching to %s: %s", self.get_name(), setting, reason)
        return {
            "fallback_active": active,
            "fallback": policy.fallback,
            "reason": reason,
            "audited": n,
            "agreed": k,
            "low": low,
            "high": high,
        }

    def _new_window(self) -> None:
        self._epoch += 1
        for tally in (self._overall, *self._groups.values()):
            tally.window_audited = tally.window_agreed = 0

    def _event(self, audit: _Audit, outcome: dict[str, Any]) -> dict[str, Any]:
        packed, single = outcome["pair"]
        return {
            "index": audit.index,
            "group": _label(audit.group),
            "agreed": outcome["agreed"],
            "packed": packed,
            "single": single,
        }

    def _audit_config(self, audit: _Audit) -> RunnableConfig:
        config = dict(audit.config)
        config.pop("run_name", None)
        return config  # type: ignore[return-value]

    def _report(self, audit: _Audit, outcome: Any, switch: dict[str, Any] | None) -> None:
        """The item's own ``autodemo_audit`` run and events (its callbacks only, plus
        the operator's)."""
        manager = self._with_callbacks(get_callback_manager_for_config(self._audit_config(audit)))
        if not manager.handlers:
            return
        events, end = self._report_events(audit, outcome, switch)
        run = manager.on_chain_start(None, {"input": audit.input}, name=AUDIT_EVENT)
        child: RunnableConfig = {"callbacks": run.get_child()}
        for name, data in events:
            dispatch_custom_event(name, data, config=child)
        run.on_chain_end(end)

    async def _areport(self, audit: _Audit, outcome: Any, switch: dict[str, Any] | None) -> None:
        manager = self._with_callbacks(
            get_async_callback_manager_for_config(self._audit_config(audit))
        )
        if not manager.handlers:
            return
        events, end = self._report_events(audit, outcome, switch)
        run = await manager.on_chain_start(None, {"input": audit.input}, name=AUDIT_EVENT)
        child: RunnableConfig = {"callbacks": run.get_child()}
        for name, data in events:
            await adispatch_custom_event(name, data, config=child)
        await run.on_chain_end(end)

    def _with_callbacks(self, manager: _Manager) -> _Manager:
        """The item's callback manager with the operator's callbacks added."""
        for handler in self.callbacks:
            manager.add_handler(handler, inherit=True)
        return manager

    def _report_events(
        self, audit: _Audit, outcome: Any, switch: dict[str, Any] | None
    ) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
        """What :meth:`_report` and :meth:`_areport` send: the custom events (the audit's,
        then the switch it caused, if any) and the ``autodemo_audit`` run's output."""
        event = self._event(audit, outcome)
        events = [(AUDIT_EVENT, event)]
        if switch is not None:
            events.append((FALLBACK_EVENT, switch))
        return events, {"agreed": event["agreed"], "single": event["single"]}


def _bounded(runner: AutoDemoBatchRunnable, timeout: float | None) -> AutoDemoBatchRunnable:
    """A copy of ``runner`` whose model calls end after ``timeout`` seconds at most."""
    if timeout is None:
        return runner
    bounded = copy.copy(runner)
    limit = runner.call_timeout
    bounded.call_timeout = float(timeout if limit is None else min(limit, timeout))
    return bounded


# Every live wrapper, to say at exit what its unfinished audits were.
_LIVE: weakref.WeakSet[AuditedRunnable] = weakref.WeakSet()


@atexit.register
def _abandon_at_exit() -> None:
    """The audits still running at interpreter exit end with the process (their threads
    are daemons): count them, and say so."""
    for audited in list(_LIVE):
        with audited._lock:
            left = [job for future, job in audited._futures.items() if not future.done()]
        for job in left:
            audited._abandon(job, "were still running at interpreter exit")


def _label(value: Any) -> str:
    return str(value)
