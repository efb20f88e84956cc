"""Input rendering: what one input of a ``batch()`` asks — its question text and the chat
context it shares with others — or an :class:`~langchain_autodemo.errors.AutoDemoInputError`
naming it. Pure (no model, no I/O): the runner's planning step
(:meth:`AutoDemoBatchRunnable.plan <langchain_autodemo.AutoDemoBatchRunnable.plan>`) calls
it for every entry point.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Union

from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue

from langchain_autodemo.alignment import comparison_key
from langchain_autodemo.errors import AutoDemoError, AutoDemoInputError, ConfigurationError
from langchain_autodemo.messages import non_text_kinds, text_of
from langchain_autodemo.prompts import context_key, split_chat

__all__ = [
    "InputTemplate",
    "context_groups",
    "is_chat",
    "refuse_non_text",
    "render_input",
    "render_inputs",
    "split_chat_input",
    "template_fields",
]

InputTemplate = Union[str, Callable[[dict[str, Any]], str], None]  # noqa: UP007
"""How a dict input becomes its question: a format string over its keys, a function of
the record, or ``None`` (a one-key dict's value)."""


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


def render_input(index: int, item: Any, template: InputTemplate = None) -> str:
    """The question text of one input (filling ``template`` for a dict), or an
    :class:`AutoDemoInputError` naming ``index``."""
    if isinstance(item, str):
        text = item
    elif isinstance(item, dict):
        text = _render_dict(index, item, template)
    elif is_chat(item):
        text = split_chat_input(index, item)[1]
    elif isinstance(item, BaseMessage):
        refuse_non_text(index, item)
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


def _render_dict(index: int, item: dict[str, Any], template: InputTemplate) -> str:
    for key, value in item.items():
        if value is None:
            raise AutoDemoInputError(index, f"the value of key {key!r} is None")
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


def render_inputs(
    inputs: Sequence[Any], template: InputTemplate, return_exceptions: bool
) -> tuple[list[str], dict[int, AutoDemoError]]:
    """Every input's text before the first call ("" for a bad one, with its error)."""
    if not isinstance(inputs, Sequence) or isinstance(inputs, (str, bytes)):
        raise TypeError(f"batch() takes a list of inputs, got {type(inputs).__name__}")
    texts: list[str] = []
    invalid: dict[int, AutoDemoError] = {}
    for index, item in enumerate(inputs):
        try:
            texts.append(render_input(index, item, template))
        except AutoDemoInputError as error:
            if not return_exceptions:
                raise
            texts.append("")
            invalid[index] = error
    return texts, invalid


def split_chat_input(index: int, item: Any) -> tuple[tuple[BaseMessage, ...], str]:
    """A chat input's shared context and its own question (its last human message)."""
    try:
        messages = (
            item.to_messages() if isinstance(item, PromptValue) else convert_to_messages(item)
        )
        context, question = split_chat(messages)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise AutoDemoInputError(index, str(exc)) from None
    refuse_non_text(index, messages[-1])
    for message in context:
        if message.type == "system":  # merged into the call's one system text
            refuse_non_text(index, message, "its system message")
    return context, question


def context_groups(
    inputs: Sequence[Any], invalid: Mapping[int, AutoDemoError]
) -> list[tuple[tuple[BaseMessage, ...], list[int]]]:
    """The valid inputs grouped by the chat context they share, in order of first
    appearance: inputs of different contexts are never packed into one call."""
    groups: dict[Hashable, tuple[tuple[BaseMessage, ...], list[int]]] = {}
    for index, item in enumerate(inputs):
        if index in invalid:
            continue
        context = split_chat_input(index, item)[0] if is_chat(item) else ()
        groups.setdefault(context_key(context), (context, []))[1].append(index)
    return list(groups.values())


def is_chat(item: Any) -> bool:
    """A prompt value, or a list of messages (or message-like tuples and dicts)."""
    if isinstance(item, PromptValue):
        return True
    return (
        isinstance(item, (list, tuple))
        and bool(item)
        and all(isinstance(m, (BaseMessage, tuple, dict)) for m in item)
    )


def refuse_non_text(index: int, message: BaseMessage, what: str = "the question") -> None:
    """An :class:`AutoDemoInputError` for a message whose images, audio or files a call
    would drop: the runner sends a question (and a system prompt) as text only."""
    kinds = non_text_kinds(message)
    if kinds:
        raise AutoDemoInputError(
            index,
            f"{what} has non-text content ({', '.join(kinds)}) that packed calls cannot "
            "carry (the runner sends text only); ask it alone, of the model itself",
        )
