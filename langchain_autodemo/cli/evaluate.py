"""``autodemo eval``: score methods x batch sizes on a dataset, with a report as it goes."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer

from langchain_autodemo.cli.common import echo
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.evaluation.methods import DEFAULT_METHODS, parse_batch_sizes, parse_methods
from langchain_autodemo.models import open_model, parse_model_spec
from langchain_autodemo.settings import Settings, setup_fields

__all__ = ["EvalOptions", "evaluate"]


@dataclass(frozen=True, kw_only=True)
class EvalOptions(Settings):
    """What ``autodemo eval`` was asked to do (the command's flags, checked by :func:`evaluate`).

    Its :class:`~langchain_autodemo.settings.Settings` are what every method is asked
    with (``reasoning``, ``restate``, ``escalate``, ``reask_with_answered``, ...); each
    method x batch size sets the mode, batch size and grouping, the dataset's task the
    instructions, and ``shots`` the demonstrations.
    """

    dataset: str = "gsm8k"
    methods: str = DEFAULT_METHODS
    batch_sizes: str = "4,8,16"
    limit: int = 64
    """The first K examples; 0: all of them."""
    model: str | None = None
    out: Path = Path("autodemo-results")
    task: str | None = None
    max_tokens: int | None = None
    max_concurrency: int = 1
    demos_per_batch: int = 4
    """Demonstrations per call (+demo_pool, +bootstrap)."""
    bootstrap_size: int = 64
    """Training items the model answers to fill the +bootstrap pool."""
    bootstrap_store: Path | None = None
    """Folder keeping bootstrap pools (default: the per-user cache)."""
    plots: bool = True
    progress: bool = True
    resume: bool = False
    """Keep the results already in ``out`` and run only the missing method x batch size."""
    rerun: bool = False
    """With ``resume``: run the chosen method x batch size pairs again, replacing their rows."""
    shots: int = 0
    """Solved training exemplars shown before every call of every method (k-shot)."""
    prices: Path | None = None
    """A JSON price table overriding the built-in one (see :mod:`langchain_autodemo.pricing`)."""
    price_model: str = "gpt-4o-mini"
    """Whose prices (and caching rules) the report's USD columns use."""
    tier: str = "online"
    """``online``, ``flex`` or ``batch``: the tier the report's USD columns are at."""
    prompt: Path | None = None
    """Your ChatPromptTemplate (``langchain_core.load.dumpd`` JSON); ``dataset`` is then a
    JSONL file whose records fill its variables."""
    answer_key: str = "answer"
    """With ``prompt``: the record field holding the expected answer."""


# Settings an eval report holds under names of its own, or that its methods, dataset and
# shots decide; the rest go in as they are (setup_fields), a new one included.
_LISTED = (
    "mode", "batch_size", "grouping", "instructions", "demonstrations", "reasoning", "restate",
    "escalate", "reask_with_answered",
)  # fmt: skip
_RESUME_DEFAULTS: dict[str, Any] = {
    "reask_with_answered": False, "reasoning": True, "shots": 0, "restate": "full",
    "escalate": 0.0, "prompt": None, **setup_fields(Settings(), listed=_LISTED),
}  # fmt: skip
# what must match for an earlier report in --out to be extended by --resume
_RESUME_KEYS = (
    "dataset", "source", "task", "items", "model", "demos_per_batch", "reask_with_answered",
    "reasoning", "shots", "restate", "escalate", "prompt",
    *setup_fields(Settings(), listed=_LISTED),
)  # fmt: skip


class _Progress:
    """One progress bar per method and batch size; the report is rewritten after each."""

    def __init__(self, options: EvalOptions, meta: dict[str, Any], earlier: list[Any]) -> None:
        self.options = options
        self.meta = meta
        self.earlier = earlier
        self.done: list[Any] = []
        self.bars: list[Any] = []
        self.started = time.perf_counter()

    def on_start(self, method: Any, size: int, n: int) -> None:
        from tqdm import tqdm

        label = method.name if not method.batched else f"{method.name} N={size}"
        self.bars.append(
            tqdm(total=n, desc=label, unit="item", disable=not self.options.progress,
                 file=sys.stderr)
        )  # fmt: skip

    def on_item(self) -> None:
        self.bars[-1].update(1)

    def on_bootstrap_start(self, n: int) -> None:
        from tqdm import tqdm

        self.bars.append(
            tqdm(total=n, desc="bootstrap pool", unit="item",
                 disable=not self.options.progress, file=sys.stderr)
        )  # fmt: skip

    def on_bootstrap(self, pool: Any) -> None:
        if not pool.reused:
            self.bars[-1].close()
        self.meta["bootstrap"] = pool.summary()
        how = "reused" if pool.reused else f"built in {pool.build_time_s:.1f}s"
        echo(f"  bootstrap pool: {pool.kept}/{pool.attempted} answers kept ({how})")

    def on_result(self, result: Any) -> None:
        from langchain_autodemo.evaluation.report import write_report

        self.bars[-1].close()
        self.done.append(result)
        echo(
            f"  {result.method} N={result.batch_size}: accuracy {result.correct}/{result.n}"
            f", parse failures {result.parse_failures}, calls {result.calls}, "
            f"{result.wall_time_s:.1f}s"
        )
        self.meta["wall_time_s"] = round(
            self.meta.get("earlier_wall_time_s", 0.0) + time.perf_counter() - self.started, 1
        )
        # partial results survive a crash
        write_report(self.report(), self.options.out, meta=self.meta, plots=self.options.plots)

    def report(self) -> list[Any]:
        """Earlier results (``--resume``) and new ones, by method, then batch size."""
        fresh = {(r.method, r.batch_size) for r in self.done}
        rows = [r for r in self.earlier if (r.method, r.batch_size) not in fresh] + self.done
        order = {name: i for i, name in enumerate(dict.fromkeys(r.method for r in rows))}
        return sorted(rows, key=lambda r: (order[r.method], r.batch_size))

    def close(self) -> None:
        for bar in self.bars:
            bar.close()


def evaluate(options: EvalOptions) -> None:
    """Run the evaluation; the Markdown table goes to stdout, the files to ``options.out``.

    Raises :class:`~langchain_autodemo.errors.ConfigurationError` for bad options (before
    a model is started) and ``typer.Exit(130)`` after Ctrl-C, results so far kept.
    """
    from langchain_autodemo.evaluation.bootstrap import BootstrapSettings, default_store
    from langchain_autodemo.evaluation.datasets import load_dataset
    from langchain_autodemo.evaluation.harness import evaluate as run_evaluation
    from langchain_autodemo.evaluation.harness import shot_exemplars
    from langchain_autodemo.evaluation.report import markdown_table, price_of, verdicts
    from langchain_autodemo.pricing import PriceTable

    chosen = parse_methods(options.methods)
    sizes = parse_batch_sizes(options.batch_sizes)
    if options.rerun and not options.resume:
        raise ConfigurationError("--rerun replaces rows of an earlier report: use it with --resume")
    if not options.reasoning and any(m.bootstrap for m in chosen):
        raise ConfigurationError(
            "--no-reasoning: the +bootstrap methods show the model its own reasoned answers "
            "as demonstrations; drop --no-reasoning or the +bootstrap methods"
        )
    spec = parse_model_spec(options.model)
    if options.task is not None and options.task not in ("numeric", "label"):
        raise ConfigurationError(f"unknown --task {options.task!r}: use numeric or label")
    prompt_digest = None
    if options.prompt is not None:
        import hashlib

        from langchain_autodemo.evaluation.datasets import load_prompt, prompt_dataset

        if options.shots:
            raise ConfigurationError("--prompt carries its own examples: drop --shots")
        data = prompt_dataset(
            options.dataset, load_prompt(options.prompt), answer_key=options.answer_key,
            limit=options.limit or None, task=options.task,
        )  # fmt: skip
        prompt_digest = hashlib.sha256(options.prompt.read_bytes()).hexdigest()[:16]
    else:
        data = load_dataset(options.dataset, limit=options.limit or None, task=options.task)
    if options.shots < 0:
        raise ConfigurationError(f"--shots must be >= 0, got {options.shots}")
    exemplars = shot_exemplars(data, options.shots)
    table = PriceTable.from_file(options.prices) if options.prices else PriceTable.default()
    table.price(options.price_model, options.tier)  # refused before a model is started
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
        "reask_with_answered": options.reask_with_answered,
        "reasoning": options.reasoning,
        "restate": options.restate.value,
        "escalate": options.escalate,
        **setup_fields(options, listed=_LISTED),
        "prompt": prompt_digest,
        "shots": options.shots,
        "exemplars": [question for question, _ in exemplars],
        "prices": table.as_dict(options.price_model, options.tier),
    }
    earlier_meta: dict[str, Any] = {}
    earlier: list[Any] = []
    if options.resume:
        from langchain_autodemo.evaluation.report import read_report

        earlier_meta, earlier = read_report(options.out)
        _check_resumable(earlier_meta, {**meta, "demos_per_batch": options.demos_per_batch},
                         options.out, keys=[k for k in _RESUME_KEYS if k != "model"])  # fmt: skip
        meta["earlier_commands"] = [
            *earlier_meta.get("earlier_commands", []),
            earlier_meta.get("command", "?"),
        ]
        meta["earlier_wall_time_s"] = earlier_meta.get("wall_time_s", 0.0)
        # the report holds the earlier rows too: its methods and sizes are the union
        meta["methods"] = list(dict.fromkeys([*earlier_meta.get("methods", []), *meta["methods"]]))
        meta["batch_sizes"] = sorted({*earlier_meta.get("batch_sizes", []), *sizes})
        if "bootstrap" in earlier_meta:
            meta["bootstrap"] = earlier_meta["bootstrap"]
    progress = _Progress(options, meta, earlier)
    # --rerun: the chosen pairs are measured again; their earlier rows stay in the report
    # until the new ones replace them, so an interrupted rerun loses nothing
    again = {(m.name, n) for m in chosen for n in m.sizes(sizes)} if options.rerun else set()
    kept = [r for r in earlier if (r.method, r.batch_size) not in again]
    with open_model(spec, max_tokens=options.max_tokens) as opened:
        meta["model"] = opened.description
        meta["demos_per_batch"] = options.demos_per_batch
        if options.resume:
            _check_resumable(earlier_meta, meta, options.out, keys=["model"])
            echo(f"Resuming {options.out}: {len(kept)} earlier results kept"
                 + (f", {len(earlier) - len(kept)} to measure again" if again else ""))  # fmt: skip
        echo(f"Model: {opened.description}; dataset {data.name} ({len(data)} items)")
        bootstrap = BootstrapSettings(
            size=options.bootstrap_size,
            store=options.bootstrap_store or default_store(),
            model=opened.description,
        )
        try:
            run_evaluation(
                opened.llm, data, chosen, sizes, max_concurrency=options.max_concurrency,
                demos_per_batch=options.demos_per_batch, bootstrap=bootstrap,
                on_start=progress.on_start, on_item=progress.on_item,
                on_result=progress.on_result,
                on_bootstrap_start=progress.on_bootstrap_start,
                on_bootstrap=progress.on_bootstrap, done=kept,
                settings=options.replace(demonstrations=exemplars).settings,
            )  # fmt: skip
        except KeyboardInterrupt:
            progress.close()
            echo(f"Interrupted; results so far are in {options.out}/")
            raise typer.Exit(130) from None
    if not progress.done:
        echo("Nothing new to run: every method x batch size is in the earlier report")
    typer.echo(markdown_table(progress.report(), price_of(meta)))
    said = verdicts(progress.report(), price_of(meta))
    if said:
        typer.echo(said + "\n")
    echo(
        f"Wrote {options.out}/results.json, results.md, predictions.jsonl"
        + (" and plots" if options.plots else "")
    )


def _check_resumable(
    earlier: dict[str, Any], now: dict[str, Any], out: Path, *, keys: list[str]
) -> None:
    """Refuse to mix results of another dataset, sample or model into one report."""
    for key in keys:
        default = _RESUME_DEFAULTS.get(key)  # reports written before the key existed
        if earlier.get(key, default) != now.get(key, default):
            raise ConfigurationError(
                f"--resume: {out}/results.json has {key} {earlier.get(key)!r}, this run "
                f"{now.get(key)!r}; use another --out or the same settings"
            )
