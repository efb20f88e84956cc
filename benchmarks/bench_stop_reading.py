"""What stopping a stream early saves, on completions a real model wrote to the end.

``tests/data/real_completions_qwen1.5b_gsm8k.jsonl`` holds 18 Qwen2.5-Coder-1.5B
completions recorded *without* any early stop (batches of 8 and 16, Auto-Demo and plain
batch prompts), so for each one the counterfactual is known: every token the model went
on to write. Each is replayed through the engine's :class:`~langchain_autodemo.engine.
CallSession` in 4-character chunks (about one token each, as llama.cpp streams) until
``done_reading``; the characters never read are characters the server never has to
generate (llama-cpp-python's server stops decoding when the client disconnects).

Seconds saved = unread tokens / decode rate. The decode rate is measured, not assumed:
the output tokens per second of ``single`` in ``docs/results/gsm8k-n8/results.json`` (the
same model on the same machine, prompt time included, so the saving is a lower bound),
or ``--tokens-per-s``.

Run: ``python -m benchmarks.bench_stop_reading`` (writes ``benchmarks/results/stop_reading.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessageChunk

from langchain_autodemo.engine import Engine, EngineSettings
from langchain_autodemo.planning import PlannedBatch, estimate_tokens
from langchain_autodemo.prompts import Mode

ROOT = Path(__file__).parent.parent
DATA = ROOT / "tests" / "data" / "real_completions_qwen1.5b_gsm8k.jsonl"
RATE_SOURCE = ROOT / "docs" / "results" / "gsm8k-n8" / "results.json"
RESULTS = Path(__file__).parent / "results"
CHUNK = 4
LIMIT_TOKENS = 4096 - 200  # the recording's max_tokens, less the estimate's slack


def replay(questions: list[str], completion: str, mode: Mode) -> dict[str, Any]:
    """Feed ``completion`` until the session stops reading; what was read and why.

    The recordings kept no finish reason: one that reached the 4,096-token limit gets
    ``length``, the others ``stop`` (they ended on their own, well under the limit).
    """
    settings = EngineSettings(mode=mode, batch_size=len(questions))
    engine = Engine(questions, [PlannedBatch(tuple(range(len(questions))))], settings)
    session = engine.open(engine.initial_calls()[0])
    read = len(completion)
    for start in range(0, len(completion), CHUNK):
        session.feed(AIMessageChunk(content=completion[start : start + CHUNK]))
        if session.done_reading:
            read = min(start + CHUNK, len(completion))
            break
    else:
        finish = "length" if estimate_tokens(completion) >= LIMIT_TOKENS else "stop"
        session.feed(AIMessageChunk(content="", response_metadata={"finish_reason": finish}))
    stop = "complete" if session.complete else session.runaway
    report = session.finish()
    return {
        "items": len(questions),
        "mode": mode.value,
        "chars": len(completion),
        "chars_read": read,
        "stopped_early": read < len(completion),
        "why": stop or "stream ended",
        "accepted": len(report.accepted),
        "tokens_unread": estimate_tokens(completion[read:]) - 1 if read < len(completion) else 0,
    }


def decode_rate(path: Path = RATE_SOURCE) -> float | None:
    """Output tokens per second of ``single`` in an ``autodemo eval`` report."""
    if not path.is_file():
        return None
    for row in json.loads(path.read_text())["results"]:
        if row["method"] == "single" and row["wall_time_s"] > 0:
            return float(row["output_tokens"]) / float(row["wall_time_s"])
    return None


def main(argv: list[str] | None = None, out_dir: Path = RESULTS) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens-per-s", type=float, help="decode rate (default: measured)")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    runs = [
        replay(
            r["questions"],
            r["completion"],
            Mode.AUTO_DEMO if r["prompt_style"] == "auto_demo" else Mode.BATCH,
        )
        for r in rows
    ]
    rate = args.tokens_per_s or decode_rate()
    total_tokens = sum(estimate_tokens(r["completion"]) for r in rows)
    unread = sum(run["tokens_unread"] for run in runs)
    print("| items | mode | chars | read | why it stopped | accepted |\n|---|---|---|---|---|---|")
    for run in runs:
        print(
            f"| {run['items']} | {run['mode']} | {run['chars']} | {run['chars_read']} | "
            f"{run['why']} | {run['accepted']} |"
        )
    summary: dict[str, Any] = {
        "completions": len(runs),
        "stopped_early": sum(run["stopped_early"] for run in runs),
        "output_tokens_estimated": total_tokens,
        "tokens_unread": unread,
        "share_unread": round(unread / total_tokens, 3),
        "decode_tokens_per_s": round(rate, 2) if rate else None,
        "decode_rate_source": (
            "--tokens-per-s" if args.tokens_per_s else str(RATE_SOURCE.relative_to(ROOT))
        ),
        "seconds_saved": round(unread / rate, 1) if rate else None,
        "seconds_saved_per_call": round(unread / rate / len(runs), 1) if rate else None,
    }
    print(
        f"\n{summary['stopped_early']}/{len(runs)} completions stopped early; "
        f"{unread}/{total_tokens} output tokens never needed ({summary['share_unread']:.0%})"
        + (f", {summary['seconds_saved']} s at {rate:.1f} tokens/s" if rate else "")
    )
    result = {
        "data": str(DATA.relative_to(ROOT)),
        "chunk_chars": CHUNK,
        "summary": summary,
        "runs": runs,
        "command": "python -m benchmarks.bench_stop_reading",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stop_reading.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
