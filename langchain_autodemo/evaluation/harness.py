"""Run methods x batch sizes over a dataset on one model and score every answer.

Each item's record keeps its provenance (the call that answered it, its position in
that call's prompt, its attempts and why earlier ones were rejected, its token share),
which :mod:`langchain_autodemo.evaluation.diagnostics` turns into the per-position,
re-ask and paired-comparison numbers of the report.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

from langchain_autodemo.engine import ItemResult
from langchain_autodemo.errors import AutoDemoItemError, EvaluationError
from langchain_autodemo.evaluation.bootstrap import (
    BootstrapPool,
    BootstrapSettings,
    bootstrap_pool,
    model_call_failures,
)
from langchain_autodemo.evaluation.datasets import Dataset
from langchain_autodemo.evaluation.diagnostics import diagnostics
from langchain_autodemo.evaluation.methods import Method
from langchain_autodemo.pricing import (
    Price,
    cache_write_tokens,
    prompt_text,
    reused_prefix_tokens,
    shared_prefix_tokens,
    spread_tokens,
)
from langchain_autodemo.runnable import AutoDemoBatchRunnable
from langchain_autodemo.settings import Settings
from langchain_autodemo.usage import track_usage

__all__ = ["ItemRecord", "MethodResult", "evaluate", "run_method", "shot_exemplars"]


@dataclass
class ItemRecord:
    id: str
    gold: str
    prediction: str | None
    extracted: str | None
    correct: bool
    parsed: bool
    error: str | None = None
    call_id: int | None = None
    """The model call that delivered the answer (``None``: the item ended in an error)."""
    position: int | None = None
    """0-based position of the item in that call's prompt."""
    call_items: int | None = None
    """How many questions that call asked."""
    attempts: int = 1
    """Model calls that tried to answer the item."""
    reasons: tuple[str, ...] = ()
    """Why each rejected attempt was rejected, oldest first (empty: answered first time)."""
    restated_question: str | None = None
    raw_answer: str | None = None
    """The whole answer block (reasoning and final line)."""
    input_tokens: float = 0.0
    """The item's share of the answering call's input tokens."""
    output_tokens: float = 0.0
    confidence: float | None = None
    """The probability the model gave the answer's tokens (``None``: no log-probabilities
    were asked for or sent)."""
    escalated: bool = False
    """The answer came from an escalation: a single call that re-asked a doubtful packed
    answer."""


