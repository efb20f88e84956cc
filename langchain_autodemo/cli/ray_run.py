"""``autodemo run --engine ray``: the same job on a Ray cluster (extra ``ray``).

One output contract for both engines: the Ray engine is another way of answering
(:class:`RayAnswering`) inside the online engine's :func:`~langchain_autodemo.cli.run.run`,
so the input checks, the recorded setup and its check on resume, the lock on the
output, the records, the summary with its cost line and the exit status are the online
engine's own. OUTPUT is the same single JSONL file, one ``{"input_line": N, ...the
input record..., "answer": ...}`` (or ``"error"``) per line, and an output either
engine wrote can be resumed by the other.

While the job runs, Ray Data's workers write their rows as Parquet parts to the working
folder ``OUTPUT.parts/`` (each row: its input line, its input record, the answer or
the error, exactly once: :mod:`langchain_autodemo.ray_data`). When the job ends (or is
interrupted) the parts are appended to OUTPUT in input order and the folder is removed;
a run that died before that leaves it, and the next run appends its rows first. A
folder at OUTPUT (what an older ``--engine ray`` wrote) is refused, never mixed in.

Without ``--address`` a local Ray cluster is started for the command (``num_cpus``: the
machine's cores, or ``--workers`` if more); with it the job joins that cluster
(``ray://HOST:10001`` or ``auto``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

from langchain_autodemo.cli.common import echo
from langchain_autodemo.cli.inputs import Item
from langchain_autodemo.cli.resume import (
    LINE_KEY,
    OutputError,
    OutputWriter,
    check_setup,
    json_text,
    read_finished,
)
from langchain_autodemo.cli.run import (
    SETUP_DEFAULTS,
    RunJob,
    RunOptions,
    RunOutcome,
    apply_tuned_config,
    line_error,
    run,
)
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.usage import UsageStats

__all__ = ["RayAnswering", "RayOptions", "parts_path", "ray_run", "recover_parts"]

TEXT_COLUMN = "_autodemo_text"
RECORD_COLUMN = "_autodemo_record"
"""The input record, as JSON text, carried through the job to the output."""


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


def parts_path(output: Path) -> Path:
    """The Ray engine's working folder of ``output``: ``OUTPUT.parts/`` beside it."""
    return output.with_name(output.name + ".parts")


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
            ("--prompt", options.prompt is not None),
        )
        if used
    ]
    if unsupported:
        raise ConfigurationError(f"--engine ray does not take {', '.join(unsupported)}")
    if ray_options.workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    options = replace(apply_tuned_config(options), config=None)  # the config's settings, checked
    select = (options.select or "").strip().lower() or None
    if select not in (None, "similarity"):
        raise ConfigurationError("--engine ray groups with --select similarity only")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "--engine ray needs the ray extra: pip install 'langchain-autodemo[ray]'"
        ) from None
    run(
        options,
        answering=lambda job: RayAnswering(job, ray_options),
        recover=recover_parts,
    )


def recover_parts(
    output: Path, items: list[Item], keys: tuple[str, str], setup: Mapping[str, Any]
) -> None:
    """Append to ``output`` the rows a run that stopped left in ``OUTPUT.parts/``, then
    remove the folder (called with the output locked, before the output is read).

    Refused (:class:`OutputError`, nothing written) when the folder's setup record differs
    from ``setup`` or its rows are not this input's records.
    """
    parts = parts_path(output)
    if not parts.is_dir():
        return
    check_setup(output, setup, defaults=SETUP_DEFAULTS)
    answer_key, error_key = keys
    finished = read_finished(output)
    rows = [row for row in _part_records(parts, answer_key, error_key) if row.line not in finished]
    by_line = {item.line: item.record for item in items}
    foreign = sorted(row.line for row in rows if by_line.get(row.line) != row.input)
    if foreign:
        raise OutputError(
            f"{parts} holds answers for input line(s) {foreign[:5]} whose records are not "
            "those of this input: is it the work of another input? (move it away, or use "
            "another -o)"
        )
    if rows:
        from langchain_autodemo.cli.resume import prepare_for_append

        prepare_for_append(output)
        with OutputWriter(output) as writer:
            for row in rows:
                writer.write(row.line, row.output)
        echo(f"Recovered {len(rows)} answered item(s) of an interrupted run from {parts}.")
    shutil.rmtree(parts)


class _Part(NamedTuple):
    """One row of the parts folder, as the output writes it."""

    line: int
    input: dict[str, Any]
    output: dict[str, Any]
    """The online engine's record: the input record, then the answer or the error
    (``"input line N: why"``)."""
    failed: bool


