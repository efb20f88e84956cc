"""A user's few-shot chat prompt in a packed call: plain turns or solved demonstrations.

Run: ``python -m benchmarks.few_shot_renderings [--model SPEC] [--items 16] [--resume]``
(default: the local Qwen model on a llama.cpp server; about 30 minutes on 2 cores).
Writes ``benchmarks/results/few_shot_renderings.json`` after every measurement, so an
interrupted run goes on with ``--resume``.

What a user writes is a ``FewShotChatMessagePromptTemplate`` between a system message and
the question, piped into the runner::

    ChatPromptTemplate([("system", INSTRUCTIONS), few_shot, ("human", "{question}")]) | runner

On GSM8K (8 worked solutions from the training split, reasoning on) and RTE (6 solved
pairs, final answer only), for the first ``--items`` test items, it measures

- ``single``: one call per item, the exemplars as (human, AI) turns (what they are);
- ``demonstrations``: ``batch`` and ``auto_demo`` at N=8 as the package sends them now,
  the exemplars lifted out of the turns into the call's solved ``Q[i]/A[i]``
  demonstrations (:func:`langchain_autodemo.prompts.few_shot_turns`); the same messages
  as the runner's own ``demonstrations=`` (tests/unit/test_few_shot_turns.py checks
  that);
- ``turns``: the same two methods with the exemplars left as plain chat turns before the
  packed question list, which is what the package sent before the lifting: reproduced
  here by replacing ``few_shot_turns`` with a function that lifts nothing.

Each row: accuracy, explicit errors, calls and re-asks, tokens per item (the server's
tokenizer), USD per 1,000 items at gpt-4o-mini prices without and with prompt caching
(the prefix each call shares with an earlier one, by the provider's caching rules), and
the cost against single with caching.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from unittest import mock

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.prompts import ChatPromptTemplate, FewShotChatMessagePromptTemplate

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoError, track_usage
from langchain_autodemo.engine import ItemResult
from langchain_autodemo.evaluation.datasets import load_dataset
from langchain_autodemo.evaluation.harness import shot_exemplars
from langchain_autodemo.models import open_model
from langchain_autodemo.pricing import (
    PriceTable,
    cached_prefix_tokens,
    prompt_text,
    spread_tokens,
)

RESULTS = Path(__file__).parent / "results" / "few_shot_renderings.json"
PRICE_MODEL = "gpt-4o-mini"
BATCH_SIZE = 8
# (dataset, shots, reasoning): GSM8K's usual 8-shot chain of thought; RTE 6-shot, terse.
TASKS = (("gsm8k", 8, True), ("rte", 6, False))
RUNS = (("single", "single"), ("batch", "demonstrations"), ("auto_demo", "demonstrations"),
        ("batch", "turns"), ("auto_demo", "turns"))  # fmt: skip


class _Prompts(BaseCallbackHandler):
    """The text of every model call's prompt, in the order they were sent."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.roles: list[list[str]] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.prompts.append(prompt_text(messages[0]))
        self.roles.append([m.type for m in messages[0]])


def user_chain(instructions: str, exemplars: list[tuple[str, str]], runner: Any) -> Any:
    """The chain a user writes: their system prompt, their few-shot turns, the question."""
    few_shot = FewShotChatMessagePromptTemplate(
        examples=[{"question": q, "answer": a} for q, a in exemplars],
        example_prompt=ChatPromptTemplate.from_messages(
            [("human", "{question}"), ("ai", "{answer}")]
        ),
    )
    prompt = ChatPromptTemplate.from_messages(
        [("system", instructions), few_shot, ("human", "{question}")]
    )
    return prompt | runner


