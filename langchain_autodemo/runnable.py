"""``AutoDemoBatchRunnable``: LangChain's ``batch()`` answered by packed Auto-Demo calls.

The decisions (what to ask, what a completion delivered, what to re-ask) live in
:mod:`langchain_autodemo.engine`; this module only moves text between the model and
the engine, once for threads and once for asyncio, and speaks LangChain's callbacks.
"""

from __future__ import annotations

import asyncio
import queue
import string
import threading
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    BaseCallbackHandler,
    CallbackManagerForChainRun,
)
from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.output_parsers import BaseOutputParser, PydanticOutputParser
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    get_config_list,
    get_executor_for_config,
    patch_config,
)
from langchain_core.tracers.langchain import LangChainTracer
from langchain_core.tracers.schemas import Run
from pydantic import BaseModel

from langchain_autodemo.alignment import comparison_key
from langchain_autodemo.engine import CallReport, Engine, EngineSettings, ItemResult, ModelCall
from langchain_autodemo.errors import (
    AutoDemoError,
    AutoDemoInputError,
    ConfigurationError,
)
from langchain_autodemo.markers import Markers
from langchain_autodemo.parser import text_of
from langchain_autodemo.planning import BatchSelector, PlannedBatch, SequentialSelector
from langchain_autodemo.prompts import Mode, context_key, split_chat
from langchain_autodemo.usage import UsageStats, active_trackers

__all__ = ["AutoDemoBatchRunnable"]

