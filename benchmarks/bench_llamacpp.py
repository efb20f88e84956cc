"""In-process ``ChatLlamaCpp`` against the llama.cpp server, on SmolLM2-135M only.

Run: ``python -m benchmarks.bench_llamacpp`` (or ``make bench`` for every benchmark).
Prints a table and writes ``benchmarks/results/llamacpp.json``; a few minutes on 2 shared cores.

Both paths run the same llama.cpp (llama-cpp-python) on the same GGUF with the same
settings (temperature 0, ``n_ctx`` 8192, prompt batch 512, ``$AUTODEMO_LLAMACPP_THREADS``
or 2 threads); what differs is the process boundary. Measured (medians; the two paths
take turns, so that load from other processes on a shared machine hits both alike):

1. **Start-up** (``STARTS`` times each): a fresh interpreter, from its first import to a
   one-token answer. Server: ``LlamaCppServer`` spawns ``python -m llama_cpp.server``,
   which loads the model and answers ``GET /v1/models``, then a ``ChatOpenAI`` call. In
   process: ``inprocess_chat_model`` imports llama_cpp and langchain-community and
   loads the model, then a ``ChatLlamaCpp`` call.
2. **Streaming**: a short prompt streamed ``STREAM_REPEATS`` times: time to the first
   text chunk, and text chunks per second after it (one chunk is one token on both).
3. **Throughput** (``BATCH_REPEATS`` times): ``AutoDemoBatchRunnable.batch`` over the
   first ``ITEMS`` GSM8K test questions, ``BATCH_SIZE`` per call, answers only, one
   attempt each (so both paths make the same calls): wall time and items per second.

Greedy decoding on the same llama.cpp gives both paths the same completions (checked:
``same_text``), so they do the same work.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from langchain_autodemo import AutoDemoBatchRunnable, track_usage
from langchain_autodemo.evaluation.datasets import GSM8K_INSTRUCTIONS, load_dataset
from langchain_autodemo.llamacpp import LlamaCppServer, _default_threads, inprocess_chat_model
from langchain_autodemo.local_models import TEST_MODEL, find_model

RESULTS = Path(__file__).parent / "results"
N_CTX = 8192
STREAM_PROMPT = "Count from 1 to 40, separated by commas."
STREAM_TOKENS = 64
STREAM_REPEATS = 5
BATCH_REPEATS = 2
STARTS = 3
ITEMS = 8
BATCH_SIZE = 8
MAX_TOKENS = 256

# Both start-ups run in a fresh interpreter: what `autodemo run` pays before its first answer.
_START = {
    "inprocess": """
import time
started = time.perf_counter()
from langchain_autodemo.llamacpp import inprocess_chat_model
llm = inprocess_chat_model({path!r}, n_ctx={n_ctx})
llm.invoke("Hi", max_tokens=1)
print(time.perf_counter() - started)
""",
    "server": """
import time
started = time.perf_counter()
from langchain_autodemo.llamacpp import LlamaCppServer
with LlamaCppServer({path!r}, n_ctx={n_ctx}) as server:
    server.chat_model(max_tokens=1).invoke("Hi")
    print(time.perf_counter() - started)
