"""``autodemo tune``: the cheapest configuration that keeps single's accuracy, on a sample."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from langchain_autodemo.cli.common import echo
from langchain_autodemo.errors import ConfigurationError

if TYPE_CHECKING:
    from langchain_autodemo.tuning import MeasurementLog

__all__ = ["TuneOptions", "run_tune"]


@dataclass(frozen=True)
class TuneOptions:
    dataset: str = "gsm8k"
    limit: int = 64
    model: str | None = None
    out: Path = Path("autodemo-tune")
    methods: str = "batch,auto_demo,auto_demo+similarity"
    batch_sizes: str = "4,8,16"
    reasoning: str = "both"
    """``both``, ``on`` or ``off``: whether to try the final answer alone."""
    restate: str = "both"
    """``both``, ``full`` or ``head``: what ``auto_demo`` candidates restate."""
    shots: int = 0
    tolerance: float = 0.02
    prices: Path | None = None
    price_model: str = "gpt-4o-mini"
    tier: str = "online"
    """``online``, ``flex`` or ``batch``: the tier the search's costs (and choice) are at."""
    max_tokens: int | None = None
    max_concurrency: int = 1
    progress: bool = True
    resume: bool = False
    escalate: str = "0,0.1,0.2,0.3"
    """Escalation shares to try (replayed on each packed measurement: no extra calls)."""
    prompt: Path | None = None
    """Your ChatPromptTemplate (``langchain_core.load.dumpd`` JSON); ``dataset`` is then a
    JSONL file whose records fill its variables."""
    answer_key: str = "answer"
    """With ``prompt``: the record field holding the expected answer."""


# What a resumed search must share with the one it continues.
_RESUME_KEYS = (
    "dataset", "limit", "model", "shots", "max_tokens", "price_model", "tier", "prompt",
)  # fmt: skip


def run_tune(options: TuneOptions) -> None:
    """Search, print the table, write ``tune.json``, ``tune.md``, ``tuned.json`` and the
    Pareto plot into ``options.out``."""
    from langchain_autodemo.evaluation.datasets import load_dataset
    from langchain_autodemo.evaluation.harness import shot_exemplars
    from langchain_autodemo.evaluation.methods import parse_batch_sizes
    from langchain_autodemo.models import open_model, parse_model_spec
    from langchain_autodemo.pricing import PriceTable
    from langchain_autodemo.tuning import candidates, tune

    choices = {"both": (True, False), "on": (True,), "off": (False,)}
    if options.reasoning not in choices:
        raise ConfigurationError(f"--reasoning {options.reasoning!r}: use both, on or off")
    restates = {"both": ("full", "head"), "full": ("full",), "head": ("head",)}
    if options.restate not in restates:
        raise ConfigurationError(f"--restate {options.restate!r}: use both, full or head")
    if not 0 <= options.tolerance < 1:
        raise ConfigurationError("--tolerance is a share of items, e.g. 0.02 for 2 points")
    try:
        shares = [float(v) for v in options.escalate.split(",") if v.strip()] or [0.0]
    except ValueError:
        raise ConfigurationError(
            f"--escalate {options.escalate!r}: shares from 0 to 1, e.g. 0,0.1,0.2"
        ) from None
    space = candidates(
        [m.strip() for m in options.methods.split(",") if m.strip()],
        parse_batch_sizes(options.batch_sizes),
        choices[options.reasoning],
        restates[options.restate],
        shares,
    )
    table = PriceTable.from_file(options.prices) if options.prices else PriceTable.default()
    price = table.price(options.price_model, options.tier)
    if options.prompt is not None:
        from langchain_autodemo.evaluation.datasets import load_prompt, prompt_dataset

        if options.shots:
            raise ConfigurationError("--prompt carries its own examples: drop --shots")
        data = prompt_dataset(
            options.dataset, load_prompt(options.prompt), answer_key=options.answer_key,
            limit=options.limit or None,
        )  # fmt: skip
    else:
        data = load_dataset(options.dataset, limit=options.limit or None)
    exemplars = shot_exemplars(data, options.shots)
    spec = parse_model_spec(options.model)
    options.out.mkdir(parents=True, exist_ok=True)
    measured = _measurements(options)
    with open_model(spec, max_tokens=options.max_tokens) as opened:
        echo(
            f"Model: {opened.description}; {data.name}, {len(data)} items, "
            f"{len(space)} configurations against single"
        )

        def said(label: str, result: object) -> None:
            if options.progress:
                echo(f"  {label}: {result.correct}/{result.n}, {result.calls} calls")  # type: ignore[attr-defined]

        report = tune(
            opened.llm, data, space, price=price, price_model=options.price_model,
            tier=options.tier,
            demonstrations=exemplars, tolerance=options.tolerance,
            max_concurrency=options.max_concurrency, on_result=said, measured=measured,
        )  # fmt: skip
    data_out = report.as_dict()
    data_out["meta"] = {
        "dataset": data.name,
        "items": len(data),
        "command": "autodemo " + " ".join(sys.argv[1:]),
        "model": opened.description,
        "shots": options.shots,
        "tolerance": options.tolerance,
        "prices": table.as_dict(options.price_model, options.tier),
    }
    (options.out / "tune.json").write_text(json.dumps(data_out, indent=2) + "\n")
    markdown = report.markdown()
    (options.out / "tune.md").write_text(f"# autodemo tune: {data.name}\n\n{markdown}")
    chosen = report.chosen
    if options.prompt is not None:  # the prompt it was tuned with, to check at deployment
        digest = _prompt_digest(options.prompt)
        data_out["meta"]["prompt"] = {"file": str(options.prompt), "sha256": digest}
        (options.out / "tune.json").write_text(json.dumps(data_out, indent=2) + "\n")
        chosen = replace(
            chosen,
            tuned_on={**chosen.tuned_on, "prompt": str(options.prompt), "prompt_sha256": digest},
        )
    chosen.write(options.out / "tuned.json")
    _plot(
        data_out["rows"],
        options.out / "pareto.png",
        f"{data.name}: {opened.description}, priced as {options.price_model} ({options.tier})",
    )
    typer.echo(markdown)
    echo(f"Wrote {options.out}/tuned.json (load it with AutoDemoBatchRunnable.from_config or "
         "autodemo run --config), tune.json, tune.md and pareto.png")  # fmt: skip


