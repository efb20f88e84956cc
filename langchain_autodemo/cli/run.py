"""``autodemo run``: answer every record of a JSONL file, resumably.

Each output line is ``{"input_line": N, ...the input record..., "answer": ...}`` (or the
item's ``"error"`` instead of its answer), appended and flushed as items complete. A
re-run of the same command skips the lines already answered; a file it did not write is
never touched. The settings that shape the answers are recorded in ``OUTPUT.meta.json``,
and a re-run with other settings is refused (naming each change) rather than mixing
answers of two setups in one file. The exit status is 0 only when every record was
answered, 1 when some ended in an error (or were left unanswered), 2 for bad input or
settings, 130 after Ctrl-C.

Online answering (:class:`OnlineAnswering`) and ``--via batch-api``
(:class:`langchain_autodemo.cli.batch_api.BatchApiAnswering`) share everything else:
the checks, the resume, the summary and the exit status (:func:`run`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

import typer
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from langchain_autodemo.cli.common import echo
from langchain_autodemo.cli.inputs import Item, read_items
from langchain_autodemo.cli.outcome import RunOutcome
from langchain_autodemo.cli.resume import (
    OutputError,
    OutputWriter,
    check_setup,
    compact_output,
    output_lock,
    prepare_for_append,
    read_finished,
    remove_output,
    sort_output,
    write_setup,
)
from langchain_autodemo.engine import ItemResult
from langchain_autodemo.errors import AutoDemoError, ConfigurationError
from langchain_autodemo.evaluation.datasets import read_jsonl
from langchain_autodemo.evaluation.methods import GROUPINGS
from langchain_autodemo.models import ModelSpec, open_model, parse_model_spec
from langchain_autodemo.planning import estimate_message_tokens, estimate_tokens
from langchain_autodemo.pricing import SharedPrefixes, prompt_text
from langchain_autodemo.prompts import Mode
from langchain_autodemo.settings import Settings, TunedConfig, explicit_flags, setup_fields
from langchain_autodemo.usage import CallUsage, UsageStats, reported_usage

if TYPE_CHECKING:
    from langchain_autodemo.pricing import Price
    from langchain_autodemo.runnable import AutoDemoBatchRunnable

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "SETUP_DEFAULTS",
    "Answering",
    "Item",
    "OnlineAnswering",
    "RunOutcome",
    "RunJob",
    "RunOptions",
    "error_message",
    "jsonable",
    "line_error",
    "run",
]


DEFAULT_INSTRUCTIONS = "Answer each question accurately."
"""What ``autodemo run`` says when neither ``--instructions`` nor a config does."""


@dataclass(frozen=True, kw_only=True)
class RunOptions(Settings):
    """What ``autodemo run`` was asked to do (the command's flags, checked by :func:`run`):
    the settings record that shapes the answers (:class:`~langchain_autodemo.settings.
    Settings`, from the flags or ``--config``) and where the job reads and writes."""

    input: Path
    output: Path
    model: str | None = None
    select: str | None = None
    demo_pool: Path | None = None
    field: str = "question"
    template: str | None = None
    answer_field: str = "answer"
    retry_errors: bool = False
    overwrite: bool = False
    sort: bool = True
    max_tokens: int | None = None
    max_concurrency: int = 1
    progress: bool = True
    via: str = "online"
    """``online``, or ``batch-api``: the packed calls as a provider Batch API job."""
    batch_option: list[str] | None = None
    """``KEY=VALUE`` settings of the Batch API job (see :mod:`langchain_autodemo.cli.batch_api`)."""
    audit: float | None = None
    """Share of the items audited against single answers (:mod:`langchain_autodemo.audit`),
    with the fallback to single calls at the default ``min_agreement``; ``None``: off."""
    config: Path | None = None
    """A configuration ``autodemo tune`` wrote (``tuned.json``): its settings replace those
    options (a flag given explicitly wins)."""
    price_model: str = "gpt-4o-mini"
    """Whose list prices the summary's cost line uses."""
    prices: Path | None = None
    """A JSON price table overriding the built-in one."""
    tier: str = "online"
    """``online``, ``flex`` or ``batch``: the tier the cost line prices at (``--via
    batch-api`` is priced as ``batch``)."""
    prompt: Path | None = None
    """A ``ChatPromptTemplate`` saved with ``langchain_core.load.dumpd``: each record's
    fields fill its variables and the runner is given the rendered prompt, as
    ``prompt | runner`` gives it."""


@dataclass(frozen=True)
class RunJob:
    """A checked run: its options, the items, what the output already holds, its field names."""

    options: RunOptions
    spec: ModelSpec
    selector: Any
    items: list[Item]
    finished: Mapping[int, dict[str, Any]]
    answer_key: str
    error_key: str
    setup: Mapping[str, Any]
    """The settings that shape the answers, recorded beside the output."""

    def runner(self, llm: Any) -> AutoDemoBatchRunnable:
        """The runner both ways of answering use (online and ``--via batch-api``)."""
        from langchain_autodemo.runnable import AutoDemoBatchRunnable

        return AutoDemoBatchRunnable.from_settings(
            llm,
            self.options,
            selector=self.selector,
            include_details=True,  # the output records each answer's confidence
        )

    @property
    def todo(self) -> list[Item]:
        return [item for item in self.items if item.line not in self.finished]

    def is_error(self, record: Mapping[str, Any]) -> bool:
        return self.error_key in record

    @property
    def previous_errors(self) -> int:
        return sum(self.is_error(record) for record in self.finished.values())

    def output_record(self, item: Item, result: Any) -> tuple[dict[str, Any], bool]:
        """The output fields of ``item`` for its ``result`` (an answer or an exception),
        and whether it failed."""
        if isinstance(result, BaseException):
            return {**item.record, self.error_key: error_message(item, result)}, True
        if isinstance(result, ItemResult):
            record = {**item.record, self.answer_key: jsonable(result.answer)}
            if result.confidence is not None:
                record["confidence"] = round(result.confidence, 6)
            if result.escalated:
                record["escalated"] = True
            return record, False
        return {**item.record, self.answer_key: jsonable(result)}, False


class Answering(Protocol):
    """How a :class:`RunJob`'s items are asked: online (:class:`OnlineAnswering`) or as a
    Batch API job (:class:`langchain_autodemo.cli.batch_api.BatchApiAnswering`)."""

    reattached: bool
    """The items to ask are those of an earlier, unfinished job (not the missing ones)."""

    def start(self) -> list[Item]:
        """The items to ask now (after the output is ready to append to)."""
        ...

    def answer(self, todo: list[Item], open_output: Callable[[], OutputWriter]) -> RunOutcome:
        """Ask ``todo``, writing each result as it arrives to ``open_output()``'s writer
        (opened once the model is ready)."""
        ...


Recover = Callable[[Path, list[Item], tuple[str, str], Mapping[str, Any]], None]
"""What an engine does with the output, locked, before it is read: ``(output, items,
(answer key, error key), setup)`` (the Ray engine appends the rows of a job that
stopped, :func:`langchain_autodemo.cli.ray_run.recover_parts`)."""


def run(
    options: RunOptions,
    *,
    answering: Callable[[RunJob], Answering] | None = None,
    recover: Recover | None = None,
) -> None:
    """Answer every record of ``options.input`` not yet in ``options.output``.

    ``answering`` asks the items (default: :class:`OnlineAnswering`, or ``--via
    batch-api``'s); ``recover`` readies the output first (see :data:`Recover`).
    Raises :class:`~langchain_autodemo.errors.ConfigurationError` (before anything is
    written) for bad input, and ``typer.Exit`` with the exit status described above.
    """
    options = _without_default_instructions(apply_tuned_config(options))
    _price(options)  # an unknown --price-model is refused before any call
    with ExitStack() as held:
        _run(options, held, answering, recover)


def _run(
    options: RunOptions,
    held: ExitStack,
    answering_for: Callable[[RunJob], Answering] | None,
    recover: Recover | None,
) -> None:
    job = _prepare(options, held, recover)
    answering: Answering
    if answering_for is not None:
        answering = answering_for(job)
    elif options.via == "batch-api":
        from langchain_autodemo.cli.batch_api import BatchApiAnswering

        answering = BatchApiAnswering(job)  # checks its options and the model first
    else:
        answering = OnlineAnswering(job)
    _make_ready(job)
    todo = answering.start()
    total = len(job.items)
    if job.finished and not answering.reattached:
        echo(f"Resuming: {len(job.finished)} of {total} items already in {options.output}.")
    if not todo:
        echo("Nothing to do: every item is already in the output.")
        if options.sort:
            sort_output(options.output)
        _exit_if_errors(job, job.previous_errors)
        return

    def open_output() -> OutputWriter:
        write_setup(options.output, job.setup, command="autodemo " + " ".join(sys.argv[1:]))
        return OutputWriter(options.output)

    outcome = answering.answer(todo, open_output)
    done = len(job.finished) + outcome.written
    usage = outcome.usage
    echo(
        f"Items: {done}/{total} answered or failed ({outcome.written} this run, "
        f"{outcome.failed} errors) | {outcome.calls_label}: {usage.calls} (re-asks "
        f"{usage.reasks}{f', escalations {usage.escalations}' if usage.escalations else ''}) "
        f"| tokens in/out: {usage.input_tokens}/{usage.output_tokens}"
        f"{' (estimated)' if usage.estimated_tokens else ''} | "
        f"wall time: {outcome.wall_time_s:.1f}s"
    )
    echo(_cost_line(options, usage, outcome.shared_prefix_tokens, outcome.reused_prefix_tokens))
    for note in outcome.notes:
        echo(note)
    if outcome.interrupted:
        echo(
            outcome.interrupted_hint
            or f"Interrupted: re-run the same command to answer the {total - done} remaining."
        )
        raise typer.Exit(130)
    if done < total:
        echo(f"Not complete: re-run the same command to answer the {total - done} remaining.")
        raise typer.Exit(1)
    if options.sort:
        sort_output(options.output)
    elif outcome.rewritten:
        compact_output(options.output)
    echo(f"Wrote {options.output}")
    _exit_if_errors(job, job.previous_errors + outcome.failed)


def _price(options: RunOptions) -> Price:
    """The prices the cost line uses (``ConfigurationError`` for an unknown model)."""
    from langchain_autodemo.pricing import PriceTable

    table = PriceTable.from_file(options.prices) if options.prices else PriceTable.default()
    tier = "batch" if options.via == "batch-api" else options.tier
    if options.via == "batch-api" and options.tier == "flex":
        raise ConfigurationError("--tier flex is an online tier: drop it with --via batch-api")
    return table.price(options.price_model, tier)


def _cost_line(
    options: RunOptions,
    usage: UsageStats,
    shared: Sequence[float] = (),
    reused: Sequence[float] = (),
) -> str:
    """What this run's tokens cost at list prices and the run's tier, per 1,000 items: the
    provider-reported cached input at the cached price; where the provider reported none,
    also what prompt caching would make of it (the prefix each call shares with a recent
    call, by the provider's caching rules, each prefix's first write at the cache-write
    price)."""
    from langchain_autodemo.pricing import cache_write_tokens

    price = _price(options)

    def usd(stats: UsageStats, *notes: str, written: int = 0) -> str:
        per_1k = stats.usd_per_1k_items(price, written_tokens=written)
        details = [f"${per_1k:.4f} per 1,000 items"] if per_1k is not None else []
        details += notes
        total = f"${stats.usd(price, written_tokens=written):.4f}"
        return f"{total} ({', '.join(details)})" if details else total

    where = {"batch": "Batch API", "flex": "flex"}.get(price.tier, "online")
    line = f"Cost at {options.price_model} {where} list prices: "
    if usage.cached_input_tokens:
        return line + usd(usage, f"{usage.cached_input_tokens} input tokens reported cached")
    cacheable = min(usage.input_tokens, sum(price.cacheable(tokens) for tokens in shared))
    if not cacheable:
        return line + usd(usage)
    cached = replace(usage, cached_input_tokens=cacheable)
    written = min(
        usage.input_tokens - cacheable,
        cache_write_tokens(shared, reused if len(reused) == len(shared) else None, price),
    )
    notes = [f"{cacheable} input tokens of prefixes shared with a recent call"]
    if price.cache_write is not None and written:
        notes.append(f"{written} written to the cache at {price.write_price / price.input:g}x")
    return line + usd(usage) + "; with prompt caching " + usd(cached, *notes, written=written)


def _exit_if_errors(job: RunJob, errors: int) -> None:
    if errors:
        echo(
            f"{errors} of {len(job.items)} items ended in an error (their '{job.error_key}' "
            "field says why); --retry-errors asks them again."
        )
        raise typer.Exit(1)


def error_message(item: Item, error: BaseException) -> str:
    """Why ``item`` got no answer, naming it by its input line as its output record does.

    The runner's errors say ``item K`` with K the position in the list it was given
    (the items left to do, counted from 0), which is not the input line; the reason is
    kept and the item is named by its line instead.
    """
    reason = getattr(error, "reason", None)
    if isinstance(error, AutoDemoError) and hasattr(error, "index") and isinstance(reason, str):
        attempts = getattr(error, "attempts", None)
        text = reason + (f" (after {attempts} attempt(s))" if attempts else "")
    else:
        text = str(error) or type(error).__name__
    return line_error(item.line, text)


def line_error(line: int, why: str) -> str:
    """An item's error as its output record says it (both engines): ``input line N: why``."""
    return f"input line {line}: {why}"


# -- checks: everything is validated before the first model call --------------------


def _prepare(options: RunOptions, held: ExitStack, recover: Recover | None = None) -> RunJob:
    """Check the options, the input and the output; nothing is written but the output's
    lock file, locked (into ``held``) once the input is known good, before the output is
    read (:func:`~langchain_autodemo.cli.resume.output_lock`)."""
    if options.via not in ("online", "batch-api"):
        raise ConfigurationError(f"unknown --via {options.via!r}: use online or batch-api")
    if options.audit is not None and (options.via != "online" or options.mode is Mode.SINGLE):
        raise ConfigurationError(
            "--audit compares packed answers with single ones: it needs --via online and a "
            "batched mode (auto_demo or batch)"
        )
    if options.select is not None and options.mode is Mode.SINGLE:
        raise ConfigurationError("--select needs a batched mode (auto_demo or batch)")
    spec = parse_model_spec(options.model)
    source, output = options.input, options.output
    if output.exists() and source.exists() and output.resolve() == source.resolve():
        raise ConfigurationError("the output file must not be the input file")
    if output.is_dir():
        raise OutputError(
            f"{output} is a folder, not an output file: both engines write one JSONL file "
            "(an older --engine ray wrote a folder of parts, which is not resumed; move it "
            "away, or use another -o)"
        )
    prompt = None
    if options.prompt is not None:
        from langchain_autodemo.evaluation.datasets import load_prompt

        if options.template is not None:
            raise ConfigurationError("--prompt fills its own variables: drop --template")
        prompt = load_prompt(options.prompt)
    items = read_items(source, options.field, options.template, prompt)
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
    setup = _setup(options, spec, answer_key)
    held.enter_context(output_lock(output))
    finished: Mapping[int, dict[str, Any]] = {}
    if not options.overwrite:
        if recover is not None:
            recover(output, items, (answer_key, error_key), setup)
        finished = read_finished(output)
        _check_output_matches_input(finished, items, output, source)
        if output.exists() and not check_setup(output, setup, defaults=SETUP_DEFAULTS) and finished:
            echo(
                f"Note: {output} has no record of the settings it was written with (an older "
                "autodemo wrote it); resuming it as if they were these."
            )
        if options.retry_errors:  # asked again: their lines go when the output is readied
            finished = {line: r for line, r in finished.items() if error_key not in r}
    return RunJob(options, spec, selector, items, finished, answer_key, error_key, setup)


def _make_ready(job: RunJob) -> None:
    """Ready the checked output for appending: ``--overwrite`` removes it, ``--retry-errors``
    drops the lines of the errors to ask again, a torn last line is cut off."""
    options, output = job.options, job.options.output
    if options.overwrite:
        remove_output(output)
    prepare_for_append(output, keep=job.finished if options.retry_errors else None)


def apply_tuned_config(options: RunOptions) -> RunOptions:
    """``options`` with a tuned configuration applied (``--config``): the file's settings
    replace the defaults, and a flag given explicitly (a value other than its default)
    wins over the file, with a notice saying so."""
    if options.config is None:
        return options
    config = TunedConfig.read(options.config)
    from_file = config.settings.as_dict()
    from_file["instructions"] = config.instructions or options.instructions
    given = explicit_flags(options.settings.as_dict(), instructions=DEFAULT_INSTRUCTIONS)
    kept = {}
    for name, value in given.items():
        if value != from_file[name]:
            kept[name] = getattr(options, name)
            echo(f"Note: --{name.replace('_', '-')} {value!r} overrides "
                 f"{options.config}'s {name} ({from_file[name]!r}).")  # fmt: skip
    select = config.grouping or options.select
    prompt = _tuned_prompt(options, config.tuned_on)
    return options.replace(**{**from_file, **kept, "select": select, "prompt": prompt})


def _without_default_instructions(options: RunOptions) -> RunOptions:
    """With ``--prompt`` the user's system message is the task: the command's default
    instructions are not added to it (given ones, or a config's, still are), so the run
    asks exactly what ``prompt | runner`` asks in Python."""
    if options.prompt is not None and options.instructions == DEFAULT_INSTRUCTIONS:
        return options.replace(instructions="")
    return options


def _tuned_prompt(options: RunOptions, tuned_on: Mapping[str, Any]) -> Path | None:
    """The prompt a run asks with under ``--config``: ``--prompt`` when given (with a
    warning when it is not the one the config was tuned with), else the config's own
    prompt file when it is still the one tuned (same digest)."""
    recorded, digest = tuned_on.get("prompt"), tuned_on.get("prompt_sha256")
    if options.prompt is not None:
        if digest and _digest(options.prompt) != f"sha256:{digest}":
            echo(f"Warning: {options.config} was tuned with another prompt ({recorded}); its "
                 "choice may not hold for this one (tune again with --prompt).")  # fmt: skip
        return options.prompt
    if not recorded:
        return None
    path = Path(recorded)
    if not path.is_file() or _digest(path) != f"sha256:{digest}":
        echo(f"Warning: {options.config} was tuned with the prompt {recorded}, which is gone "
             "or changed: asking without it (give --prompt).")  # fmt: skip
        return None
    echo(f"Note: asking with {recorded}, the prompt {options.config} was tuned with.")
    return path


_LISTED = (
    "mode", "batch_size", "grouping", "reasoning", "instructions", "demonstrations", "restate",
    "escalate",
)  # fmt: skip
"""Settings the setup record holds under names or in forms of its own (``select``, a digest
of the demonstrations): the rest go in as they are (:func:`setup_fields`)."""

SETUP_DEFAULTS = {
    "restate": "full", "audit": None, "escalate": 0.0, "prompt": None,
    **setup_fields(Settings(), listed=_LISTED),
}  # fmt: skip
"""The value of a setting that a record of an older autodemo lacks (it did not have it)."""


def _setup(options: RunOptions, spec: ModelSpec, answer_key: str) -> dict[str, Any]:
    """The settings that shape the answers: a resumed output must have been written with
    the same (:func:`~langchain_autodemo.cli.resume.check_setup`)."""
    single = options.mode is Mode.SINGLE
    return {
        "model": str(spec),
        "instructions": options.instructions,
        "mode": options.mode.value,
        "batch_size": None if single else options.batch_size,  # single asks one at a time
        "reasoning": options.reasoning,
        "restate": options.restate.value if options.mode is Mode.AUTO_DEMO else "full",
        "field": options.field if options.template is None else None,
        "template": options.template,
        "select": (options.select or "").strip().lower() or None,
        "demo_pool": _digest(options.demo_pool) if options.demo_pool is not None else None,
        "prompt": _digest(options.prompt) if options.prompt is not None else None,
        "max_tokens": options.max_tokens,
        # --audit can switch the rest of a run to single calls: part of what shaped it.
        "audit": options.audit,
        # escalation replaces some packed answers by single ones: it shapes them too
        "escalate": 0.0 if single else options.escalate,
        "answer_field": answer_key,
        "demonstrations": hashlib.sha256(json.dumps(options.demonstrations).encode()).hexdigest()[
            :16
        ]
        if options.demonstrations
        else None,
        # every other answer-shaping setting, a new one included, as the record holds it
        **setup_fields(options, listed=_LISTED),
    }


def _digest(path: Path) -> str:
    """A file's content, as ``sha256:`` and the first 16 hex digits of its digest."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _free_key(name: str, records: Sequence[Mapping[str, Any]]) -> str:
    """``name``, or ``model_name`` where the input records already use ``name``."""
    while any(name in record for record in records):
        name = f"model_{name}"
    return name


def _check_output_matches_input(
    finished: Mapping[int, dict[str, Any]], items: Sequence[Item], output: Path, source: Path
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


class OnlineAnswering:
    """Ask the items with ordinary model calls, writing each answer as it completes."""

    reattached = False

    def __init__(self, job: RunJob) -> None:
        self.job = job

    def start(self) -> list[Item]:
        return self.job.todo

    def answer(self, todo: list[Item], open_output: Callable[[], OutputWriter]) -> RunOutcome:
        from tqdm import tqdm

        from langchain_autodemo.usage import track_usage

        job, options = self.job, self.job.options
        spent = _SpentCounter()
        started = time.perf_counter()
        failed = 0
        interrupted = False
        with (
            open_model(job.spec, max_tokens=options.max_tokens) as opened,
            open_output() as writer,
        ):
            echo(f"Model: {opened.description}")
            runner = job.runner(opened.llm)
            answerer, audited, chunk = _audited(runner, options, len(todo))
            bar = tqdm(
                total=len(job.items),
                initial=len(job.finished),
                disable=not options.progress,
                unit="item",
                desc="autodemo run",
                file=sys.stderr,
            )
            guard = _Guard(audited) if audited is not None else None
            config = {"max_concurrency": options.max_concurrency, "callbacks": [spent]}
            failures: dict[int, bool] = {}

            def ask(answerer: Any, part: list[Item], *, count: bool = True) -> None:
                results = answerer.batch_as_completed(
                    [item.runner_input for item in part], config, return_exceptions=True
                )
                for index, result in results:
                    item = part[index]
                    record, is_error = job.output_record(item, result)
                    failures[item.line] = is_error
                    writer.write(item.line, record)
                    if count:
                        bar.update(1)

            with track_usage() as usage:
                try:
                    # One call, or (audited) chunks, so that a fallback reaches the rest.
                    for start in range(0, len(todo), chunk):
                        part = todo[start : start + chunk]
                        packed = guard is not None and not guard.audited.fallback_active
                        ask(answerer, part)
                        if guard is not None:
                            # The evidence keeps pace: this chunk's audits are in before the
                            # next chunk is asked, so a job never runs far ahead of them.
                            guard.audited.drain()
                            guard.answered(part, packed=packed)
                            redo = guard.to_answer_again()
                            if redo:  # tripped: what was packed since it was last good
                                ask(guard.safer, redo, count=False)
                    if guard is not None:
                        audited.close()  # the answers are written: wait for the last audits
                        redo = guard.to_answer_again()
                        if redo:
                            ask(guard.safer, redo, count=False)
                except KeyboardInterrupt:
                    interrupted = True
                finally:
                    bar.close()
            failed = sum(failures.values())
        notes: tuple[str, ...] = ()
        if audited is not None:
            notes = (audited.agreement().summary(),)
            if guard is not None and guard.answered_again:
                notes += (
                    f"The audit tripped the fallback: {guard.answered_again} item(s) answered "
                    "packed since the agreement was last known good were asked again under "
                    "the fallback and rewritten (their last record is their answer).",
                )
        written = len(failures)  # items, not lines: a re-answered item is rewritten
        return RunOutcome(
            written=written,
            failed=failed,
            usage=usage if usage.calls else spent.with_items(written, failed),
            interrupted=interrupted,
            wall_time_s=time.perf_counter() - started,
            notes=notes,
            shared_prefix_tokens=tuple(spent.shared_tokens),
            reused_prefix_tokens=tuple(spent.reused_tokens),
            rewritten=guard.answered_again if guard is not None else 0,
        )


class _Guard:
    """What an audited job answered packed since the agreement was last known good.

    A job writes a file nobody has read yet, so when the audit trips the fallback, the
    items answered packed since the agreement was last known to be good (its Wilson
    lower bound above ``min_agreement``) are asked again under the fallback and
    rewritten: the job never keeps answers that outran the evidence against them.
    """

    def __init__(self, audited: Any) -> None:
        self.audited = audited
        self.safer = audited.safer
        self.suspect: dict[int, Item] = {}
        self.answered_again = 0

    def answered(self, part: list[Item], *, packed: bool) -> None:
        if packed and self.safer is not None:
            self.suspect.update((item.line, item) for item in part)
        if self.audited.vouched:
            self.suspect.clear()

    def to_answer_again(self) -> list[Item]:
        """The suspect items, once the fallback is on (then they are no longer suspect)."""
        if not self.audited.fallback_active or not self.suspect:
            return []
        again = sorted(self.suspect.values(), key=lambda item: item.line)
        self.suspect.clear()
        self.answered_again += len(again)
        return again


def _audited(runner: Any, options: RunOptions, todo: int) -> tuple[Any, Any, int]:
    """What answers the items: the runner, or (``--audit``) the runner behind an
    :class:`~langchain_autodemo.audit.AuditedRunnable`, asked in chunks of a few rounds
    of calls so that the audits of one chunk can switch the next to single calls."""
    if options.audit is None:
        return runner, None, max(todo, 1)
    from langchain_autodemo.audit import AuditedRunnable, AuditPolicy

    audited = AuditedRunnable(runner, AuditPolicy(rate=options.audit, seed=0))
    return audited, audited, max(4 * options.batch_size * options.max_concurrency, 32)


class _SpentCounter(BaseCallbackHandler):
    """The model calls and tokens spent, counted as each call ends (for Ctrl-C).

    Tokens are the model's own counts where it reports them, else the same estimate the
    runner makes (:func:`~langchain_autodemo.planning.estimate_tokens`).
    """

    # Recent prompts a call's prefix is compared with: bounded memory on long runs, and
    # a provider keeps a cached prefix for minutes, not for a whole job.
    PREFIX_WINDOW = 256

    def __init__(self) -> None:
        self.usage = UsageStats()
        self.shared_tokens: list[float] = []
        """Per ended call, the input tokens of the prefix it shares with a recent call."""
        self._prefixes = SharedPrefixes(window=self.PREFIX_WINDOW)
        self._ended_calls: list[tuple[int, float]] = []  # (start order, tokens per character)
        self._started: dict[UUID, tuple[int, bool, float, int, int]] = {}
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
        sent = [m for batch in messages for m in batch]
        prompt = estimate_message_tokens(sent)
        retry = int((metadata or {}).get("autodemo_attempt", 1)) > 1
        whole = prompt_text(sent)
        with self._lock:
            index = len(self._prefixes.reused)
            share = self._prefixes.add(whole) / len(whole) if whole else 0.0
            self._started[run_id] = (prompt, retry, share, index, len(whole))

    @property
    def reused_tokens(self) -> list[float]:
        """Per ended call (the order of :attr:`shared_tokens`), the input tokens of its
        prefix a later call shared: what it wrote to a provider's cache."""
        with self._lock:
            return [self._prefixes.reused[k] * per_char for k, per_char in self._ended_calls]

    def with_items(self, written: int, failed: int) -> UsageStats:
        """The calls counted as they ended, with the items written: the usage to report
        when the runner's own totals never came (they come when the whole batch is done;
        after Ctrl-C these are all there is)."""
        usage = UsageStats()
        usage.merge(self.usage)
        usage.record_items(written - failed, failed)
        return usage

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
            prompt, retry, share, index, chars = self._started.pop(run_id, (0, False, 0.0, -1, 0))
        generations = [g for gs in (response.generations if response else []) for g in gs]
        message = getattr(generations[0], "message", None) if generations else None
        reported = reported_usage(message)
        if reported is not None:
            usage = CallUsage(reported.input_tokens, reported.output_tokens)
        else:
            text = generations[0].text if generations else ""
            usage = CallUsage(prompt, estimate_tokens(text), estimated=True)
        self.usage.record_call(usage, reask=retry)
        with self._lock:
            self.shared_tokens.append(share * usage.input_tokens)
            if index >= 0 and chars:
                self._ended_calls.append((index, usage.input_tokens / chars))
            else:
                self._ended_calls.append((-1, 0.0))


def jsonable(value: Any) -> Any:
    """An answer as it is written to the output: JSON types as they are, a pydantic
    model as its fields, anything else as its ``str``."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump()
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def __getattr__(name: str) -> Any:
    if name == "with_config":  # renamed: LangChain's with_config is another thing
        import warnings

        warnings.warn(
            "cli.run.with_config is deprecated: use apply_tuned_config",
            DeprecationWarning,
            stacklevel=2,
        )
        return apply_tuned_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
