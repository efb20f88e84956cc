"""Structured output on a real model: how many items parse as a pydantic object, per mode.

Run: ``python -m benchmarks.structured_output [--model SPEC] [--items 16] [--resume]``
(default: the local Qwen model on a llama.cpp server; a few minutes on 2 cores). Writes
``benchmarks/results/structured_output.json`` after every mode, so an interrupted run goes
on with ``--resume``.

The task: SST-2 sentences, each answered as ``{"label": "positive" | "negative",
"evidence": "<the words that decide it>"}`` through ``output_parser=Review`` (a pydantic
model: the runner adds LangChain's format instructions to the prompt), final answers only,
in ``single``, ``batch`` and ``auto_demo`` at N=8. Models write such answers fenced
(```json ... ```), over several lines, or after "The answer is": every one of those layouts
parses (tests/unit/test_structured_output.py). Each row: items parsed on their first
attempt, items parsed in the end (after re-asks), explicit errors, labels right, calls and
re-asks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoError, track_usage
from langchain_autodemo.engine import ItemResult
from langchain_autodemo.evaluation.datasets import load_dataset
from langchain_autodemo.models import open_model

RESULTS = Path(__file__).parent / "results" / "structured_output.json"
MODES = ("single", "batch", "auto_demo")
BATCH_SIZE = 8


class Review(BaseModel):
    """One review's verdict."""

    label: Literal["positive", "negative"]
    evidence: str


def measure(llm: Any, mode: str, items: int) -> dict[str, Any]:
    data = load_dataset("sst2", limit=items)
    runner = AutoDemoBatchRunnable(
        llm,
        instructions="Classify the sentiment of each movie review sentence.",
        mode=mode,
        batch_size=BATCH_SIZE,
        reasoning=False,
        output_parser=Review,
        include_details=True,
    )
    started = time.perf_counter()
    with track_usage() as usage:
        results = runner.batch([e.text for e in data.examples], return_exceptions=True)
    parsed = [r for r in results if isinstance(r, ItemResult)]
    return {
        "mode": mode,
        "batch_size": 1 if mode == "single" else BATCH_SIZE,
        "items": len(results),
        "parsed_first_attempt": sum(r.attempts == 1 for r in parsed),
        "parsed": len(parsed),
        "errors": sum(isinstance(r, AutoDemoError) for r in results),
        "labels_right": sum(
            isinstance(r, ItemResult) and r.answer.label == e.gold
            for r, e in zip(results, data.examples, strict=True)
        ),
        "calls": usage.calls,
        "reasks": usage.reasks,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model spec (default: local Qwen)")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--resume", action="store_true", help="keep the rows already written")
    args = parser.parse_args()
    report: dict[str, Any] = {"rows": []}
    if args.resume and args.out.is_file():
        report = json.loads(args.out.read_text())
    done = {row["mode"] for row in report["rows"]}
    with open_model(args.model, max_tokens=1500) as opened:
        report["model"] = opened.description
        report["command"] = f"python -m benchmarks.structured_output --items {args.items}" + (
            f" --model {args.model}" if args.model else ""
        )
        for mode in MODES:
            if mode in done:
                continue
            row = measure(opened.llm, mode, args.items)
            report["rows"].append(row)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
            print(json.dumps(row))


if __name__ == "__main__":
    main()
