"""``AutoDemoBatchRunnable``: LangChain's ``batch()`` answered by packed Auto-Demo calls.

The decisions (what to ask, what a completion delivered, what to re-ask) live in
:mod:`langchain_autodemo.engine`; this module only moves text between the model and
the engine, once for threads and once for asyncio, and speaks LangChain's callbacks.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal, cast

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import BaseMessage
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
from pydantic import BaseModel

from langchain_autodemo.engine import CallReport, Engine, EngineSettings, ItemResult, ModelCall
from langchain_autodemo.errors import AutoDemoItemError
from langchain_autodemo.markers import Markers
from langchain_autodemo.parser import text_of
from langchain_autodemo.planning import BatchPlanner, SequentialPlanner
from langchain_autodemo.prompts import Mode
from langchain_autodemo.usage import UsageStats, active_trackers

__all__ = ["AutoDemoBatchRunnable"]

Result = Any  # the answer (str or parsed object), an ItemResult, or an AutoDemoItemError
_Event = tuple[Literal["item"], int, ItemResult] | tuple[Literal["done"], ModelCall, CallReport]


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
        selector: a :class:`~langchain_autodemo.planning.BatchPlanner` that decides
            which inputs share a call, e.g. :class:`~langchain_autodemo.SimilarityBatchSelector`.
        max_attempts: model calls an item may take before it gets an error.
        max_output_tokens: the model's completion limit; defaults to the model's
            ``max_tokens`` when it has one.
        answer_tokens: the expected length of one answer, for the token budget.
        include_details: return :class:`~langchain_autodemo.engine.ItemResult` objects
            (answer, restated question, attempts, token share) instead of bare answers.

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
        selector: BatchPlanner | None = None,
        max_attempts: int = 3,
        max_output_tokens: int | None = None,
        answer_tokens: int | None = None,
        include_details: bool = False,
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
            raise ValueError(f"unknown mode {mode!r}; choose one of: {choices}") from None
        if selector is not None and not isinstance(selector, BatchPlanner):
            raise TypeError("selector must be a BatchPlanner such as SimilarityBatchSelector")
        parse_value, format_hint = _value_parser(output_parser)
        if format_hint:
            instructions = f"{instructions or ''}\n\nEach final answer: {format_hint}".strip()
        self.llm = llm
        self.instructions = instructions
        self.batch_size = batch_size
        self.mode = mode
        self.input_template = input_template
        self.selector = selector
        self.include_details = include_details
        self.name = name
        model_limit = getattr(llm, "max_tokens", None)
        self.settings = EngineSettings(
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
        )

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
        """Answer every input; results in input order (see the class docstring)."""
        results: dict[int, Result] = {}
        for index, result, final in self._run_sync(inputs, config):
            if final:
                results[index] = result
        return self._ordered(results, len(inputs), return_exceptions)

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        results: dict[int, Result] = {}
        async for index, result, final in self._run_async(inputs, config):
            if final:
                results[index] = result
        return self._ordered(results, len(inputs), return_exceptions)

    def batch_as_completed(  # type: ignore[override]
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, result)`` as soon as each answer is complete in the stream.

        An item is final the moment it is yielded: a later, conflicting repetition of
        it in the same completion is ignored (``batch()`` would re-ask it instead).
        """
        seen: set[int] = set()
        for index, result, _final in self._run_sync(list(inputs), config):
            if index not in seen:
                seen.add(index)
                yield index, self._raise_or_return(result, return_exceptions)

    async def abatch_as_completed(  # type: ignore[override]
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> AsyncIterator[tuple[int, Any]]:
        seen: set[int] = set()
        async for index, result, _final in self._run_async(list(inputs), config):
            if index not in seen:
                seen.add(index)
                yield index, self._raise_or_return(result, return_exceptions)

    def submit_batch_job(self, inputs: Sequence[Any], **options: Any) -> Any:
        """The same packed calls, through a provider Batch API: a resumable
        :class:`~langchain_autodemo.batch_api.BatchApiJob` (``options`` are its own)."""
        from langchain_autodemo.batch_api import BatchApiJob

        return BatchApiJob(self, inputs, **options)

    # -- drivers: the same engine, under threads or asyncio ---------------------------

    def _run_sync(self, inputs: list[Any], config: Any) -> Iterator[tuple[int, Result, bool]]:
        if not inputs:
            return
        texts = self._render_all(inputs)
        configs = get_config_list(config, len(inputs))
        planner = self._planner()
        engine = Engine(texts, planner.plan(texts, self._plan_size()), self.settings)
        runs = [
            get_callback_manager_for_config(c).on_chain_start(None, item, **self._run_start(c))
            for item, c in zip(inputs, configs, strict=True)
        ]
        events: queue.Queue[_Event | BaseException] = queue.Queue()

        def work(call: ModelCall) -> None:
            try:
                session = engine.open(call)
                try:
                    stream = self.llm.stream(call.messages, self._call_config(call, configs, runs))
                    for chunk in stream:
                        for index, item in session.feed(chunk):
                            events.put(("item", index, item))
                        if session.complete:
                            break
                except Exception as exc:
                    report = session.finish(exc)
                else:
                    report = session.finish()
                events.put(("done", call, report))
            except BaseException as crash:  # a bug must surface, not hang the batch
                events.put(crash)

        collector = _Collector(self, engine)
        try:
            with get_executor_for_config(configs[0]) as executor:
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
        except BaseException as exc:
            for run in runs:
                run.on_chain_error(exc)
            raise
        collector.close_runs(runs)

    async def _run_async(
        self, inputs: list[Any], config: Any
    ) -> AsyncIterator[tuple[int, Result, bool]]:
        if not inputs:
            return
        texts = self._render_all(inputs)
        configs = get_config_list(config, len(inputs))
        planner = self._planner()
        plans = await planner.aplan(texts, self._plan_size())
        engine = Engine(texts, plans, self.settings)
        runs = [
            await get_async_callback_manager_for_config(c).on_chain_start(
                None, item, **self._run_start(c)
            )
            for item, c in zip(inputs, configs, strict=True)
        ]
        events: asyncio.Queue[_Event] = asyncio.Queue()
        limit = asyncio.Semaphore(configs[0].get("max_concurrency") or len(inputs))

        async def work(call: ModelCall) -> None:
            async with limit:
                session = engine.open(call)
                try:
                    stream = self.llm.astream(call.messages, self._call_config(call, configs, runs))
                    async for chunk in stream:
                        for index, item in session.feed(chunk):
                            await events.put(("item", index, item))
                        if session.complete:
                            break
                except Exception as exc:
                    report = session.finish(exc)
                else:
                    report = session.finish()
                await events.put(("done", call, report))

        collector = _Collector(self, engine)
        tasks: set[asyncio.Task[None]] = set()

        def start(call: ModelCall) -> None:
            collector.started()
            task = asyncio.ensure_future(work(call))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        try:
            for call in engine.initial_calls():
                start(call)
            while collector.in_flight:
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
                for task in [t for t in tasks if t.done() and t.exception()]:
                    raise cast(BaseException, task.exception())  # a bug, not a model error
                if not getter.done():
                    getter.cancel()
                    continue
                emitted, follow_ups = collector.handle(getter.result())
                for call in follow_ups:
                    start(call)
                for emitted_item in emitted:
                    yield emitted_item
        except BaseException as exc:
            for task in tasks:
                task.cancel()
            for run in runs:
                await run.on_chain_error(exc)
            raise
        await collector.aclose_runs(runs)

    # -- helpers ----------------------------------------------------------------------

    def _run_start(self, config: RunnableConfig) -> dict[str, Any]:
        """How each input's own run is named and identified (one run per input item)."""
        return {
            "name": config.get("run_name") or self.get_name(),
            "run_id": config.pop("run_id", None),
        }

    def _planner(self) -> BatchPlanner:
        return self.selector or SequentialPlanner()

    def _plan_size(self) -> int:
        return 1 if self.mode is Mode.SINGLE else self.batch_size

    def _call_config(
        self,
        call: ModelCall,
        configs: list[RunnableConfig],
        runs: Sequence[CallbackManagerForChainRun | AsyncCallbackManagerForChainRun],
    ) -> RunnableConfig:
        # One call serves several items: it is traced as a child of its first item's run,
        # and its metadata names every item it answers.
        leader = call.batch.indices[0] if call.batch.keep is None else call.batch.kept[0]
        config = patch_config(configs[leader], callbacks=runs[leader].get_child())
        config["metadata"] = {
            **config.get("metadata", {}),
            "autodemo_call_id": call.call_id,
            "autodemo_items": list(call.batch.kept),
            "autodemo_attempt": call.attempt,
        }
        return config

    def _render_all(self, inputs: Sequence[Any]) -> list[str]:
        if not isinstance(inputs, Sequence) or isinstance(inputs, (str, bytes)):
            raise TypeError(f"batch() takes a list of inputs, got {type(inputs).__name__}")
        return [self._render(index, item) for index, item in enumerate(inputs)]

    def _render(self, index: int, item: Any) -> str:
        if isinstance(item, str):
            text = item
        elif isinstance(item, dict):
            text = self._render_dict(index, item)
        elif isinstance(item, PromptValue):
            text = item.to_string()
        elif isinstance(item, BaseMessage):
            text = text_of(item)
        else:
            raise TypeError(
                f"item {index}: expected str, dict, prompt value or message, "
                f"got {type(item).__name__}"
            )
        if not text.strip():
            raise ValueError(f"item {index}: the input is empty")
        return text

    def _render_dict(self, index: int, item: dict[str, Any]) -> str:
        template = self.input_template
        if template is None:
            if len(item) == 1:
                return str(next(iter(item.values())))
            raise ValueError(
                f"item {index}: dict inputs with several keys need an input_template, "
                f"e.g. input_template='{{{next(iter(item))}}} ...'"
            )
        if callable(template):
            return str(template(item))
        try:
            return template.format(**item)
        except KeyError as missing:
            raise ValueError(
                f"item {index}: input_template needs key {missing}, the input has {sorted(item)}"
            ) from None

    def _output(self, result: ItemResult | AutoDemoItemError) -> Result:
        if isinstance(result, AutoDemoItemError) or self.include_details:
            return result
        return result.answer

    @staticmethod
    def _raise_or_return(result: Result, return_exceptions: bool) -> Result:
        if isinstance(result, AutoDemoItemError) and not return_exceptions:
            raise result
        return result

    @staticmethod
    def _ordered(results: dict[int, Result], n: int, return_exceptions: bool) -> list[Any]:
        ordered = [results[i] for i in range(n)]
        if not return_exceptions:
            for result in ordered:
                if isinstance(result, AutoDemoItemError):
                    raise result
        return ordered


class _Collector:
    """Driver-side bookkeeping shared by the sync and async drivers."""

    def __init__(self, runner: AutoDemoBatchRunnable, engine: Engine) -> None:
        self._runner = runner
        self._engine = engine
        self._trackers = active_trackers()
        self.in_flight = 0
        self.outputs: dict[int, Result] = {}
        self.usage = UsageStats()

    def started(self) -> None:
        self.in_flight += 1

    def handle(self, event: _Event) -> tuple[list[tuple[int, Result, bool]], list[ModelCall]]:
        if event[0] == "item":
            _, index, item = event
            return [(index, self._runner._output(item), False)], []
        _, call, report = event
        self.in_flight -= 1
        self.usage.record_call(report.usage, retry=call.is_retry)
        final, follow_ups = self._engine.complete(call, report)
        emitted = []
        for index, result in final:
            output = self._runner._output(result)
            self.outputs[index] = output
            emitted.append((index, output, True))
        return emitted, follow_ups

    def _finish_usage(self) -> None:
        failed = sum(isinstance(o, AutoDemoItemError) for o in self.outputs.values())
        self.usage.record_items(len(self.outputs) - failed, failed)
        for tracker in self._trackers:
            tracker.merge(self.usage)

    def close_runs(self, runs: Sequence[CallbackManagerForChainRun]) -> None:
        self._finish_usage()
        for index, run in enumerate(runs):
            output = self.outputs[index]
            if isinstance(output, AutoDemoItemError):
                run.on_chain_error(output)
            else:
                run.on_chain_end(output)

    async def aclose_runs(self, runs: Sequence[AsyncCallbackManagerForChainRun]) -> None:
        self._finish_usage()
        for index, run in enumerate(runs):
            output = self.outputs[index]
            if isinstance(output, AutoDemoItemError):
                await run.on_chain_error(output)
            else:
                await run.on_chain_end(output)


def _require_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


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