Result = Any  # the answer (str or parsed object), an ItemResult, or an AutoDemoError
_Event = tuple[ModelCall, CallReport]


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
        input_template: how a ``dict`` input becomes text, e.g. ``"{premise} / {hypothesis}"``.
        output_parser: turns each answer into an object: a LangChain output parser, a
            pydantic model class, or a callable. A parse failure counts as a garbled item.
        selector: a :class:`~langchain_autodemo.planning.BatchSelector` that decides
            which inputs share a call, e.g. :class:`~langchain_autodemo.SimilarityBatchSelector`.
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
            without a finish reason (a connection cut before the final chunk). Set it to
            ``False`` only for a model that never reports one.
        reask_with_answered: when a completion garbles some items, re-ask them after the
            items it did answer, shown as solved demonstrations, instead of from scratch.

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
        input_template: str | Callable[[dict[str, Any]], str] | None = None,
        output_parser: BaseOutputParser[Any] | type[BaseModel] | Callable[[str], Any] | None = None,
        selector: BatchSelector | None = None,
        max_attempts: int = 3,
        max_output_tokens: int | None = None,
        answer_tokens: int | None = None,
        include_details: bool = False,
        retry_initial_delay: float = 1.0,
        retry_max_delay: float = 30.0,
        require_finish_reason: bool = True,
        reask_with_answered: bool = False,
        name: str | None = None,
    ) -> None:
        if not isinstance(llm, Runnable):
            raise TypeError(f"llm must be a LangChain chat model or Runnable, got {type(llm)!r}")
        _require_positive_int("batch_size", batch_size)
        _require_positive_int("max_attempts", max_attempts)
        if max_output_tokens is not None:
            _require_positive_int("max_output_tokens", max_output_tokens)
        try:
            mode = Mode(mode)
        except ValueError:
            choices = ", ".join(m.value for m in Mode)
            raise ConfigurationError(f"unknown mode {mode!r}; choose one of: {choices}") from None
        for name_, delay in (
            ("retry_initial_delay", retry_initial_delay),
            ("retry_max_delay", retry_max_delay),
        ):
            if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
                raise ConfigurationError(f"{name_} must be a number >= 0, got {delay!r}")
        if isinstance(input_template, str):
            _template_fields(input_template)  # refuse "{0}" or "{a.b}" now, not per item
        if selector is not None and not isinstance(selector, BatchSelector):
            raise TypeError("selector must be a BatchSelector such as SimilarityBatchSelector")
        parse_value, format_hint = _value_parser(output_parser)
        if format_hint:
            instructions = f"{instructions or ''}\n\nEach final answer: {format_hint}".strip()
        self.llm = llm
        self.input_template = input_template
        self.output_parser = output_parser
        self.selector = selector
        self.include_details = include_details
        self.name = name
        model_limit = getattr(llm, "max_tokens", None)
        self._settings = EngineSettings(
            mode=mode,
            batch_size=batch_size,
            instructions=instructions,
            markers=markers or Markers(),
            reasoning=reasoning,
            max_attempts=max_attempts,
            max_output_tokens=max_output_tokens
            or (model_limit if isinstance(model_limit, int) else None),
            answer_tokens=answer_tokens or (256 if reasoning else 32),
            parse_value=parse_value,
            retry_initial_delay=float(retry_initial_delay),
            retry_max_delay=float(retry_max_delay),
            require_finish_reason=require_finish_reason,
            reask_with_answered=reask_with_answered,
        )

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
        return self._settings.instructions

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
        for index, result in self._run_sync(inputs, config, return_exceptions):
            yield index, self._raise_or_return(result, return_exceptions)

    async def abatch_as_completed(  # type: ignore[override]
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> AsyncIterator[tuple[int, Any]]:
        async for index, result in self._run_async(inputs, config, return_exceptions):
            yield index, self._raise_or_return(result, return_exceptions)

    def submit_batch_job(self, inputs: Sequence[Any], **options: Any) -> Any:
        """The same packed calls, through a provider Batch API: a resumable
        :class:`~langchain_autodemo.batch_api.BatchApiJob` (``options`` are its own)."""
        from langchain_autodemo.batch_api import BatchApiJob

        return BatchApiJob(self, inputs, **options)

    # -- drivers: the same engine, under threads or asyncio ---------------------------

    def _run_sync(
        self, inputs: Sequence[Any], config: Any, return_exceptions: bool
    ) -> Iterator[tuple[int, Result]]:
        configs, texts, invalid = self._prepare(inputs, config, return_exceptions)
        if not texts:
            return
        selector, plans = self._selector(), []
        for context, members in self._context_groups(inputs, invalid):
            group = selector.plan([texts[i] for i in members], self._plan_size())
            plans += self._placed(group, members, context)
        engine = Engine(texts, plans, self.settings, invalid=invalid)
        runs = [
            get_callback_manager_for_config(c).on_chain_start(None, item, **self._run_start(c))
            for item, c in zip(inputs, configs, strict=True)
        ]
        events: queue.Queue[_Event | BaseException] = queue.Queue()
        stopping = threading.Event()

        def work(call: ModelCall) -> None:
            try:
                if call.delay and stopping.wait(call.delay):
                    return
                session = engine.open(call)
                stream = self.llm.stream(call.messages, self._call_config(call, configs, runs))
                try:
                    for chunk in stream:
                        session.feed(chunk)
                        if session.done_reading or stopping.is_set():
                            break
                except Exception as exc:  # the model call failed: its items are re-asked
                    report = session.finish(exc)
                else:
                    report = session.finish()
                finally:
                    _close(stream)
                events.put((call, report))
            except BaseException as crash:  # a bug or an interrupt must surface, not hang
                events.put(crash)

        collector = _Collector(self, engine)
        try:
            yield from collector.initial()
            with get_executor_for_config(configs[0]) as executor:
                try:
                    for call in engine.initial_calls():
                        collector.started()
                        executor.submit(work, call)
                    while collector.in_flight:
                        event = events.get()
                        if isinstance(event, BaseException):
                            raise event
                        emitted, follow_ups = collector.handle(event)
                        for call in follow_ups:
                            collector.started()
                            executor.submit(work, call)
                        yield from emitted
                finally:
                    stopping.set()  # workers still streaming stop at their next chunk
        except BaseException as exc:
            for run in runs:
                run.on_chain_error(exc)
            raise
        collector.close_runs(runs)

    async def _run_async(
        self, inputs: Sequence[Any], config: Any, return_exceptions: bool
    ) -> AsyncIterator[tuple[int, Result]]:
        configs, texts, invalid = self._prepare(inputs, config, return_exceptions)
        if not texts:
            return
        selector, plans = self._selector(), []
        for context, members in self._context_groups(inputs, invalid):
            group = await selector.aplan([texts[i] for i in members], self._plan_size())
            plans += self._placed(group, members, context)
        engine = Engine(texts, plans, self.settings, invalid=invalid)
        runs = [
            await get_async_callback_manager_for_config(c).on_chain_start(
                None, item, **self._run_start(c)
            )
            for item, c in zip(inputs, configs, strict=True)
        ]
        events: asyncio.Queue[_Event | BaseException] = asyncio.Queue()
        limit = asyncio.Semaphore(configs[0].get("max_concurrency") or len(inputs))

        async def work(call: ModelCall) -> None:
            try:
                if call.delay:
                    await asyncio.sleep(call.delay)
                async with limit:
                    session = engine.open(call)
                    stream = self.llm.astream(call.messages, self._call_config(call, configs, runs))
                    try:
                        async for chunk in stream:
                            session.feed(chunk)
                            if session.done_reading:
                                break
                    except Exception as exc:  # the model call failed: its items are re-asked
                        report = session.finish(exc)
                    else:
                        report = session.finish()
                    finally:
                        await _aclose(stream)
                events.put_nowait((call, report))
            except BaseException as crash:  # CancelledError from a model too: never hang
                events.put_nowait(crash)

        collector = _Collector(self, engine)
        tasks: set[asyncio.Task[None]] = set()

        def start(call: ModelCall) -> None:
            collector.started()
            task = asyncio.ensure_future(work(call))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        try:
            for item in collector.initial():
                yield item
            for call in engine.initial_calls():
                start(call)
            while collector.in_flight:
                event = await events.get()
                if isinstance(event, BaseException):
                    raise event
                emitted, follow_ups = collector.handle(event)
                for call in follow_ups:
                    start(call)
                for emitted_item in emitted:
                    yield emitted_item
        except BaseException as exc:
            for task in list(tasks):
                task.cancel()
            for run in runs:
                await run.on_chain_error(exc)
            raise
        await collector.aclose_runs(runs)

    # -- helpers ----------------------------------------------------------------------

    def _prepare(
        self, inputs: Sequence[Any], config: Any, return_exceptions: bool
    ) -> tuple[list[RunnableConfig], list[str], dict[int, AutoDemoError]]:
        """Validate everything before the first call: configs, and every input's text."""
        if not isinstance(inputs, Sequence) or isinstance(inputs, (str, bytes)):
            raise TypeError(f"batch() takes a list of inputs, got {type(inputs).__name__}")
        if not inputs:
            return [], [], {}
        configs = get_config_list(config, len(inputs))
        for c in configs:
            limit = c.get("max_concurrency")
            if limit is not None and (
                isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
            ):
                raise ConfigurationError(
                    f"max_concurrency must be a positive integer or None, got {limit!r}"
                )
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
        return configs, texts, invalid

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

    @staticmethod
    def _placed(
        plans: Sequence[PlannedBatch], members: list[int], context: tuple[BaseMessage, ...]
    ) -> list[PlannedBatch]:
        """A group's plans (indices into the group) as plans over every input, with the
        group's context."""
        return [
            replace(
                plan,
                indices=tuple(members[i] for i in plan.indices),
                keep=None if plan.keep is None else frozenset(members[i] for i in plan.keep),
                context=context,
            )
            for plan in plans
        ]

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
        self,
        call: ModelCall,
        configs: list[RunnableConfig],
        runs: Sequence[CallbackManagerForChainRun | AsyncCallbackManagerForChainRun],
    ) -> RunnableConfig:
        # One call serves several items: it is traced as a child of its first item's run,
        # its callbacks carry the handlers of every item it serves (each item's handlers
        # see the model run that answered it), and its metadata names every item.
        leader = call.batch.indices[0] if call.batch.keep is None else call.batch.kept[0]
        callbacks = runs[leader].get_child()
        for index in call.batch.kept:
            for handler in runs[index].inheritable_handlers:
                if not any(_same_sink(handler, present) for present in callbacks.handlers):
                    callbacks.add_handler(handler, inherit=True)
        config = patch_config(configs[leader], callbacks=callbacks)
        config["metadata"] = {
            **config.get("metadata", {}),
            "autodemo_call_id": call.call_id,
            "autodemo_items": list(call.batch.kept),
            "autodemo_attempt": call.attempt,
        }
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
            return split_chat(messages)
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise AutoDemoInputError(index, str(exc)) from None

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
        missing = [name for name in _template_fields(template) if name not in item]
        if missing:
            raise AutoDemoInputError(
                index, f"input_template needs key(s) {missing}, the input has {sorted(item)}"
            )
        return template.format(**item)

    def _output(self, result: ItemResult | AutoDemoError) -> Result:
        if isinstance(result, AutoDemoError) or self.include_details:
            return result
        return result.answer

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


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)  # release the HTTP connection of a dropped stream
    if close is not None:
        close()


