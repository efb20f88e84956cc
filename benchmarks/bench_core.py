"""Core benchmarks: parser throughput (whole vs streamed) and the runnable's own overhead.

Run: ``python -m benchmarks.bench_core`` (or ``make bench`` for every benchmark).
Prints a table and writes ``benchmarks/results/core.json``.

Goals (issue 2): streamed parsing within 3x of whole-text parsing (no re-scan of the
buffer per chunk), and under 1 ms of library time per item through ``batch()``.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.parser import CompletionScanner

RESULTS = Path(__file__).parent / "results"


def synthetic_completion(target_bytes: int) -> tuple[str, int]:
    blocks, size, i = [], 0, 0
    while size < target_bytes:
        i += 1
        block = (
            f"Q[{i}]: A farmer has {i} cows and buys {i + 3} more. How many cows now?\n"
            f"A[{i}]: He starts with {i} cows and adds {i + 3}, so {i} + {i + 3} = {2 * i + 3}.\n"
            f"The answer is {2 * i + 3}.\n\n"
        )
        blocks.append(block)
        size += len(block)
    return "".join(blocks), i


def best_of(repeats: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_parser(megabytes: int = 10, chunk: int = 4) -> dict[str, Any]:
    text, items = synthetic_completion(megabytes * 1_000_000)
    chunks = [text[i : i + chunk] for i in range(0, len(text), chunk)]

    def whole() -> None:
        scanner = CompletionScanner()
        assert len(scanner.feed(text)) + len(scanner.finish()) == items

    def streamed() -> None:
        scanner = CompletionScanner()
        found = 0
        for piece in chunks:
            found += len(scanner.feed(piece))
        assert found + len(scanner.finish()) == items

    mb = len(text) / 1e6
    whole_s, streamed_s = best_of(3, whole), best_of(3, streamed)
    return {
        "megabytes": round(mb, 2),
        "items": items,
        "chunk_chars": chunk,
        "whole_s": round(whole_s, 3),
        "whole_mb_per_s": round(mb / whole_s, 1),
        "streamed_s": round(streamed_s, 3),
        "streamed_mb_per_s": round(mb / streamed_s, 1),
        "streamed_over_whole": round(streamed_s / whole_s, 2),
        "goal_streamed_within_3x": streamed_s <= 3 * whole_s,
    }


class InstantModel(BaseChatModel):
    """A zero-latency model that answers every packed question in one chunk."""

    @property
    def _llm_type(self) -> str:
        return "instant"

    @staticmethod
    def _answer(messages: list[BaseMessage]) -> str:
        prompt = str([m for m in messages if isinstance(m, HumanMessage)][-1].content)
        out = []
        for line in prompt.splitlines():
            marker, _, question = line.partition(" ")
            out.append(f"{marker} {question}\nA{marker[1:]} Done.\nThe answer is 1.\n")
        return "\n".join(out)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(content=self._answer(messages)))]
        )

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content=self._answer(messages)))


def bench_runnable(items: int = 10_000, batch_size: int = 16) -> dict[str, Any]:
    questions = [f"Question number {i}: how many sheep are in pen {i}?" for i in range(items)]
    runner = AutoDemoBatchRunnable(InstantModel(), batch_size=batch_size)
    model_only = InstantModel()
    sample = runner.batch(questions[:batch_size])
    assert sample == ["1"] * batch_size

    def library_and_model() -> None:
        assert len(runner.batch(questions, config={"max_concurrency": 1})) == items

    def model_alone() -> None:  # what the fake model itself costs, to subtract
        for start in range(0, items, batch_size):
            prompt = "\n".join(
                f"Q[{j + 1}]: {q}" for j, q in enumerate(questions[start : start + batch_size])
            )
            for _ in model_only.stream([HumanMessage(content=prompt)]):
                pass

    total = best_of(2, library_and_model)
    model = best_of(2, model_alone)
    per_item_us = (total - model) / items * 1e6
    return {
        "items": items,
        "batch_size": batch_size,
        "total_s": round(total, 3),
        "fake_model_s": round(model, 3),
        "library_us_per_item": round(per_item_us, 1),
        "goal_under_1ms_per_item": per_item_us < 1000,
    }


def main(out_dir: Path = RESULTS) -> dict[str, Any]:
    parser = bench_parser()
    runnable = bench_runnable()
    print("\nParser (10 MB well-formed completion)")
    print("| mode | seconds | MB/s |\n|---|---|---|")
    print(f"| whole text | {parser['whole_s']} | {parser['whole_mb_per_s']} |")
    print(
        f"| streamed, {parser['chunk_chars']}-char chunks | {parser['streamed_s']} | {parser['streamed_mb_per_s']} |"  # noqa: E501
    )
    print(f"streamed / whole = {parser['streamed_over_whole']}x (goal <= 3x)")
    print("\nRunnable overhead (zero-latency fake model)")
    print(
        "| items | batch size | total s | fake model s | library us/item |\n|---|---|---|---|---|"
    )
    print(
        f"| {runnable['items']} | {runnable['batch_size']} | {runnable['total_s']} | "
        f"{runnable['fake_model_s']} | {runnable['library_us_per_item']} |"
    )
    result = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "parser": parser,
        "runnable": runnable,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "core.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