def _prompt_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _measurements(options: TuneOptions) -> MeasurementLog:
    """The search's measurement log in ``options.out``: continued with ``--resume`` (same
    dataset, sample, model, shots and prices, else refused), else started afresh."""
    from langchain_autodemo.cli.common import check_same_settings
    from langchain_autodemo.tuning import MeasurementLog

    log_path, setup_path = options.out / "measurements.jsonl", options.out / "tune.setup.json"
    setup = {key: getattr(options, key) for key in _RESUME_KEYS}
    setup["prompt"] = _prompt_digest(options.prompt) if options.prompt is not None else None
    if options.resume and setup_path.is_file():
        check_same_settings(
            json.loads(setup_path.read_text(encoding="utf-8")), setup, keys=_RESUME_KEYS,
            what=f"{options.out} was tuned with other settings",
            fix="use another --out, or drop --resume to start again",
            defaults={"tier": "online"},  # setups written before --tier
        )  # fmt: skip
    else:
        log_path.unlink(missing_ok=True)
    setup_path.write_text(json.dumps(setup, indent=2) + "\n", encoding="utf-8")
    log = MeasurementLog(log_path)
    if log:
        echo(f"Resuming: {len(log)} measurements in {log_path} are reused")
    return log


def _plot(rows: list[dict[str, object]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        if "accuracy" not in row:
            continue
        x, y = float(row["usd_per_1k_items_cached"]), float(row["accuracy"])  # type: ignore[arg-type]
        low, high = (float(v) for v in row["accuracy_95"])  # type: ignore[attr-defined]
        color = "tab:green" if row["status"] == "chosen" else (
            "tab:blue" if str(row["label"]).startswith("single") else "tab:gray")  # fmt: skip
        ax.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="o", color=color, capsize=3)
        ax.annotate(str(row["label"]), (x, y), fontsize=7, xytext=(4, 2),
                    textcoords="offset points")  # fmt: skip
    ax.set_xlabel("USD per 1,000 items, with prompt caching")
    ax.set_ylabel("accuracy (95% interval)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
