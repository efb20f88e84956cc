"""Run methods x batch sizes over a dataset on one model and score every answer."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_autodemo.evaluation.datasets import Dataset
from langchain_autodemo.evaluation.methods import Method

__all__ = ["ItemRecord", "MethodResult", "evaluate", "run_method"]


@dataclass
class ItemRecord:
    id: str
    gold: str
    prediction: str | None
    extracted: str | None
    correct: bool
    parsed: bool
    error: str | None = None


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
    retries: int
    input_tokens: int
    output_tokens: int
    estimated_tokens: bool
    wall_time_s: float
    items: list[ItemRecord] = field(default_factory=list, repr=False)

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

    def summary(self) -> dict[str, Any]:
        """Every metric, without the per-item records."""
        data = {k: v for k, v in asdict(self).items() if k != "items"}
        data.update(
            accuracy=self.accuracy,
            parse_failure_rate=self.parse_failure_rate,
            calls_per_item=self.calls_per_item,
            input_tokens_per_item=self.input_tokens_per_item,
            output_tokens_per_item=self.output_tokens_per_item,
            items_per_s=self.items_per_s,
        )
        return data


def run_method(
    llm: Any,
    dataset: Dataset,
    method: Method,
    batch_size: int,
    *,
    selector: Any = None,
    max_concurrency: int = 1,
    on_item: Callable[[], None] | None = None,
) -> MethodResult:
    """Answer every example of ``dataset`` with one method at one batch size.

    ``selector`` is the method's ``SimilarityBatchSelector`` (see ``Method.selector``);
    one instance can serve every batch size.
    """
    from langchain_autodemo import AutoDemoBatchRunnable, track_usage

    runner = AutoDemoBatchRunnable(
        llm,
        instructions=dataset.task.instructions,
        batch_size=batch_size if method.batched else 1,
        mode=method.mode,
        selector=selector,
        reasoning=True,
    )
    texts = [example.text for example in dataset.examples]
    results: dict[int, Any] = {}
    started = time.perf_counter()
    with track_usage() as usage:
        for index, result in runner.batch_as_completed(
            texts, {"max_concurrency": max_concurrency}, return_exceptions=True
        ):
            results[index] = result
            if on_item is not None:
                on_item()
    wall = time.perf_counter() - started
    records = []
    for index, example in enumerate(dataset.examples):
        result = results.get(index)
        if isinstance(result, BaseException) or index not in results:
            error = str(result) if index in results else "no result returned"
            records.append(ItemRecord(example.id, example.gold, None, None, False, False, error))
            continue
        prediction = result if isinstance(result, str) else str(result)
        score = dataset.task.score(prediction, example.gold)
        records.append(
            ItemRecord(example.id, example.gold, prediction, score.extracted, score.correct,
                       score.parsed)
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
        retries=usage.retries,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        estimated_tokens=bool(usage.estimated_tokens),
        wall_time_s=wall,
        items=records,
    )


def evaluate(
    llm: Any,
    dataset: Dataset,
    methods: Sequence[Method],
    batch_sizes: Sequence[int],
    *,
    embeddings: Any = None,
    max_concurrency: int = 1,
    on_start: Callable[[Method, int, int], None] | None = None,
    on_item: Callable[[], None] | None = None,
    on_result: Callable[[MethodResult], None] | None = None,
) -> list[MethodResult]:
    """Every method at every batch size (``single`` once: batch size does not apply)."""
    pool: list[tuple[str, str]] | None = None
    results = []
    for method in methods:
        if method.needs_pool and pool is None:
            pool = dataset.demo_pool() if dataset.demo_pool else []
        selector = method.selector(pool, embeddings=embeddings)
        for batch_size in batch_sizes if method.batched else [1]:
            if on_start is not None:
                on_start(method, batch_size, len(dataset))
            result = run_method(
                llm, dataset, method, batch_size, selector=selector,
                max_concurrency=max_concurrency, on_item=on_item,
            )  # fmt: skip
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results
