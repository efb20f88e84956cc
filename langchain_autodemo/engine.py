"""The I/O-free heart of a packed ``batch()``: which calls to make, what each completion
delivered, what to re-ask.

The runnable's sync and async drivers only move text between the model and this
engine, so both share every decision made here:

    plan -> ModelCall -> CallSession.feed(chunk)* -> CallSession.finish() -> Engine.complete()
         -> follow-up calls for the items that were missing, garbled, misaligned or cut off
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage

from langchain_autodemo.alignment import EchoMatcher
from langchain_autodemo.errors import AutoDemoItemError
from langchain_autodemo.markers import Markers
from langchain_autodemo.parser import CompletionScanner, ParsedItem, text_of
from langchain_autodemo.planning import (
    PlannedBatch,
    estimate_tokens,
    recovery_batches,
    split_by_token_budget,
)
from langchain_autodemo.prompts import Mode, build_batch_messages, build_single_messages, one_line
from langchain_autodemo.usage import CallUsage

__all__ = ["EngineSettings", "ModelCall", "CallSession", "CallReport", "Engine", "ItemResult"]

_TRUNCATION_REASONS = frozenset({"length", "max_tokens", "MAX_TOKENS"})


@dataclass(frozen=True)
class EngineSettings:
    mode: Mode = Mode.AUTO_DEMO
    batch_size: int = 8
    instructions: str | None = None
    markers: Markers = field(default_factory=Markers)
    reasoning: bool = True
    max_attempts: int = 3
    max_output_tokens: int | None = None
    answer_tokens: int = 256
    parse_value: Callable[[str], Any] | None = None


@dataclass(frozen=True)
class ModelCall:
    """One packed request: the batch it serves, which attempt it is, and its messages."""

    call_id: int
    batch: PlannedBatch
    attempt: int
    messages: list[BaseMessage]

    @property
    def is_retry(self) -> bool:
        return self.attempt > 1


@dataclass(frozen=True, slots=True)
class ItemResult:
    """An answer with its provenance (returned with ``include_details=True``)."""

    index: int
    answer: Any
    raw_answer: str | None
    restated_question: str | None
    attempts: int
    call_id: int
    input_tokens: float
    output_tokens: float


@dataclass
class CallReport:
    accepted: dict[int, ItemResult]
    failures: dict[int, str]
    usage: CallUsage


class CallSession:
    """Everything one streamed completion delivers, item by item."""

    def __init__(self, call: ModelCall, texts: Sequence[str], settings: EngineSettings) -> None:
        self.call = call
        self._settings = settings
        self._positions = call.batch.indices
        self._wanted = set(call.batch.kept)
        single = settings.mode is Mode.SINGLE
        self._matcher = EchoMatcher(
            [texts[i] for i in self._positions],
            require_echo=settings.mode is Mode.AUTO_DEMO,
        )
        self._scanner = CompletionScanner(settings.markers, reasoning=settings.reasoning)
        if single:  # the whole completion is the answer to the one question
            self._scanner.feed(settings.markers.answer(1) + " ")
        self._found: dict[int, list[tuple[ParsedItem, Any]]] = {}
        self._rejections: dict[int, str] = {}
        self._chunks = 0
        self._reported: CallUsage | None = None
        self._finish_reason: str | None = None

    @property
    def complete(self) -> bool:
        """True once every wanted item has an answer: the rest of the stream is not needed."""
        return self._wanted <= self._found.keys()

    def feed(self, chunk: str | BaseMessage) -> list[tuple[int, ItemResult]]:
        """Consume one streamed chunk; return items that closed and were verified."""
        if isinstance(chunk, BaseMessage):
            self._note_metadata(chunk)
        text = text_of(chunk)
        if text:
            self._chunks += 1
        return self._take(self._scanner.feed(text))

    def finish(self, error: BaseException | None = None) -> CallReport:
        """Close the stream and judge every wanted item of the batch."""
        truncated = error is not None or self._looks_truncated()
        stopped_early = self.complete  # the driver dropped the rest of the stream
        closing = self._scanner.finish()
        if stopped_early:
            # Whatever was still open is an extra (a repetition, an invented question) cut
            # off by us: it must not cast doubt on the answers already delivered.
            closing = [item for item in closing if item.closed_by != "end_of_stream"]
        elif truncated:
            # The last open item may be cut off mid-answer: never trust it.
            closing = [item for item in closing if item.closed_by != "end_of_stream"]
            for position in self._wanted - self._found.keys():
                self._rejections.setdefault(position, "cut off: the completion was truncated")
        elif self._settings.reasoning and self._settings.mode is not Mode.SINGLE:
            closing = self._drop_unfinished(closing)
        self._take(closing)
        usage = self._usage()
        accepted: dict[int, ItemResult] = {}
        failures: dict[int, str] = {}
        share = len(self._wanted) or 1
        for position in self._wanted:
            found = self._found.get(position)
            if not found:
                if error is not None:
                    reason = f"model call failed: {type(error).__name__}: {error}"
                else:
                    reason = self._rejections.get(position, "missing from the completion")
                failures[position] = reason
                continue
            values = {self._comparable(value) for _, value in found}
            if len(values) > 1:
                failures[position] = "answered more than once, with conflicting answers"
                continue
            item, value = found[0]
            accepted[position] = self._result(position, item, value, usage, share)
        return CallReport(accepted, failures, usage)

    def _take(self, items: list[ParsedItem]) -> list[tuple[int, ItemResult]]:
        verified = []
        for item in items:
            verdict = self._matcher.verdict(item)
            if verdict.position is None:
                if 0 <= item.index - 1 < len(self._positions):
                    self._rejections[self._positions[item.index - 1]] = str(verdict.reason)
                continue
            position = self._positions[verdict.position]
            if position not in self._wanted:
                continue
            if item.value is None:
                self._rejections[position] = "restated but never answered"
                continue
            try:
                value = self._parse(item.value)
            except Exception as exc:  # a user parser may raise anything
                self._rejections[position] = f"answer could not be parsed: {exc}"
                continue
            first = position not in self._found
            self._found.setdefault(position, []).append((item, value))
            if first:
                verified.append((position, (item, value)))
        usage = CallUsage(0, 0)
        return [
            (position, self._result(position, item, value, usage, 1))
            for position, (item, value) in verified
        ]

    def _drop_unfinished(self, closing: list[ParsedItem]) -> list[ParsedItem]:
        kept = []
        for item in closing:
            if item.closed_by == "end_of_stream" and item.final_answer is None and item.answer:
                # Asked to end with "The answer is ...", the model stopped mid-reasoning.
                if 0 <= item.index - 1 < len(self._positions):
                    self._rejections[self._positions[item.index - 1]] = (
                        "the completion ended before this answer's final line"
                    )
                continue
            kept.append(item)
        return kept

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

    def _result(
        self, position: int, item: ParsedItem, value: Any, usage: CallUsage, share: int
    ) -> ItemResult:
        return ItemResult(
            index=position,
            answer=value,
            raw_answer=item.answer,
            restated_question=item.question,
            attempts=self.call.attempt,
            call_id=self.call.call_id,
            input_tokens=usage.input_tokens / share,
            output_tokens=usage.output_tokens / share,
        )

    def _note_metadata(self, chunk: BaseMessage) -> None:
        usage = getattr(chunk, "usage_metadata", None)
        if usage:
            previous = self._reported or CallUsage(0, 0)
            self._reported = CallUsage(
                previous.input_tokens + int(usage.get("input_tokens", 0)),
                previous.output_tokens + int(usage.get("output_tokens", 0)),
            )
        metadata = chunk.response_metadata or {}
        reason = metadata.get("finish_reason") or metadata.get("stop_reason")
        if reason:
            self._finish_reason = str(reason)

    def _usage(self) -> CallUsage:
        if self._reported is not None and (self._reported.output_tokens or not self._chunks):
            return self._reported
        estimated_input = sum(estimate_tokens(text_of(m)) for m in self.call.messages)
        return CallUsage(estimated_input, self._chunks, estimated=True)

    def _looks_truncated(self) -> bool:
        if self._finish_reason in _TRUNCATION_REASONS:
            return True
        limit = self._settings.max_output_tokens
        # Some servers (llama.cpp) report "stop" even when cut off by max_tokens.
        return limit is not None and self._usage().output_tokens >= limit


class Engine:
    """Plans the calls for one ``batch()`` and collects what they deliver."""

    def __init__(
        self, inputs: Sequence[str], plans: Sequence[PlannedBatch], settings: EngineSettings
    ) -> None:
        self.settings = settings
        self.texts = [one_line(text) for text in inputs]
        self._ids = itertools.count()
        self._attempts = [0] * len(inputs)
        self._pending = set(range(len(inputs)))
        self.results: dict[int, ItemResult | AutoDemoItemError] = {}
        self._initial = [
            part
            for plan in plans
            for part in split_by_token_budget(plan, self._output_cost, settings.max_output_tokens)
        ]
        covered = {i for plan in self._initial for i in plan.kept}
        if covered != self._pending:
            raise ValueError("the batch plan must keep an answer for every input exactly once")

    @property
    def done(self) -> bool:
        return not self._pending

    def initial_calls(self) -> list[ModelCall]:
        return [self._call(plan, attempt=1) for plan in self._initial]

    def open(self, call: ModelCall) -> CallSession:
        return CallSession(call, self.texts, self.settings)

    def complete(
        self, call: ModelCall, report: CallReport
    ) -> tuple[list[tuple[int, ItemResult | AutoDemoItemError]], list[ModelCall]]:
        """Record a finished call; return newly final results and the follow-up calls."""
        final: list[tuple[int, ItemResult | AutoDemoItemError]] = []
        for index in call.batch.kept:
            self._attempts[index] += 1
        for index, result in report.accepted.items():
            if index in self._pending:
                self._pending.discard(index)
                self.results[index] = result
                final.append((index, result))
        retry: list[int] = []
        for index, reason in report.failures.items():
            if index not in self._pending:
                continue
            if self._attempts[index] >= self.settings.max_attempts:
                error = AutoDemoItemError(index, reason, self._attempts[index])
                self._pending.discard(index)
                self.results[index] = error
                final.append((index, error))
            else:
                retry.append(index)
        follow_ups = [
            self._call(PlannedBatch(group, None, call.batch.demonstrations), call.attempt + 1)
            for group in recovery_batches(
                retry, len(call.batch.kept), call.attempt + 1, self.settings.max_attempts
            )
        ]
        if not follow_ups and retry:  # attempts left per item but recovery plan exhausted
            for index in retry:
                error = AutoDemoItemError(index, report.failures[index], self._attempts[index])
                self._pending.discard(index)
                self.results[index] = error
                final.append((index, error))
        return final, follow_ups

    def _output_cost(self, index: int) -> int:
        echo = estimate_tokens(self.texts[index]) if self.settings.mode is Mode.AUTO_DEMO else 0
        return echo + self.settings.answer_tokens + 4

    def _call(self, plan: PlannedBatch, attempt: int) -> ModelCall:
        settings = self.settings
        questions = [self.texts[i] for i in plan.indices]
        if settings.mode is Mode.SINGLE:
            messages = build_single_messages(
                questions[0],
                instructions=settings.instructions,
                reasoning=settings.reasoning,
                demonstrations=plan.demonstrations,
            )
        else:
            # A re-asked item alone keeps the batch format: the same parser and echo check
            # apply, and no format switch surprises the model.
            messages = build_batch_messages(
                questions,
                mode=settings.mode,
                instructions=settings.instructions,
                markers=settings.markers,
                reasoning=settings.reasoning,
                demonstrations=plan.demonstrations,
            )
        return ModelCall(next(self._ids), plan, attempt, messages)
