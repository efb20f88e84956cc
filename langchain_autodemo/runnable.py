"""``AutoDemoBatchRunnable``: LangChain's ``batch()`` answered by packed Auto-Demo calls.

The decisions (what to ask, what a completion delivered, what to re-ask) live in
:mod:`langchain_autodemo.engine`; this module only moves text between the model and
the engine, once for threads and once for asyncio, and speaks LangChain's callbacks.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import heapq
import logging
import queue
import random
import re
import string
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar, Union

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    BaseCallbackHandler,
    CallbackManager,
    CallbackManagerForChainRun,
)
from langchain_core.messages import AnyMessage, BaseMessage, convert_to_messages
from langchain_core.output_parsers import (
    BaseOutputParser,
    JsonOutputParser,
    PydanticOutputParser,
)
from langchain_core.prompt_values import ChatPromptValueConcrete, PromptValue, StringPromptValue
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    get_config_list,
    patch_config,
)
from langchain_core.tracers.langchain import LangChainTracer
from langchain_core.tracers.schemas import Run
from pydantic import BaseModel, RootModel, create_model

from langchain_autodemo._validation import (
    require_max_concurrency,
    require_positive_int,
    require_timeout,
)
from langchain_autodemo.alignment import comparison_key
from langchain_autodemo.engine import (
    CallReport,
    CallSession,
    Engine,
    EngineSettings,
    ItemResult,
    ModelCall,
    redact_model_text,
)
from langchain_autodemo.errors import (
    AutoDemoError,
    AutoDemoInputError,
    AutoDemoItemError,
    ConfigurationError,
)
from langchain_autodemo.markers import Markers
from langchain_autodemo.parser import json_candidate, non_text_kinds, text_of
from langchain_autodemo.planning import (
    BatchSelector,
    Demonstration,
    PlannedBatch,
    SequentialSelector,
)
from langchain_autodemo.prompts import (
    DEFAULT_HEAD_WORDS,
    Mode,
    Restate,
    context_key,
    few_shot_turns,
    final_answer_only,
    split_chat,
)
from langchain_autodemo.settings import Settings, TunedConfig, settings_of
from langchain_autodemo.usage import UsageStats, active_trackers

if TYPE_CHECKING:
    from pathlib import Path

    from langchain_autodemo.audit import AuditedRunnable, AuditPolicy
    from langchain_autodemo.coalescing import MicroBatcher

__all__ = [
    "AutoDemoBatchRunnable",
    "BatchPlan",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_STALL_TIMEOUT",
    "ITEM_VIEW_RUN",
    "RunnerWrapper",
    "template_fields",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Model calls in flight at once when the config sets no ``max_concurrency``.
DEFAULT_MAX_CONCURRENCY = 32
#: Seconds without a streamed chunk after which a model call counts as failed (a local
#: CPU model may take minutes to read a long packed prompt before its first token).
DEFAULT_STALL_TIMEOUT = 600.0
#: Name of the child run that shows an isolated item how its call served it.
ITEM_VIEW_RUN = "autodemo_call"

Result = Any  # the answer (str or parsed object), an ItemResult, or an AutoDemoError
_Event = tuple[ModelCall, CallReport]
_Run = CallbackManagerForChainRun | AsyncCallbackManagerForChainRun | None


class AutoDemoBatchRunnable(Runnable[Any, Any]):
    """Answer many small requests with few model calls, Auto-Demo style.

    ``batch()`` packs ``batch_size`` inputs into each call. In ``auto_demo`` mode the
    model restates every question (``Q[i]: ...``) before answering it (``A[i]: ...``),
    so each earlier (question, answer) pair acts as a demonstration for the later ones,
    and the restatement proves which input an answer belongs to. Items that come back
    missing, garbled, misaligned or cut off are re-asked (smaller, then alone); after
    ``max_attempts`` they get an :class:`AutoDemoItemError`. Results always come back
    one per input, in input order.

    Args:
        llm: any LangChain chat model, or a Runnable that takes messages and returns a
            message or text.
        instructions: the task, e.g. ``"Solve the math word problem."``.
        batch_size: inputs per call (lowered automatically to fit ``max_output_tokens``).
        mode: ``"auto_demo"``, ``"batch"`` (answers only) or ``"single"`` (one call
            per input), so modes can be compared like for like.
        reasoning: ask for reasoning that ends with ``The answer is ...`` (default), or
            for the bare answer only.
        restate: what an ``auto_demo`` completion copies of each question before its
            answer: ``"full"`` (default, the paper's layout) or ``"head"``, its first
            ``head_words`` words (fewer output tokens; a call whose heads could be
            confused with another text of the prompt restates in full; see
            :class:`~langchain_autodemo.prompts.Restate`).
        head_words: words of a ``"head"`` restatement (default 8).
        input_template: how a ``dict`` input becomes text, e.g. ``"{premise} / {hypothesis}"``.
        output_parser: turns each answer into an object: a LangChain output parser, a
            pydantic model class, or a callable. A parse failure counts as a garbled item.
        selector: a :class:`~langchain_autodemo.planning.BatchSelector` that decides
            which inputs share a call, e.g. :class:`~langchain_autodemo.SimilarityBatchSelector`.
        demonstrations: solved ``(question, answer)`` examples shown before every call,
            in every mode (``single`` included), in the package's answer layout (a
            k-shot prompt). They come first, so every call shares them as a prompt
            prefix that providers cache; a selector's own demonstrations follow them.
            With ``reasoning=False`` they are shown as their final answer alone.
        max_attempts: model calls an item may take before it gets an error.
        max_output_tokens: the model's completion limit; defaults to the model's
            ``max_tokens`` when it has one.
        answer_tokens: the expected length of one answer, for the token budget.
        include_details: return :class:`~langchain_autodemo.engine.ItemResult` objects
            (answer, restated question, attempts, token share) instead of bare answers.
        retry_initial_delay, retry_max_delay: the backoff (seconds, doubling, jittered)
            before re-asking items whose model call raised; a provider's ``Retry-After``
            is honoured up to ``retry_max_delay``. Format failures are re-asked at once.
        require_finish_reason: distrust the last open item of a stream that ends
            without a finish reason (a connection cut before the final chunk). Default:
            on, except for LangChain's own fake chat models (``GenericFakeChatModel``,
            ``FakeListChatModel``, ``FakeMessagesListChatModel``), which never report one.
            Set it to ``False`` for any other model that never does.
        reask_with_answered: when a completion garbles some items, re-ask them after the
            items it did answer, shown as solved demonstrations, instead of from scratch.
        call_timeout: seconds one model call may stream before it counts as failed (a
            ``TimeoutError``, re-asked after the backoff); ``None``: no limit (the
            engine still stops reading once the output passes the call's token budget).
        stall_timeout: seconds without a chunk that carries text, reasoning or a finish
            reason (the first one included; empty chunks do not count) after which a
            model call counts as failed in the same way; ``None``: no limit.
        escalate: selective escalation: the share (0 to 1) of each packed call's
            answers, least confident first, asked again alone (single mode, the same
            context), whose single answer is returned; 0 (default) turns it off.
            Confidence is the probability the model gave the answer's tokens
            (:attr:`~langchain_autodemo.engine.ItemResult.confidence`); a model that
            sends no log-probabilities escalates its latest slots first.
        escalate_below: also escalate every packed answer whose confidence is below
            this probability (``None``: no threshold).
        confidence: ask the model for token log-probabilities (``logprobs=True,
            top_logprobs=1``, for models that take them, such as ``ChatOpenAI`` and
            llama.cpp's server) so each answer gets a confidence. Default: on when
            escalating.

    Concurrency: at most ``max_concurrency`` (from the config; default
    :data:`DEFAULT_MAX_CONCURRENCY`) model calls are in flight, in ``batch()`` and
    ``abatch()`` alike; a call waiting out its backoff holds no slot.

    Retries: ``max_attempts`` counts every model call of an item, format re-asks and
    failed calls alike. ``runner.with_retry(stop_after_attempt=k)`` wraps the whole
    ``batch()`` and multiplies (``k * max_attempts`` calls for an item that never
    succeeds): prefer the runner's own ``max_attempts`` and backoff, and use
    ``with_fallbacks`` for a second model.

    Example:
        .. code-block:: python

            from langchain_openai import ChatOpenAI
            from langchain_autodemo import AutoDemoBatchRunnable

            runner = AutoDemoBatchRunnable(
                ChatOpenAI(model="gpt-4o-mini"),
                instructions="Solve the math word problem.",
                batch_size=8,
            )
            answers = runner.batch(questions, config={"max_concurrency": 4})
    """

    def __init__(
        self,
        llm: Runnable[Any, Any],
        *,
        instructions: str | None = None,
        batch_size: int = 8,
        mode: Mode | str = Mode.AUTO_DEMO,
        markers: Markers | None = None,
        reasoning: bool = True,
        restate: Restate | str = Restate.FULL,
        head_words: int = DEFAULT_HEAD_WORDS,
        input_template: str | Callable[[dict[str, Any]], str] | None = None,
        output_parser: BaseOutputParser[Any] | type[BaseModel] | Callable[[str], Any] | None = None,
        selector: BatchSelector | None = None,
        demonstrations: Sequence[Demonstration] = (),
        max_attempts: int = 3,
        max_output_tokens: int | None = None,
        answer_tokens: int | None = None,
        include_details: bool = False,
        retry_initial_delay: float = 1.0,
        retry_max_delay: float = 30.0,
        require_finish_reason: bool | None = None,
        reask_with_answered: bool = False,
        call_timeout: float | None = None,
        stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
        escalate: float = 0.0,
        escalate_below: float | None = None,
        confidence: bool | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(llm, Runnable):
            raise TypeError(f"llm must be a LangChain chat model or Runnable, got {type(llm)!r}")
        if max_output_tokens is not None:  # checked before the model's own limit stands in
            require_positive_int("max_output_tokens", max_output_tokens)
        require_timeout("call_timeout", call_timeout)
        require_timeout("stall_timeout", stall_timeout)
        if isinstance(input_template, str):
            template_fields(input_template)  # refuse "{0}" or "{a.b}" now, not per item
        if selector is not None and not isinstance(selector, BatchSelector):
            raise TypeError("selector must be a BatchSelector such as SimilarityBatchSelector")
        parse_value, format_hint, answer_format = _value_parser(output_parser)
        model_limit = getattr(llm, "max_tokens", None)
        # Every setting is checked once, by the record (Settings and EngineSettings).
        given: dict[str, Any] = {  # as the caller wrote them: the record normalises
            "mode": mode,
            "restate": restate,
            "demonstrations": demonstrations,
        }
        self._settings = EngineSettings(
            **given,
            batch_size=batch_size,
            reasoning=reasoning,
            instructions=instructions,
            escalate=escalate,
            escalate_below=escalate_below,
            head_words=head_words,
            reask_with_answered=reask_with_answered,
            markers=markers or Markers(),
            max_attempts=max_attempts,
            max_output_tokens=max_output_tokens
            or (model_limit if isinstance(model_limit, int) else None),
            answer_tokens=answer_tokens or (256 if reasoning is not False else 32),
            parse_value=parse_value,
            retry_initial_delay=retry_initial_delay,
            retry_max_delay=retry_max_delay,
            require_finish_reason=(
                not _never_reports_finish(llm)
                if require_finish_reason is None
                else require_finish_reason
            ),
            answer_format=answer_format,
            format_hint=format_hint,
        )
        self.llm = llm
        self.input_template = input_template
        self.output_parser = output_parser
        self.selector = selector
        self.include_details = include_details
        self.name = name
        self.call_timeout = None if call_timeout is None else float(call_timeout)
        self.stall_timeout = None if stall_timeout is None else float(stall_timeout)
        self._isolate_traces = False
        self._call_callbacks: tuple[BaseCallbackHandler, ...] = ()
        self._confidence = confidence
        self._logprob_model: Runnable[Any, Any] | None = None

    @property
    def model(self) -> Runnable[Any, Any]:
        """The chat model as this runner calls it: ``llm``, asked for token
        log-probabilities where escalation or ``confidence`` wants them (a copy made once;
        ``llm`` itself is not changed). Derived from the settings, so a copy made by
        :meth:`with_settings` that escalates asks for them too."""
        settings = self._settings
        wants = self._confidence
        if wants is None:  # single calls are never escalated
            escalating = settings.escalate > 0 or settings.escalate_below is not None
            wants = escalating and settings.mode is not Mode.SINGLE
        if not wants:
            return self.llm
        if self._logprob_model is None:
            self._logprob_model = _with_logprobs(self.llm)
        return self._logprob_model

    # One source of truth: the frozen engine settings; these are read-only views of it.
    @property
    def settings(self) -> EngineSettings:
        """What the engine asks and accepts (frozen; build a new runner to change it)."""
        return self._settings

    @property
    def mode(self) -> Mode:
        return self._settings.mode

    @property
    def batch_size(self) -> int:
        return self._settings.batch_size

    @property
    def instructions(self) -> str | None:
        """The instructions as asked (a structured output's format hint included)."""
        return self._settings.asked_instructions

    @property
    def demonstrations(self) -> tuple[Demonstration, ...]:
        """The shared exemplars as shown: the terse layout answers with the final answer
        alone, and so do its examples."""
        shown = self._settings.demonstrations
        return shown if self._settings.reasoning else final_answer_only(shown)

    @classmethod
    def from_settings(
        cls,
        llm: Runnable[Any, Any],
        settings: Settings,
        *,
        embeddings: Any = None,
        **overrides: Any,
    ) -> AutoDemoBatchRunnable:
        """A runner built from a settings record (any :class:`~langchain_autodemo.settings.
        Settings`: a ``TunedConfig``, a job's options); keyword arguments of the constructor
        override it. A ``"similarity"`` grouping gets a ``SimilarityBatchSelector`` on
        ``embeddings`` (default: the package's offline embeddings) unless ``selector`` is
        given."""
        record = settings_of(settings)
        kwargs: dict[str, Any] = {
            name: getattr(record, name) for name in record.field_names() if name != "grouping"
        }
        if record.grouping is not None and "selector" not in overrides:
            from langchain_autodemo.selector import SimilarityBatchSelector

            kwargs["selector"] = SimilarityBatchSelector(
                embeddings=embeddings, grouping=record.grouping
            )
        runner = cls(llm, **{**kwargs, **overrides})
        if record.grouping is not None and runner.selector is not None:
            runner._settings = replace(runner._settings, grouping=record.grouping)
        return runner

    @classmethod
    def from_config(
        cls,
        config: str | Path | TunedConfig,
        llm: Runnable[Any, Any],
        *,
        embeddings: Any = None,
        **overrides: Any,
    ) -> AutoDemoBatchRunnable:
        """A runner as ``autodemo tune`` chose it: :meth:`from_settings` on the config file
        (or object) ``tuned.json`` holds."""
        if not isinstance(config, TunedConfig):
            config = TunedConfig.read(config)
        return cls.from_settings(llm, config, embeddings=embeddings, **overrides)

    # -- schemas ------------------------------------------------------------------------

    @property
    def InputType(self) -> Any:  # noqa: N802 (LangChain's name)
        """What one input may be: the template's fields, a record, or a question (a
        string, a one-key dict, a prompt value or a list of messages)."""
        template = self.input_template
        if isinstance(template, str):
            names = dict.fromkeys(template_fields(template))
            # Named after its fields: LangServe keeps one model per name and process, and
            # renames (breaking) a second, different model of the same name.
            title = "".join(re.sub(r"\W", "", name).title() for name in names) + "Input"
            return create_model(title, **{name: (str, ...) for name in names})  # type: ignore[call-overload]
        if callable(template):
            return create_model("RecordInput", root=(dict[str, Any], ...), __base__=RootModel)
        return Union[  # noqa: UP007
            str, dict[str, str], StringPromptValue, ChatPromptValueConcrete, list[AnyMessage]
        ]

    @property
    def OutputType(self) -> Any:  # noqa: N802 (LangChain's name)
        """An :class:`ItemResult` with ``include_details``, else the parsed answer's type."""
        if self.include_details:
            return ItemResult
        parser: Any = self.output_parser
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

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        model = self.InputType
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model
        return super().get_input_schema(config)  # type: ignore[return-value]

    # -- LangChain Runnable interface -------------------------------------------------

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
        """Answer every input; results in input order (see the class docstring).

        With ``return_exceptions=True`` a bad input or an unanswered item is returned
        as its error, in its place; otherwise the first such error is raised (a bad
        input before any model call).
        """
        results = dict(self._run_sync(inputs, config, return_exceptions))
        return self._ordered(results, len(inputs), return_exceptions)

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        results = {i: r async for i, r in self._run_async(inputs, config, return_exceptions)}
        return self._ordered(results, len(inputs), return_exceptions)

    def batch_as_completed(  # type: ignore[override]
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, result)`` for each input as soon as its call has been judged.

        Results are exactly those ``batch()`` returns: an answer is final only once the
        completion that carries it has been read to the end (or to the point where every
        item of the call is in), so a later, conflicting copy of it can still send it
        back to be re-asked. The unit of streaming is therefore the model call.
        """
        given: set[int] = set()
        for index, result in self._run_sync(inputs, config, return_exceptions):
            if index not in given:  # (a callback failing after its answer is only logged)
                given.add(index)
                yield index, self._raise_or_return(result, return_exceptions)

    async def abatch_as_completed(  # type: ignore[override]
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> AsyncIterator[tuple[int, Any]]:
        given: set[int] = set()
        async for index, result in self._run_async(inputs, config, return_exceptions):
            if index not in given:
                given.add(index)
                yield index, self._raise_or_return(result, return_exceptions)

    def submit_batch_job(self, inputs: Sequence[Any], **options: Any) -> Any:
        """The same packed calls, through a provider Batch API: a resumable
        :class:`~langchain_autodemo.batch_api.BatchApiJob` (``options`` are its own)."""
        from langchain_autodemo.batch_api import BatchApiJob

        return BatchApiJob(self, inputs, **options)

    # -- the planning step: every entry point asks through it --------------------------

    def render(self, input: Any, index: int = 0) -> str:
        """The question text of one input, as every entry point sends it, or an
        :class:`~langchain_autodemo.errors.AutoDemoInputError` naming ``index``."""
        return self._render(index, input)

    def plan(self, inputs: Sequence[Any], *, return_exceptions: bool = False) -> BatchPlan:
        """Validate ``inputs``, group them by chat context and plan the packed calls.

        The one planning step that ``batch()``, ``abatch()``, both ``as_completed``
        variants, the in-process coalescer, the served endpoint and
        :class:`~langchain_autodemo.batch_api.BatchApiJob` all call, so the same inputs
        are always asked with the same messages. Pure apart from the selector (which
        may embed the texts). With ``return_exceptions=False`` the first bad input
        raises; otherwise it is recorded in :attr:`BatchPlan.invalid`.
        """
        texts, invalid = self._validate(inputs, return_exceptions)
        batches: list[PlannedBatch] = []
        for context, members in self._context_groups(inputs, invalid):
            group = self._selector().plan([texts[i] for i in members], self._plan_size())
            batches += self._placed(group, members, context)
        return self._plan(texts, invalid, batches)

    async def aplan(self, inputs: Sequence[Any], *, return_exceptions: bool = False) -> BatchPlan:
        """:meth:`plan` for asyncio (the selector embeds without blocking the loop)."""
        texts, invalid = self._validate(inputs, return_exceptions)
        batches: list[PlannedBatch] = []
        for context, members in self._context_groups(inputs, invalid):
            group = await self._selector().aplan([texts[i] for i in members], self._plan_size())
            batches += self._placed(group, members, context)
        return self._plan(texts, invalid, batches)

    def _plan(
        self, texts: list[str], invalid: dict[int, AutoDemoError], batches: list[PlannedBatch]
    ) -> BatchPlan:
        if self.demonstrations:
            batches = [
                replace(b, demonstrations=self.demonstrations + b.demonstrations) for b in batches
            ]
        return BatchPlan(tuple(texts), dict(invalid), tuple(batches), self.settings)

    def output(self, result: ItemResult | AutoDemoError) -> Any:
        """What the caller gets for one engine result: the answer (parsed), the
        :class:`ItemResult` with ``include_details``, or the error (without the model
        text it quotes when traces are isolated)."""
        if self._isolate_traces:
            result = _redacted(result)
        if isinstance(result, AutoDemoError):
            return result
        if self.include_details:
            return result
        return result.answer

    def isolating_traces(
        self, call_callbacks: Sequence[BaseCallbackHandler] | None = None
    ) -> AutoDemoBatchRunnable:
        """A copy whose item runs never show another input's text.

        Each input's run (its callbacks, traces, ``astream_events``/``astream_log``)
        gets a per-item view of the call that answered it: a child run ``autodemo_call``
        with its own question and answer and how it was served (call id, position,
        attempts, token share). The packed model run, which holds every question of the
        call, goes only to ``call_callbacks`` (handlers the operator configures; global
        tracing set by environment variables included). Error messages lose the model
        text they quote. Use it whenever one runner serves several users.
        """
        clone = copy.copy(self)
        clone._isolate_traces = True
        clone._call_callbacks = tuple(call_callbacks or ())
        return clone

    def with_settings(self, **changes: Any) -> AutoDemoBatchRunnable:
        """A copy with some :class:`~langchain_autodemo.engine.EngineSettings` changed
        (``mode``, ``batch_size``, ``max_attempts``, ...), keeping the model, instructions
        (format hints included once), template, parser, selector and trace isolation. A
        ``single`` copy drops the selector: one input per call, nothing to group."""
        clone = copy.copy(self)
        clone._settings = replace(self._settings, **changes)
        if clone._settings.mode is Mode.SINGLE:
            clone.selector = None
        return clone

    def with_audit(self, policy: AuditPolicy | None = None, **kwargs: Any) -> AuditedRunnable:
        """This runner with audit sampling against single calls, a live agreement
        estimate and a fallback (see :class:`~langchain_autodemo.audit.AuditedRunnable`)."""
        from langchain_autodemo.audit import AuditedRunnable

        return AuditedRunnable(self, policy, **kwargs)

    @property
    def traces_isolated(self) -> bool:
        """Whether item runs see per-item views instead of the packed model run."""
        return self._isolate_traces

    def with_coalescing(
        self,
        *,
        max_wait_seconds: float = 0.05,
        max_batch_size: int | None = None,
        isolate_by: Callable[[RunnableConfig], Hashable] | None = None,
        call_callbacks: Sequence[BaseCallbackHandler] | None = None,
    ) -> MicroBatcher:
        """This runner behind an in-process micro-batcher: concurrent ``invoke`` (from
        threads) and ``ainvoke`` calls are packed into shared calls.

        Compositions that call the runner one input at a time pack only through it:
        ``asyncio.gather(*(r.ainvoke(q) ...))``, ``chain.batch_as_completed``,
        ``RunnableParallel(...).batch``. Callers' traces are isolated (see
        :meth:`isolating_traces`); ``isolate_by`` maps a request's config to a key, and
        only requests with equal keys share a call (``None``: every caller may).
        See :class:`~langchain_autodemo.coalescing.MicroBatcher`.
        """
        from langchain_autodemo.coalescing import MicroBatcher

        return MicroBatcher(
            self,
            max_wait_seconds=max_wait_seconds,
            max_batch_size=max_batch_size,
            isolate_by=isolate_by,
            call_callbacks=call_callbacks,
        )

    # -- drivers: one dispatcher, driven under threads or asyncio ---------------------

    def _run_sync(
        self, inputs: Sequence[Any], config: Any, return_exceptions: bool
    ) -> Iterator[tuple[int, Result]]:
        configs = self._configs(inputs, config)
        plan = self.plan(inputs, return_exceptions=return_exceptions)
        if not plan.texts:
            return
        dispatch = _Dispatch(self, plan, configs, return_exceptions)
        runs = [
            dispatch.guard(index, functools.partial(self._start_run, item, c))
            for index, (item, c) in enumerate(zip(inputs, configs, strict=True))
        ]
        events: queue.Queue[_Event | BaseException] = queue.Queue()
        stopping = threading.Event()

        def work(slot: _Slot) -> None:
            error: BaseException | None = None
            try:
                stream = self.model.stream(
                    slot.call.messages, self._call_config(slot, configs, runs)
                )
                try:
                    for chunk in stream:
                        with slot.lock:
                            if slot.closed:
                                break
                            slot.feed(chunk)
                            if slot.session.done_reading:
                                break
                        if stopping.is_set():
                            break
                except Exception as exc:  # the model call failed: its items are re-asked
                    error = exc
                finally:
                    _close(stream)
                report = slot.close(error)
                if report is not None:
                    events.put((slot.call, report))
            except BaseException as crash:  # a bug or an interrupt must surface, not hang
                events.put(crash)

        def start(call: ModelCall) -> None:
            slot = dispatch.open(call, time.monotonic())
            # A daemon thread per call (calls are few and coarse): a stream that never
            # yields again is abandoned at its deadline and cannot keep the process alive.
            context = contextvars.copy_context()
            threading.Thread(target=context.run, args=(work, slot), daemon=True).start()

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

    async def _run_async(
        self, inputs: Sequence[Any], config: Any, return_exceptions: bool
    ) -> AsyncIterator[tuple[int, Result]]:
        configs = self._configs(inputs, config)
        plan = await self.aplan(inputs, return_exceptions=return_exceptions)
        if not plan.texts:
            return
        dispatch = _Dispatch(self, plan, configs, return_exceptions)
        runs = [
            await dispatch.aguard(index, functools.partial(self._astart_run, item, c))
            for index, (item, c) in enumerate(zip(inputs, configs, strict=True))
        ]
        events: asyncio.Queue[_Event | BaseException] = asyncio.Queue()

        async def work(slot: _Slot) -> None:
            error: BaseException | None = None
            try:
                stream = self.model.astream(
                    slot.call.messages, self._call_config(slot, configs, runs)
                )
                try:
                    async for chunk in stream:
                        if slot.closed:
                            break
                        slot.feed(chunk)
                        if slot.session.done_reading:
                            break
                except Exception as exc:  # the model call failed: its items are re-asked
                    error = exc
                finally:
                    await _aclose(stream)
                report = slot.close(error)
                if report is not None:
                    events.put_nowait((slot.call, report))
            except asyncio.CancelledError:
                if not slot.closed:  # cancelled from outside, not at its deadline
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

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    def _configs(inputs: Sequence[Any], config: Any) -> list[RunnableConfig]:
        if not isinstance(inputs, Sequence) or isinstance(inputs, (str, bytes)):
            raise TypeError(f"batch() takes a list of inputs, got {type(inputs).__name__}")
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        for c in configs:
            require_max_concurrency(c.get("max_concurrency"))
        return configs

    def _validate(
        self, inputs: Sequence[Any], return_exceptions: bool
    ) -> tuple[list[str], dict[int, AutoDemoError]]:
        """Every input's text before the first call ("" for a bad one, with its error)."""
        if not isinstance(inputs, Sequence) or isinstance(inputs, (str, bytes)):
            raise TypeError(f"batch() takes a list of inputs, got {type(inputs).__name__}")
        texts: list[str] = []
        invalid: dict[int, AutoDemoError] = {}
        for index, item in enumerate(inputs):
            try:
                texts.append(self._render(index, item))
            except AutoDemoInputError as error:
                if not return_exceptions:
                    raise
                texts.append("")
                invalid[index] = error
        return texts, invalid

    def _context_groups(
        self, inputs: Sequence[Any], invalid: dict[int, AutoDemoError]
    ) -> list[tuple[tuple[BaseMessage, ...], list[int]]]:
        """The valid inputs grouped by the chat context they share, in order of first
        appearance: inputs of different contexts are never packed into one call."""
        groups: dict[Hashable, tuple[tuple[BaseMessage, ...], list[int]]] = {}
        for index, item in enumerate(inputs):
            if index in invalid:
                continue
            context = self._split(index, item)[0] if _is_chat(item) else ()
            groups.setdefault(context_key(context), (context, []))[1].append(index)
        return list(groups.values())

    def _placed(
        self, plans: Sequence[PlannedBatch], members: list[int], context: tuple[BaseMessage, ...]
    ) -> list[PlannedBatch]:
        """A group's plans (indices into the group) as plans over every input, with the
        group's context; its few-shot turns become solved demonstrations (see
        :func:`~langchain_autodemo.prompts.few_shot_turns`)."""
        rest, shots = few_shot_turns(context)
        if not self.settings.reasoning:
            shots = final_answer_only(shots)
        return [
            replace(
                plan,
                indices=tuple(members[i] for i in plan.indices),
                keep=None if plan.keep is None else frozenset(members[i] for i in plan.keep),
                context=rest,
                demonstrations=shots + plan.demonstrations,
            )
            for plan in plans
        ]

    def _start_run(self, item: Any, config: RunnableConfig) -> CallbackManagerForChainRun:
        return get_callback_manager_for_config(config).on_chain_start(
            None, item, **self._run_start(config)
        )

    async def _astart_run(
        self, item: Any, config: RunnableConfig
    ) -> AsyncCallbackManagerForChainRun:
        return await get_async_callback_manager_for_config(config).on_chain_start(
            None, item, **self._run_start(config)
        )

    def _run_start(self, config: RunnableConfig) -> dict[str, Any]:
        """How each input's own run is named and identified (one run per input item)."""
        return {
            "name": config.get("run_name") or self.get_name(),
            "run_id": config.pop("run_id", None),
        }

    def _selector(self) -> BatchSelector:
        return self.selector or SequentialSelector()

    def _plan_size(self) -> int:
        return 1 if self.mode is Mode.SINGLE else self.batch_size

    def _call_config(
        self, slot: _Slot, configs: list[RunnableConfig], runs: Sequence[_Run]
    ) -> RunnableConfig:
        call = slot.call
        metadata = {
            "autodemo_call_id": call.call_id,
            "autodemo_items": list(call.batch.kept),
            "autodemo_attempt": call.attempt,
        }
        if call.escalation:
            metadata["autodemo_escalation"] = True
        if self._isolate_traces:
            # The packed run holds every item's text: it reaches the operator's handlers
            # only, never an item's own handlers, tags or metadata (set explicitly, so
            # nothing is inherited from the caller's context either).
            return RunnableConfig(
                callbacks=list(self._call_callbacks),
                tags=[],
                metadata=metadata,
                run_name=f"{self.get_name()} call",
                configurable={},
            )
        # One call serves several items: it is traced as a child of its first item's run,
        # its callbacks carry the handlers of every item it serves (each item's handlers
        # see the model run that answered it), and its metadata names every item.
        # (An item whose own run failed to start has none: its handlers stay out.)
        started = [i for i in call.batch.kept if runs[i] is not None]
        if not started:
            config = patch_config(configs[call.batch.kept[0]], callbacks=CallbackManager([]))
            config["metadata"] = {**config.get("metadata", {}), **metadata}
            return config
        leader = started[0]
        callbacks = runs[leader].get_child()  # type: ignore[union-attr]
        for index in started:
            for handler in runs[index].inheritable_handlers:  # type: ignore[union-attr]
                if not any(_same_sink(handler, present) for present in callbacks.handlers):
                    callbacks.add_handler(handler, inherit=True)
        config = patch_config(configs[leader], callbacks=callbacks)
        config["metadata"] = {**config.get("metadata", {}), **metadata}
        return config

    def _render(self, index: int, item: Any) -> str:
        """The text of one input, or an :class:`AutoDemoInputError` naming it."""
        if isinstance(item, str):
            text = item
        elif isinstance(item, dict):
            text = self._render_dict(index, item)
        elif _is_chat(item):
            text = self._split(index, item)[1]
        elif isinstance(item, BaseMessage):
            _refuse_non_text(index, item)
            text = text_of(item)
        else:
            raise AutoDemoInputError(
                index,
                f"expected str, dict, prompt value or message, got {type(item).__name__} "
                "(a chat input may also be a list of messages)",
            )
        if not comparison_key(text):
            what = "empty" if not text.strip() else "made only of invisible characters"
            raise AutoDemoInputError(index, f"the input is {what}")
        return text

    @staticmethod
    def _split(index: int, item: Any) -> tuple[tuple[BaseMessage, ...], str]:
        """A chat input's shared context and its own question (its last human message)."""
        try:
            messages = (
                item.to_messages() if isinstance(item, PromptValue) else convert_to_messages(item)
            )
            context, question = split_chat(messages)
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise AutoDemoInputError(index, str(exc)) from None
        _refuse_non_text(index, messages[-1])
        for message in context:
            if message.type == "system":  # merged into the call's one system text
                _refuse_non_text(index, message, "its system message")
        return context, question

    def _render_dict(self, index: int, item: dict[str, Any]) -> str:
        for key, value in item.items():
            if value is None:
                raise AutoDemoInputError(index, f"the value of key {key!r} is None")
        template = self.input_template
        if template is None:
            if len(item) == 1:
                return str(next(iter(item.values())))
            hint = f"e.g. input_template='{{{next(iter(item))}}} ...'" if item else ""
            raise AutoDemoInputError(
                index,
                f"a dict input with {len(item)} keys needs an input_template {hint}".rstrip(),
            )
        if callable(template):
            try:
                return str(template(item))
            except Exception as exc:
                raise AutoDemoInputError(
                    index, f"input_template failed: {type(exc).__name__}: {exc}"
                ) from exc
        missing = [name for name in template_fields(template) if name not in item]
        if missing:
            raise AutoDemoInputError(
                index, f"input_template needs key(s) {missing}, the input has {sorted(item)}"
            )
        return template.format(**item)

    @staticmethod
    def _raise_or_return(result: Result, return_exceptions: bool) -> Result:
        if isinstance(result, AutoDemoError) and not return_exceptions:
            raise result
        return result

    @staticmethod
    def _ordered(results: dict[int, Result], n: int, return_exceptions: bool) -> list[Any]:
        ordered = [results[i] for i in range(n)]
        if not return_exceptions:
            for result in ordered:
                if isinstance(result, AutoDemoError):
                    raise result
        return ordered


class RunnerWrapper(Runnable[Any, Any]):
    """A runnable in front of an :class:`AutoDemoBatchRunnable` (``self.runner``): the
    coalescer and the audit. Its input and output schemas are the runner's."""

    runner: AutoDemoBatchRunnable

    @property
    def InputType(self) -> Any:  # noqa: N802 (LangChain's name)
        return self.runner.InputType

    @property
    def OutputType(self) -> Any:  # noqa: N802 (LangChain's name)
        return self.runner.OutputType

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return self.runner.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return self.runner.get_output_schema(config)  # type: ignore[return-value]


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)  # release the HTTP connection of a dropped stream
    if close is not None:
        close()


async def _aclose(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


def template_fields(template: str) -> list[str]:
    """The keys an ``input_template`` reads; positional or attribute fields are refused."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigurationError(
            f"input_template {template!r} is not a format string: {exc}"
        ) from None
    for name in fields:
        if not name or name.isdigit() or "." in name or "[" in name:
            raise ConfigurationError(
                f"input_template {template!r}: use named keys such as {{question}}, not {{{name}}}"
            )
    return fields


class _Slot:
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


class _Dispatch:
    """Setup, step and teardown of one ``batch()``, shared by the sync and async loops.

    It schedules the engine's calls (each after its backoff delay, at most
    ``max_concurrency`` in flight), bounds every read by its slot's deadline, turns
    reports into results and closes the item runs. The loops only start workers and
    wait for events.

    Each item's run speaks to that item's own callbacks only, through :meth:`guard`:
    with ``return_exceptions`` a handler that raises (``raise_error``) fails its own
    item with that exception and no other (the inputs of one ``batch()`` may come from
    different callers, as the coalescer's do); without, it is raised as LangChain does.
    """

    def __init__(
        self,
        runner: AutoDemoBatchRunnable,
        plan: BatchPlan,
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
        self._slots: dict[int, _Slot] = {}
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
        return bool(self._waiting or self._slots)

    def ready(self, now: float) -> list[ModelCall]:
        """Calls due now, as many as the concurrency limit lets start."""
        due: list[ModelCall] = []
        while (
            self._waiting
            and self._waiting[0][0] <= now
            and len(self._slots) + len(due) < self.limit
        ):
            due.append(heapq.heappop(self._waiting)[2])
        return due

    def open(self, call: ModelCall, now: float) -> _Slot:
        slot = _Slot(
            call, self.engine.open(call), now, self._runner.call_timeout, self._runner.stall_timeout
        )
        self._slots[call.call_id] = slot
        return slot

    def overdue(self, now: float) -> list[_Event]:
        """Close the calls past their deadline, as failed calls."""
        events: list[_Event] = []
        for slot in list(self._slots.values()):
            deadline = slot.deadline()
            if deadline is not None and now >= deadline:
                report = slot.close(slot.timeout_error(now))
                if report is not None:
                    events.append((slot.call, report))
        return events

    def wait(self, now: float) -> float | None:
        """How long the loop may block before a deadline or a backoff is due."""
        times = [d for d in (s.deadline() for s in self._slots.values()) if d is not None]
        if self._waiting and len(self._slots) < self.limit:
            times.append(self._waiting[0][0])
        # A floor: a deadline just passed is handled on the next turn, without spinning.
        return max(0.005, min(times) - now) if times else None

    def handle(self, event: _Event) -> list[tuple[int, Result]]:
        call, report = event
        self._slots.pop(call.call_id, None)
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

    def _item_view(self, index: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """An isolated item's view of its call: its own question and answer, and how it
        was served (inputs, outputs, metadata of the ``autodemo_call`` child run)."""
        result = self.engine.results[index]
        assert isinstance(result, ItemResult)
        metadata = {
            "autodemo_call_id": result.call_id,
            "autodemo_position": result.position,
            "autodemo_call_items": result.call_items,
            "autodemo_attempts": result.attempts,
            "autodemo_input_tokens": result.input_tokens,
            "autodemo_output_tokens": result.output_tokens,
        }
        outputs = {"answer": result.raw_answer, "restated_question": result.restated_question}
        return {"question": self._texts[index]}, outputs, metadata

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

    def _closing(self, index: int) -> tuple[BaseException | None, Any, tuple[Any, ...] | None]:
        """How item ``index``'s run ends, decided once for both drivers: (its error, or
        ``None``; its output; the item view to trace first when traces are isolated)."""
        output = self.outputs[index]
        error = self.hook_errors.get(index)
        if error is not None or isinstance(output, AutoDemoError):
            return error or output, output, None
        view = self._item_view(index) if self._runner.traces_isolated else None
        return None, output, view

    def _close_run(self, index: int, run: Any) -> None:
        error, output, view = self._closing(index)
        if error is not None:
            run.on_chain_error(error)
            return
        if view is not None:
            inputs, outputs, metadata = view
            child = run.get_child()
            child.add_metadata(metadata, inherit=False)
            child.on_chain_start(None, inputs, name=ITEM_VIEW_RUN).on_chain_end(outputs)
        _record_item(run, self.engine.results.get(index))
        run.on_chain_end(output)

    async def _aclose_run(self, index: int, run: Any) -> None:
        error, output, view = self._closing(index)
        if error is not None:
            await run.on_chain_error(error)
            return
        if view is not None:
            inputs, outputs, metadata = view
            child = run.get_child()
            child.add_metadata(metadata, inherit=False)
            started = await child.on_chain_start(None, inputs, name=ITEM_VIEW_RUN)
            await started.on_chain_end(outputs)
        _record_item(run, self.engine.results.get(index))
        await run.on_chain_end(output)


@dataclass(frozen=True)
class BatchPlan:
    """The planning step's result (:meth:`AutoDemoBatchRunnable.plan`): every input's
    text, the bad inputs' errors, and the packed calls with their chat context."""

    texts: tuple[str, ...]
    """Every input's question text, in input order ("" for a bad input)."""
    invalid: Mapping[int, AutoDemoError]
    """The inputs that cannot be asked, by index, with their errors."""
    batches: tuple[PlannedBatch, ...]
    """The planned calls over input indices; inputs of different contexts never share one."""
    settings: EngineSettings

    def engine(self, *, rng: random.Random | None = None) -> Engine:
        """The engine that asks these calls (splitting them by token budget)."""
        return Engine(self.texts, self.batches, self.settings, invalid=self.invalid, rng=rng)


def _redacted(result: Result) -> Result:
    """A result without the model text its reasons quote, for callers that must not see
    other inputs (every reason is a :class:`~langchain_autodemo.errors.Rejection`, so
    this is exact; bad-input errors quote only their own input and stay as they are)."""
    if isinstance(result, AutoDemoItemError):
        return result.redacted()
    if isinstance(result, ItemResult) and result.reasons:
        return replace(result, reasons=tuple(redact_model_text(r) for r in result.reasons))
    return result


def _with_logprobs(llm: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """``llm`` asked for token log-probabilities where it takes them (a chat model with
    ``logprobs`` and ``top_logprobs`` fields, as ``ChatOpenAI``: llama.cpp's server
    streams them only with ``top_logprobs`` >= 1); otherwise ``llm`` unchanged, and
    escalation falls back to the slot
    (see :func:`~langchain_autodemo.planning.escalation_picks`)."""
    fields = getattr(type(llm), "model_fields", {})
    if "logprobs" in fields and "top_logprobs" in fields and hasattr(llm, "model_copy"):
        return llm.model_copy(update={"logprobs": True, "top_logprobs": 1})  # type: ignore[no-any-return]
    return llm


def _refuse_non_text(index: int, message: BaseMessage, what: str = "the question") -> None:
    """An :class:`AutoDemoInputError` for a message whose images, audio or files a call
    would drop: the runner sends a question (and a system prompt) as text only."""
    kinds = non_text_kinds(message)
    if kinds:
        raise AutoDemoInputError(
            index,
            f"{what} has non-text content ({', '.join(kinds)}) that packed calls cannot "
            "carry (the runner sends text only); ask it alone, of the model itself",
        )


def _never_reports_finish(llm: Any) -> bool:
    """LangChain's fake chat models stream no finish reason: a user's first unit test
    with one must work, not fail every item as cut off."""
    from langchain_core.language_models import fake_chat_models

    fakes = tuple(
        getattr(fake_chat_models, name)
        for name in ("GenericFakeChatModel", "FakeListChatModel", "FakeMessagesListChatModel")
        if hasattr(fake_chat_models, name)
    )
    return isinstance(llm, fakes)


def _is_chat(item: Any) -> bool:
    """A prompt value, or a list of messages (or message-like tuples and dicts)."""
    if isinstance(item, PromptValue):
        return True
    return (
        isinstance(item, (list, tuple))
        and bool(item)
        and all(isinstance(m, (BaseMessage, tuple, dict)) for m in item)
    )


def _same_sink(handler: BaseCallbackHandler, other: BaseCallbackHandler) -> bool:
    """Whether two handlers record into the same place: the same object, or two LangSmith
    tracers of one project (each input's run gets its own instance; the model run must be
    posted once)."""
    if handler is other:
        return True
    return (
        isinstance(handler, LangChainTracer)
        and isinstance(other, LangChainTracer)
        and handler.project_name == other.project_name
    )


def _record_item(
    run: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun, result: Any
) -> None:
    """Write which call answered an input, and its share of that call's tokens, into the
    metadata of that input's run as tracers hold it (LangSmith, ``collect_runs``,
    ``astream_events``): LangChain's callbacks take metadata only when a run starts, and
    the answering call is known only at its end."""
    if not isinstance(result, ItemResult):
        return
    details = {
        "autodemo_call_id": result.call_id,
        "autodemo_attempts": result.attempts,
        "autodemo_input_tokens": result.input_tokens,
        "autodemo_output_tokens": result.output_tokens,
    }
    for handler in run.handlers:
        runs = getattr(handler, "run_map", None)
        if not isinstance(runs, dict):
            continue
        traced = runs.get(str(run.run_id)) or runs.get(run.run_id)
        if isinstance(traced, Run):  # a tracer's run (copied: the dicts may be shared)
            metadata = {**traced.extra.get("metadata", {}), **details}
            traced.extra = {**traced.extra, "metadata": metadata}
        elif isinstance(traced, dict) and isinstance(traced.get("metadata"), dict):
            traced["metadata"] = {**traced["metadata"], **details}  # astream_events' record


def _value_parser(
    output_parser: BaseOutputParser[Any] | type[BaseModel] | Callable[[str], Any] | None,
) -> tuple[Callable[[str], Any] | None, str | None, str | None]:
    """(how each final answer is parsed, the parser's format instructions, the answer's
    form said in the packed layout). A JSON parser (a pydantic model, LangChain's JSON
    and pydantic output parsers) gets its form said where the layout asks for each
    answer: packed, a small model follows the layout's "final answer only" and forgets a
    schema given above it."""
    if output_parser is None:
        return None, None, None
    if isinstance(output_parser, type) and issubclass(output_parser, BaseModel):
        output_parser = PydanticOutputParser(pydantic_object=output_parser)
    if isinstance(output_parser, BaseOutputParser):
        try:
            hint = output_parser.get_format_instructions()
        except NotImplementedError:
            hint = None
        form = (
            "one JSON object on one line, as the schema above says"
            if isinstance(output_parser, PydanticOutputParser | JsonOutputParser)
            else None
        )
        return _tolerant(output_parser.parse), hint, form
    if callable(output_parser):
        return output_parser, None, None
    raise TypeError("output_parser must be an output parser, a pydantic model or a callable")


def _tolerant(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, retried on the JSON value inside the text where the text as written
    fails (fenced, multi-line, after prose): what LangChain's own JSON parsers accept
    from a whole completion, for an answer cut out of a packed one."""

    def tolerant(text: str) -> Any:
        try:
            return parse(text)
        except Exception:
            candidate = json_candidate(text)
            if candidate is None or candidate == text.strip():
                raise
            return parse(candidate)

    return tolerant


# Kept for the CLI until it imports the public name.
_template_fields = template_fields
