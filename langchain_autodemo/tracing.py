"""Tracing: how a packed ``batch()`` shows itself to LangChain callbacks.

Every input has its own run (named after the runner); each packed model call is traced
under the runs it serves, or, when traces are isolated (one runner serving several
users), only to the operator's handlers, while each item's run gets a per-item view of
its call (the ``autodemo_call`` child run). The drivers call these functions; nothing
here decides an answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    BaseCallbackHandler,
    CallbackManager,
    CallbackManagerForChainRun,
)
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    patch_config,
)
from langchain_core.tracers.langchain import LangChainTracer
from langchain_core.tracers.schemas import Run

from langchain_autodemo.engine import ItemResult, ModelCall

__all__ = [
    "ITEM_VIEW_RUN",
    "ItemRun",
    "astart_item_run",
    "call_config",
    "end_item_run",
    "aend_item_run",
    "item_view",
    "record_item",
    "same_sink",
    "start_item_run",
]

#: Name of the child run that shows an isolated item how its call served it.
ITEM_VIEW_RUN = "autodemo_call"

ItemRun = Union[CallbackManagerForChainRun, AsyncCallbackManagerForChainRun, None]  # noqa: UP007
"""An input's own run (``None`` where its callbacks failed to start it)."""


def start_item_run(name: str, item: Any, config: RunnableConfig) -> CallbackManagerForChainRun:
    """Start an input's own run (one run per input item, named ``name``)."""
    return get_callback_manager_for_config(config).on_chain_start(
        None, item, **_run_start(name, config)
    )


async def astart_item_run(
    name: str, item: Any, config: RunnableConfig
) -> AsyncCallbackManagerForChainRun:
    return await get_async_callback_manager_for_config(config).on_chain_start(
        None, item, **_run_start(name, config)
    )


def _run_start(name: str, config: RunnableConfig) -> dict[str, Any]:
    """How each input's own run is named and identified (one run per input item)."""
    return {
        "name": config.get("run_name") or name,
        "run_id": config.pop("run_id", None),
    }


def call_config(
    call: ModelCall,
    configs: Sequence[RunnableConfig],
    runs: Sequence[ItemRun],
    *,
    name: str,
    isolated: bool,
    call_callbacks: Sequence[BaseCallbackHandler] = (),
) -> RunnableConfig:
    """The config of one packed model call: whose callbacks see it, and its metadata
    (which items it serves, which attempt it is).

    ``isolated``: the call reaches ``call_callbacks`` only (the operator's), never an
    item's own handlers; otherwise it is traced as a child of its first item's run.
    """
    metadata = {
        "autodemo_call_id": call.call_id,
        "autodemo_items": list(call.batch.kept),
        "autodemo_attempt": call.attempt,
    }
    if call.escalation:
        metadata["autodemo_escalation"] = True
    if isolated:
        # The packed run holds every item's text: it reaches the operator's handlers
        # only, never an item's own handlers, tags or metadata (set explicitly, so
        # nothing is inherited from the caller's context either).
        return RunnableConfig(
            callbacks=list(call_callbacks),
            tags=[],
            metadata=metadata,
            run_name=f"{name} call",
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
            if not any(same_sink(handler, present) for present in callbacks.handlers):
                callbacks.add_handler(handler, inherit=True)
    config = patch_config(configs[leader], callbacks=callbacks)
    config["metadata"] = {**config.get("metadata", {}), **metadata}
    return config


def item_view(
    result: ItemResult, question: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """An isolated item's view of its call: its own question and answer, and how it
    was served (inputs, outputs, metadata of the ``autodemo_call`` child run)."""
    metadata = {
        "autodemo_call_id": result.call_id,
        "autodemo_position": result.position,
        "autodemo_call_items": result.call_items,
        "autodemo_attempts": result.attempts,
        "autodemo_input_tokens": result.input_tokens,
        "autodemo_output_tokens": result.output_tokens,
    }
    outputs = {"answer": result.raw_answer, "restated_question": result.restated_question}
    return {"question": question}, outputs, metadata


View = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


def end_item_run(
    run: Any, error: BaseException | None, output: Any, view: View | None, result: Any
) -> None:
    """End an input's run: with its error, or with its output after the item view
    (isolated traces) and the answering call's details (:func:`record_item`)."""
    if error is not None:
        run.on_chain_error(error)
        return
    if view is not None:
        inputs, outputs, metadata = view
        child = run.get_child()
        child.add_metadata(metadata, inherit=False)
        child.on_chain_start(None, inputs, name=ITEM_VIEW_RUN).on_chain_end(outputs)
    record_item(run, result)
    run.on_chain_end(output)


async def aend_item_run(
    run: Any, error: BaseException | None, output: Any, view: View | None, result: Any
) -> None:
    if error is not None:
        await run.on_chain_error(error)
        return
    if view is not None:
        inputs, outputs, metadata = view
        child = run.get_child()
        child.add_metadata(metadata, inherit=False)
        started = await child.on_chain_start(None, inputs, name=ITEM_VIEW_RUN)
        await started.on_chain_end(outputs)
    record_item(run, result)
    await run.on_chain_end(output)


def same_sink(handler: BaseCallbackHandler, other: BaseCallbackHandler) -> bool:
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


def record_item(
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