""",
}


def _startup(kind: str, path: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _START[kind].format(path=str(path), n_ctx=N_CTX)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def _startup_of(path: Path) -> Any:
    return lambda kind: _startup(kind, path)


def _stream_once(llm: Any) -> tuple[float, float, str]:
    """(seconds to the first text chunk, text chunks per second after it, the text)."""
    started = time.perf_counter()
    first_at, chunks, text = None, 0, []
    for chunk in llm.stream(STREAM_PROMPT, max_tokens=STREAM_TOKENS):
        if chunk.content:
            chunks += 1
            text.append(str(chunk.content))
            first_at = first_at or time.perf_counter()
    ended = time.perf_counter()
    assert first_at is not None, "nothing was streamed"
    rate = (chunks - 1) / (ended - first_at) if chunks > 1 else 0.0
    return first_at - started, rate, "".join(text)


def _batch_once(llm: Any) -> dict[str, float | int]:
    data = load_dataset("gsm8k", limit=ITEMS)
    runner = AutoDemoBatchRunnable(
        llm,
        instructions=GSM8K_INSTRUCTIONS,
        batch_size=BATCH_SIZE,
        reasoning=False,  # short answers: BATCH_SIZE of them fit in MAX_TOKENS
        max_attempts=1,
    )
    started = time.perf_counter()
    with track_usage() as usage:
        results = runner.batch([e.text for e in data.examples], return_exceptions=True)
    return {
        "wall_s": time.perf_counter() - started,
        "answered": sum(not isinstance(r, BaseException) for r in results),
        "calls": usage.calls,
        "output_tokens": usage.output_tokens,
    }


def _interleaved(llms: dict[str, Any], measure: Any, repeats: int) -> dict[str, list[Any]]:
    """Take turns, so that load from other processes on a shared machine hits both alike."""
    runs: dict[str, list[Any]] = {name: [] for name in llms}
    for _ in range(repeats):
        for name, llm in llms.items():
            runs[name].append(measure(llm))
    return runs


def main(out_dir: Path = RESULTS) -> dict[str, Any]:
    path = find_model(TEST_MODEL)
    load_before = os.getloadavg()
    start_runs = _interleaved({k: k for k in ("server", "inprocess")}, _startup_of(path), STARTS)
    starts = {kind: statistics.median(runs) for kind, runs in start_runs.items()}
    server = LlamaCppServer(path, n_ctx=N_CTX, max_tokens=MAX_TOKENS).start()
    try:
        llms = {
            "server": server.chat_model(max_tokens=MAX_TOKENS),
            "inprocess": inprocess_chat_model(path, n_ctx=N_CTX, max_tokens=MAX_TOKENS),
        }
        streams = _interleaved(llms, _stream_once, STREAM_REPEATS)
        batches = _interleaved(llms, _batch_once, BATCH_REPEATS)
    finally:
        server.stop()
    same_text = len({text for runs in streams.values() for _, _, text in runs}) == 1
    paths: dict[str, dict[str, Any]] = {}
    for name in llms:
        walls = [b["wall_s"] for b in batches[name]]
        paths[name] = {
            "startup_s": round(starts[name], 2),
            "first_chunk_s": round(statistics.median(f for f, _, _ in streams[name]), 3),
            "chunks_per_s": round(statistics.median(r for _, r, _ in streams[name]), 1),
            "throughput": {
                "items": ITEMS,
                "wall_s": round(statistics.median(walls), 2),
                "items_per_s": round(ITEMS / statistics.median(walls), 2),
                "calls": batches[name][0]["calls"],
                "answered": [b["answered"] for b in batches[name]],
                "output_tokens": [b["output_tokens"] for b in batches[name]],
            },
        }
    print(f"\nllama.cpp on {path.name}: server vs in process ({_default_threads()} threads)")
    print(f"same completions on both paths: {same_text}")
    print("| path | start-up s | first chunk s | chunks/s | batch items/s | batch wall s |")
    print("|---|---|---|---|---|---|")
    for name, row in paths.items():
        tp = row["throughput"]
        print(
            f"| {name} | {row['startup_s']} | {row['first_chunk_s']} | {row['chunks_per_s']} "
            f"| {tp['items_per_s']} | {tp['wall_s']} |"
        )
    result = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "model": path.name,
        "threads": _default_threads(),
        "settings": {
            "n_ctx": N_CTX,
            "stream_tokens": STREAM_TOKENS,
            "stream_repeats": STREAM_REPEATS,
            "batch_repeats": BATCH_REPEATS,
            "starts": STARTS,
            "items": ITEMS,
            "batch_size": BATCH_SIZE,
            "max_tokens": MAX_TOKENS,
        },
        "same_text": same_text,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "command": "python -m benchmarks.bench_llamacpp",
        **paths,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "llamacpp.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
