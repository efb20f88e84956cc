"""What a chat message holds: its visible text, its reasoning, and any content a packed
call cannot carry. Read by the parser, the prompts, the engine and every driver that sees
a model's messages (one reading of ``content`` for all of them).
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import BaseMessage

__all__ = ["REASONING_BLOCKS", "non_text_kinds", "reasoning_of", "text_of"]


#: Content blocks that carry a model's reasoning, never its answer: LangChain's and
#: OpenAI's ``reasoning``, Anthropic's ``thinking`` and ``redacted_thinking``, Bedrock's
#: ``reasoning_content``.
REASONING_BLOCKS = frozenset({"reasoning", "thinking", "redacted_thinking", "reasoning_content"})
# Where OpenAI-compatible servers (DeepSeek, vLLM, Ollama, OpenRouter) put the reasoning
# deltas of a chunk whose content is empty.
_REASONING_KWARGS = ("reasoning_content", "reasoning", "thinking")
_NOT_TEXT_KEYS = frozenset({"type", "id", "index", "signature", "encrypted_content"})


def text_of(chunk: str | BaseMessage) -> str:
    """The visible text of a string, a message or a message chunk (text blocks joined;
    reasoning blocks are not text: see :func:`reasoning_of`)."""
    if isinstance(chunk, str):
        return chunk
    content: Any = chunk.content
    if isinstance(content, str):
        return content
    return "".join(
        part if isinstance(part, str) else str(part.get("text", ""))
        for part in content
        if isinstance(part, str)
        or (isinstance(part, dict) and part.get("type") not in REASONING_BLOCKS)
    )


def reasoning_of(chunk: str | BaseMessage) -> str:
    """The reasoning a message chunk carries besides its text: ``reasoning_content``
    deltas (what reasoning models stream, with empty content, while they think) and
    reasoning/thinking content blocks. Never an answer; it still costs output tokens.

    Example:
        >>> from langchain_core.messages import AIMessageChunk
        >>> reasoning_of(AIMessageChunk("", additional_kwargs={"reasoning_content": "Hmm."}))
        'Hmm.'
        >>> reasoning_of(AIMessageChunk([{"type": "thinking", "thinking": "Let me see."}]))
        'Let me see.'
    """
    if isinstance(chunk, str):
        return ""
    parts = [_strings(chunk.additional_kwargs.get(key)) for key in _REASONING_KWARGS]
    if isinstance(chunk.content, list):
        parts += [
            _strings({k: v for k, v in part.items() if k not in _NOT_TEXT_KEYS})
            for part in chunk.content
            if isinstance(part, dict) and part.get("type") in REASONING_BLOCKS
        ]
    return "".join(parts)


def _strings(value: Any) -> str:
    """Every string inside ``value`` (nested dicts and lists), joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "".join(_strings(v) for k, v in value.items() if k not in _NOT_TEXT_KEYS)
    if isinstance(value, (list, tuple)):
        return "".join(_strings(v) for v in value)
    return ""


def non_text_kinds(message: BaseMessage) -> list[str]:
    """The kinds of content a message holds besides text (``image_url``, ``file``, ...),
    in order of first appearance: what :func:`text_of` cannot carry.

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> non_text_kinds(HumanMessage([
        ...     {"type": "text", "text": "What is in it?"},
        ...     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
        ... ]))
        ['image_url']
    """
    content: Any = message.content
    if isinstance(content, str):
        return []
    kinds: dict[str, None] = {}
    for part in content:
        if isinstance(part, str):
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(part, dict) and (kind == "text" or (kind is None and "text" in part)):
            continue
        kinds[str(kind or type(part).__name__)] = None
    return list(kinds)
