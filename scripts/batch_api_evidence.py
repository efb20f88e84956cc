"""Online vs Batch API on a local model: same answers, same tokens, and what they would cost.

For each method (``single``: one call per item; ``auto_demo``: packed) the same dataset
items are answered twice with one ``ChatOpenAI`` on a local llama.cpp server
(temperature 0, not streamed, so the server reports token usage on both paths):

- online: ``runner.batch(items, max_concurrency=1)``;
- Batch API: ``BatchApiJob`` through the Batch API emulator in front of the same server.

It prints a Markdown table (calls, tokens, accuracy, answers identical to online, and the
cost of those tokens at a price list: batch prices for the Batch API rows) and writes the
JSON to ``--out``. Examples::

    python scripts/batch_api_evidence.py --model smollm2 --dataset gsm8k --limit 8
    python scripts/batch_api_evidence.py --model qwen2.5-coder-1.5b --dataset gsm8k --limit 64 \\
        --batch-size 8 --out docs/results/batch_api/gsm8k.json
    python scripts/batch_api_evidence.py --model qwen2.5-coder-1.5b --dataset rte --limit 64 \\
        --batch-size 8 --out docs/results/batch_api/rte.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from langchain_autodemo import AutoDemoBatchRunnable, track_usage
from langchain_autodemo.batch_api import BatchApiJob, OpenAIBatchProvider, PriceTable
from langchain_autodemo.batch_api.emulator import running_emulator
from langchain_autodemo.evaluation.datasets import load_dataset
from langchain_autodemo.llamacpp import LlamaCppServer


def _score(dataset: Any, results: list[Any]) -> tuple[int, int]:
    correct = parsed = 0
    for example, result in zip(dataset.examples, results, strict=True):
        if isinstance(result, BaseException):
            continue
        score = dataset.task.score(str(result), example.gold)
        correct += score.correct
        parsed += score.parsed
    return correct, len(results) - parsed


def _comparable(result: Any) -> Any:
    return f"error: {getattr(result, 'reason', result)}" if isinstance(result, BaseException) else result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="llama.cpp model key or GGUF path")
    parser.add_argument("--dataset", default="gsm8k")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=1024, help="completion limit per call")
    parser.add_argument("--methods", default="single,auto_demo")
    parser.add_argument("--price-model", default="gpt-4o-mini")
    parser.add_argument("--prices", type=Path, help="JSON price table (overrides the built-in)")
    parser.add_argument("--out", type=Path, help="write the JSON here")
    args = parser.parse_args(argv)

    table = PriceTable.from_file(args.prices) if args.prices else PriceTable.default()
    price = table.price(args.price_model)
    data = load_dataset(args.dataset, limit=args.limit)
    questions = [example.text for example in data.examples]
    rows: list[dict[str, Any]] = []
    with LlamaCppServer(args.model, n_ctx=8192, max_tokens=args.max_tokens) as server:
        with running_emulator(server.base_url) as batch_url:
            # llama-cpp-python ignores max_completion_tokens (what ChatOpenAI sends for
            # max_tokens); extra_body's max_tokens reaches it on both paths alike.
            llm = server.chat_model(
                streaming=False, disable_streaming=True, extra_body={"max_tokens": args.max_tokens}
            )
            provider = OpenAIBatchProvider(
                llm, client=llm.root_client.with_options(base_url=batch_url)
            )
            for method in args.methods.split(","):
                runner = AutoDemoBatchRunnable(
                    llm,
                    instructions=data.task.instructions,
                    batch_size=args.batch_size if method != "single" else 1,
                    mode=method,
                    reasoning=True,
                    max_output_tokens=args.max_tokens,
                )
                started = time.perf_counter()
                with track_usage() as usage:
                    online = runner.batch(questions, {"max_concurrency": 1}, return_exceptions=True)
                online_wall = time.perf_counter() - started
                started = time.perf_counter()
                job = BatchApiJob(runner, questions, provider=provider)
                batched = job.wait(poll_interval=0.5, return_exceptions=True)
                batch_wall = time.perf_counter() - started
                same = sum(
                    _comparable(a) == _comparable(b) for a, b in zip(online, batched, strict=True)
                )
                for via, results, stats, wall in (
                    ("online", online, usage, online_wall),
                    ("batch-api", batched, job.usage, batch_wall),
                ):
                    correct, parse_failures = _score(data, results)
                    usd = price.cost(stats.input_tokens, stats.output_tokens,
                                     batch=via == "batch-api")  # fmt: skip
                    rows.append(
                        {
                            "method": method,
                            "via": via,
                            "items": len(questions),
                            "calls": stats.calls,
                            "retries": stats.retries,
                            "input_tokens": stats.input_tokens,
                            "output_tokens": stats.output_tokens,
                            "estimated_tokens": stats.estimated_tokens,
                            "correct": correct,
                            "parse_failures": parse_failures,
                            "same_answers_as_online": same,
                            "usd": usd,
                            "usd_per_1000_items": 1000 * usd / len(questions),
                            "wall_s": round(wall, 1),
                        }
                    )
                print(f"{method}: {same}/{len(questions)} answers identical online and batch",
                      file=sys.stderr, flush=True)  # fmt: skip
    report = {
        "command": "python scripts/batch_api_evidence.py " + " ".join(argv or sys.argv[1:]),
        "model": server.model_path.name,
        "dataset": data.name,
        "items": len(questions),
        "batch_size": args.batch_size,
        "price_model": args.price_model,
        "price_per_million": {"input": price.input, "output": price.output,
                              "batch_discount": price.batch_discount},  # fmt: skip
        "rows": rows,
    }
    lines = [
        f"| method | via | calls | in tok | out tok | correct | same as online | "
        f"USD ({args.price_model}) | USD / 1000 items |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['via']} | {row['calls']} | {row['input_tokens']:,} | "
            f"{row['output_tokens']:,} | {row['correct']}/{row['items']} | "
            f"{row['same_answers_as_online']}/{row['items']} | {row['usd']:.5f} | "
            f"{row['usd_per_1000_items']:.4f} |"
        )
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