async def _aclose(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


def _template_fields(template: str) -> list[str]:
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


class _Collector:
    """Driver-side bookkeeping shared by the sync and async drivers."""

    def __init__(self, runner: AutoDemoBatchRunnable, engine: Engine) -> None:
        self._runner = runner
        self._engine = engine
        self._trackers = active_trackers()
        self.in_flight = 0
        self.outputs: dict[int, Result] = {}
        self.usage = UsageStats()

    def initial(self) -> list[tuple[int, Result]]:
        """The inputs that were final before any call (bad inputs)."""
        emitted = []
        for index, result in sorted(self._engine.results.items()):
            self.outputs[index] = self._runner._output(result)
            emitted.append((index, self.outputs[index]))
        return emitted

    def started(self) -> None:
        self.in_flight += 1

    def handle(self, event: _Event) -> tuple[list[tuple[int, Result]], list[ModelCall]]:
        call, report = event
        self.in_flight -= 1
        self.usage.record_call(report.usage, retry=call.is_retry)
        final, follow_ups = self._engine.complete(call, report)
        emitted = []
        for index, result in final:
            output = self._runner._output(result)
            self.outputs[index] = output
            emitted.append((index, output))
        return emitted, follow_ups

    def _finish_usage(self) -> None:
        failed = sum(isinstance(o, AutoDemoError) for o in self.outputs.values())
        self.usage.record_items(len(self.outputs) - failed, failed)
        for tracker in self._trackers:
            tracker.merge(self.usage)

    def close_runs(self, runs: Sequence[CallbackManagerForChainRun]) -> None:
        self._finish_usage()
        for index, run in enumerate(runs):
            output = self.outputs[index]
            if isinstance(output, AutoDemoError):
                run.on_chain_error(output)
            else:
                _record_item(run, self._engine.results.get(index))
                run.on_chain_end(output)

    async def aclose_runs(self, runs: Sequence[AsyncCallbackManagerForChainRun]) -> None:
        self._finish_usage()
        for index, run in enumerate(runs):
            output = self.outputs[index]
            if isinstance(output, AutoDemoError):
                await run.on_chain_error(output)
            else:
                _record_item(run, self._engine.results.get(index))
                await run.on_chain_end(output)


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


def _require_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")


def _value_parser(
    output_parser: BaseOutputParser[Any] | type[BaseModel] | Callable[[str], Any] | None,
) -> tuple[Callable[[str], Any] | None, str | None]:
    if output_parser is None:
        return None, None
    if isinstance(output_parser, type) and issubclass(output_parser, BaseModel):
        output_parser = PydanticOutputParser(pydantic_object=output_parser)
    if isinstance(output_parser, BaseOutputParser):
        try:
            hint = output_parser.get_format_instructions()
        except NotImplementedError:
            hint = None
        return output_parser.parse, hint
    if callable(output_parser):
        return output_parser, None
    raise TypeError("output_parser must be an output parser, a pydantic model or a callable")
