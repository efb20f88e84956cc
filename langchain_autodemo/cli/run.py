"""``autodemo run``: answer every record of a JSONL file, resumably.

Each output line is ``{"input_line": N, ...the input record..., "answer": ...}`` (or the
item's ``"error"`` instead of its answer), appended and flushed as items complete. A
re-run of the same command skips the lines already answered; a file it did not write is
never touched. The exit status is 0 only when every record was answered, 1 when some
ended in an error (or were left unanswered), 2 for bad input, 130 after Ctrl-C.
"""

from __future__ import annotations

import json
import string
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import typer
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from langchain_autodemo.cli.common import echo
from langchain_autodemo.cli.resume import (
    LINE_KEY,
    OutputError,
    OutputWriter,
    prepare_for_append,
    read_finished,
    sort_output,
)
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.evaluation.datasets import read_jsonl
from langchain_autodemo.evaluation.methods import GROUPINGS
from langchain_autodemo.models import ModelSpec, open_model, parse_model_spec
from langchain_autodemo.parser import text_of
from langchain_autodemo.planning import estimate_tokens
from langchain_autodemo.prompts import Mode
from langchain_autodemo.usage import CallUsage, UsageStats

__all__ = ["RunOptions", "run"]


@dataclass(frozen=True)
class RunOptions:
    """What ``autodemo run`` was asked to do (the command's flags, checked by :func:`run`)."""

    input: Path
    output: Path
    instructions: str = "Answer each question accurately."
    model: str | None = None
    batch_size: int = 8
    mode: Mode = Mode.AUTO_DEMO
    select: str | None = None
    demo_pool: Path | None = None
    field: str = "question"
    template: str | None = None
    answer_field: str = "answer"
    reasoning: bool = True
    retry_errors: bool = False
    overwrite: bool = False
    sort: bool = True
    max_tokens: int | None = None
    max_concurrency: int = 1
    progress: bool = True
    via: str = "online"
    """``online``, or ``batch-api``: the packed calls as a provider Batch API job."""
    batch_option: list[str] | None = None
    """``KEY=VALUE`` settings of the Batch API job (see :mod:`langchain_autodemo.batch_api.cli`)."""


@dataclass(frozen=True)
class _Item:
    line: int
    """Line number in the input file: the key that resumes it."""
    record: dict[str, Any]
    text: str
    """What the model is asked."""


@dataclass(frozen=True)
class _Job:
    """A checked run: the items, what the output already holds, and its field names."""

    options: RunOptions
    spec: ModelSpec
    selector: Any
    items: list[_Item]
    finished: Mapping[int, dict[str, Any]]
    answer_key: str
    error_key: str

    @property
    def todo(self) -> list[_Item]:
        return [item for item in self.items if item.line not in self.finished]

    def is_error(self, record: Mapping[str, Any]) -> bool:
        return self.error_key in record

    @property
    def previous_errors(self) -> int:
        return sum(self.is_error(record) for record in self.finished.values())


@dataclass(frozen=True)
class _Outcome:
    written: int
    failed: int
    usage: UsageStats
    interrupted: bool
    wall_time_s: float


def run(options: RunOptions) -> None:
    """Answer every record of ``options.input`` not yet in ``options.output``.

    Raises :class:`~langchain_autodemo.errors.ConfigurationError` (before anything is
    written) for bad input, and ``typer.Exit`` with the exit status described above.
    """
    job = _prepare(options)
    if options.via == "batch-api":
        from langchain_autodemo.batch_api.cli import run_batch_api

        run_batch_api(
            job.spec, [(item.line, item.record, item.text) for item in job.items],
            dict(job.finished), options.output, instructions=options.instructions,
            batch_size=options.batch_size, mode=options.mode, selector=job.selector,
            reasoning=options.reasoning, answer_key=job.answer_key,
            max_tokens=options.max_tokens, max_concurrency=options.max_concurrency,
            progress=options.progress, sort=options.sort, overwrite=options.overwrite,
            batch_options=options.batch_option, error_key=job.error_key,
        )  # fmt: skip
        return
    total = len(job.items)
    if job.finished:
        echo(f"Resuming: {len(job.finished)} of {total} items already in {options.output}.")
    if not job.todo:
        echo("Nothing to do: every item is already in the output.")
        if options.sort:
            sort_output(options.output)
        _exit_if_errors(job, job.previous_errors)
        return
    outcome = _answer(job)
    done = len(job.finished) + outcome.written
    usage = outcome.usage
    echo(
        f"Items: {done}/{total} answered or failed ({outcome.written} this run, "
        f"{outcome.failed} errors) | calls: {usage.calls} (retries {usage.retries}) | "
        f"tokens in/out: {usage.input_tokens}/{usage.output_tokens}"
        f"{' (estimated)' if usage.estimated_tokens else ''} | "
        f"wall time: {outcome.wall_time_s:.1f}s"
    )
    if outcome.interrupted or done < total:
        echo(f"Interrupted: re-run the same command to answer the {total - done} remaining.")
        raise typer.Exit(130 if outcome.interrupted else 1)
    if options.sort:
        sort_output(options.output)
    echo(f"Wrote {options.output}")
    _exit_if_errors(job, job.previous_errors + outcome.failed)


