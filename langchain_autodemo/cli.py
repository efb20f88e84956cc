"""``autodemo``: run and evaluate Auto-Demo batch prompting from the command line.

- ``autodemo run INPUT.jsonl -o OUTPUT.jsonl``: answer every record, resumably.
- ``autodemo eval --dataset gsm8k``: compare methods and batch sizes; JSON, Markdown, plots.

See ``docs/cli.md`` for the full reference.
"""

from __future__ import annotations

import json
import logging
import os
import string
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from langchain_autodemo.batch_api.emulator import emulate_batch_api
from langchain_autodemo.evaluation.datasets import DatasetError, read_jsonl
from langchain_autodemo.evaluation.methods import (
    DEFAULT_METHODS,
    SELECTIONS,
    MethodError,
    parse_batch_sizes,
    parse_methods,
)
from langchain_autodemo.evaluation.resume import (
    LINE_KEY,
    OutputError,
    OutputWriter,
    read_finished,
    sort_output,
)
from langchain_autodemo.models import ModelSpecError, open_model, parse_model_spec

__all__ = ["app"]

# Chroma (behind --select / similarity methods) must not phone home: nothing leaves the host.
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# Chroma turns on INFO logging, which would print every model request over the progress bar.
for _noisy in ("httpx", "httpx2"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

app = typer.Typer(
    name="autodemo",
    help="Auto-Demo batch prompting: answer many small requests with few model calls.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_USER_ERRORS = (DatasetError, MethodError, ModelSpecError, OutputError)

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="openai:MODEL, openai-compatible:URL[#MODEL], llamacpp:PATH.gguf; "
        "default: the local Qwen2.5-Coder-1.5B GGUF on a llama.cpp server.",
    ),
]
MaxTokensOption = Annotated[
    int | None,
    typer.Option("--max-tokens", min=1, help="Completion token limit per call."),
]
ConcurrencyOption = Annotated[
    int,
    typer.Option(
        "--max-concurrency",
        min=1,
        help="Model calls in flight at once (a local llama.cpp server answers one at a time).",
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one clear line and exit status 2."""
    try:
        yield
    except _USER_ERRORS as exc:
        raise _fail(str(exc)) from None


def _echo(message: str) -> None:
    typer.echo(message, err=True)


# -- run ----------------------------------------------------------------------------


class _InputError(DatasetError):
    pass


def _renderer(field: str, template: str | None) -> tuple[Any, list[str]]:
    if template is None:
        return None, [field]
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise _InputError(f"bad --template: {exc}") from None
    if not names:
        raise _InputError("--template names no field, e.g. 'Premise: {premise}'")
    return template, [name.split(".")[0].split("[")[0] for name in names]


def _load_inputs(
    path: Path, field: str, template: str | None
) -> list[tuple[int, dict[str, Any], str]]:
    """(line number, record, text for the model) for each record; all checked up front."""
    if not path.exists():
        raise _InputError(f"input file not found: {path}")
    fmt, needed = _renderer(field, template)
    items = []
    for number, record in read_jsonl(path):
        missing = [name for name in needed if name not in record]
        if missing:
            raise _InputError(
                f"{path}:{number}: record lacks field(s) {', '.join(missing)} "
                f"(choose the text with --field NAME or --template '...')"
            )
        if fmt is None:
            value = record[field]
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        else:
            try:
                text = fmt.format_map(record)
            except (KeyError, IndexError, AttributeError, ValueError) as exc:
                raise _InputError(f"{path}:{number}: --template failed: {exc!r}") from None
        if not text.strip():
            raise _InputError(f"{path}:{number}: the text to answer is empty")
        items.append((number, record, text))
    if not items:
        raise _InputError(f"{path}: no records")
    return items


def _selector(select: str | None, demo_pool: Path | None) -> Any:
    if select is None and demo_pool is None:
        return None
    key = (select or "").strip().lower()
    if select is not None and (key not in SELECTIONS or key == "demo_pool"):
        raise _InputError(f"unknown --select {select!r}: use similarity or neighbors")
    pool = []
    if demo_pool is not None:
        for number, record in read_jsonl(demo_pool):
            if "question" not in record or "answer" not in record:
                raise _InputError(f"{demo_pool}:{number}: demo records need question and answer")
            pool.append((str(record["question"]), str(record["answer"])))
    from langchain_autodemo.selector import SimilarityBatchSelector

    if demo_pool is not None:
        return SimilarityBatchSelector(embeddings=None, mode="demo_pool", demo_pool=pool)
    return SimilarityBatchSelector(embeddings=None, mode=SELECTIONS[key])  # type: ignore[arg-type]


@app.command()
def run(
    input: Annotated[Path, typer.Argument(help="JSONL file, one JSON object per line.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="JSONL output; resumed if it exists.")
    ],
    instructions: Annotated[
        str, typer.Option("--instructions", "-i", help="The task, in one or two sentences.")
    ] = "Answer each question accurately.",
    model: ModelOption = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-n", min=1)] = 8,
    mode: Annotated[str, typer.Option(help="auto_demo, batch or single.")] = "auto_demo",
    select: Annotated[
        str | None,
        typer.Option(help="similarity: put similar questions in the same call (or neighbors)."),
    ] = None,
    demo_pool: Annotated[
        Path | None,
        typer.Option(help="JSONL of solved examples (question, answer) to retrieve as demos."),
    ] = None,
    field: Annotated[str, typer.Option(help="The record field to answer.")] = "question",
    template: Annotated[
        str | None,
        typer.Option(help="Build the text from several fields: 'Premise: {premise} ...'."),
    ] = None,
    answer_field: Annotated[str, typer.Option(help="Output field for the answer.")] = "answer",
    reasoning: Annotated[
        bool, typer.Option(help="Ask for reasoning before each final answer.")
    ] = True,
    retry_errors: Annotated[
        bool, typer.Option(help="On resume, ask again the items that ended in an error.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Start afresh instead of resuming.")] = False,
    sort: Annotated[
        bool, typer.Option(help="When complete, rewrite the output in input order.")
    ] = True,
    max_tokens: MaxTokensOption = None,
    max_concurrency: ConcurrencyOption = 1,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    via: Annotated[
        str, typer.Option(help="online, or batch-api: the packed calls as a Batch API job.")
    ] = "online",
    batch_option: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE for --via batch-api, e.g. poll_interval=5 (repeatable)."),
    ] = None,
) -> None:
    """Answer every record of INPUT, writing each answer (or its error) to OUTPUT.

    Output lines are written as items complete; re-running the same command after an
    interruption skips the finished ones.
    """
    with _user_errors():
        if mode not in ("auto_demo", "batch", "single"):
            raise _InputError(f"unknown --mode {mode!r}: use auto_demo, batch or single")
        if select is not None and mode == "single":
            raise _InputError("--select needs a batched mode (auto_demo or batch)")
        if via not in ("online", "batch-api"):
            raise _InputError(f"unknown --via {via!r}: use online or batch-api")
        spec = parse_model_spec(model)
        if output.exists() and input.exists() and output.resolve() == input.resolve():
            raise _InputError("the output file must not be the input file")
        items = _load_inputs(input, field, template)
        selector = _selector(select, demo_pool)
        if overwrite and output.exists():
            output.unlink()
        answer_key = answer_field
        if any(answer_key in record for _, record, _ in items):
            answer_key = f"model_{answer_field}"
            _echo(
                f"Note: input records already have an '{answer_field}' field; the model's "
                f"answers go to '{answer_key}' (set --answer-field to choose)."
            )
        finished = read_finished(output, drop_errors=retry_errors)
        numbers = {number for number, _, _ in items}
        stray = sorted(set(finished) - numbers)
        if stray:
            raise OutputError(
                f"{output} holds answers for input line(s) {stray[:5]} that {input} does not "
                "have: is it the output of another input? (use another -o, or --overwrite)"
            )
        if via == "batch-api":  # see langchain_autodemo.batch_api.cli
            from langchain_autodemo.batch_api.cli import run_batch_api

            return run_batch_api(
                spec, items, finished, output, instructions=instructions, batch_size=batch_size,
                mode=mode, selector=selector, reasoning=reasoning, answer_key=answer_key,
                max_tokens=max_tokens, max_concurrency=max_concurrency, progress=progress,
                sort=sort, overwrite=overwrite, batch_options=batch_option,
            )  # fmt: skip
        todo = [item for item in items if item[0] not in finished]
        if finished:
            _echo(f"Resuming: {len(finished)} of {len(items)} items already in {output}.")
        if not todo:
            _echo("Nothing to do: every item is already answered.")
            if sort:
                sort_output(output)
            return
        _run_items(
            spec, todo, output, len(items), len(finished),
            instructions=instructions, batch_size=batch_size, mode=mode, selector=selector,
            reasoning=reasoning, answer_key=answer_key, max_tokens=max_tokens,
            max_concurrency=max_concurrency, progress=progress, sort=sort,
        )  # fmt: skip


def _run_items(
    spec: Any,
    todo: list[tuple[int, dict[str, Any], str]],
    output: Path,
    total: int,
    already: int,
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
) -> None:
    from tqdm import tqdm

    from langchain_autodemo import AutoDemoBatchRunnable, track_usage

    started = time.perf_counter()
    failed = 0
    interrupted = False
    with open_model(spec, max_tokens=max_tokens) as opened, OutputWriter(output) as writer:
        _echo(f"Model: {opened.description}")
        runner = AutoDemoBatchRunnable(
            opened.llm,
            instructions=instructions,
            batch_size=batch_size,
            mode=mode,
            selector=selector,
            reasoning=reasoning,
        )
        bar = tqdm(total=total, initial=already, disable=not progress, unit="item",
                   desc="autodemo run", file=sys.stderr)  # fmt: skip
        with track_usage() as usage:
            try:
                results = runner.batch_as_completed(
                    [text for _, _, text in todo],
                    {"max_concurrency": max_concurrency},
                    return_exceptions=True,
                )
                for index, result in results:
                    number, record, _ = todo[index]
                    out = {**record, LINE_KEY: number}
                    if isinstance(result, BaseException):
                        failed += 1
                        out["error"] = str(result) or type(result).__name__
                    else:
                        out[answer_key] = _jsonable(result)
                    writer.write(out)
                    bar.update(1)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                bar.close()
    wall = time.perf_counter() - started
    done = already + writer.written
    _echo(
        f"Items: {done}/{total} answered or failed ({writer.written} this run, {failed} errors)"
        f" | calls: {usage.calls} (retries {usage.retries}) | tokens in/out: "
        f"{usage.input_tokens}/{usage.output_tokens}"
        f"{' (estimated)' if usage.estimated_tokens else ''} | wall time: {wall:.1f}s"
    )
    if interrupted or done < total:
        _echo(f"Interrupted: re-run the same command to answer the {total - done} remaining.")
        raise typer.Exit(130 if interrupted else 1)
    if sort:
        sort_output(output)
    _echo(f"Wrote {output}")


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


# -- eval ---------------------------------------------------------------------------


@app.command("eval")
def eval_(
    dataset: Annotated[
        str,
        typer.Option(help="gsm8k, rte, boolq, sst2, or a JSONL file with question and answer."),
    ] = "gsm8k",
    methods: Annotated[
        str, typer.Option(help="Comma-separated: MODE[+SELECTION], e.g. auto_demo+similarity.")
    ] = DEFAULT_METHODS,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "4,8,16",
    limit: Annotated[
        int, typer.Option(min=0, help="Evaluate the first K examples (0: all of them).")
    ] = 64,
    model: ModelOption = None,
    out: Annotated[
        Path, typer.Option(help="Folder for results.json, results.md and the plots.")
    ] = Path("autodemo-results"),
    task: Annotated[str | None, typer.Option(help="For a dataset file: numeric or label.")] = None,
    max_tokens: MaxTokensOption = None,
    max_concurrency: ConcurrencyOption = 1,
    plots: Annotated[bool, typer.Option(help="Write PNG plots.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Score methods x batch sizes on a dataset: accuracy, parse failures, calls, tokens, time."""
    from tqdm import tqdm

    from langchain_autodemo.evaluation.datasets import load_dataset
    from langchain_autodemo.evaluation.harness import MethodResult, evaluate
    from langchain_autodemo.evaluation.report import markdown_table, write_report

    with _user_errors():
        chosen = parse_methods(methods)
        sizes = parse_batch_sizes(batch_sizes)
        spec = parse_model_spec(model)
        if task is not None and task not in ("numeric", "label"):
            raise DatasetError(f"unknown --task {task!r}: use numeric or label")
        data = load_dataset(dataset, limit=limit or None, task=task)
        done: list[MethodResult] = []
        started = time.perf_counter()
        meta: dict[str, Any] = {
            "dataset": data.name,
            "source": data.source,
            "task": data.task.kind,
            "items": len(data),
            "methods": [m.name for m in chosen],
            "batch_sizes": sizes,
            "model": str(spec),
            "command": "autodemo " + " ".join(sys.argv[1:]),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        }
        bar: list[Any] = []

        def on_start(method: Any, size: int, n: int) -> None:
            label = method.name if not method.batched else f"{method.name} N={size}"
            bar.append(tqdm(total=n, desc=label, unit="item", disable=not progress,
                            file=sys.stderr))  # fmt: skip

        def on_item() -> None:
            bar[-1].update(1)

        def on_result(result: MethodResult) -> None:
            bar[-1].close()
            done.append(result)
            _echo(
                f"  {result.method} N={result.batch_size}: accuracy {result.correct}/{result.n}"
                f", parse failures {result.parse_failures}, calls {result.calls}, "
                f"{result.wall_time_s:.1f}s"
            )
            meta["wall_time_s"] = round(time.perf_counter() - started, 1)
            write_report(done, out, meta=meta, plots=plots)  # partial results survive a crash

        with open_model(spec, max_tokens=max_tokens) as opened:
            meta["model"] = opened.description
            _echo(f"Model: {opened.description}; dataset {data.name} ({len(data)} items)")
            try:
                evaluate(
                    opened.llm, data, chosen, sizes, max_concurrency=max_concurrency,
                    on_start=on_start, on_item=on_item, on_result=on_result,
                )  # fmt: skip
            except KeyboardInterrupt:
                for open_bar in bar:
                    open_bar.close()
                _echo(f"Interrupted; results so far are in {out}/")
                raise typer.Exit(130) from None
    typer.echo(markdown_table(done))
    _echo(
        f"Wrote {out}/results.json, results.md, predictions.jsonl" + (" and plots" if plots else "")
    )


# -- serve --------------------------------------------------------------------------


@app.command()
def serve(
    instructions: Annotated[
        str, typer.Option("--instructions", "-i", help="The task, in one or two sentences.")
    ],
    model: ModelOption = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-n", min=1)] = 8,
    mode: Annotated[str, typer.Option(help="auto_demo, batch or single.")] = "auto_demo",
    reasoning: Annotated[
        bool, typer.Option(help="Ask for reasoning before each final answer.")
    ] = True,
    max_wait: Annotated[
        float, typer.Option(min=0.0, help="Seconds a request waits for others to pack with.")
    ] = 0.05,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    max_tokens: MaxTokensOption = None,
) -> None:
    """Serve a LangServe endpoint at /autodemo whose concurrent requests share packed calls."""
    import uvicorn

    from langchain_autodemo import AutoDemoBatchRunnable
    from langchain_autodemo.prompts import Mode
    from langchain_autodemo.serving import create_app

    if mode not in {m.value for m in Mode}:  # before a model server is started for nothing
        raise _fail(f"unknown --mode {mode!r}: use auto_demo, batch or single")
    with _user_errors():
        spec = parse_model_spec(model)
        with open_model(spec, max_tokens=max_tokens) as opened:
            _echo(f"Model: {opened.description}")
            runner = AutoDemoBatchRunnable(
                opened.llm,
                instructions=instructions,
                batch_size=batch_size,
                mode=mode,
                reasoning=reasoning,
            )
            app_ = create_app(runner, max_wait_seconds=max_wait)
            _echo(f"Serving on http://{host}:{port}/autodemo (POST /autodemo/invoke)")
            uvicorn.run(app_, host=host, port=port, log_level="warning")


app.command("emulate-batch-api")(emulate_batch_api)


def main() -> None:  # pragma: no cover - python -m langchain_autodemo.cli
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
