"""SimilarityBatchSelector benchmark: grouping quality on GSM8K and scaling to 100k.

Run: ``python -m benchmarks.bench_selector`` (or ``make bench`` for every benchmark).
Prints tables and writes ``benchmarks/results/selector.json``; about 3-5 minutes on 2 cores.

1. **Quality** on the 1,319 GSM8K test questions (WordLlama embeddings), N = 16 and 8:
   mean intra-batch cosine similarity of random batches, a locality-sensitive sort
   (random-hyperplane codes), balanced bisection alone, the selector's partition
   (bisection + swap refinement), and the exact O(n²) greedy grouping over all 1,319
   questions (the whole set is small enough for it). Goal: partition >= 0.9 x greedy.
2. **Scale** at N = 16 on n = 1k, 10k, 100k *synthetic real-looking texts*: GSM8K train
   questions (7,473) with every number redrawn at random (seeded), so the texts are
   distinct, realistic and clustered like real workloads (templates recur). Measured
   separately: embedding (WordLlama), the first run's Chroma writes, grouping
   (wall-clock and tracemalloc peak), and a second, fully cached run.
   Goal: 100k grouped in < 60 s and < 2 GB.

The numbers decided the design (see :mod:`langchain_autodemo.selector`): writing 100k new
vectors into Chroma's HNSW index costs more than embedding and grouping them together,
so Chroma is the persistent vector *cache* and grouping runs on the fetched numpy matrix.
"""

from __future__ import annotations

import json
import math
import platform
import re
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from langchain_autodemo.embeddings import WordLlamaEmbeddings
from langchain_autodemo.grouping import (
    bisect_batches,
    exact_greedy_batches,
    mean_intra_batch_similarity,
    partition_batches,
    random_batches,
)
from langchain_autodemo.selector import SimilarityBatchSelector

RESULTS = Path(__file__).parent / "results"
_REPO = Path(__file__).resolve().parents[1]
_DATA_DIRS = (_REPO / "langchain_autodemo/datasets/data", Path("/work/shared/data"))
SCALES = (1_000, 10_000, 100_000)


def _data_file(name: str) -> Path:
    for directory in _DATA_DIRS:
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(f"{name} not found in {[str(d) for d in _DATA_DIRS]}")


def _questions(name: str) -> list[str]:
    with _data_file(name).open() as lines:
        return [json.loads(line)["question"] for line in lines]


