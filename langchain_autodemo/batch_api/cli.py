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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from langchain_autodemo.batch_api.errors import BatchApiError
from langchain_autodemo.errors import ConfigurationError

__all__ = ["BatchOptions", "parse_batch_options", "run_batch_api"]


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


def run_batch_api(
    spec: Any,
    items: list[tuple[int, dict[str, Any], str]],
    finished: dict[int, dict[str, Any]],
    output: Path,
    *,
    instructions: str,
    batch_size: int,
    mode: str,
    selector: Any,
    reasoning: bool,
    answer_key: str,
    max_tokens: int | None,
    max_concurrency: int,
    progress: bool,
    sort: bool,
    overwrite: bool,
    batch_options: list[str] | None,
    error_key: str = "error",
) -> None:
    """The ``--via batch-api`` branch of ``autodemo run`` (after the input is checked)."""
    import openai
    from tqdm import tqdm

    from langchain_autodemo import AutoDemoBatchRunnable
    from langchain_autodemo.batch_api.cost import PriceTable
    from langchain_autodemo.batch_api.job import BatchApiJob
    from langchain_autodemo.cli.common import fail as _fail
    from langchain_autodemo.cli.resume import LINE_KEY, OutputWriter, sort_output
    from langchain_autodemo.cli.run import _jsonable
    from langchain_autodemo.models import open_model

    try:
        options = parse_batch_options(batch_options)
        prices = PriceTable.from_file(options.prices) if options.prices else PriceTable.default()
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None
    if getattr(spec, "kind", None) not in ("openai", "openai-compatible", "import"):
        raise _fail(
            "--via batch-api needs a Batch API: --model openai:MODEL, or openai-compatible:URL "
            "of a server that has one. To dry-run a local model, start `autodemo "
            "emulate-batch-api --upstream URL` in front of it and pass openai-compatible:"
            "http://127.0.0.1:PORT/v1"
        )
    state = options.state or output.with_name(output.name + ".batch-api.sqlite")
    if overwrite and state.exists():
        stored = BatchApiJob.stored(state)
        if stored and not stored["done"]:
            _echo(
                f"Note: discarding unfinished batch job {stored['job_id']} ({state}); "
                "its batches may still run at the provider."
            )
        state.unlink()
    stored = BatchApiJob.stored(state)
    by_line = {number: item for item, number in ((item, item[0]) for item in items)}
    if stored is not None:
        lines = list(stored["metadata"].get("input_lines") or [])
        unknown = [n for n in lines if n not in by_line]
        if unknown:
            message = (
                f"{state} is a batch job over input line(s) {unknown[:5]} that the input "
                "does not have: use the input it was started with, or --overwrite"
            )
            raise _fail(message)
        todo = [by_line[n] for n in lines]
        _echo(f"Re-attaching to batch job {stored['job_id']} ({len(todo)} items) from {state}")
    else:
        todo = [item for item in items if item[0] not in finished]
        if finished:
            _echo(f"Resuming: {len(finished)} of {len(items)} items already in {output}.")
        if not todo:
            _echo("Nothing to do: every item is already answered.")
            if sort:
                sort_output(output)
            return

    started = time.perf_counter()
    failed = 0
    bar: Any = None
    try:
        with open_model(spec, max_tokens=max_tokens) as opened, OutputWriter(output) as writer:
            _echo(
                f"Model: {opened.description} (via the Batch API at "
                f"{getattr(opened.llm, 'openai_api_base', None) or 'api.openai.com'})"
            )
            runner = AutoDemoBatchRunnable(
                opened.llm,
                instructions=instructions,
                batch_size=batch_size,
                mode=mode,
                selector=selector,
                reasoning=reasoning,
            )
            job = BatchApiJob(
                runner,
                [text for _, _, text in todo],
                state=state,
                follow_ups=options.follow_ups,  # type: ignore[arg-type]
                max_requests_per_file=options.max_requests_per_file,
                max_bytes_per_file=options.max_bytes_per_file,
                max_resubmits=options.max_resubmits,
                online_concurrency=max_concurrency,
                metadata={"input_lines": [number for number, _, _ in todo]},
                on_event=_echo,
            )
            _echo(f"Batch job {job.job_id}: {len(todo)} items; state in {state}")
            bar = tqdm(
                total=0, disable=not progress, unit="request", desc="batch job", file=sys.stderr
            )

            def on_progress(state_now: Any) -> None:
                bar.total = max(state_now.requests_total, 1)
                bar.n = min(state_now.requests_done, bar.total)
                statuses = ",".join(sorted({b.status for b in state_now.batches})) or "-"
                bar.set_postfix_str(
                    f"round {state_now.round} ({state_now.via}: {statuses}), "
                    f"items {state_now.items_done}/{state_now.items_total}",
                    refresh=False,
                )
                bar.refresh()

            def on_result(index: int, result: Any) -> None:
                nonlocal failed
                number, record, _ = todo[index]
                if number in finished:  # written by an earlier run (a replayed round)
                    return
                out = dict(record)
                if isinstance(result, BaseException):
                    failed += 1
                    out[error_key] = str(result) or type(result).__name__
                else:
                    out[answer_key] = _jsonable(result)
                writer.write(number, out)
                finished[number] = {**out, LINE_KEY: number}

            job.wait(
                poll_interval=options.poll_interval,
                return_exceptions=True,
                on_result=on_result,
                on_progress=on_progress,
            )
            bar.close()
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        _echo(
            f"Interrupted: the batch job goes on at the provider. Re-run the same command "
            f"to re-attach ({state})."
        )
        raise typer.Exit(130) from None
    except (ConfigurationError, BatchApiError) as exc:
        raise _fail(str(exc)) from None
    except openai.APIError as exc:
        raise _fail(
            f"the Batch API call failed: {type(exc).__name__}: {exc}. The job's state "
            f"is in {state}: re-run the same command to re-attach.",
            1,
        ) from None
    # Every result of the job is written: the next run starts afresh on what is left.
    job.state.close()
    state.unlink(missing_ok=True)
    usage = job.usage
    done = sum(1 for number, _, _ in items if number in finished)
    wall = time.perf_counter() - started
    _echo(
        f"Items: {done}/{len(items)} answered or failed ({failed} errors) | batch requests: "
        f"{usage.calls} (retries {usage.retries}) | tokens in/out: "
        f"{usage.input_tokens}/{usage.output_tokens}"
        f"{' (estimated)' if usage.estimated_tokens else ''} | wall time: {wall:.1f}s"
    )
    model = options.price_model or str(getattr(job.provider, "model", ""))
    try:
        _echo(job.cost(prices, model).summary())
    except ConfigurationError as exc:
        _echo(f"Cost: {exc}; name one with --batch-option price_model=NAME")
    if done < len(items):
        _echo(f"Not complete: re-run the same command to answer the {len(items) - done} remaining.")
        raise typer.Exit(1)
    if sort:
        sort_output(output)
    _echo(f"Wrote {output}")
    errors = sum(error_key in record for record in finished.values())
    if errors:
        _echo(f"{errors} of {len(items)} items ended in an error ('{error_key}' says why).")
        raise typer.Exit(1)