def measure(llm: Any, dataset_name: str, shots: int, reasoning: bool, method: str,
            rendering: str, items: int) -> dict[str, Any]:  # fmt: skip
    dataset = load_dataset(dataset_name, limit=items)
    exemplars = shot_exemplars(dataset, shots)
    runner = AutoDemoBatchRunnable(
        llm,
        batch_size=1 if method == "single" else BATCH_SIZE,
        mode=method,
        reasoning=reasoning,
        include_details=True,
    )
    chain = user_chain(dataset.task.instructions, exemplars, runner)
    prompts = _Prompts()
    rendered = (
        mock.patch("langchain_autodemo.runnable.few_shot_turns", lambda c: (tuple(c), ()))
        if rendering == "turns"
        else nullcontext()
    )
    started = time.perf_counter()
    with track_usage() as usage, rendered:
        results = chain.batch(
            [{"question": e.text} for e in dataset.examples],
            {"callbacks": [prompts], "max_concurrency": 1},
            return_exceptions=True,
        )
    wall = time.perf_counter() - started
    correct = errors = 0
    records = []
    for example, result in zip(dataset.examples, results, strict=True):
        if isinstance(result, ItemResult):
            score = dataset.task.score(str(result.answer), example.gold)
            correct += score.correct
            records.append({"id": example.id, "gold": example.gold, "answer": str(result.answer),
                            "correct": score.correct, "attempts": result.attempts})  # fmt: skip
        else:
            errors += 1
            kind = type(result).__name__ if isinstance(result, AutoDemoError) else "unexpected"
            records.append({"id": example.id, "gold": example.gold, "error": f"{kind}: {result}"})
    n = len(dataset.examples)
    price = PriceTable.default().price(PRICE_MODEL)
    call_tokens = spread_tokens(prompts.prompts, usage.input_tokens)
    cached = sum(cached_prefix_tokens(prompts.prompts, call_tokens, price))
    inputs, outputs = usage.input_tokens, usage.output_tokens
    return {
        "dataset": dataset_name,
        "shots": shots,
        "reasoning": reasoning,
        "method": method,
        "rendering": rendering,
        "batch_size": 1 if method == "single" else BATCH_SIZE,
        "n": n,
        "correct": correct,
        "errors": errors,
        "calls": usage.calls,
        "reasks": usage.reasks,
        "input_tokens_per_item": round(usage.input_tokens / n, 1),
        "output_tokens_per_item": round(usage.output_tokens / n, 1),
        "estimated_tokens": usage.estimated_tokens,
        "usd_per_1k_items": round(1000 * price.cost(inputs, outputs) / n, 5),
        "usd_per_1k_items_cached": round(
            1000 * price.cost(inputs, outputs, cached_tokens=cached) / n, 5
        ),
        "wall_s": round(wall, 1),
        "first_call_roles": prompts.roles[0] if prompts.roles else [],
        "items": records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a model spec (default: local Qwen)")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--resume", action="store_true", help="keep the rows already written")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    if args.resume and args.out.is_file():
        rows = json.loads(args.out.read_text())["rows"]
    done = {(r["dataset"], r["method"], r["rendering"]) for r in rows}
    with open_model(args.model, max_tokens=4000) as model:
        for dataset_name, shots, reasoning in TASKS:
            for method, rendering in RUNS:
                if (dataset_name, method, rendering) in done:
                    continue
                row = measure(model.llm, dataset_name, shots, reasoning, method, rendering,
                              args.items)  # fmt: skip
                rows.append(row)
                _write(args.out, model.description, args.items, rows)
                print(_line(row, rows), flush=True)


def _write(out: Path, model: str, items: int, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        single = next((r for r in rows if r["dataset"] == row["dataset"]
                       and r["method"] == "single"), None)  # fmt: skip
        base = single and single["usd_per_1k_items_cached"]
        ratio = row["usd_per_1k_items_cached"] / base if base else None
        row["cost_vs_single_cached"] = None if ratio is None else round(ratio, 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": "python -m benchmarks.few_shot_renderings",
        "model": model,
        "items": items,
        "price_model": PRICE_MODEL,
        "rows": rows,
    }, indent=2) + "\n")  # fmt: skip


def _line(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    return (
        f"{row['dataset']:6} {row['method']:9} {row['rendering']:14} "
        f"{row['correct']:2}/{row['n']} errors {row['errors']} calls {row['calls']} "
        f"re-asks {row['reasks']} tokens/item {row['input_tokens_per_item']:.0f}+"
        f"{row['output_tokens_per_item']:.0f} ${row['usd_per_1k_items_cached']:.4f}/1k cached "
        f"({row['cost_vs_single_cached']}x single) {row['wall_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
