"""The I/O-free heart of a packed ``batch()``: which calls to make, what each completion
delivered, what to re-ask.

The runnable's sync and async drivers only move text between the model and this
engine, so both share every decision made here:

    plan -> ModelCall -> CallSession.feed(chunk)* -> CallSession.finish() -> Engine.complete()
         -> follow-up calls for the items that were missing, garbled, misaligned or cut off

An item's answer is final only when its call's completion has been judged as a whole:
a later, conflicting copy of the same answer in the same completion must be able to
veto it (then the item is re-asked). The drivers therefore emit results per call.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

from langchain_autodemo._validation import require_positive_int
from langchain_autodemo.alignment import (
    EchoMatcher,
    comparison_key,
    distinguishable_parts,
    heads_distinguishable,
)
from langchain_autodemo.errors import (
    PLACEHOLDER_ANSWER,
    RESTATED_AS,
    UNPARSED_ANSWER,
    AutoDemoError,
    AutoDemoItemError,
    ConfigurationError,
    Rejection,
    call_failure,
    model_call_error,
    redact_model_text,
)
from langchain_autodemo.markers import Markers
from langchain_autodemo.messages import reasoning_of, text_of
from langchain_autodemo.parser import CompletionScanner, ParsedItem
from langchain_autodemo.planning import (
    ITEM_MARKER_TOKENS,
    Demonstration,
    PlannedBatch,
    escalation_picks,
    estimate_message_tokens,
    estimate_tokens,
    recovery_batches,
    rejected_for_content,
    restatement_tokens,
    retry_delay,
    split_by_token_budget,
)
from langchain_autodemo.prompts import (
    Mode,
    Restate,
    build_batch_messages,
    build_single_messages,
    head_of,
    holds_placeholder,
    one_line,
)
from langchain_autodemo.settings import Settings
from langchain_autodemo.usage import CallUsage, reported_usage

__all__ = [
    "redact_model_text",
    "EngineSettings",
    "ModelCall",
    "CallSession",
    "CallReport",
    "Engine",
    "ItemResult",
]

# Finish reasons that mean "cut off before the end" (OpenAI, Anthropic, Gemini, Bedrock,
# Ollama spellings), compared case-insensitively.
_CUT_OFF_REASONS = frozenset(
    {
        "length",
        "max_tokens",
        "max_output_tokens",
        "content_filter",
        "error",
        "safety",
        "recitation",
        "model_length",
    }
)
# The same long answer line this many times in one item is a loop, not reasoning.
_LOOP_REPEATS = 4
# A completion may use this many times its items' expected output (restatements and
# answer budgets) before it counts as a runaway when no max_output_tokens bounds it...
_BUDGET_FACTOR = 4
_MIN_BUDGET = 1024
# ... and this many times max_output_tokens when one does (the server should have cut it
# there; the slack covers the error of a characters/4 estimate).
_LIMIT_SLACK = 1.5
# With no max_output_tokens, a reasoning model may think this many tokens on top of the
# budget of its visible output (with one, the limit covers reasoning too, as providers'
# limits do). Past it the completion is a runaway like any other.
_REASONING_ALLOWANCE = 32_000
_NO_FINISH_REASON = (
    "cut off: the stream ended without a finish reason (set require_finish_reason=False "
    "for a model that never reports one, such as GenericFakeChatModel)"
)
_FINISH_KEYS = ("finish_reason", "stop_reason", "done_reason", "stopReason", "finishReason")


@dataclass(frozen=True)
class EngineSettings(Settings):
    """Everything that decides what a packed ``batch()`` asks and accepts (frozen): the
    answer-shaping :class:`~langchain_autodemo.settings.Settings`, plus how the engine
    reads, bounds and recovers calls (fields checked when made, as the record's are)."""

    markers: Markers = field(default_factory=Markers)
    max_attempts: int = 3
    max_output_tokens: int | None = None
    answer_tokens: int = 256
    parse_value: Callable[[str], Any] | None = None
    retry_initial_delay: float = 1.0
    """Backoff before re-asking after a failed model call (doubles per failure)."""
    retry_max_delay: float = 30.0
    """Upper bound for that backoff, and for a provider's ``Retry-After``."""
    require_finish_reason: bool = True
    """Distrust the last open item of a message stream that ends without a finish reason
    (cut before the provider's final chunk). Turn off only for a model that never
    reports one, such as langchain-core's ``GenericFakeChatModel``."""
    answer_format: str | None = None
    """The form of each final answer, said in the packed layout (a structured output's
    "one JSON object on one line"); ``None``: free text."""
    format_hint: str | None = None
    """An output parser's description of an answer's form, said after the instructions."""

    @property
    def asked_instructions(self) -> str | None:
        """The instructions as every call says them: the given ones, then the format hint."""
        if not self.format_hint:
            return self.instructions
        return f"{self.instructions or ''}\n\nEach final answer: {self.format_hint}".strip()

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive_int("max_attempts", self.max_attempts)
        if self.max_output_tokens is not None:
            require_positive_int("max_output_tokens", self.max_output_tokens)
        for name in ("retry_initial_delay", "retry_max_delay"):
            delay = getattr(self, name)
            if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
                raise ConfigurationError(f"{name} must be a number >= 0, got {delay!r}")
            object.__setattr__(self, name, float(delay))


@dataclass(frozen=True)
class ModelCall:
    """One packed request: the batch it serves, which attempt it is, and its messages.

    ``delay`` is how long the driver waits before sending it: the backoff after a failed
    model call (0 for a first attempt and for re-asks after a format failure).
    """

    call_id: int
    batch: PlannedBatch
    attempt: int
    messages: list[BaseMessage]
    delay: float = 0.0
    heads: tuple[str, ...] | None = None
    """The head each input was asked to restate (``None``: the whole question), in
    prompt order; only where :func:`~langchain_autodemo.alignment.heads_distinguishable`
    holds for the call."""
    escalation: bool = False
    """True for a single call that re-asks a packed answer chosen for escalation."""

    @property
    def is_reask(self) -> bool:
        """Whether this call re-asks items an earlier call did not deliver."""
        return self.attempt > 1 and not self.escalation

    @property
    def is_retry(self) -> bool:
        """Deprecated: :attr:`is_reask`."""
        warnings.warn(
            "ModelCall.is_retry is deprecated: use is_reask", DeprecationWarning, stacklevel=2
        )
        return self.is_reask


@dataclass(frozen=True, slots=True)
class ItemResult:
    """An answer with its provenance (returned with ``include_details=True``)."""

    index: int
    answer: Any
    raw_answer: str | None
    restated_question: str | None
    attempts: int
    call_id: int
    input_tokens: int
    """This item's share of its call's input tokens (the call's total split over the items
    kept, rounded so that the shares add up to the total)."""
    output_tokens: int
    position: int = 0
    """The item's slot in the prompt of the call that answered it (0-based: the model saw
    it as ``Q[position + 1]``); not its input index, which is :attr:`index`."""
    call_items: int = 1
    """How many questions that call's prompt asked (at most the runner's ``batch_size``)."""
    reasons: tuple[str, ...] = ()
    """Why each earlier attempt was rejected, oldest first (empty: answered first time)."""
    realigned: bool = False
    """True when the answer was found under another index than the one it was asked at."""
    confidence: float | None = None
    """The probability the model gave this answer's final-answer tokens (the product of
    their token probabilities), or ``None`` where the provider sends no log-probabilities."""
    escalated: bool = False
    """True when a packed answer was asked again alone (selective escalation) and this is
    the single call's answer."""
    packed_answer: Any = None
    """The packed answer an escalation replaced (``None`` unless :attr:`escalated`)."""

    @property
    def batch_size(self) -> int:
        """Deprecated name of :attr:`call_items` (the runner's ``batch_size`` is a setting,
        this is what one call asked)."""
        warnings.warn(
            "ItemResult.batch_size is deprecated: use ItemResult.call_items",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.call_items


@dataclass
class CallReport:
    """What one call delivered: answers by input index, rejection reasons for the rest."""

    accepted: dict[int, ItemResult]
    failures: dict[int, str]
    usage: CallUsage
    error: BaseException | None = None
    """The exception the model call raised, if it did (then it caused the failures)."""
    stop: str | None = None
    """Why reading stopped before the stream ended (every item in, or a runaway)."""


def _distractors(plan: PlannedBatch) -> list[str]:
    """Questions the prompt shows whose answers belong to no input of the call."""
    shown = [question for question, _ in plan.demonstrations]
    shown += [text_of(m) for m in plan.context if isinstance(m, HumanMessage)]
    return [one_line(text) for text in shown if text.strip()]


def restated_tokens(text: str, settings: EngineSettings) -> int:
    """The output tokens the restatement of ``text`` costs under ``settings`` (Auto-Demo
    copies the question, or its head; other modes copy nothing):
    :func:`~langchain_autodemo.planning.restatement_tokens` of the text's own estimate."""
    head = settings.restate is Restate.HEAD
    return int(
        restatement_tokens(
            estimate_tokens(text),
            restated=settings.mode is Mode.AUTO_DEMO,
            head_tokens=estimate_tokens(head_of(text, settings.head_words)) if head else None,
        )
    )


def output_token_estimate(text: str, settings: EngineSettings) -> int:
    """The output tokens one input is expected to cost: its restatement (Auto-Demo), its
    answer budget and its marker."""
    return restated_tokens(text, settings) + settings.answer_tokens + ITEM_MARKER_TOKENS


@functools.lru_cache(maxsize=32)
def _embedded_marker(markers: Markers) -> re.Pattern[str]:
    """Finds marker-like text inside a one-line input (where a copy could break a line)."""
    pattern = markers.line_pattern
    return re.compile(r"(?:(?<=\s)|^)" + pattern.pattern.removeprefix("^"), pattern.flags)


@functools.lru_cache(maxsize=32)
def _marker_words(markers: Markers) -> frozenset[str]:
    """The key tokens a marker such as ``A[2]:`` leaves between a copied question and
    its copied answer."""
    names: tuple[str, ...] = (markers.question_label, markers.answer_label)
    names = names + markers.question_aliases + markers.answer_aliases
    return frozenset(w for name in names for w in comparison_key(name).split()) | set("[]()#")


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A parsed item placed on an input: ``written`` is the input index the model's
    marker names (``None``: out of range), ``echoed`` the input index its restatement
    names (one name per concept: every field here is an input index, never a slot)."""

    item: ParsedItem
    value: Any
    written: int | None
    echoed: int
    exact: bool
    realigned: bool
    confidence: float | None = None
    """The probability the model gave the item's final answer (``None``: no log-probs)."""

    @property
    def own(self) -> bool:
        return self.written == self.echoed


class CallSession:
    """Everything one streamed completion delivers, item by item.

    Feed it chunks; stop reading once :attr:`done_reading` is true (every wanted item is
    in, or the completion has run past the questions asked or past its output budget);
    then :meth:`finish`. A driver that must abandon the stream for its own reasons (a
    deadline) calls :meth:`stop_reading` first, or passes the error to :meth:`finish`.
    """

    def __init__(self, call: ModelCall, texts: Sequence[str], settings: EngineSettings) -> None:
        self.call = call
        self._settings = settings
        self._indices = call.batch.indices
        self._slot = {index: slot for slot, index in enumerate(self._indices)}
        self._wanted = set(call.batch.kept)
        self._by_index = settings.mode is Mode.BATCH and len(self._indices) > 1
        questions = [texts[i] for i in self._indices]
        distractors = _distractors(call.batch)
        self._matcher = EchoMatcher(
            questions,
            require_echo=settings.mode is Mode.AUTO_DEMO,
            distractors=distractors,
            heads=call.heads,
            distractor_heads=(
                [head_of(text, settings.head_words) for text in distractors] if call.heads else ()
            ),
        )
        self._keys = dict(zip(self._indices, self._matcher.keys, strict=True))
        self._marker_words = _marker_words(settings.markers)
        # Inputs with marker-like text inside: a copy broken at those markers continues the
        # restatement instead of opening items of its own.
        finder = _embedded_marker(settings.markers)
        self._embedded = [
            self._keys[i] for i, text in zip(self._indices, questions, strict=True)
            if finder.search(text)
        ]  # fmt: skip
        self._scanner = CompletionScanner(
            settings.markers,
            reasoning=settings.reasoning,
            continues=self._continues_an_input if self._embedded else None,
        )
        if settings.mode is Mode.SINGLE:  # the whole completion is the answer to the one question
            self._scanner.feed(settings.markers.answer(1) + " ")
        self._candidates: list[_Candidate] = []
        self._doubts: list[tuple[int, Any]] = []  # (written input, value) of ambiguous blocks
        self._noise: set[int] = set()  # inputs whose index also labels a block placed nowhere
        self._own: set[int] = set()  # inputs answered under their own index
        self._placed: set[int] = set()
        self._order: list[int] = []  # marker indices in stream order (batch mode's check)
        self._rejections: dict[int, str] = {}
        self._chunks = 0
        self._chars = 0
        self._text: list[str] = []  # the completion as streamed (the model's text only)
        self._logprobs: list[tuple[int, int, float]] = []  # (start, end, logprob) per token
        self._thought_chunks = 0  # chunks that carried reasoning (see reasoning_of)
        self._thought_chars = 0
        self._reported_reasoning = 0
        self._blank = 0  # chunks that carried nothing: no text, no reasoning, no metadata
        self.progress = 0
        """How many chunks carried something (text, reasoning, usage or a finish reason):
        a driver's stall timer counts from the last one, never from an empty chunk."""
        self._saw_message = False
        self._reported: CallUsage | None = None
        self._finish_reason: str | None = None
        self._idle = 0  # consecutive closed items that delivered nothing new
        limit = settings.max_output_tokens
        self.output_budget: int = (
            int(limit * _LIMIT_SLACK) + 16
            if limit is not None
            else max(
                _MIN_BUDGET,
                _BUDGET_FACTOR * sum(output_token_estimate(t, settings) for t in questions),
            )
        )
        """Estimated output tokens after which the completion counts as a runaway."""
        self.runaway: str | None = None
        """Why the completion can no longer deliver a wanted item, once it cannot."""

    @property
    def complete(self) -> bool:
        """True once every wanted item has an answer written under its own index: the rest
        of the stream is not needed. An answer that moved in from another index does not
        count: the input's own block, later in the stream, may still contradict it."""
        if self._by_index:
            return self._order[: len(self._indices)] == list(range(1, len(self._indices) + 1))
        return self._wanted <= self._own

    @property
    def done_reading(self) -> bool:
        """True once the rest of the stream cannot change the verdict: stop reading."""
        return self.complete or self.runaway is not None

    @property
    def output_tokens(self) -> int:
        """The output read so far, in tokens, reasoning included: reported by the model
        when it says, else estimated (one per chunk, or four characters per token,
        whichever is more, for the text and for the reasoning)."""
        estimate = max(self._chunks, self._chars // 4) + self._reasoning_estimate()
        if self._reported is not None:
            return max(self._reported.output_tokens, self._reported_reasoning, estimate)
        return estimate

    @property
    def reasoning_tokens(self) -> int:
        """The reasoning read so far (``reasoning_content`` deltas, reasoning or thinking
        blocks, or the reported reasoning tokens), in tokens: part of
        :attr:`output_tokens`."""
        return max(self._reported_reasoning, self._reasoning_estimate())

    def _reasoning_estimate(self) -> int:
        return max(self._thought_chunks, self._thought_chars // 4)

    @property
    def chunks_read(self) -> int:
        """How many non-empty chunks were fed so far."""
        return self._chunks

    def stop_reading(self, reason: str) -> None:
        """Abandon the rest of the stream (a driver's deadline): the answers already read
        are judged as usual, the items still missing get ``reason`` and are re-asked."""
        if self.runaway is None:
            self.runaway = reason

    def feed(self, chunk: str | BaseMessage) -> list[int]:
        """Consume one streamed chunk; return the input indices that got a candidate answer.

        Candidates become final only in :meth:`finish`.
        """
        progressed = False
        if isinstance(chunk, BaseMessage):
            self._saw_message = True
            progressed = self._note_metadata(chunk)
            self._note_logprobs(chunk)  # placed at self._chars: before the text is counted
            thought = reasoning_of(chunk)
            if thought:
                self._thought_chunks += 1
                self._thought_chars += len(thought)
                progressed = True
        text = text_of(chunk)
        if text:
            self._chunks += 1
            self._chars += len(text)
            self._text.append(text)
            progressed = True
        if progressed:
            self.progress += 1
        else:
            self._blank += 1
        new = self._take(self._scanner.feed(text))
        if not self.done_reading:
            self._check_runaway()
        return new

    def finish(self, error: BaseException | None = None) -> CallReport:
        """Close the stream and judge every wanted item of the call."""
        stop = "complete" if self.complete else self.runaway
        closing = self._scanner.finish()
        cut: str | None = None
        if stop is not None:
            # Whatever was still open is an extra (a repetition, an invented question)
            # that we cut off: it must not cast doubt on the answers already delivered.
            cut = ""
        elif error is not None:
            cut = "cut off: the model call failed mid-stream"
        elif self._truncated():
            cut = "cut off: the completion was truncated"
        elif (
            self._settings.require_finish_reason
            and self._saw_message
            and self._finish_reason is None
        ):
            # A stream that ends without the provider's final chunk (no finish reason)
            # was cut off somewhere: "The answer is 12" may have been 123.
            cut = _NO_FINISH_REASON
        if cut is not None:
            for item in closing:
                if item.closed_by == "end_of_stream" and cut:
                    self._reject(item.index, cut)
            closing = [item for item in closing if item.closed_by != "end_of_stream"]
        self._take(closing)
        if self._by_index:
            self._check_order()
        delivered, vetoes = self._judge()
        usage = self._usage(error)
        accepted: dict[int, ItemResult] = {}
        failures: dict[int, str] = {}
        wanted = sorted(self._wanted)
        shares = dict(zip(wanted, self._shares(usage, len(wanted)), strict=True))
        for index in wanted:
            found = delivered.get(index)
            if not found:
                reason: str = (
                    call_failure(error)
                    if error is not None
                    else self._rejections.get(index) or cut or self._missing_reason()
                )
                failures[index] = reason if isinstance(reason, Rejection) else Rejection(reason)
                continue
            values = {self._comparable(c.value) for c in found}
            values |= {self._comparable(value) for value in vetoes.get(index, ())}
            if len(values) > 1:
                failures[index] = Rejection("answered more than once, with conflicting answers")
                continue
            chosen = found[0]
            input_share, output_share = shares[index]
            accepted[index] = ItemResult(
                index=index,
                answer=chosen.value,
                raw_answer=chosen.item.answer,
                restated_question=chosen.item.question,
                attempts=self.call.attempt,
                call_id=self.call.call_id,
                input_tokens=input_share,
                output_tokens=output_share,
                position=self._slot[index],
                call_items=len(self._indices),
                realigned=chosen.realigned,
                confidence=chosen.confidence,
            )
        return CallReport(accepted, failures, usage, error, None if stop == "complete" else stop)

    @staticmethod
    def _shares(usage: CallUsage, n: int) -> list[tuple[int, int]]:
        """The call's tokens split over ``n`` items as ints that add up to the totals."""
        n = max(n, 1)
        (a, ra), (b, rb) = divmod(usage.input_tokens, n), divmod(usage.output_tokens, n)
        return [(a + (k < ra), b + (k < rb)) for k in range(n)]

    # -- what each closed item means ---------------------------------------------------

    def _take(self, items: list[ParsedItem]) -> list[int]:
        new: list[int] = []
        for item in items:
            candidate = self._candidate(item)
            if candidate is None:
                self._idle += 1
                continue
            if self._logprobs:  # read now: the answer's tokens are all in
                candidate = replace(candidate, confidence=self._answer_confidence(item))
            self._candidates.append(candidate)
            echoed = candidate.echoed
            if candidate.own:
                self._own.add(echoed)
            first = echoed in self._wanted and echoed not in self._placed
            self._placed.add(echoed)
            self._idle = 0 if first else self._idle + 1
            if first:
                new.append(echoed)
        return new

    def _candidate(self, item: ParsedItem) -> _Candidate | None:
        """What ``item`` claims, or ``None`` (with the reason recorded)."""
        if self._by_index:
            self._order.append(item.index)
        in_range = 0 < item.index <= len(self._indices)
        written = self._indices[item.index - 1] if in_range else None
        candidate = self._claim(item, written)
        if candidate is None and written is not None:
            self._noise.add(written)
        return candidate

    def _claim(self, item: ParsedItem, written: int | None) -> _Candidate | None:
        verdict = self._matcher.verdict(item)
        if verdict.position is None:
            reason = str(verdict.reason)
            if item.question is not None and not item.marker_conflict:
                # what the model wrote, so a rejection can be diagnosed (counted without it:
                # evaluation.diagnostics.reason_kind cuts at the first colon)
                shown = item.question if len(item.question) <= 80 else item.question[:77] + "..."
                self._reject(item.index, Rejection(reason + RESTATED_AS, quote=shown))
            else:
                self._reject(item.index, Rejection(reason))
            if verdict.ambiguous and written is not None:
                # It may be its index's answer: if it disagrees, that input is re-asked.
                value = self._value(item, written, record=False)
                if value is not _NO_VALUE:
                    self._doubts.append((written, value))
            return None
        copied = self._copied_from_input(item)
        if copied is not None:
            slot = self._slot[copied] + 1
            self._reject(
                item.index,
                Rejection(
                    f"the block repeats text of question {slot} of the batch "
                    "(marker-like text inside an input), not an answer",
                    slots=(slot,),
                ),
            )
            return None
        echoed = self._indices[verdict.position]
        value = self._value(item, echoed, record=echoed in self._wanted)
        if value is _NO_VALUE:
            return None
        return _Candidate(item, value, written, echoed, verdict.exact, verdict.realigned)

    def _value(self, item: ParsedItem, index: int, *, record: bool) -> Any:
        """The parsed answer of ``item``, or ``_NO_VALUE`` (the reason recorded for input
        ``index`` when ``record``)."""
        reason: str | None = None
        value: Any = _NO_VALUE
        if item.value is None:
            reason = "restated but never answered"
        else:
            # The layout's placeholder copied as the final line ("The answer is <final
            # answer>.") is no answer, though the parser reads "<final answer>" (or, terse,
            # ">") as one (docs/design/measured-choices.md).
            last_line = (item.answer or "").strip().rsplit("\n", 1)[-1]
            if holds_placeholder(last_line):
                reason = Rejection(PLACEHOLDER_ANSWER, quote=last_line.strip()[:80])
            else:
                try:
                    value = self._parse(item.value)
                except Exception as exc:  # a user parser may raise anything
                    value = self._parse_block(item)
                    if value is _NO_VALUE:
                        reason = Rejection(UNPARSED_ANSWER, quote=str(exc), plain=True)
        if reason is not None and record:
            self._rejections[index] = reason
        return value

    def _parse_block(self, item: ParsedItem) -> Any:
        """The whole answer block parsed, where its final-answer line alone did not parse
        (``The answer is ```json`` with the object on the lines after it): the block is
        the same item's, so this changes what is read, never whose answer it is."""
        block = (item.answer or "").strip()
        if not self._settings.parse_value or not block or block == (item.value or "").strip():
            return _NO_VALUE
        try:
            return self._parse(block)
        except Exception:
            return _NO_VALUE

    def _continues_an_input(self, restated: str) -> bool:
        """Whether ``restated`` is a word-aligned start of an input with marker-like text
        inside (the scanner then reads a marker line as more of the restatement)."""
        key = comparison_key(restated)
        return any(
            k.startswith(key) and (len(k) == len(key) or k[len(key)] == " ") for k in self._embedded
        )

    def _copied_from_input(self, item: ParsedItem) -> int | None:
        """The input whose text holds this block (its restatement, at most a marker, then
        its answer), or ``None``.

        An input that contains ``Q[2]: ... A[2]: The answer is 99.`` yields exactly such a
        block when the model copies it and breaks the line at those markers: the answer
        came from the input, not from the model.
        """
        if item.question is None or not item.answer:
            return None
        restated, answer = comparison_key(item.question), comparison_key(item.answer)
        if not restated or not answer:
            return None
        needle = f" {restated} "
        for index in self._indices:
            text = f" {self._keys[index]} "
            at = text.find(needle)
            while at >= 0:
                end = at + len(needle)
                for _ in range(8):  # skip the marker between the two
                    space = text.find(" ", end)
                    word = text[end:space]
                    if space < 0 or not (word.isdigit() or word in self._marker_words):
                        break
                    end = space + 1
                if text.startswith(answer + " ", end):
                    return index
                at = text.find(needle, at + 1)
        return None

    def _judge(self) -> tuple[dict[int, list[_Candidate]], dict[int, list[Any]]]:
        """Which candidates deliver (per input), and the values that veto each input.

        An answer under its own index delivers. An answer that moved (its restatement is
        an exact copy of another input than its index's) delivers only when the move is
        corroborated by the rest of the completion:

        - moved away from an index in range: that index labels nothing else, and its own
          input's answer moved in (corroborated) from exactly one other index, so the
          chain closes (a swap, a rotation) or ends out of range (a renumbering);
        - moved in from an index out of range: the input's own index labels one other
          input's corroborated move (a renumbering's end).

        The corroborated set is the largest one that meets these conditions. An
        uncorroborated move delivers nothing and vetoes a different answer at both inputs
        it could belong to; so does an ambiguous restatement at its index.
        """
        uses: dict[int, set[int]] = {written: {-1} for written in self._noise}
        for c in self._candidates:
            if c.written is not None:
                uses.setdefault(c.written, set()).add(c.echoed)
        movers = [c for c in self._candidates if not c.own]
        trusted = [c for c in movers if c.exact]
        while True:
            into: dict[int, set[int | None]] = {}
            carried: set[int] = set()  # inputs whose index labels a trusted move
            for c in trusted:
                into.setdefault(c.echoed, set()).add(c.written)
                if c.written is not None:
                    carried.add(c.written)
            kept = [
                c
                for c in trusted
                if (
                    uses.get(c.written) == {c.echoed} and len(into.get(c.written, ())) == 1
                    if c.written is not None
                    else c.echoed in carried and len(uses.get(c.echoed, ())) == 1
                )
            ]
            if len(kept) == len(trusted):
                break
            trusted = kept
        corroborated = {id(c) for c in trusted}
        delivered: dict[int, list[_Candidate]] = {}
        vetoes: dict[int, list[Any]] = {}
        for c in self._candidates:
            if c.own or id(c) in corroborated:
                delivered.setdefault(c.echoed, []).append(c)
                continue
            index = c.item.index
            vetoes.setdefault(c.echoed, []).append(c.value)
            self._rejections[c.echoed] = Rejection(
                f"restated under index {index}, another question's or none, and nothing "
                "corroborates the move",
                slots=(index,),
            )
            if c.written is not None:
                vetoes.setdefault(c.written, []).append(c.value)
                self._rejections.setdefault(
                    c.written,
                    Rejection(
                        f"its index {index} carries a restatement of another question, and "
                        "nothing corroborates the move",
                        slots=(index,),
                    ),
                )
        for written, value in self._doubts:
            vetoes.setdefault(written, []).append(value)
        return delivered, vetoes

    def _reject(self, index: int, reason: str) -> None:
        if 0 < index <= len(self._indices):
            self._rejections[self._indices[index - 1]] = reason

    def _check_order(self) -> None:
        # Without restatements the marker index is the only evidence. It is trusted only
        # when the completion answered every question exactly once, in order: a skipped
        # question renumbered away would otherwise shift every later answer.
        expected = list(range(1, len(self._indices) + 1))
        if self._order[: len(expected)] == expected:
            return
        for index in self._wanted:
            self._rejections[index] = (
                "answers without restatements came out of order or incomplete "
                f"(indices {self._order[:12]}), so none can be placed with certainty"
            )
        self._candidates.clear()
        self._doubts.clear()
        self._noise.clear()

    def _check_runaway(self) -> None:
        n = len(self._indices)
        restated = self._scanner.restated_open()
        if restated is not None and restated[0] > n:
            index, question = restated
            if self._by_index or self._matcher.match(question).position is None:
                self.runaway = f"the completion went on past question {n} without answering it"
                return
        if self._scanner.open_repetitions() >= _LOOP_REPEATS:
            self.runaway = "the completion looped, repeating the same lines"
        elif self._by_index and any(index > n for index in self._order):
            self.runaway = f"the completion went on past question {n} without answering it"
        elif self._idle >= max(3, n):
            self.runaway = "the completion repeated itself without answering it"
        elif self._over_budget():
            thought = self.reasoning_tokens
            of_them = f", {thought} of them reasoning" if thought else ""
            self.runaway = (
                f"the completion ran past its output budget (about {self.output_budget} "
                f"tokens{of_them}) without finishing"
            )
        elif self._blank > self.output_budget:
            self.runaway = (
                f"the stream sent {self._blank} chunks that carried nothing (no text, no "
                "reasoning, no finish reason)"
            )

    def _over_budget(self) -> bool:
        """Whether the output read, reasoning included, is past the budget. Reasoning
        counts against ``max_output_tokens`` (which bounds it at the provider too); with
        no limit it may add up to ``_REASONING_ALLOWANCE`` tokens to the budget."""
        spent = self.output_tokens
        if self._settings.max_output_tokens is None:
            spent -= min(self.reasoning_tokens, _REASONING_ALLOWANCE)
        return spent > self.output_budget

    def _missing_reason(self) -> str:
        return self.runaway or "missing from the completion"

    def _parse(self, value: str) -> Any:
        return self._settings.parse_value(value) if self._settings.parse_value else value

    @staticmethod
    def _comparable(value: Any) -> Any:
        if isinstance(value, str):
            return " ".join(value.casefold().split())
        try:
            hash(value)
            return value
        except TypeError:
            return repr(value)

    # -- usage and the end of the stream ------------------------------------------------

    def _note_metadata(self, chunk: BaseMessage) -> bool:
        """Record the chunk's usage and finish reason; whether it carried either."""
        noted = False
        usage = reported_usage(chunk)
        if usage is not None:
            noted = True
            previous = self._reported or CallUsage(0, 0)
            self._reported_reasoning += usage.reasoning_tokens
            self._reported = CallUsage(
                previous.input_tokens + usage.input_tokens,
                previous.output_tokens + usage.output_tokens,
                cached_input_tokens=previous.cached_input_tokens + usage.cached_input_tokens,
            )
        metadata = chunk.response_metadata or {}
        for key in _FINISH_KEYS:
            reason = metadata.get(key)
            if reason:
                self._finish_reason = str(reason)
                noted = True
                break
        if metadata.get("done") is True and self._finish_reason is None:
            self._finish_reason = "stop"  # Ollama's final chunk
            noted = True
        return noted

    def _note_logprobs(self, chunk: BaseMessage) -> None:
        """Keep the token log-probabilities a chunk carries (OpenAI's format, which
        llama.cpp's server and other compatible servers stream in each chunk's
        ``response_metadata["logprobs"]``), placed on the completion's characters."""
        logprobs = (chunk.response_metadata or {}).get("logprobs")
        tokens = logprobs.get("content") if isinstance(logprobs, dict) else logprobs
        if not isinstance(tokens, list):
            return
        at = self._chars
        for token in tokens:
            if not isinstance(token, dict):
                continue
            piece, value = token.get("token"), token.get("logprob")
            if not isinstance(piece, str) or not isinstance(value, (int, float)):
                continue
            self._logprobs.append((at, at + len(piece), float(value)))
            at += len(piece)

    def _answer_confidence(self, item: ParsedItem) -> float | None:
        """The probability of ``item``'s final answer: the product of the probabilities of
        the tokens that wrote it, found as the last copy of the answer in the completion
        read so far (an item closes when the next marker arrives, right after its answer)."""
        value = (item.value or "").strip()
        if not value:
            return None
        text = "".join(self._text)
        self._text = [text]
        low, high = self._answer_region(text, item.index)
        start = text.rfind(value, low, high)
        if start < 0:
            return None
        end = start + len(value)
        total = [lp for s, e, lp in self._logprobs if s < end and e > start]
        if not total:
            return None
        return math.exp(min(0.0, sum(total)))

    def _answer_region(self, text: str, index: int) -> tuple[int, int]:
        """Where answer ``index`` was written: from its last answer marker to the next
        marker line of another block (the whole text when there is none, as in single
        mode)."""
        pattern = self._settings.markers.line_pattern
        marks: list[tuple[int, bool, int]] = []  # (offset, is an answer marker, number)
        at = 0
        for line in text.splitlines(keepends=True):
            found = pattern.match(line.rstrip("\r\n"))
            if found is not None:
                groups = found.groupdict()
                answer = groups.get("a") is not None
                number = groups.get("ab" if answer else "qb") or groups.get(
                    "an" if answer else "qn"
                )
                if number is not None:
                    marks.append((at, answer, int(number)))
            at += len(line)
        own = [offset for offset, answer, number in marks if answer and number == index]
        if not own:
            return 0, len(text)
        later = [offset for offset, _, _ in marks if offset > own[-1]]
        return own[-1], later[0] if later else len(text)

    def _usage(self, error: BaseException | None = None) -> CallUsage:
        if self._reported is not None and (self._reported.output_tokens or not self._chunks):
            return self._reported
        if error is not None and not self._chunks and self._reported is None:
            # Failed before its first chunk (a dead server, a refused connection): nothing
            # says the prompt was ever read, so nothing is counted.
            return CallUsage(0, 0, estimated=True)
        estimated_input = estimate_message_tokens(self.call.messages)
        return CallUsage(estimated_input, self._chunks, estimated=True)

    def _truncated(self) -> bool:
        if self._finish_reason is not None and self._finish_reason.casefold() in _CUT_OFF_REASONS:
            return True
        limit = self._settings.max_output_tokens
        # Some servers (llama.cpp) report "stop" even when cut off by max_tokens.
        return limit is not None and self._usage().output_tokens >= limit


_NO_VALUE: Any = object()


class Engine:
    """Plans the calls for one ``batch()`` and collects what they deliver.

    Pure: the drivers send each :class:`ModelCall` (after its ``delay``), feed the
    stream to :meth:`open`'s session and hand the report back to :meth:`complete`.
    ``rng`` only jitters the backoff; pass a seeded one for reproducible delays.
    """

    def __init__(
        self,
        inputs: Sequence[str],
        plans: Sequence[PlannedBatch],
        settings: EngineSettings,
        *,
        rng: random.Random | None = None,
        invalid: Mapping[int, AutoDemoError] | None = None,
    ) -> None:
        self.settings = settings
        self.texts = [one_line(text) for text in inputs]
        self._keys = [comparison_key(text) for text in self.texts]
        self._rng = rng or random.Random()
        self._ids = itertools.count()
        self._attempts = [0] * len(inputs)
        self._reasons: list[list[str]] = [[] for _ in inputs]
        self._escalating: dict[int, ItemResult] = {}  # packed answers awaiting their single call
        #: Inputs that cannot be asked at all (bad input): final before any call.
        self.results: dict[int, ItemResult | AutoDemoError] = dict(invalid or {})
        self._pending = set(range(len(inputs))) - self.results.keys()
        kept = sorted(i for plan in plans for i in plan.kept)
        if kept != sorted(self._pending):
            raise ValueError("the batch plan must keep an answer for every input exactly once")
        self._initial = [
            part
            for plan in plans
            for budgeted in split_by_token_budget(
                plan, self._output_tokens, settings.max_output_tokens
            )
            for part in self._distinguishable(budgeted)
        ]

    @property
    def done(self) -> bool:
        return not self._pending

    def initial_calls(self) -> list[ModelCall]:
        return [self._call(plan, attempt=1) for plan in self._initial]

    def open(self, call: ModelCall) -> CallSession:
        if call.escalation:  # asked alone, as single asks: judged as single judges
            return CallSession(call, self.texts, replace(self.settings, mode=Mode.SINGLE))
        return CallSession(call, self.texts, self.settings)

    def complete(
        self, call: ModelCall, report: CallReport
    ) -> tuple[list[tuple[int, ItemResult | AutoDemoError]], list[ModelCall]]:
        """Record a finished call; return newly final results and the follow-up calls.

        Items lost to a failed model call are asked again together, after a backoff;
        items the completion garbled are asked again at once, in smaller batches, then
        alone. After ``max_attempts`` an item gets its error: the provider's exception
        type for a failed call (see :func:`~langchain_autodemo.errors.model_call_error`),
        :class:`AutoDemoItemError` otherwise.
        """
        if call.escalation:
            return self._escalated(call, report), []
        final: list[tuple[int, ItemResult | AutoDemoError]] = []
        for index in call.batch.kept:
            self._attempts[index] += 1
        delivered = [
            (
                index,
                replace(
                    result, attempts=self._attempts[index], reasons=tuple(self._reasons[index])
                ),
            )
            for index, result in report.accepted.items()
            if index in self._pending and index not in self._escalating
        ]
        picks = self._picks(call, delivered)
        escalations: list[ModelCall] = []
        for index, result in delivered:
            if index in picks:
                self._escalating[index] = result
                escalations.append(self._escalation(call, index))
                continue
            self._pending.discard(index)
            self.results[index] = result
            final.append((index, result))
        if report.error is not None and rejected_for_content(report.error):
            refused, splits = self._refused(call, report)
            return final + refused, escalations + splits
        call_failed: list[int] = []
        garbled: list[int] = []
        for index in call.batch.kept:
            reason = report.failures.get(index)
            if reason is None or index not in self._pending or index in self._escalating:
                continue
            self._reasons[index].append(reason)
            if self._attempts[index] >= self.settings.max_attempts:
                final.append((index, self._fail(index, reason, report)))
            elif report.error is not None and index not in report.accepted:
                call_failed.append(index)
            else:
                garbled.append(index)
        follow_ups: list[ModelCall] = escalations
        if call_failed:
            delay = retry_delay(
                report.error,  # type: ignore[arg-type]
                call.attempt,
                initial=self.settings.retry_initial_delay,
                maximum=self.settings.retry_max_delay,
                rng=self._rng,
            )
            plan = call.batch.part(call_failed)
            follow_ups.append(self._call(plan, call.attempt + 1, delay=delay))
        groups = recovery_batches(
            garbled, len(call.batch.kept), call.attempt + 1, self.settings.max_attempts
        )
        answered = self._answered_demonstrations(report) if groups else ()
        for group in groups:
            plan = call.batch.part(group)
            if answered:
                plan = replace(plan, demonstrations=plan.demonstrations + answered)
            follow_ups.append(self._call(plan, call.attempt + 1))
        if garbled and not groups:  # attempts left per item but the recovery plan is exhausted
            for index in garbled:
                final.append((index, self._fail(index, report.failures[index], report)))
        return final, follow_ups

    def _picks(self, call: ModelCall, answered: list[tuple[int, ItemResult]]) -> set[int]:
        """The answers of a packed call to escalate (none from single calls, re-asks of
        one item, or with escalation off)."""
        settings = self.settings
        if (
            settings.mode is Mode.SINGLE
            or len(call.batch.indices) < 2
            or (settings.escalate <= 0 and settings.escalate_below is None)
        ):
            return set()
        return escalation_picks(
            [(index, r.position, r.confidence) for index, r in answered],
            settings.escalate,
            settings.escalate_below,
            settings.slot_accuracy,
        )

    def _escalation(self, call: ModelCall, index: int) -> ModelCall:
        """The single call that re-asks packed answer ``index``: the question alone, with
        the packed call's context and demonstrations, as ``single`` would ask it."""
        return self._call(call.batch.part([index]), call.attempt, escalation=True)

    def _escalated(
        self, call: ModelCall, report: CallReport
    ) -> list[tuple[int, ItemResult | AutoDemoError]]:
        """An escalation's verdict: the single answer when it came, else the packed
        answer it was to check (never an error: that answer was already accepted)."""
        (index,) = call.batch.kept
        packed = self._escalating.pop(index)
        single = report.accepted.get(index)
        if single is not None:
            result = replace(
                single,
                attempts=packed.attempts + 1,
                reasons=packed.reasons,
                escalated=True,
                packed_answer=packed.answer,
            )
        else:
            why = report.failures.get(index)
            # only the kind: the single call's text must not reach another viewer
            kind = why.kind if isinstance(why, Rejection) else "missing from the completion"
            kept = Rejection(f"escalation failed ({kind}); the packed answer is kept")
            result = replace(packed, reasons=(*packed.reasons, kept))
        self._pending.discard(index)
        self.results[index] = result
        return [(index, result)]

    def _refused(
        self, call: ModelCall, report: CallReport
    ) -> tuple[list[tuple[int, ItemResult | AutoDemoError]], list[ModelCall]]:
        """A call the provider refused for what it holds (:func:`rejected_for_content`):
        sending the same members again would fail the same way, and one poison input
        must not fail its neighbours. A call of several inputs is split in halves at once
        (no backoff, and no attempt charged: the split is the engine's doing, not the
        item's), until the input that causes the refusal stands alone; alone, it gets
        its error at once."""
        members = [i for i in call.batch.kept if i in self._pending]
        final: list[tuple[int, ItemResult | AutoDemoError]] = []
        if not members:
            return final, []
        if len(members) == 1 and len(call.batch.indices) > 1:
            # context-only neighbours shared the call: any of them may be the cause
            self._attempts[members[0]] -= 1
            return final, [self._call(call.batch.part(members), call.attempt + 1)]
        if len(members) == 1:
            index = members[0]
            self._reasons[index].append(report.failures.get(index) or call_failure(report.error))
            final.append((index, self._fail(index, self._reasons[index][-1], report)))
            return final, []
        for index in members:
            self._attempts[index] -= 1
            self._reasons[index].append(
                Rejection(
                    "the provider refused a call of "
                    f"{len(members)} inputs for its content; asked again in halves"
                )
            )
        half = (len(members) + 1) // 2
        parts = [members[:half], members[half:]]
        return final, [self._call(call.batch.part(part), call.attempt + 1) for part in parts]

    def _answered_demonstrations(self, report: CallReport) -> tuple[Demonstration, ...]:
        """The call's accepted items as solved examples, in prompt order (see
        :attr:`EngineSettings.reask_with_answered`)."""
        if not self.settings.reask_with_answered:
            return ()
        accepted = sorted(report.accepted.values(), key=lambda r: r.position)
        return tuple(
            (self.texts[r.index], r.raw_answer) for r in accepted if r.raw_answer is not None
        )

    def _fail(self, index: int, reason: str, report: CallReport) -> AutoDemoItemError:
        reasons = tuple(self._reasons[index])
        excerpt = self.texts[index]
        error: AutoDemoItemError
        if report.error is not None and index not in report.accepted:
            error = model_call_error(
                report.error, index, self._attempts[index], reasons, input_excerpt=excerpt
            )
        else:
            error = AutoDemoItemError(
                index, reason, self._attempts[index], reasons, input_excerpt=excerpt
            )
        self._pending.discard(index)
        self.results[index] = error
        return error

    def _distinguishable(self, plan: PlannedBatch) -> list[PlannedBatch]:
        parts = distinguishable_parts(plan.indices, self._keys)
        if len(parts) == 1:
            return [plan]
        result = []
        for part in parts:
            keep = None if plan.keep is None else plan.keep & set(part)
            if keep is not None and not keep:
                continue  # a context-only neighbour that repeats its target: not needed
            result.append(plan.part(part, keep))
        return result

    def _output_tokens(self, index: int) -> int:
        return output_token_estimate(self.texts[index], self.settings)

    def _call(
        self, plan: PlannedBatch, attempt: int, *, delay: float = 0.0, escalation: bool = False
    ) -> ModelCall:
        settings = self.settings
        questions = [self.texts[i] for i in plan.indices]
        if settings.mode is Mode.SINGLE or escalation:
            messages = build_single_messages(
                questions[0],
                instructions=settings.asked_instructions,
                reasoning=settings.reasoning,
                demonstrations=plan.demonstrations,
                context=plan.context,
            )
        else:
            # A re-asked item alone keeps the batch format: the same parser and echo check
            # apply, and no format switch surprises the model.
            heads = self._heads(plan, questions)
            messages = build_batch_messages(
                questions,
                mode=settings.mode,
                instructions=settings.asked_instructions,
                markers=settings.markers,
                reasoning=settings.reasoning,
                demonstrations=plan.demonstrations,
                context=plan.context,
                head_words=settings.head_words if heads is not None else None,
                answer_format=settings.answer_format,
            )
            return ModelCall(next(self._ids), plan, attempt, messages, delay, heads)
        return ModelCall(next(self._ids), plan, attempt, messages, delay, escalation=escalation)

    def _heads(self, plan: PlannedBatch, questions: list[str]) -> tuple[str, ...] | None:
        """The heads this call asks for, or ``None`` (full restatements): not asked for,
        or two texts of the call open alike (see :func:`heads_distinguishable`)."""
        settings = self.settings
        if settings.mode is not Mode.AUTO_DEMO or settings.restate is not Restate.HEAD:
            return None
        heads = tuple(head_of(q, settings.head_words) for q in questions)
        shown = questions + _distractors(plan)
        return heads if heads_distinguishable(heads, shown) else None