def _part_records(parts: Path, answer_key: str, error_key: str) -> list[_Part]:
    """Every row in the parts folder, in input order."""
    import langchain_autodemo.ray_data as ray_data

    ray_data.commit_output(parts, LINE_KEY)  # staged files of a killed job; one row per line
    frame = ray_data.read_output(parts)
    if frame.empty:
        return []
    missing = {LINE_KEY, RECORD_COLUMN, "answer", "error_message"} - set(frame.columns)
    if missing:
        raise OutputError(f"{parts}: not the work of autodemo run --engine ray (no {missing})")
    rows: list[_Part] = []
    n = len(frame)
    confidences = frame["confidence"].tolist() if "confidence" in frame else [None] * n
    escalated = frame["escalated"].tolist() if "escalated" in frame else [False] * n
    for line, text, answer, kind, why, confidence, moved in zip(
        frame[LINE_KEY].tolist(), frame[RECORD_COLUMN].tolist(), frame["answer"].tolist(),
        frame["error_kind"].tolist(), frame["error_message"].tolist(), confidences, escalated,
        strict=True,
    ):  # fmt: skip
        record, number, failed = json.loads(text), int(line), isinstance(kind, str)
        result: dict[str, Any] = (
            {error_key: line_error(number, why)} if failed else {answer_key: answer}
        )
        # the online engine's record: confidence where known, escalated where it happened
        if not failed and isinstance(confidence, float) and not math.isnan(confidence):
            result["confidence"] = round(confidence, 6)
        if not failed and moved is True:
            result["escalated"] = True
        rows.append(_Part(number, record, {**record, **result}, failed))
    return sorted(rows, key=lambda row: row.line)


class RayAnswering:
    """Ask a :class:`~langchain_autodemo.cli.run.RunJob`'s items as one Ray Data job
    (:func:`langchain_autodemo.ray_data.run_job`), its rows then appended to the output."""

    reattached = False

    def __init__(self, job: RunJob, ray_options: RayOptions) -> None:
        self.job = job
        self.ray_options = ray_options

    def start(self) -> list[Item]:
        return self.job.todo

    def answer(self, todo: list[Item], open_output: Callable[[], OutputWriter]) -> RunOutcome:
        import ray

        import langchain_autodemo.ray_data as ray_data

        job, options, ray_options = self.job, self.job.options, self.ray_options
        spec = job.spec
        config = ray_data.RayJobConfig(
            **vars(options.settings),  # the record, as the online run would ask
            model=None if spec.kind == "default" else str(spec),
            id_column=LINE_KEY,
            input_column=TEXT_COLUMN,
            carry_columns=(RECORD_COLUMN,),
            max_tokens=options.max_tokens,
            max_concurrency=options.max_concurrency,
        )
        rows = [
            {LINE_KEY: item.line, TEXT_COLUMN: item.text, RECORD_COLUMN: json_text(item.record)}
            for item in todo
        ]
        parts = parts_path(options.output)
        workers = ray_options.workers
        started = time.perf_counter()
        interrupted = False
        result = None
        with open_output() as writer:  # the setup is recorded before the first call
            started_here = not ray.is_initialized()
            if started_here:
                if ray_options.address:
                    ray.init(address=ray_options.address, log_to_driver=False)
                else:
                    # A worker mostly waits for its model: more workers than cores is fine.
                    cpus = max(os.cpu_count() or 2, workers)
                    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            try:
                ray.data.DataContext.get_current().enable_progress_bars = options.progress
                cpus_there = float(ray.cluster_resources().get("CPU", 1.0))
                echo(
                    f"Ray: {ray_options.address or 'local cluster'}, {workers} worker(s), "
                    f"{cpus_there:g} CPU(s)"
                )
                result = ray_data.run_job(
                    ray.data.from_items(rows, override_num_blocks=min(len(rows), 8 * workers)),
                    parts,
                    config,
                    workers=workers,
                    group=(options.select or "").strip().lower() == "similarity",
                    requests_per_minute=ray_options.requests_per_minute,
                    tokens_per_minute=ray_options.tokens_per_minute,
                )
            except KeyboardInterrupt:
                interrupted = True
            finally:
                if started_here:
                    ray.shutdown()
            # The parts to the output, in input order (after Ctrl-C, those committed).
            merged = _part_records(parts, job.answer_key, job.error_key)
            for row in merged:
                writer.write(row.line, row.output)
            shutil.rmtree(parts, ignore_errors=True)
        notes: list[str] = []
        cosine = result.intra_batch_cosine if result is not None else None
        if cosine is not None:
            notes.append(f"Similarity grouping: mean intra-batch cosine {cosine:.3f}")
        if result is not None and result.duplicates_dropped:
            notes.append(f"Dropped {result.duplicates_dropped} duplicate row(s) of retried tasks.")
        return RunOutcome(
            written=len(merged),
            failed=sum(row.failed for row in merged),
            usage=_usage(result.usage if result is not None else {}),
            interrupted=interrupted,
            wall_time_s=time.perf_counter() - started,
            notes=tuple(notes),
        )


def _usage(totals: Mapping[str, Any]) -> UsageStats:
    """The job's usage (the workers' totals) as the summary and the cost line read it."""
    names = {f.name for f in fields(UsageStats)}
    return UsageStats(**{name: value for name, value in totals.items() if name in names})
