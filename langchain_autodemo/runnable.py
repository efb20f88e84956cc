"""``AutoDemoBatchRunnable``: LangChain's ``batch()`` answered by packed Auto-Demo calls.

The decisions (what to ask, what a completion delivered, what to re-ask) live in
:mod:`langchain_autodemo.engine`; this module only moves text between the model and
the engine, once for threads and once for asyncio, and speaks LangChain's callbacks.
"""

from __future__ import annotations

import copy
import random
import re
import warnings
from collections.abc import (
    AsyncIterator,
    Callable,
    Hashable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Union

from langchain_core.callbacks import (
    BaseCallbackHandler,
)
from langchain_core.messages import AnyMessage, BaseMessage
from langchain_core.output_parsers import (
    BaseOutputParser,
    JsonOutputParser,
    PydanticOutputParser,
)
from langchain_core.prompt_values import ChatPromptValueConcrete, StringPromptValue
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, RootModel, create_model

from langchain_autodemo._validation import (
    require_positive_int,
    require_timeout,
)
from langchain_autodemo.drivers import DEFAULT_MAX_CONCURRENCY, run_async, run_sync
from langchain_autodemo.engine import (
    Engine,
    EngineSettings,
    ItemResult,
    redact_model_text,
)
from langchain_autodemo.errors import (
    AutoDemoError,
    AutoDemoItemError,
)
from langchain_autodemo.inputs import (
    context_groups,
    render_input,
    render_inputs,
    template_fields,
)
from langchain_autodemo.markers import Markers
from langchain_autodemo.parser import json_candidate
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
    few_shot_turns,
    final_answer_only,
)
from langchain_autodemo.settings import Settings, TunedConfig, settings_of
from langchain_autodemo.tracing import ITEM_VIEW_RUN

if TYPE_CHECKING:
    from pathlib import Path

    from langchain_autodemo.audit import AuditedRunnable, AuditPolicy
    from langchain_autodemo.coalescing import MicroBatcher

__all__ = [
    "AutoDemoBatchRunnable",
    "Plan",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_STALL_TIMEOUT",
    "ITEM_VIEW_RUN",
    "RunnerWrapper",
    "template_fields",
]


#: Seconds without a streamed chunk after which a model call counts as failed (a local
#: CPU model may take minutes to read a long packed prompt before its first token).
DEFAULT_STALL_TIMEOUT = 600.0

Result = Any  # the answer (str or parsed object), an ItemResult, or an AutoDemoError


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
            sends no log-probabilities escalates the slots of lowest ``slot_accuracy``
            first, or its latest slots without it.
        escalate_below: also escalate every packed answer whose confidence is below
            this probability (``None``: no threshold).
        slot_accuracy: packed accuracy by slot as ``autodemo tune`` measured it (it
            writes it to ``tuned.json``): the order escalation follows where the model
            sends no log-probabilities.
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
        slot_accuracy: Sequence[float] = (),
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
            "slot_accuracy": slot_accuracy,
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
        results = dict(run_sync(self, inputs, config, return_exceptions))
        return self._ordered(results, len(inputs), return_exceptions)

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        results = {i: r async for i, r in run_async(self, inputs, config, return_exceptions)}
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
        for index, result in run_sync(self, inputs, config, return_exceptions):
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
        async for index, result in run_async(self, inputs, config, return_exceptions):
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
        return render_input(index, input, self.input_template)

    def plan(self, inputs: Sequence[Any], *, return_exceptions: bool = False) -> Plan:
        """Validate ``inputs``, group them by chat context and plan the packed calls.

        The one planning step that ``batch()``, ``abatch()``, both ``as_completed``
        variants, the in-process coalescer, the served endpoint and
        :class:`~langchain_autodemo.batch_api.BatchApiJob` all call, so the same inputs
        are always asked with the same messages. Pure apart from the selector (which
        may embed the texts). With ``return_exceptions=False`` the first bad input
        raises; otherwise it is recorded in :attr:`Plan.invalid`.
        """
        texts, invalid = render_inputs(inputs, self.input_template, return_exceptions)
        batches: list[PlannedBatch] = []
        for context, members in context_groups(inputs, invalid):
            group = self._selector().plan([texts[i] for i in members], self._plan_size())
            batches += self._placed(group, members, context)
        return self._plan(texts, invalid, batches)

    async def aplan(self, inputs: Sequence[Any], *, return_exceptions: bool = False) -> Plan:
        """:meth:`plan` for asyncio (the selector embeds without blocking the loop)."""
        texts, invalid = render_inputs(inputs, self.input_template, return_exceptions)
        batches: list[PlannedBatch] = []
        for context, members in context_groups(inputs, invalid):
            group = await self._selector().aplan([texts[i] for i in members], self._plan_size())
            batches += self._placed(group, members, context)
        return self._plan(texts, invalid, batches)

    def _plan(
        self, texts: list[str], invalid: dict[int, AutoDemoError], batches: list[PlannedBatch]
    ) -> Plan:
        if self.demonstrations:
            batches = [
                replace(b, demonstrations=self.demonstrations + b.demonstrations) for b in batches
            ]
        return Plan(tuple(texts), dict(invalid), tuple(batches), self.settings)

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

    @property
    def call_callbacks(self) -> tuple[BaseCallbackHandler, ...]:
        """The operator's handlers that see isolated packed calls (:meth:`isolating_traces`)."""
        return self._call_callbacks

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

    # -- helpers ----------------------------------------------------------------------

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

    def _selector(self) -> BatchSelector:
        return self.selector or SequentialSelector()

    def _plan_size(self) -> int:
        return 1 if self.mode is Mode.SINGLE else self.batch_size

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


@dataclass(frozen=True)
class Plan:
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


def __getattr__(name: str) -> Any:
    if name == "BatchPlan":  # renamed: "batch" is a packed call (PlannedBatch) elsewhere
        warnings.warn(
            "runnable.BatchPlan is deprecated: use runnable.Plan", DeprecationWarning, stacklevel=2
        )
        return Plan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