def _exit_if_errors(job: _Job, errors: int) -> None:
    if errors:
        echo(
            f"{errors} of {len(job.items)} items ended in an error (their '{job.error_key}' "
            "field says why); --retry-errors asks them again."
        )
        raise typer.Exit(1)


# -- checks: everything is validated before the first model call --------------------


def _prepare(options: RunOptions) -> _Job:
    if options.via not in ("online", "batch-api"):
        raise ConfigurationError(f"unknown --via {options.via!r}: use online or batch-api")
    if options.select is not None and options.mode is Mode.SINGLE:
        raise ConfigurationError("--select needs a batched mode (auto_demo or batch)")
    spec = parse_model_spec(options.model)
    source, output = options.input, options.output
    if output.exists() and source.exists() and output.resolve() == source.resolve():
        raise ConfigurationError("the output file must not be the input file")
    items = _load_inputs(source, options.field, options.template)
    selector = _selector(options.select, options.demo_pool)
    records = [item.record for item in items]
    answer_key = _free_key(options.answer_field, records)
    if answer_key != options.answer_field:
        echo(
            f"Note: input records already have an '{options.answer_field}' field; the model's "
            f"answers go to '{answer_key}' (set --answer-field to choose)."
        )
    error_key = _free_key("error", records)
    if error_key != "error":
        echo(f"Note: input records already have an 'error' field; failures go to '{error_key}'.")
    if options.overwrite and output.exists():
        output.unlink()
    finished = read_finished(output)
    _check_output_matches_input(finished, items, output, source)
    job = _Job(options, spec, selector, items, finished, answer_key, error_key)
    if options.retry_errors and job.previous_errors:
        kept = {line: r for line, r in finished.items() if not job.is_error(r)}
        prepare_for_append(output, keep=kept)
        job = _Job(options, spec, selector, items, kept, answer_key, error_key)
    else:
        prepare_for_append(output)
    return job


def _free_key(name: str, records: Sequence[Mapping[str, Any]]) -> str:
    """``name``, or ``model_name`` where the input records already use ``name``."""
    while any(name in record for record in records):
        name = f"model_{name}"
    return name


def _check_output_matches_input(
    finished: Mapping[int, dict[str, Any]], items: Sequence[_Item], output: Path, source: Path
) -> None:
    """Refuse to resume into an output whose lines are not this input's records."""
    by_line = {item.line: item.record for item in items}
    stray = sorted(line for line in finished if line not in by_line)
    if stray:
        raise OutputError(
            f"{output} holds answers for input line(s) {stray[:5]} that {source} does not "
            "have: is it the output of another input? (use another -o, or --overwrite)"
        )
    changed = sorted(
        line
        for line, record in finished.items()
        if any(
            key not in record or _canonical(record[key]) != _canonical(value)
            for key, value in by_line[line].items()
        )
    )
    if changed:
        raise OutputError(
            f"{output}: the records of input line(s) {changed[:5]} differ from those lines of "
            f"{source}: is it the output of another input? (use another -o, or --overwrite)"
        )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _renderer(field: str, template: str | None) -> tuple[str | None, list[str]]:
    if template is None:
        return None, [field]
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise ConfigurationError(f"bad --template: {exc}") from None
    if not names:
        raise ConfigurationError("--template names no field, e.g. 'Premise: {premise}'")
    return template, [name.split(".")[0].split("[")[0] for name in names]


def _load_inputs(path: Path, field: str, template: str | None) -> list[_Item]:
    """One item per record, all checked up front."""
    if not path.exists():
        raise ConfigurationError(f"input file not found: {path}")
    fmt, needed = _renderer(field, template)
    items = []
    for number, record in read_jsonl(path):
        missing = [name for name in needed if name not in record]
        if missing:
            raise ConfigurationError(
                f"{path}:{number}: record lacks field(s) {', '.join(missing)} "
                f"(choose the text with --field NAME or --template '...')"
            )
        if LINE_KEY in record:
            raise ConfigurationError(
                f"{path}:{number}: record has an '{LINE_KEY}' field, which the output uses to "
                "resume; rename it"
            )
        if fmt is None:
            value = record[field]
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        else:
            try:
                text = fmt.format_map(record)
            except (KeyError, IndexError, AttributeError, ValueError) as exc:
                raise ConfigurationError(f"{path}:{number}: --template failed: {exc!r}") from None
        if not text.strip():
            raise ConfigurationError(f"{path}:{number}: the text to answer is empty")
        items.append(_Item(number, record, text))
    if not items:
        raise ConfigurationError(f"{path}: no records")
    return items


