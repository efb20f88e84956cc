"""``autodemo run --engine ray``: the same job on a Ray cluster (extra ``ray``).

Each input line becomes one row keyed by its line number (``input_line``, as in the
single-process output); the answers go to the folder OUTPUT as Parquet files (JSON lines
files when OUTPUT's name ends in ``.jsonl``), one row per input line: ``input_line``,
``answer`` or ``error_kind`` and ``error_message``, and the item's tokens. A re-run
answers only the lines the folder does not hold yet, and the folder never holds a line
twice (:mod:`langchain_autodemo.ray_data`). The summary line and the exit status are
those of the single-process run: 0 when every record was answered, 1 when some ended in
an error (or were left unanswered), 2 for bad input or settings, 130 after Ctrl-C.

Without ``--address`` a local Ray cluster is started for the command (``num_cpus``: the
machine's cores, or ``--workers`` if more); with it the job joins that cluster
(``ray://HOST:10001`` or ``auto``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from langchain_autodemo.cli.common import echo
from langchain_autodemo.cli.resume import LINE_KEY
from langchain_autodemo.cli.run import RunOptions, with_config
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.evaluation.datasets import read_jsonl
from langchain_autodemo.models import parse_model_spec

__all__ = ["RayOptions", "ray_run"]

TEXT_COLUMN = "_autodemo_text"


@dataclass(frozen=True)
class RayOptions:
    """Where the job runs: a cluster's address (``None``: a local cluster) and how many
    workers (each holding one runner) answer at once."""

    address: str | None = None
    workers: int = 2
    requests_per_minute: float | None = None
    """A limit on model calls per minute shared by every worker (``None``: none)."""
    tokens_per_minute: float | None = None
    """A limit on input + output tokens per minute shared by every worker."""


def ray_run(options: RunOptions, ray_options: RayOptions) -> None:
    """``autodemo run INPUT -o OUTPUT --engine ray``; raises ``typer.Exit`` with the
    run's exit status, or :class:`ConfigurationError` for bad input (nothing written)."""
    unsupported = [
        flag
        for flag, used in (
            ("--via batch-api", options.via != "online"),
            ("--audit", options.audit is not None),
            ("--demo-pool", options.demo_pool is not None),
            ("--template", options.template is not None),
            ("--overwrite", options.overwrite),
        )
        if used
    ]
    if unsupported:
        raise ConfigurationError(f"--engine ray does not take {', '.join(unsupported)}")
    if ray_options.workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    config_file = options.config
    options = with_config(options)
    spec = parse_model_spec(options.model)
    select = (options.select or "").strip().lower() or None
    if select not in (None, "similarity"):
        raise ConfigurationError("--engine ray groups with --select similarity only")
    output = options.output
    if output.exists() and not output.is_dir():
        raise ConfigurationError(
            f"{output} is a file: --engine ray writes a folder (Parquet files, or JSON lines "
            "files when its name ends in .jsonl)"
        )
    rows = _read_rows(options.input, options.field)

    try:
        import ray
    except ImportError:
        raise ConfigurationError(
            "--engine ray needs the ray extra: pip install 'langchain-autodemo[ray]'"
        ) from None
    from langchain_autodemo import ray_data

    config = ray_data.RayJobConfig(
        model=None if spec.kind == "default" else str(spec),
        id_column=LINE_KEY,
        input_column=TEXT_COLUMN,
        instructions=options.instructions,
        mode=options.mode.value,
        batch_size=options.batch_size,
        reasoning=options.reasoning,
        restate=options.restate,
        demonstrations=tuple(tuple(d) for d in options.demonstrations),  # type: ignore[misc]
        config=None if config_file is None else str(config_file),
        max_tokens=options.max_tokens,
        max_concurrency=options.max_concurrency,
    )
    started_here = not ray.is_initialized()
    if started_here:
        if ray_options.address:
            ray.init(address=ray_options.address, log_to_driver=False)
        else:
            # A worker mostly waits for its model: more workers than cores is fine.
            local_cpus = max(os.cpu_count() or 2, ray_options.workers)
            ray.init(num_cpus=local_cpus, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = options.progress
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        workers = ray_options.workers
        echo(f"Ray: {ray_options.address or 'local cluster'}, {workers} worker(s), {cpus:g} CPU(s)")
        started = time.perf_counter()
        try:
            result = ray_data.run_job(
                ray.data.from_items(rows, override_num_blocks=min(len(rows), 8 * workers)),
                output,
                config,
                workers=workers,
                group=select == "similarity",
                retry_errors=options.retry_errors,
                requests_per_minute=ray_options.requests_per_minute,
                tokens_per_minute=ray_options.tokens_per_minute,
            )
        except KeyboardInterrupt:
            echo(
                f"Interrupted after {time.perf_counter() - started:.1f}s: re-run the same "
                "command to answer the remaining items."
            )
            raise typer.Exit(130) from None
    finally:
        if started_here:
            ray.shutdown()
    _summary(result, len(rows), output)


def _read_rows(path: Path, field: str) -> list[dict[str, Any]]:
    """One row per record: its line number and the text to answer (checked up front)."""
    if not path.exists():
        raise ConfigurationError(f"input file not found: {path}")
    rows = []
    for number, record in read_jsonl(path):
        if field not in record:
            raise ConfigurationError(
                f"{path}:{number}: record lacks field {field} (choose the text with --field)"
            )
        value = record[field]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if not text.strip():
            raise ConfigurationError(f"{path}:{number}: the text to answer is empty")
        rows.append({LINE_KEY: number, TEXT_COLUMN: text})
    if not rows:
        raise ConfigurationError(f"{path}: no records")
    return rows


def _summary(result: Any, total: int, output: Path) -> None:
    usage = result.usage
    done = result.already_done + result.written
    if result.already_done:
        echo(f"Resumed: {result.already_done} of {total} items were already in {output}.")
    echo(
        f"Items: {done}/{total} answered or failed ({result.written} this run, "
        f"{result.failed} errors) | calls: {usage['calls']} (re-asks {usage['reasks']}) | "
        f"tokens in/out: {usage['input_tokens']}/{usage['output_tokens']}"
        f"{' (estimated)' if usage['estimated_tokens'] else ''} | "
        f"wall time: {result.wall_time_s:.1f}s"
    )
    if result.intra_batch_cosine is not None:
        echo(f"Similarity grouping: mean intra-batch cosine {result.intra_batch_cosine:.3f}")
    if result.duplicates_dropped:
        echo(f"Dropped {result.duplicates_dropped} duplicate row(s) of retried tasks.")
    if done < total:
        echo(f"Not complete: re-run the same command to answer the {total - done} remaining.")
        raise typer.Exit(1)
    echo(f"Wrote {output}")
    if result.errors:
        echo(
            f"{result.errors} of {total} items ended in an error (their 'error_kind' and "
            "'error_message' columns say why); --retry-errors asks them again."
        )
        raise typer.Exit(1)