@dataclass
class MethodResult:
    dataset: str
    method: str
    batch_size: int
    n: int
    correct: int
    parse_failures: int
    errors: int
    calls: int
    reasks: int
    input_tokens: int
    output_tokens: int
    estimated_tokens: bool
    wall_time_s: float
    items: list[ItemRecord] = field(default_factory=list, repr=False)
    reask_input_tokens: int = 0
    """The part of ``input_tokens`` spent by re-asks."""
    reask_output_tokens: int = 0
    bootstrap: dict[str, Any] | None = None
    """The bootstrap pool this method drew demonstrations from (``+bootstrap``)."""
    escalations: int = 0
    """Single calls that re-asked a doubtful packed answer (selective escalation)."""
    escalation_input_tokens: int = 0
    escalation_output_tokens: int = 0
    call_shared_tokens: list[float] = field(default_factory=list, repr=False)
    """Per model call, in the order they were sent: the input tokens of the prompt prefix it
    shares with an earlier call of this method (what a provider's prompt cache could serve;
    :meth:`cost` applies each provider's caching rules to it)."""
    call_reused_tokens: list[float] = field(default_factory=list, repr=False)
    """Per model call, in the same order: the input tokens of its prefix that a later call
    of this method shares (what it writes to a provider's cache; empty in records from
    before it was kept, see :func:`~langchain_autodemo.pricing.cache_write_tokens`)."""

    def cached_input_tokens(self, price: Price) -> int:
        """Input tokens a provider with ``price``'s caching rules would serve from cache."""
        return sum(price.cacheable(tokens) for tokens in self.call_shared_tokens)

    def cache_write_tokens(self, price: Price) -> int:
        """Input tokens written to that provider's cache: each shared prefix's first
        occurrence (and again where it left the cache)."""
        reused = self.call_reused_tokens or None
        return cache_write_tokens(self.call_shared_tokens, reused, price)

    def usd_per_1k_items(self, price: Price, *, cached: bool, tier: str | None = None) -> float:
        """What 1,000 items cost at ``price`` and ``tier`` (default: the price's), without
        or with prompt caching (cache hits at the cached price, writes at the write price)."""
        if not self.n:
            return 0.0
        hits = self.cached_input_tokens(price) if cached else 0
        writes = self.cache_write_tokens(price) if cached else 0
        usd = price.cost(
            self.input_tokens, self.output_tokens, cached_tokens=hits, written_tokens=writes,
            tier=tier,
        )  # fmt: skip
        return 1000 * usd / self.n

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def parse_failure_rate(self) -> float:
        return self.parse_failures / self.n if self.n else 0.0

    @property
    def input_tokens_per_item(self) -> float:
        return self.input_tokens / self.n if self.n else 0.0

    @property
    def output_tokens_per_item(self) -> float:
        return self.output_tokens / self.n if self.n else 0.0

    @property
    def calls_per_item(self) -> float:
        return self.calls / self.n if self.n else 0.0

    @property
    def items_per_s(self) -> float:
        return self.n / self.wall_time_s if self.wall_time_s > 0 else 0.0

    @property
    def tokens_per_item(self) -> float:
        return (self.input_tokens + self.output_tokens) / self.n if self.n else 0.0

    @property
    def reask_tokens_per_item(self) -> float:
        """Input and output tokens of the re-asks, per item (part of ``tokens_per_item``)."""
        return (self.reask_input_tokens + self.reask_output_tokens) / self.n if self.n else 0.0

    @property
    def retry_tokens_per_item(self) -> float:
        """Deprecated: :attr:`reask_tokens_per_item`."""
        warnings.warn(
            "MethodResult.retry_tokens_per_item is deprecated: use reask_tokens_per_item",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.reask_tokens_per_item

    def summary(self) -> dict[str, Any]:
        """Every metric and the diagnostics, without the per-item records."""
        data = {k: v for k, v in asdict(self).items() if k != "items"}
        if data["bootstrap"] is None:
            del data["bootstrap"]
        data.update(
            accuracy=self.accuracy,
            parse_failure_rate=self.parse_failure_rate,
            calls_per_item=self.calls_per_item,
            input_tokens_per_item=self.input_tokens_per_item,
            output_tokens_per_item=self.output_tokens_per_item,
            tokens_per_item=self.tokens_per_item,
            reask_tokens_per_item=self.reask_tokens_per_item,
            items_per_s=self.items_per_s,
            diagnostics=diagnostics(self),
        )
        return data


def run_method(
    llm: Any,
    dataset: Dataset,
    method: Method,
    batch_size: int,
    *,
    settings: Settings | None = None,
    selector: Any = None,
    max_concurrency: int = 1,
    on_item: Callable[[], None] | None = None,
    confidence: bool = False,
    runner_options: Mapping[str, Any] | None = None,
    **changes: Any,
) -> MethodResult:
    """Answer every example of ``dataset`` with one method at one batch size.

    ``settings`` (default :class:`~langchain_autodemo.settings.Settings`), with any of its
    fields given as keywords (``changes``: ``reasoning=False``, ``escalate=0.2``, the run's
    shared exemplars as ``demonstrations``), shape every call; the method sets the mode,
    the dataset's task the instructions (terse ones without reasoning).

    ``confidence`` asks the model for token log-probabilities, so each record holds its
    answer's confidence (what ``autodemo tune`` replays escalation on); ``runner_options``
    are further runner arguments (a user's ``output_parser``, ``input_template``).

    ``selector`` is the method's ``SimilarityBatchSelector`` (see ``Method.selector``);
    one instance can serve every batch size.
    """
    record = (settings or Settings()).settings.replace(**changes)
    record = record.replace(
        mode=method.mode,
        batch_size=batch_size,
        instructions=dataset.task.instructions_for(record.reasoning) or None,
    )
    runner = AutoDemoBatchRunnable.from_settings(
        llm,
        record,
        selector=selector,
        include_details=True,
        confidence=confidence or None,
        **dict(runner_options or {}),
    )
    texts = [example.asked for example in dataset.examples]
    results: dict[int, Any] = {}
    prompts = _CallPrompts()
    started = time.perf_counter()
    with track_usage() as usage:
        for index, result in runner.batch_as_completed(
            texts,
            {"max_concurrency": max_concurrency, "callbacks": [prompts]},
            return_exceptions=True,
        ):
            results[index] = result
            if on_item is not None:
                on_item()
    wall = time.perf_counter() - started
    call_failures = model_call_failures(results.values())
    if texts and len(call_failures) == len(texts):
        raise EvaluationError(
            f"{method.name}: every item's model call failed ({call_failures[-1]}); is the model "
            "running? Results of the methods before it are kept"
        )
    records = []
    for index, example in enumerate(dataset.examples):
        result = results.get(index)
        if not isinstance(result, ItemResult):
            error = str(result) if index in results else "no result returned"
            failed = result if isinstance(result, AutoDemoItemError) else None
            records.append(
                ItemRecord(
                    example.id, example.gold, None, None, False, False, error,
                    attempts=failed.attempts if failed else 0,
                    reasons=tuple(failed.reasons) if failed else (),
                )
            )  # fmt: skip
            continue
        answer = result.answer
        prediction = answer if isinstance(answer, str) else str(answer)
        score = dataset.task.score(
            prediction, example.gold, answer=answer, expected=example.expected
        )
        records.append(
            ItemRecord(
                example.id, example.gold, prediction, score.extracted, score.correct,
                score.parsed, call_id=result.call_id, position=result.position,
                call_items=result.call_items, attempts=result.attempts,
                reasons=tuple(result.reasons), restated_question=result.restated_question,
                raw_answer=result.raw_answer, input_tokens=result.input_tokens,
                output_tokens=result.output_tokens, confidence=result.confidence,
                escalated=result.escalated,
            )
        )  # fmt: skip
    return MethodResult(
        dataset=dataset.name,
        method=method.name,
        batch_size=batch_size if method.batched else 1,
        n=len(records),
        correct=sum(r.correct for r in records),
        parse_failures=sum(not r.parsed for r in records),
        errors=sum(r.error is not None for r in records),
        calls=usage.calls,
        reasks=usage.reasks,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        estimated_tokens=bool(usage.estimated_tokens),
        wall_time_s=wall,
        items=records,
        reask_input_tokens=usage.reask_input_tokens,
        reask_output_tokens=usage.reask_output_tokens,
        escalations=usage.escalations,
        escalation_input_tokens=usage.escalation_input_tokens,
        escalation_output_tokens=usage.escalation_output_tokens,
        call_shared_tokens=prompts.shared_tokens(usage.input_tokens),
        call_reused_tokens=prompts.reused_tokens(usage.input_tokens),
    )


# Field names of results written before the re-ask vocabulary (issue 25).
_LEGACY_FIELDS = {
    "retries": "reasks",
    "retry_input_tokens": "reask_input_tokens",
    "retry_output_tokens": "reask_output_tokens",
    "retry_tokens_per_item": "reask_tokens_per_item",  # a derived metric (summary())
}


def stored_fields(record: dict[str, Any]) -> dict[str, Any]:
    """A stored :class:`MethodResult` record (results.json, a tune's measurement log)
    with its older field names renamed to today's."""
    return {_LEGACY_FIELDS.get(key, key): value for key, value in record.items()}


class _CallPrompts(BaseCallbackHandler):
    """Records the prompt of every model call, in the order they were sent."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self._lock = threading.Lock()

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        text = prompt_text(messages[0])
        with self._lock:
            self.prompts.append(text)

    def shared_tokens(self, input_tokens: int) -> list[float]:
        """Per call, the tokens of the prefix it shares with an earlier call: characters
        scaled to the input tokens the calls were counted as."""
        per_call = spread_tokens(self.prompts, input_tokens)
        return [round(tokens, 1) for tokens in shared_prefix_tokens(self.prompts, per_call)]

    def reused_tokens(self, input_tokens: int) -> list[float]:
        """Per call, the tokens of its prefix a later call shares (what it writes to a
        provider's cache), scaled as :meth:`shared_tokens`."""
        per_call = spread_tokens(self.prompts, input_tokens)
        return [round(tokens, 1) for tokens in reused_prefix_tokens(self.prompts, per_call)]


def evaluate(
    llm: Any,
    dataset: Dataset,
    methods: Sequence[Method],
    batch_sizes: Sequence[int],
    *,
    embeddings: Any = None,
    max_concurrency: int = 1,
    demos_per_batch: int = 4,
    bootstrap: BootstrapSettings | None = None,
    on_start: Callable[[Method, int, int], None] | None = None,
    on_item: Callable[[], None] | None = None,
    on_result: Callable[[MethodResult], None] | None = None,
    on_bootstrap_start: Callable[[int], None] | None = None,
    on_bootstrap: Callable[[BootstrapPool], None] | None = None,
    done: Sequence[MethodResult] = (),
    settings: Settings | None = None,
    **changes: Any,
) -> list[MethodResult]:
    """Every method at every batch size (``single`` once: batch size does not apply).

    ``settings`` and ``changes`` are :func:`run_method`'s: what every method is asked
    with (the shared exemplars of a k-shot run, :func:`shot_exemplars`, as
    ``demonstrations``; ``escalate``, the packed methods' selective escalation share).

    Packed methods record each answer's confidence (token log-probabilities, where the
    model sends them).

    A (method, batch size) that ``done`` already holds is not run again: its earlier
    result takes its place in the returned list (``on_start``/``on_result`` are not
    called for it).

    The ``+bootstrap`` methods share one bootstrap pool, built (or reused from
    ``bootstrap.store``) before the first of them runs; ``on_bootstrap_start(n)`` and
    ``on_item`` report the build's progress, ``on_bootstrap(pool)`` its outcome.
    """
    pool: list[tuple[str, str]] | None = None
    solved: BootstrapPool | None = None
    results: list[MethodResult] = []
    earlier = {(r.method, r.batch_size): r for r in done}
    for method in methods:
        sizes = method.sizes(batch_sizes)
        if all((method.name, size) in earlier for size in sizes):
            results.extend(earlier[(method.name, size)] for size in sizes)
            continue
        if method.needs_pool and pool is None:
            pool = dataset.demo_pool() if dataset.demo_pool else []
        if method.bootstrap and solved is None:
            solved = bootstrap_pool(
                llm, dataset, bootstrap, embeddings=embeddings, max_concurrency=max_concurrency,
                on_start=on_bootstrap_start, on_item=on_item,
            )  # fmt: skip
            if on_bootstrap is not None:
                on_bootstrap(solved)
        selector = method.selector(
            pool, embeddings=embeddings, demos_per_batch=demos_per_batch,
            demo_collection=solved.collection if method.bootstrap and solved else None,
        )  # fmt: skip
        for batch_size in sizes:
            if (method.name, batch_size) in earlier:
                results.append(earlier[(method.name, batch_size)])
                continue
            if on_start is not None:
                on_start(method, batch_size, len(dataset))
            result = run_method(
                llm, dataset, method, batch_size, selector=selector,
                max_concurrency=max_concurrency, on_item=on_item, settings=settings,
                confidence=method.batched, **changes,
            )  # fmt: skip
            if method.bootstrap and solved is not None:
                result.bootstrap = solved.summary()
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def shot_exemplars(dataset: Dataset, shots: int) -> list[tuple[str, str]]:
    """The first ``shots`` solved examples of the dataset's training pool, in the
    package's answer layout: never one of the evaluated items (a pool question equal to
    an evaluated one is skipped)."""
    if shots <= 0:
        return []
    if dataset.demo_pool is None:
        raise EvaluationError(f"{dataset.name} has no training pool to draw {shots} shots from")
    evaluated = {example.text.strip() for example in dataset.examples}
    pool = [pair for pair in dataset.demo_pool() if pair[0].strip() not in evaluated]
    if len(pool) < shots:
        raise EvaluationError(f"{dataset.name}'s training pool has only {len(pool)} examples")
    return pool[:shots]
