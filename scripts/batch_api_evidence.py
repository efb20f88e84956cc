"""Online vs Batch API on a local model: same answers, same tokens, and what they would cost.

For each method (``single``: one call per item; ``auto_demo``: packed) the same dataset
items are answered twice with one ``ChatOpenAI`` on a local llama.cpp server
(temperature 0, not streamed, so the server reports token usage on both paths):

- online: ``runner.batch(items, max_concurrency=1)``;
- Batch API: ``BatchApiJob`` through the Batch API emulator in front of the same server.

It prints a Markdown table (calls, tokens, accuracy, answers identical to online, and the
cost of those tokens at a price list: batch prices for the Batch API rows) and writes the
JSON to ``--out`` after each method. Examples::

    python scripts/batch_api_evidence.py --model smollm2 --dataset gsm8k --limit 4 \\
        --batch-size 4 --max-tokens 512 --answer-tokens 96
    python scripts/batch_api_evidence.py --model qwen2.5-coder-1.5b --dataset gsm8k --limit 64 \\
        --batch-size 8 --out docs/results/batch_api/gsm8k.json
    python scripts/batch_api_evidence.py --model qwen2.5-coder-1.5b --dataset rte --limit 64 \\
        --batch-size 8 --out docs/results/batch_api/rte.json

``--from-results RESULTS.json`` prices the rows of an ``autodemo eval`` run instead (no
model is started): each method online, and the same tokens at batch prices, which is
what the Batch API path costs since it sends the same requests and gets the same
completions (``tests/integration/test_batch_api_real_model.py`` checks that)::

    python scripts/batch_api_evidence.py --from-results docs/results/gsm8k/results.json
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
    return (
        f"error: {getattr(result, 'reason', result)}"
        if isinstance(result, BaseException)
        else result
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="llama.cpp model key or GGUF path")
    parser.add_argument("--dataset", default="gsm8k")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=4096, help="completion limit per call")
    parser.add_argument("--methods", default="single,auto_demo")
    parser.add_argument("--price-model", default="gpt-4o-mini")
    parser.add_argument("--prices", type=Path, help="JSON price table (overrides the built-in)")
    parser.add_argument(
        "--answer-tokens",
        type=int,
        default=256,
        help="expected tokens per answer (packs more items per call when small)",
    )
    parser.add_argument("--out", type=Path, help="write the JSON here")
    parser.add_argument("--from-results", type=Path, help="price an `autodemo eval` results.json")
    args = parser.parse_args(argv)

    table = PriceTable.from_file(args.prices) if args.prices else PriceTable.default()
    price = table.price(args.price_model)
    if args.from_results:
        return _price_results(args, price)
    data = load_dataset(args.dataset, limit=args.limit)
    questions = [example.text for example in data.examples]
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    server = LlamaCppServer(args.model, n_ctx=8192, max_tokens=args.max_tokens)
    with server, running_emulator(server.base_url) as batch_url:
        llm = server.chat_model(streaming=False, disable_streaming=True)
        provider = OpenAIBatchProvider(llm, client=llm.root_client.with_options(base_url=batch_url))
        for method in args.methods.split(","):
            runner = AutoDemoBatchRunnable(
                llm,
                instructions=data.task.instructions,
                batch_size=args.batch_size if method != "single" else 1,
                mode=method,
                reasoning=True,
                max_output_tokens=args.max_tokens,
                answer_tokens=args.answer_tokens,
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
                        "reasks": stats.reasks,
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
                "command": "python scripts/batch_api_evidence.py "
                + " ".join(argv if argv is not None else sys.argv[1:]),
                "model": server.model_path.name,
                "dataset": data.name,
                "items": len(questions),
                "batch_size": args.batch_size,
                "price_model": args.price_model,
                "price_per_million": vars(price),
                "rows": rows,
            }
            _write(args.out, report)  # what was measured survives an interruption
    _print_table(rows, args.price_model)
    return report


def _write(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


def _print_table(rows: list[dict[str, Any]], price_model: str) -> None:
    lines = [
        f"| method | via | calls | in tok/item | out tok/item | correct | same as online | "
        f"USD / 1000 items ({price_model}) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        n = row["items"]
        same = row.get("same_answers_as_online")
        lines.append(
            f"| {row['method']} | {row['via']} | {row['calls']} | {row['input_tokens'] / n:.0f} | "
            f"{row['output_tokens'] / n:.0f} | {row['correct']}/{n} | "
            f"{'-' if same is None else f'{same}/{n}'} | {row['usd_per_1000_items']:.4f} |"
        )
    print("\n".join(lines))


def _price_results(args: argparse.Namespace, price: Any) -> dict[str, Any]:
    data = json.loads(args.from_results.read_text())
    rows = []
    for result in data["results"]:
        for via in ("online", "batch-api"):
            usd = price.cost(result["input_tokens"], result["output_tokens"],
                             batch=via == "batch-api")  # fmt: skip
            rows.append(
                {
                    "method": result["method"],
                    "via": via,
                    "items": result["n"],
                    "calls": result["calls"],
                    "input_tokens": result["input_tokens"],
                    "output_tokens": result["output_tokens"],
                    "estimated_tokens": result["estimated_tokens"],
                    "correct": result["correct"],
                    "usd": usd,
                    "usd_per_1000_items": 1000 * usd / result["n"],
                }
            )
    report = {
        "command": "python scripts/batch_api_evidence.py "
        + " ".join(str(a) for a in (sys.argv[1:])),
        "from_results": str(args.from_results),
        "model": data["meta"].get("model"),
        "price_model": args.price_model,
        "price_per_million": vars(price),
        "rows": rows,
    }
    _print_table(rows, args.price_model)
    _write(args.out, report)
    return report


if __name__ == "__main__":
    main()
