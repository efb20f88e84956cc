"""The Ray Data path against the single-process ``autodemo run``, on this machine.

Run: ``python -m benchmarks.bench_ray --records 1000000`` (the default; tens of minutes
on 2 cores) or ``--records 20000`` for a quick check. Writes JSON to
``benchmarks/results/ray.json`` (``--out``) and prints it.

What it measures, with a zero-latency scripted model (``fake:answer=sum``), so the
figures are the library's and Ray's own cost per row, not a model's:

* ``ray``: rows/s of :func:`langchain_autodemo.ray_data.run_job` (read ids, anti-join,
  ``--workers`` processors, Parquet writer, commit) on a local cluster, and the peak
  resident memory of each Ray worker process (sampled every 0.2 s);
* ``single``: rows/s of ``autodemo run`` (one process, ``--max-concurrency 4``) on the
  same records (``--single-records`` to cap it);
* ``grouping``: mean intra-batch cosine of the dataset-wide grouping
  (:func:`~langchain_autodemo.ray_data.group_by_similarity`) against
  :class:`~langchain_autodemo.SimilarityBatchSelector` and a random partition, on the
  same first ``--grouping-records`` (default 100,000) records.

On a 2-core machine both paths are CPU-bound (the scripted model answers at once), so
Ray's workers compete with the driver, the object store and the writers for two cores:
the speed-up there is bounded by 2 at best and Ray's per-task overhead eats into it.
With a real model a worker mostly waits; throughput then scales with workers until the
model fleet's throughput or the provider's rate limit (``RateLimiter``) is reached.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

_TEMPLATES = (
    "What is {a} + {b}?",
    "Tom has {a} apples and buys {b} more. How many apples does he have?",
    "A train travels {a} km and then {b} km. How far did it go?",
    "Add {a} and {b}.",
    "Sara saved {a} dollars in May and {b} dollars in June. How much did she save?",
    "A farm has {a} cows and {b} sheep. How many animals are there?",
    "What is the sum of {a} and {b}?",
    "There are {a} red balls and {b} blue balls in a box. How many balls are in the box?",
)


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        rng.choice(_TEMPLATES).format(a=rng.randint(1, 999), b=rng.randint(1, 999))
        for _ in range(n)
    ]


class _PeakMemory:
    """Peak RSS of every Ray worker process (``ray::`` in its title), sampled."""

    def __init__(self) -> None:
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for process in psutil.process_iter(["pid", "cmdline"]):
                try:
                    cmdline = " ".join(process.info["cmdline"] or [])
                    if "ray::" in cmdline or "default_worker.py" in cmdline:
                        rss = process.memory_info().rss
                        self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self._stop.wait(0.2)


def bench_ray(texts: list[str], workers: int, batch_size: int, folder: Path) -> dict[str, Any]:
    import ray

    from langchain_autodemo import ray_data

    rows = [{"id": i, "question": text} for i, text in enumerate(texts)]
    ds = ray.data.from_items(rows, override_num_blocks=max(8 * workers, len(rows) // 20_000))
    config = ray_data.RayJobConfig(
        model="fake:answer=sum", batch_size=batch_size, max_concurrency=4
    )
    with _PeakMemory() as memory:
        result = ray_data.run_job(ds, folder / "ray-out", config, workers=workers)
    peaks = sorted(memory.peaks.values(), reverse=True)
    return {
        "rows": len(rows),
        "written": result.written,
        "errors": result.errors,
        "duplicates_dropped": result.duplicates_dropped,
        "wall_time_s": round(result.wall_time_s, 2),
        "rows_per_s": round(len(rows) / result.wall_time_s, 1),
        "calls": result.usage["calls"],
        "peak_rss_mb_per_worker": [round(p / 2**20, 1) for p in peaks[: max(workers, 1) + 2]],
    }


def bench_single(texts: list[str], batch_size: int, folder: Path) -> dict[str, Any]:
    source = folder / "in.jsonl"
    with source.open("w") as handle:
        for text in texts:
            handle.write(json.dumps({"question": text}) + "\n")
    command = [
        sys.executable, "-m", "langchain_autodemo.cli", "run", str(source),
        "-o", str(folder / "single-out.jsonl"), "-m", "fake:answer=sum",
        "-n", str(batch_size), "--max-concurrency", "4", "--no-progress", "--no-sort",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    summary = [line for line in done.stderr.splitlines() if line.startswith("Items:")]
    return {
        "rows": len(texts),
        "exit_code": done.returncode,
        "wall_time_s": round(wall, 2),
        "rows_per_s": round(len(texts) / wall, 1),
        "summary": summary[-1] if summary else done.stderr[-500:],
    }


def bench_grouping(texts: list[str], batch_size: int) -> dict[str, Any]:
    import numpy as np
    import ray

    from langchain_autodemo import ray_data
    from langchain_autodemo.embeddings import WordLlamaEmbeddings
    from langchain_autodemo.grouping import mean_intra_batch_similarity, random_batches, unit_rows

    rows = [{"id": i, "question": text} for i, text in enumerate(texts)]
    started = time.perf_counter()
    packed = ray_data.group_by_similarity(
        ray.data.from_items(rows), batch_size=batch_size
    ).materialize()
    grouped = ray_data.intra_batch_cosine(packed)
    ray_s = time.perf_counter() - started
    started = time.perf_counter()
    selector = ray_data.selector_cosine(texts, batch_size)
    selector_s = time.perf_counter() - started
    vectors = unit_rows(np.asarray(WordLlamaEmbeddings().embed_array(texts), dtype=np.float32))
    baseline = mean_intra_batch_similarity(vectors, random_batches(len(texts), batch_size))
    return {
        "records": len(texts),
        "batch_size": batch_size,
        "ray_grouping_cosine": round(grouped, 4),
        "selector_cosine": round(selector, 4),
        "random_cosine": round(baseline, 4),
        "ray_grouping_s": round(ray_s, 1),
        "selector_s": round(selector_s, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--single-records", type=int, default=None, help="default: --records")
    parser.add_argument("--grouping-records", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "ray.json")
    args = parser.parse_args(argv)

    import ray

    texts = synthetic_texts(args.records)
    cpus = os.cpu_count() or 2
    ray.init(num_cpus=max(cpus, args.workers), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            ray_figures = bench_ray(texts, args.workers, args.batch_size, folder)
            grouping = bench_grouping(texts[: args.grouping_records], args.batch_size)
        ray.shutdown()  # the single-process run gets the machine to itself
        with tempfile.TemporaryDirectory() as tmp:
            single = bench_single(
                texts[: args.single_records or args.records], args.batch_size, Path(tmp)
            )
    finally:
        if ray.is_initialized():
            ray.shutdown()
    report = {
        "benchmark": "ray",
        "machine": {"cpus": cpus, "python": platform.python_version()},
        "records": args.records,
        "workers": args.workers,
        "model": "fake:answer=sum (zero latency)",
        "ray": ray_figures,
        "single": single,
        "speedup": round(ray_figures["rows_per_s"] / max(single["rows_per_s"], 1e-9), 2),
        "grouping": grouping,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
