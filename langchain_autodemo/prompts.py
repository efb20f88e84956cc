"""Prompt builders for the three modes: ``auto_demo``, ``batch`` and ``single``.

Pure functions from question texts to chat messages; no I/O.

The answer block always carries the reasoning *first* and ends with the final-answer
line. A format that puts the final answer right after ``A[i]:`` invites the model to
answer first and reason afterwards, and every later item copies that pattern (the
demonstration effect works for bad formats too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Sequence
from enum import Enum

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from langchain_autodemo.markers import FINAL_ANSWER_PREFIX, Markers
from langchain_autodemo.messages import text_of
from langchain_autodemo.planning import Demonstration

__all__ = [
    "Mode",
    "Restate",
    "DEFAULT_HEAD_WORDS",
    "head_of",
    "one_line",
    "split_chat",
    "few_shot_turns",
    "context_key",
    "build_batch_messages",
    "build_single_messages",
    "DEFAULT_INSTRUCTIONS",
    "holds_placeholder",
    "final_answer_only",
]

DEFAULT_INSTRUCTIONS = "Answer each question accurately."

# The layout's placeholders, one definition for the prompt and for the engine's check
# that a model did not copy one as its answer (see holds_placeholder).
FINAL_ANSWER_PLACEHOLDER = "<final answer>"
REASONING_PLACEHOLDER = "<step-by-step reasoning>"
_PLACEHOLDER = re.compile(
    "|".join(
        r"<\s*" + r"\s+".join(map(re.escape, p.strip("<>").split())) + r"\s*>"
        for p in (FINAL_ANSWER_PLACEHOLDER, REASONING_PLACEHOLDER)
    ),
    re.IGNORECASE,
)


def holds_placeholder(line: str) -> bool:
    """Whether ``line`` holds one of the layout's placeholders (``<final answer>``, any
    case and spacing): the format copied, not an answer. Only the layout's own: an
    answer may hold tags.

    Example:
        >>> holds_placeholder("The answer is < Final Answer >."), holds_placeholder("<answer>4</answer>")
        (True, False)
    """
    return _PLACEHOLDER.search(line) is not None


class Mode(str, Enum):
    """How inputs are packed into model calls."""

    AUTO_DEMO = "auto_demo"
    """Many inputs per call; the model restates each question before answering it."""
    BATCH = "batch"
    """Many inputs per call; the model writes the answers only (Cheng et al. 2023)."""
    SINGLE = "single"
    """One call per input."""


class Restate(str, Enum):
    """What an ``auto_demo`` completion copies of each question before its answer."""

    FULL = "full"
    """The whole question, word for word (the paper's layout)."""
    HEAD = "head"
    """Its first words (:data:`DEFAULT_HEAD_WORDS`): enough to prove which input an answer
    belongs to, at a fraction of the output tokens. A call whose heads could be confused
    (one a word-aligned start of another text the prompt shows) restates in full instead;
    see :func:`~langchain_autodemo.alignment.heads_distinguishable`."""


#: Words a ``head`` restatement copies.
DEFAULT_HEAD_WORDS = 8


def head_of(text: str, words: int = DEFAULT_HEAD_WORDS) -> str:
    """The first ``words`` whitespace-separated words of ``text`` on one line (all of it
    when shorter): what a ``head`` restatement copies.

    Example:
        >>> head_of("Janet's ducks lay 16 eggs per day. She eats three for breakfast.", 6)
        "Janet's ducks lay 16 eggs per"
    """
    return " ".join(one_line(text).split()[:words])


# Every character str.splitlines() breaks at: a model may break its line there too.
_LINE_BREAKS = re.compile(r"\s*[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]+\s*")


def final_answer_only(demonstrations: Sequence[Demonstration]) -> tuple[Demonstration, ...]:
    """Reasoned demonstrations as the terse layout shows them: the final answer alone
    (what follows the last ``The answer is``), for a run that asks for no reasoning.

    Example:
        >>> final_answer_only([("2+2?", "Two and two.\\nThe answer is 4.")])
        (('2+2?', '4'),)
    """
    terse = []
    for question, answer in demonstrations:
        head, found, final = answer.rpartition(FINAL_ANSWER_PREFIX)
        value = (final if found else answer.strip().rsplit("\n", 1)[-1]).strip().rstrip(".")
        terse.append((question, value.strip() or answer.strip()))
    return tuple(terse)


def one_line(text: str) -> str:
    """Render an input on a single line.

    Markers are only recognised at the start of a line, so an input that itself
    contains ``Q[3]:`` or ``A[2]:`` can never shift the items around it.
    """
    return _LINE_BREAKS.sub(" ", text).strip()


def split_chat(messages: Sequence[BaseMessage]) -> tuple[tuple[BaseMessage, ...], str]:
    """Split one input's chat messages into its context and its question.

    The question is the text of the last message, which must be a human message; the
    messages before it (system prompt, few-shot examples, history) are the context,
    sent once for every input of a batch that shares it.

    Example:
        >>> from langchain_core.messages import SystemMessage, HumanMessage
        >>> context, question = split_chat([SystemMessage("Be terse."), HumanMessage("1+2?")])
        >>> [m.type for m in context], question
        (['system'], '1+2?')
    """
    if not messages:
        raise ValueError("the message list is empty")
    last = messages[-1]
    if last.type != "human":
        raise ValueError(
            f"a chat input must end with the human message that asks its question, "
            f"not a {last.type} message"
        )
    return tuple(messages[:-1]), text_of(last)


def few_shot_turns(
    context: Sequence[BaseMessage],
) -> tuple[tuple[BaseMessage, ...], tuple[Demonstration, ...]]:
    """Split a chat context into what stays context and the solved examples in it.

    When everything after the leading system messages is (human, AI) pairs of plain text
    (what ``FewShotChatMessagePromptTemplate`` produces), those pairs are worked examples:
    a packed call shows them as solved demonstrations in its own ``Q[i]/A[i]`` layout,
    which keeps a model in that layout, where plain turns before it made it drift. Any
    other context (a tool call, an unanswered turn, a lone AI message) stays as it is.

    Example:
        >>> from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
        >>> rest, shots = few_shot_turns(
        ...     [SystemMessage("Classify."), HumanMessage("great film"), AIMessage("positive")]
        ... )
        >>> [m.type for m in rest], shots
        (['system'], (('great film', 'positive'),))
    """
    lead = 0
    while lead < len(context) and context[lead].type == "system":
        lead += 1
    turns = context[lead:]
    if not turns or len(turns) % 2:
        return tuple(context), ()
    pairs = []
    for human, ai in zip(turns[::2], turns[1::2], strict=True):
        question, answer = (
            (text_of(human), text_of(ai))
            if human.type == "human" and ai.type == "ai"
            and isinstance(human.content, str) and isinstance(ai.content, str)
            and not getattr(ai, "tool_calls", None)
            else ("", "")
        )  # fmt: skip
        if not question.strip() or not answer.strip():
            return tuple(context), ()
        pairs.append((question, answer))
    return tuple(context[:lead]), tuple(pairs)


def context_key(context: Sequence[BaseMessage]) -> Hashable:
    """Equal for contexts a model cannot tell apart (message ids and metadata aside)."""
    return tuple(
        json.dumps(
            message.model_dump(exclude={"id", "response_metadata", "usage_metadata"}),
            sort_keys=True,
            default=str,
        )
        for message in context
    )


def _opening(
    context: Sequence[BaseMessage], instructions: str | None, *extra: str
) -> list[BaseMessage]:
    """The system message, then the context's other messages in their roles.

    The context's leading system messages come first in the one system message (the
    user's prompt defines the task), the package's instructions after them; without
    instructions the user's system prompt stands alone instead of the default ones.
    """
    rest = list(context)
    system: list[str] = []
    while rest and rest[0].type == "system":
        system.append(text_of(rest.pop(0)))
    if instructions or not system:
        system.append(instructions or DEFAULT_INSTRUCTIONS)
    return [SystemMessage(content="\n\n".join([*system, *extra])), *rest]


def _format_rules(
    mode: Mode,
    markers: Markers,
    count: int,
    reasoning: bool,
    head_words: int | None = None,
    answer_format: str | None = None,
) -> str:
    q, a = markers.question_label, markers.answer_label
    # a structured answer's form, said where the layout asks for each answer: a hint in
    # the instructions alone is lost on a small model behind the layout's own "<final answer>"
    form = f", written as {answer_format}" if answer_format else ""
    if reasoning:
        answer_step = (
            f"On the next line write '{a}[i]:' followed by your step-by-step reasoning, "
            f"and end it with the line '{FINAL_ANSWER_PREFIX} {FINAL_ANSWER_PLACEHOLDER}.'"
            + (f" Write each final answer as {answer_format}." if answer_format else "")
        )
        answer_layout = (
            f"{a}[i]: {REASONING_PLACEHOLDER}\n{FINAL_ANSWER_PREFIX} {FINAL_ANSWER_PLACEHOLDER}."
        )
    else:
        answer_step = f"On the next line write '{a}[i]:' followed by the final answer only{form}."
        answer_layout = f"{a}[i]: {FINAL_ANSWER_PLACEHOLDER}"
    if mode is Mode.AUTO_DEMO:
        copy, shown = "the question word for word", "<question i>"
        if head_words is not None:
            copy = f"the first {head_words} words of the question"
            shown = f"<first {head_words} words of question i>"
        steps = f"1. Copy {copy} on one line, starting with '{q}[i]: '.\n2. {answer_step}"
        layout = f"{q}[i]: {shown}\n{answer_layout}"
        intro = f"Answer the {count} questions below, in order. For each question i:"
    else:
        steps = answer_step.replace("On the next line write", "Write", 1)
        layout = answer_layout
        intro = (
            f"Answer the {count} questions below, in order, without repeating the questions. "
            "For each question i:"
        )
    return (
        f"{intro}\n{steps}\nThen go on to the next question. Stop after {a}[{count}].\n\n"
        f"Format:\n{layout}\n\nQuestions:"
    )


def render_questions(questions: Sequence[str], markers: Markers) -> str:
    return "\n".join(
        f"{markers.question(i)} {one_line(text)}" for i, text in enumerate(questions, 1)
    )


def render_completion(
    items: Sequence[Demonstration],
    markers: Markers,
    *,
    restate: bool,
    head_words: int | None = None,
) -> str:
    """A completion in exactly the format the prompt asks for (used for demonstrations):
    with ``restate``, each question (its first ``head_words`` words when given) before
    its answer."""
    blocks = []
    for i, (question, answer) in enumerate(items, 1):
        copied = one_line(question) if head_words is None else head_of(question, head_words)
        head = f"{markers.question(i)} {copied}\n" if restate else ""
        blocks.append(f"{head}{markers.answer(i)} {answer.strip()}")
    return "\n\n".join(blocks)


def build_batch_messages(
    questions: Sequence[str],
    *,
    mode: Mode = Mode.AUTO_DEMO,
    instructions: str | None = None,
    markers: Markers | None = None,
    reasoning: bool = True,
    demonstrations: Sequence[Demonstration] = (),
    context: Sequence[BaseMessage] = (),
    head_words: int | None = None,
    answer_format: str | None = None,
) -> list[BaseMessage]:
    """Messages that ask for all ``questions`` in one completion.

    ``head_words`` (``auto_demo`` only): ask for the first words of each question instead
    of all of it (:attr:`Restate.HEAD`); the demonstrations show the same.

    ``answer_format`` (a structured output's form, e.g. "one JSON object on one line")
    is said where the layout asks for each answer.

    ``demonstrations`` (solved examples, e.g. retrieved from a pool) are given as an
    earlier exchange answered in exactly the requested format, so they show the format
    as well as the task. ``context`` (the chat messages every question shares, see
    :func:`split_chat`) comes once, before them: its leading system messages merged
    into the system message, the others in their roles.

    Example:
        >>> msgs = build_batch_messages(["2+2?", "3+5?"], instructions="Do the sums.")
        >>> print(msgs[-1].content)
        Answer the 2 questions below, in order. For each question i:
        1. Copy the question word for word on one line, starting with 'Q[i]: '.
        2. On the next line write 'A[i]:' followed by your step-by-step reasoning, and end it with the line 'The answer is <final answer>.'
        Then go on to the next question. Stop after A[2].
        <BLANKLINE>
        Format:
        Q[i]: <question i>
        A[i]: <step-by-step reasoning>
        The answer is <final answer>.
        <BLANKLINE>
        Questions:
        Q[1]: 2+2?
        Q[2]: 3+5?
    """
    if not questions:
        raise ValueError("a batch needs at least one question")
    mode = Mode(mode)
    markers = markers or Markers()
    if mode is not Mode.AUTO_DEMO:
        head_words = None
    messages = _opening(context, instructions)
    if demonstrations:
        messages.append(
            HumanMessage(
                content=_format_rules(
                    mode, markers, len(demonstrations), reasoning, head_words, answer_format
                )
                + "\n"
                + render_questions([q for q, _ in demonstrations], markers)
            )
        )
        messages.append(
            AIMessage(
                content=render_completion(
                    demonstrations, markers, restate=mode is Mode.AUTO_DEMO, head_words=head_words
                )
            )
        )
    messages.append(
        HumanMessage(
            content=_format_rules(
                mode, markers, len(questions), reasoning, head_words, answer_format
            )
            + "\n"
            + render_questions(questions, markers)
        )
    )
    return messages


def build_single_messages(
    question: str,
    *,
    instructions: str | None = None,
    reasoning: bool = True,
    demonstrations: Sequence[Demonstration] = (),
    context: Sequence[BaseMessage] = (),
) -> list[BaseMessage]:
    """Messages for one question on its own (the ``single`` baseline), after its
    ``context`` as in :func:`build_batch_messages`."""
    closing = (
        f"Reason step by step, then end with a final line "
        f"'{FINAL_ANSWER_PREFIX} {FINAL_ANSWER_PLACEHOLDER}.'"
        if reasoning
        else "Reply with the final answer only."
    )
    messages = _opening(context, instructions, closing)
    for demo_question, demo_answer in demonstrations:
        messages.append(HumanMessage(content=demo_question))
        messages.append(AIMessage(content=demo_answer.strip()))
    messages.append(HumanMessage(content=question))
    return messages
