"""``autodemo run --via batch-api``: the run command's packed calls as a resumable batch job.

The job's state file sits next to the output (``OUTPUT.batch-api.sqlite``) and records
which input lines the job answers. Re-running the same command after Ctrl-C, a crash or
a kill re-attaches to the job (its batches keep running at the provider meanwhile),
writes the results it has not written yet, and removes the state file once the output
is complete.

``--batch-option KEY=VALUE`` (repeatable) tunes the job:

=========================  ==================================================================
key                        meaning (default)
=========================  ==================================================================
``poll_interval``          seconds between polls (30)
``follow_ups``             ``batch``: re-asks as another batch round; ``online``: at once
``max_requests_per_file``  requests per batch file (50000)
``max_bytes_per_file``     bytes per batch file (209715200)
``max_resubmits``          resubmissions of an expired batch's unanswered requests (3)
``state``                  the state file (``OUTPUT.batch-api.sqlite``)
``prices``                 a JSON price table (see :mod:`langchain_autodemo.batch_api.cost`)
``price_model``            the price-table entry to cost the job with (the model's name)
=========================  ==================================================================
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_autodemo.batch_api.cost import PriceTable
from langchain_autodemo.batch_api.errors import BatchApiError
from langchain_autodemo.batch_api.job import BatchApiJob
from langchain_autodemo.cli.common import fail
from langchain_autodemo.cli.inputs import Item
from langchain_autodemo.cli.outcome import RunOutcome
from langchain_autodemo.errors import ConfigurationError

if TYPE_CHECKING:
    from langchain_autodemo.cli.resume import OutputWriter
    from langchain_autodemo.cli.run import RunJob  # cli.run picks this module: no cycle

__all__ = ["BATCH_CAPABLE_KINDS", "BatchApiAnswering", "BatchOptions", "parse_batch_options"]


@dataclass
class BatchOptions:
    poll_interval: float = 30.0
    follow_ups: str = "batch"
    max_requests_per_file: int = 50_000
    max_bytes_per_file: int = 200 * 1024 * 1024
    max_resubmits: int = 3
    state: Path | None = None
    prices: Path | None = None
    price_model: str | None = None


def parse_batch_options(pairs: list[str] | None) -> BatchOptions:
    """``["poll_interval=2", "follow_ups=online"]`` -> :class:`BatchOptions` (checked)."""
    options = BatchOptions()
    kinds = {name: type(value) for name, value in vars(BatchOptions()).items()}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in BatchOptions.__dataclass_fields__:
            raise ConfigurationError(
                f"bad --batch-option {pair!r}: use KEY=VALUE with KEY one of "
                + ", ".join(BatchOptions.__dataclass_fields__)
            )
        value = value.strip()
        try:
            if key in ("state", "prices"):
                setattr(options, key, Path(value))
            elif key in ("follow_ups", "price_model"):
                setattr(options, key, value)
            else:
                number = kinds[key](value)
                if number <= 0:
                    raise ValueError
                setattr(options, key, number)
        except ValueError:
            raise ConfigurationError(f"--batch-option {key} needs a positive number") from None
    if options.follow_ups not in ("batch", "online"):
        raise ConfigurationError("--batch-option follow_ups must be batch or online")
    return options


def _echo(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


BATCH_CAPABLE_KINDS = ("openai", "openai-compatible", "import")
"""Model spec kinds whose chat model can be asked through a Batch API."""


class BatchApiAnswering:
    """The ``--via batch-api`` way of answering an ``autodemo run`` job.

    Built from the checked :class:`~langchain_autodemo.cli.run.RunJob` (its
    :class:`~langchain_autodemo.cli.run.RunOptions` hold every setting); the resume,
    summary and exit status are the run command's, shared with online answering.
    """

    def __init__(self, job: RunJob) -> None:
        self.job = job
        self.settings = parse_batch_options(job.options.batch_option)
        self.prices = (
            PriceTable.from_file(self.settings.prices)
            if self.settings.prices
            else PriceTable.default()
        )
        if job.spec.kind not in BATCH_CAPABLE_KINDS:
            raise ConfigurationError(
                "--via batch-api needs a Batch API: --model openai:MODEL, or openai-compatible:"
                "URL of a server that has one. To dry-run a local model, start `autodemo "
                "emulate-batch-api --upstream URL` in front of it and pass openai-compatible:"
                "http://127.0.0.1:PORT/v1"
            )
        output = job.options.output
        self.state = self.settings.state or output.with_name(output.name + ".batch-api.sqlite")
        self.stored = None if job.options.overwrite else BatchApiJob.stored(self.state)
        """The unfinished job in the state file, re-attached to (``None``: a new job)."""
        self.reattached = self.stored is not None
        if self.stored is not None:
            known = {item.line for item in job.items}
            unknown = [n for n in self._stored_lines() if n not in known]
            if unknown:
                raise ConfigurationError(
                    f"{self.state} is a batch job over input line(s) {unknown[:5]} that the "
                    "input does not have: use the input it was started with, or --overwrite"
                )

    def _stored_lines(self) -> list[int]:
        return list((self.stored or {}).get("metadata", {}).get("input_lines") or [])

    def start(self) -> list[Item]:
        """The items of the unfinished job in the state file, else the missing ones."""
        job, state = self.job, self.state
        if job.options.overwrite and state.exists():
            earlier = BatchApiJob.stored(state)
            if earlier and not earlier["done"]:
                _echo(
                    f"Note: discarding unfinished batch job {earlier['job_id']} ({state}); "
                    "its batches may still run at the provider."
                )
            state.unlink()
        if self.stored is None:
            return job.todo
        by_line = {item.line: item for item in job.items}
        todo = [by_line[n] for n in self._stored_lines()]
        _echo(f"Re-attaching to batch job {self.stored['job_id']} ({len(todo)} items) from {state}")
        return todo

    def answer(self, todo: list[Item], open_output: Callable[[], OutputWriter]) -> RunOutcome:
        """Submit ``todo`` as a batch job (or re-attach to it) and write every result."""
        import openai
        from tqdm import tqdm

        from langchain_autodemo.models import open_model
        from langchain_autodemo.usage import UsageStats

        run, options, settings, state = self.job, self.job.options, self.settings, self.state
        written: set[int] = set(run.finished)  # a replayed round re-delivers these
        failed = 0
        started = time.perf_counter()
        job: BatchApiJob | None = None
        writer: OutputWriter | None = None
        bar: Any = None
        try:
            with (
                open_model(run.spec, max_tokens=options.max_tokens) as opened,
                open_output() as writer,
            ):
                _echo(
                    f"Model: {opened.description} (via the Batch API at "
                    f"{getattr(opened.llm, 'openai_api_base', None) or 'api.openai.com'})"
                )
                runner = run.runner(opened.llm)
                job = BatchApiJob(
                    runner,
                    [item.runner_input for item in todo],
                    state=state,
                    follow_ups=settings.follow_ups,  # type: ignore[arg-type]
                    max_requests_per_file=settings.max_requests_per_file,
                    max_bytes_per_file=settings.max_bytes_per_file,
                    max_resubmits=settings.max_resubmits,
                    online_concurrency=options.max_concurrency,
                    metadata={"input_lines": [item.line for item in todo]},
                    on_event=_echo,
                )
                _echo(f"Batch job {job.job_id}: {len(todo)} items; state in {state}")
                bar = tqdm(
                    total=0,
                    disable=not options.progress,
                    unit="request",
                    desc="batch job",
                    file=sys.stderr,
                )

                def on_progress(now: Any) -> None:
                    bar.total = max(now.requests_total, 1)
                    bar.n = min(now.requests_done, bar.total)
                    statuses = ",".join(sorted({b.status for b in now.batches})) or "-"
                    bar.set_postfix_str(
                        f"round {now.round} ({now.via}: {statuses}), "
                        f"items {now.items_done}/{now.items_total}",
                        refresh=False,
                    )
                    bar.refresh()

                def on_result(index: int, result: Any) -> None:
                    nonlocal failed
                    item = todo[index]
                    if item.line in written:
                        return
                    assert writer is not None
                    record, is_error = run.output_record(item, result)
                    failed += is_error
                    writer.write(item.line, record)
                    written.add(item.line)

                job.wait(
                    poll_interval=settings.poll_interval,
                    return_exceptions=True,
                    on_result=on_result,
                    on_progress=on_progress,
                )
                bar.close()
        except KeyboardInterrupt:
            if bar is not None:
                bar.close()
            return RunOutcome(
                written=writer.written if writer is not None else 0,
                failed=failed,
                usage=job.usage if job is not None else UsageStats(),
                interrupted=True,
                wall_time_s=time.perf_counter() - started,
                calls_label="batch requests",
                interrupted_hint="Interrupted: the batch job goes on at the provider. Re-run the "
                f"same command to re-attach ({state}).",
            )
        except BatchApiError as exc:
            raise ConfigurationError(str(exc)) from None
        except openai.APIError as exc:
            raise fail(
                f"the Batch API call failed: {type(exc).__name__}: {exc}. The job's state "
                f"is in {state}: re-run the same command to re-attach.",
                1,
            ) from None
        # Every result of the job is written: the next run starts afresh on what is left.
        job.state.close()
        state.unlink(missing_ok=True)
        model = settings.price_model or str(getattr(job.provider, "model", ""))
        try:
            cost = job.cost(self.prices, model).summary()
        except ConfigurationError as exc:
            cost = f"Cost: {exc}; name one with --batch-option price_model=NAME"
        return RunOutcome(
            written=writer.written,
            failed=failed,
            usage=job.usage,
            interrupted=False,
            wall_time_s=time.perf_counter() - started,
            calls_label="batch requests",
            notes=(cost,),
        )