def lsh_sort_batches(vectors: np.ndarray, batch_size: int, bits: int = 16) -> list[list[int]]:
    """The cheap baseline: sort by random-hyperplane sign codes, cut into batches."""
    planes = np.random.default_rng(0).standard_normal((vectors.shape[1], bits))
    codes = ((vectors @ planes) > 0).astype(np.int64) @ (1 << np.arange(bits))
    order = np.argsort(codes, kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def bench_quality(batch_sizes: tuple[int, ...] = (16, 8)) -> dict[str, Any]:
    questions = _questions("gsm8k_test.jsonl")
    vectors = WordLlamaEmbeddings().embed_array(questions)
    rows = {}
    for n_per_batch in batch_sizes:
        started = time.perf_counter()
        greedy = exact_greedy_batches(vectors, n_per_batch)
        greedy_s = time.perf_counter() - started
        started = time.perf_counter()
        partition = partition_batches(vectors, n_per_batch)
        partition_s = time.perf_counter() - started
        candidates = {
            "random": random_batches(len(vectors), n_per_batch),
            "lsh_sort": lsh_sort_batches(vectors, n_per_batch),
            "bisection_only": bisect_batches(vectors, n_per_batch),
            "partition": partition,
            "exact_greedy": greedy,
        }
        reference = mean_intra_batch_similarity(vectors, greedy)
        rows[n_per_batch] = {
            name: {
                "mean_intra_batch_cosine": round(mean_intra_batch_similarity(vectors, b), 4),
                "ratio_to_exact_greedy": round(
                    mean_intra_batch_similarity(vectors, b) / reference, 3
                ),
            }
            for name, b in candidates.items()
        }
        rows[n_per_batch]["seconds"] = {
            "exact_greedy": round(greedy_s, 3),
            "partition": round(partition_s, 3),
        }
    return {"items": len(questions), "by_batch_size": rows}


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """GSM8K train questions with every number redrawn: distinct, realistic texts."""
    templates = _questions("gsm8k_train.jsonl")
    rng = np.random.default_rng(seed)
    draws = iter(rng.integers(1, 1000, size=n * 40).tolist())

    def redraw(_: re.Match[str]) -> str:
        return str(next(draws, 7))

    return [re.sub(r"\d+", redraw, templates[i % len(templates)]) for i in range(n)]


def _grouping_peak_mb(vectors: np.ndarray, batch_size: int) -> tuple[float, list[list[int]]]:
    """tracemalloc peak (MB) of grouping ``vectors``; timed separately (untraced)."""
    tracemalloc.start()
    batches = partition_batches(vectors, batch_size)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, batches


def bench_scale(batch_size: int = 16, scales: tuple[int, ...] = SCALES) -> list[dict[str, Any]]:
    rows = []
    for n in scales:
        texts = synthetic_texts(n)
        with tempfile.TemporaryDirectory() as directory:
            cold = SimilarityBatchSelector(persist_directory=directory, collection_name="bench")
            cold.select(texts, batch_size)
            first = cold.last_stats
            warm = SimilarityBatchSelector(persist_directory=directory, collection_name="bench")
            warm_started = time.perf_counter()
            warm.select(texts, batch_size)
            warm_total = time.perf_counter() - warm_started
            second = warm.last_stats
            vectors = warm.embed(texts)
        peak_mb, batches = _grouping_peak_mb(vectors, batch_size)
        rows.append(
            {
                "n": n,
                "batches": len(batches),
                "expected_batches": math.ceil(n / batch_size),
                "embed_s": round(first.embed_seconds, 2),
                "chroma_write_s": round(first.store_seconds, 2),
                "group_s": round(second.group_seconds, 2),  # untraced, vectors in hand
                "group_peak_mb": round(peak_mb, 1),
                "cached_run_total_s": round(warm_total, 2),
                "cached_run_chroma_read_s": round(second.store_seconds, 2),
                "cached_run_embedded": second.embedded,
                "partition_cosine": round(mean_intra_batch_similarity(vectors, batches), 4),
                "random_cosine": round(
                    mean_intra_batch_similarity(vectors, random_batches(n, batch_size)), 4
                ),
            }
        )
        print(f"  scale n={n}: done", flush=True)
    return rows


def _print_tables(quality: dict[str, Any], scale: list[dict[str, Any]]) -> None:
    print(f"\nGrouping quality: GSM8K test ({quality['items']} questions, WordLlama)")
    print("| N | random | LSH sort | bisection only | partition | exact greedy |")
    print("|---|---|---|---|---|---|")
    for size, row in quality["by_batch_size"].items():
        cells = [
            f"{row[k]['mean_intra_batch_cosine']} ({row[k]['ratio_to_exact_greedy']}x)"
            for k in ("random", "lsh_sort", "bisection_only", "partition", "exact_greedy")
        ]
        print(f"| {size} | " + " | ".join(cells) + " |")
    print("\nScale at N=16 (synthetic GSM8K-template texts)")
    print(
        "| n | embed s | Chroma write s | group s | group peak MB "
        "| cached run s | partition cos | random cos |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in scale:
        print(
            f"| {row['n']:,} | {row['embed_s']} | {row['chroma_write_s']} | {row['group_s']} "
            f"| {row['group_peak_mb']} | {row['cached_run_total_s']} "
            f"| {row['partition_cosine']} | {row['random_cosine']} |"
        )


def main(out_dir: Path = RESULTS, scales: tuple[int, ...] = SCALES) -> dict[str, Any]:
    print("selector benchmark: quality ...", flush=True)
    quality = bench_quality()
    print("selector benchmark: scale ...", flush=True)
    scale = bench_scale(scales=scales)
    _print_tables(quality, scale)
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nprocess peak RSS (whole benchmark): {max_rss_mb:.0f} MB")
    result = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "quality": quality,
        "scale": scale,
        "process_peak_rss_mb": round(max_rss_mb),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "selector.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