def _selector(select: str | None, demo_pool: Path | None) -> Any:
    if select is None and demo_pool is None:
        return None
    key = (select or "").strip().lower()
    if select is not None and (key not in GROUPINGS or key == "demo_pool"):
        raise ConfigurationError(f"unknown --select {select!r}: use similarity or neighbors")
    pool = []
    if demo_pool is not None:
        for number, record in read_jsonl(demo_pool):
            if "question" not in record or "answer" not in record:
                raise ConfigurationError(
                    f"{demo_pool}:{number}: demo records need question and answer"
                )
            pool.append((str(record["question"]), str(record["answer"])))
    from langchain_autodemo.selector import SimilarityBatchSelector

    if demo_pool is not None:
        return SimilarityBatchSelector(embeddings=None, grouping="demo_pool", demo_pool=pool)
    return SimilarityBatchSelector(embeddings=None, grouping=GROUPINGS[key])  # type: ignore[arg-type]


# -- answering ----------------------------------------------------------------------


def _answer(job: _Job) -> _Outcome:
    from tqdm import tqdm

    from langchain_autodemo import AutoDemoBatchRunnable, track_usage

    options, todo = job.options, job.todo
    spent = _SpentCounter()
    started = time.perf_counter()
    failed = 0
    interrupted = False
    with (
        open_model(job.spec, max_tokens=options.max_tokens) as opened,
        OutputWriter(options.output) as writer,
    ):
        echo(f"Model: {opened.description}")
        runner = AutoDemoBatchRunnable(
            opened.llm,
            instructions=options.instructions,
            batch_size=options.batch_size,
            mode=options.mode,
            selector=job.selector,
            reasoning=options.reasoning,
        )
        bar = tqdm(
            total=len(job.items),
            initial=len(job.finished),
            disable=not options.progress,
            unit="item",
            desc="autodemo run",
            file=sys.stderr,
        )
        with track_usage() as usage:
            try:
                results = runner.batch_as_completed(
                    [item.text for item in todo],
                    {"max_concurrency": options.max_concurrency, "callbacks": [spent]},
                    return_exceptions=True,
                )
                for index, result in results:
                    item = todo[index]
                    if isinstance(result, BaseException):
                        failed += 1
                        outcome = {job.error_key: str(result) or type(result).__name__}
                    else:
                        outcome = {job.answer_key: _jsonable(result)}
                    writer.write(item.line, {**item.record, **outcome})
                    bar.update(1)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                bar.close()
    return _Outcome(
        written=writer.written,
        failed=failed,
        # The runner reports its totals when the whole batch is done; after Ctrl-C the
        # calls counted as they ended are all there is.
        usage=usage if usage.calls else spent.usage,
        interrupted=interrupted,
        wall_time_s=time.perf_counter() - started,
    )


class _SpentCounter(BaseCallbackHandler):
    """The model calls and tokens spent, counted as each call ends (for Ctrl-C).

    Tokens are the model's own counts where it reports them, else the same estimate the
    runner makes (:func:`~langchain_autodemo.planning.estimate_tokens`).
    """

    def __init__(self) -> None:
        self.usage = UsageStats()
        self._started: dict[UUID, tuple[int, bool]] = {}
        self._lock = threading.Lock()

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        prompt = sum(estimate_tokens(text_of(m)) for batch in messages for m in batch)
        retry = int((metadata or {}).get("autodemo_attempt", 1)) > 1
        with self._lock:
            self._started[run_id] = (prompt, retry)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id, response)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        response: LLMResult | None = None,
        **kwargs: Any,
    ) -> None:
        self._ended(run_id, response)

    def _ended(self, run_id: UUID, response: LLMResult | None) -> None:
        with self._lock:
            prompt, retry = self._started.pop(run_id, (0, False))
        generations = [g for gs in (response.generations if response else []) for g in gs]
        message = getattr(generations[0], "message", None) if generations else None
        reported = getattr(message, "usage_metadata", None)
        if reported:
            usage = CallUsage(reported["input_tokens"], reported["output_tokens"])
        else:
            text = generations[0].text if generations else ""
            usage = CallUsage(prompt, estimate_tokens(text), estimated=True)
        self.usage.record_call(usage, retry=retry)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump()
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value
