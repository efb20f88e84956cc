"""Write evaluation results: JSON, Markdown tables, per-item predictions and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.evaluation.diagnostics import comparisons_with_single
from langchain_autodemo.evaluation.harness import ItemRecord, MethodResult, stored_fields
from langchain_autodemo.pricing import Price

__all__ = [
    "diagnostics_markdown",
    "markdown_table",
    "plot_diagnostics",
    "plot_results",
    "read_report",
    "write_report",
]

_COLUMNS = (
    ("method", "method"),
    ("N", "batch size"),
    ("accuracy", "accuracy"),
    ("parse fail", "parse-failure rate"),
    ("calls", "calls"),
    ("re-asks", "re-asks"),
    ("in tok/item", "input tokens per item"),
    ("out tok/item", "output tokens per item"),
    ("wall s", "wall time"),
    ("items/s", "items per second"),
)


def price_of(meta: dict[str, Any]) -> tuple[str, Price] | None:
    """The model name and :class:`Price` a report is priced at (``meta["prices"]``)."""
    entry = meta.get("prices")
    if not isinstance(entry, dict):
        return None
    known = {f.name for f in fields(Price)}
    return str(entry.get("model", "?")), Price(**{k: v for k, v in entry.items() if k in known})


def costs(results: Sequence[MethodResult], price: Price) -> dict[tuple[str, int], dict[str, Any]]:
    """USD per 1,000 items without and with prompt caching, and the ratio of each to
    single's with caching (the honest baseline: a provider caches single's shared prompt)."""
    single = next((r for r in results if r.method == "single"), None)
    base = single.usd_per_1k_items(price, cached=True) if single else 0.0
    table = {}
    for r in results:
        plain = r.usd_per_1k_items(price, cached=False)
        cached = r.usd_per_1k_items(price, cached=True)
        table[(r.method, r.batch_size)] = {
            "usd_per_1k_items": round(plain, 5),
            "usd_per_1k_items_cached": round(cached, 5),
            "cached_input_tokens": r.cached_input_tokens(price),
            "cache_write_tokens": r.cache_write_tokens(price),
            "vs_single_cached": round(cached / base, 3) if base else None,
            "uncached_vs_single_cached": round(plain / base, 3) if base else None,
        }
    return table


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def verdicts(results: Sequence[MethodResult], price: tuple[str, Price] | None = None) -> str:
    """One plain sentence per method against single: the accuracy difference with its
    paired interval and test, and the cost against single's with caching; then what the
    sample size can and cannot show."""
    paired = comparisons_with_single(results)
    priced = costs(results, price[1]) if price else {}
    lines = []
    for r in results:
        if r.method == "single" or (r.method, r.batch_size) not in paired:
            continue
        c = paired[(r.method, r.batch_size)]
        low, high = c["bootstrap_95"]
        line = (
            f"{_label(r)}: {c['accuracy_difference'] * 100:+.0f} points against single "
            f"(95% interval {low * 100:+.0f} to {high * 100:+.0f}; {_items(c['only_this'])} "
            f"right only here, {c['only_baseline']} only in single; McNemar p = "
            f"{c['mcnemar_p']:.2f})"
        )
        if c.get("agreement") is not None:
            a_low, a_high = c["agreement_95"]
            line += (
                f"; its answers agree with single's on {c['agreement']:.0%} of "
                f"{c['agreement_n']} items ({a_low:.0%}-{a_high:.0%}), what an audit would see"
            )
        cost = priced.get((r.method, r.batch_size))
        if cost and cost["vs_single_cached"] is not None:
            line += (
                f", at {cost['vs_single_cached']:.2f}x single's cost with prompt caching "
                f"({cost['uncached_vs_single_cached']:.2f}x uncached) at "
                f"{price[0] if price else ''} prices"
            )
        lines.append(line + ".")
    if lines:
        n = max(r.n for r in results)
        lines.append(
            f"On {n} items one item is {100 / n:.0f} points: an interval that spans 0 means the "
            "sample cannot tell this method's accuracy from single's; only a difference outside "
            "it is evidence (more items narrow it)."
        )
    return "\n".join(f"- {line}" for line in lines)


def markdown_table(results: Sequence[MethodResult], price: tuple[str, Price] | None = None) -> str:
    """One row per (method, batch size); accuracy as ``correct/n (pct)``; with ``price``,
    USD per 1,000 items uncached and cached, and cached against single's cached cost."""
    columns = list(_COLUMNS)
    escalating = any(r.escalations for r in results)
    if escalating:  # only where it happened: earlier reports keep their columns
        columns.insert(6, ("escalated", "escalations (single calls re-asking doubtful answers)"))
    priced = costs(results, price[1]) if price else {}
    if price:
        columns += [("$/1k", "USD per 1,000 items"), ("$/1k cached", ""), ("x single cached", "")]
    header = "| " + " | ".join(short for short, _ in columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    rows = [header, rule]
    for r in results:
        cells = [
            r.method,
            "-" if r.method == "single" else str(r.batch_size),
            f"{r.correct}/{r.n} ({r.accuracy:.0%})",
            f"{r.parse_failures}/{r.n} ({r.parse_failure_rate:.0%})",
            str(r.calls),
            str(r.reasks),
            *([str(r.escalations)] if escalating else []),
            f"{r.input_tokens_per_item:.0f}",
            f"{r.output_tokens_per_item:.0f}",
            f"{r.wall_time_s:.1f}",
            f"{r.items_per_s:.2f}",
        ]
        if price:
            cost = priced[(r.method, r.batch_size)]
            ratio = cost["vs_single_cached"]
            cells += [
                f"{cost['usd_per_1k_items']:.4f}",
                f"{cost['usd_per_1k_items_cached']:.4f}",
                "-" if ratio is None else f"{ratio:.2f}x",
            ]
        rows.append("| " + " | ".join(cells) + " |")
    notes = []
    if any(r.estimated_tokens for r in results):
        notes.append(
            "Token counts marked as estimated: the model reported no usage while streaming "
            "(llama.cpp), so they were estimated."
        )
    if any(r.method == "single" for r in results):
        notes.append("`single` makes one call per question; batch size does not apply.")
    if price:
        p = price[1]
        writes = (
            f"its first write at {p.write_price / p.input:g}x input"
            if p.input and p.cache_write is not None
            else "writes at the input price"
        )
        notes.append(
            f"USD at {price[0]} list prices, {p.tier} tier; cached: the prompt prefix each "
            "call shares with an earlier call of its method, billed as the provider caches it "
            f"(minimum prefix, steps), {writes}. `x single cached` divides by single's cost "
            "with caching."
        )
    return "\n".join(rows) + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "") + "\n"


def _label(r: MethodResult) -> str:
    return r.method if r.method == "single" else f"{r.method} N={r.batch_size}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _quarter(rate: dict[str, Any], single: dict[str, Any] | None = None) -> str:
    if not rate["n"]:
        return "-"
    text = f"{rate['correct']}/{rate['n']} ({rate['accuracy']:.0%})"
    return f"{text}; single {single['correct']}/{single['n']}" if single else text


def diagnostics_markdown(results: Sequence[MethodResult]) -> str:
    """Why each method won or lost: accuracy in the first vs last quarter of its batches,
    re-asks, attempts, tokens (re-asks separately), the paired comparison with ``single``
    and the counted rejection reasons."""
    if not results:
        return ""
    paired = comparisons_with_single(results)
    head = ("method", "N", "first ¼", "last ¼", "re-asked", "attempts/item", "tok/item",
            "re-ask tok/item", "vs single: +/-", "McNemar p", "Δ accuracy [95% CI]")  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in results:
        d = r.summary()["diagnostics"]
        reasks, tokens, position = d["reasks"], d["tokens"], d["position"]
        vs = paired.get((r.method, r.batch_size))
        cells = [
            r.method,
            "-" if r.method == "single" else str(r.batch_size),
            _quarter(position["first_quarter"], vs and vs["baseline_first_quarter"]),
            _quarter(position["last_quarter"], vs and vs["baseline_last_quarter"]),
            f"{reasks['items']}/{r.n} ({reasks['share']:.0%})",
            f"{d['attempts']['mean']:.2f}",
            f"{tokens['per_item']:.0f}",
            f"{tokens['reask_per_item']:.0f}",
        ]
        if vs is None:
            cells += ["-", "-", "-"]
        else:
            low, high = vs["bootstrap_95"]
            cells += [
                f"+{vs['only_this']} / -{vs['only_baseline']}",
                f"{vs['mcnemar_p']:.3g}",
                f"{vs['accuracy_difference'] * 100:+.1f} pts [{low * 100:+.1f}, {high * 100:+.1f}]",
            ]
        rows.append("| " + " | ".join(cells) + " |")
    notes = [
        "first ¼ / last ¼: accuracy of the items answered in the first / last quarter of "
        "their call's prompt (calls of at least 4 questions), and single's on the same "
        "items: a drop single shows too is the items' difficulty, not their position.",
        "re-asked: items that needed more than one call; re-ask tok/item: tokens of the "
        "re-ask calls per item, part of tok/item.",
    ]
    if paired:
        notes.append(
            "vs single: items this method got right and single wrong (+) and the reverse "
            "(-); exact McNemar p-value on those; Δ accuracy with a paired bootstrap 95% "
            "interval (10,000 resamples of the items)."
        )
    text = "\n".join(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    reason_rows = [
        f"| {r.method} | {'-' if r.method == 'single' else r.batch_size} | {reason} | {count} |"
        for r in results
        for reason, count in r.summary()["diagnostics"]["reasks"]["reasons"].items()
    ]
    if reason_rows:
        text += (
            "\n### Why items were re-asked\n\n| method | N | rejection reason | count |\n"
            "|---|---:|---|---:|\n" + "\n".join(reason_rows) + "\n"
        )
    confident = [(r, r.summary()["diagnostics"]["confidence"]) for r in results]
    confident = [(r, c) for r, c in confident if c]
    if confident:
        text += (
            "\n### Confidence by slot\n\nThe answers' confidence (the probability the model "
            "gave the final answer's tokens) and accuracy by slot in the call, and how well "
            "doubt (1 - confidence) finds the wrong answers (AUROC; 0.5 is chance).\n\n"
            "| method | N | AUROC vs gold | slot: mean confidence / accuracy (n) |\n"
            "|---|---:|---:|---|\n"
        )
        for r, c in confident:
            gold = "n/a" if c["auroc_vs_gold"] is None else f"{c['auroc_vs_gold']:.2f}"
            slots = ", ".join(
                f"{s['slot']}: {s['mean_confidence']:.2f} / {s['accuracy']:.0%} ({s['n']})"
                for s in c["by_slot"]
            )
            text += f"| {r.method} | {r.batch_size} | {gold} | {slots} |\n"
    pools = {r.bootstrap["name"]: r.bootstrap for r in results if r.bootstrap}
    for pool in pools.values():
        reused = f"; reused from {pool['store']}" if pool["reused"] else ""
        text += (
            f"\n- Bootstrap pool `{pool['name']}`: {pool['kept']} of {pool['attempted']} "
            f"training answers passed the checker ({pool['calls']} calls, "
            f"{pool['input_tokens'] + pool['output_tokens']} tokens, "
            f"{pool['build_time_s']:.0f} s to build{reused}). It is built once per model, "
            "task and training sample; its cost is not in the rows above.\n"
        )
    return text


def plot_diagnostics(results: Sequence[MethodResult], out_dir: Path, title: str = "") -> Path:
    """``diagnostics.png``: accuracy by quarter of the batch (``single`` as a dashed
    line), and tokens per item split into first asks and re-asks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
    for r in results:
        quarters = r.summary()["diagnostics"]["position"]["by_quarter"]
        if r.method == "single":
            left.axhline(r.accuracy * 100, linestyle="--", color="grey", label="single")
            continue
        points = [(q["quarter"], q["accuracy"] * 100) for q in quarters if q["n"]]
        if points:
            left.plot(*zip(*points, strict=True), marker="o", label=_label(r))
    left.set_xticks([1, 2, 3, 4], ["1st", "2nd", "3rd", "4th"])
    left.set_xlabel("quarter of the batch the item was answered in")
    left.set_ylabel("accuracy (%)")
    left.set_ylim(0, 100)
    left.grid(alpha=0.3)
    left.legend(fontsize="small")
    left.set_title("accuracy by position in the batch")
    labels = [_label(r) for r in results]
    first = [r.tokens_per_item - r.reask_tokens_per_item for r in results]
    again = [r.reask_tokens_per_item for r in results]
    rows = range(len(results))
    right.barh(rows, first, color="tab:blue", label="first asks")
    right.barh(rows, again, left=first, color="tab:red", label="re-asks")
    right.set_yticks(list(rows), labels, fontsize="small")
    right.invert_yaxis()
    right.set_xlabel("input + output tokens per item")
    right.legend(fontsize="small")
    right.set_title("tokens per item")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = out_dir / "diagnostics.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_results(results: Sequence[MethodResult], out_dir: Path, title: str = "") -> list[Path]:
    """``accuracy.png`` and ``tokens_per_item.png``: one line per method over batch size;
    ``single`` (no batch size) is a dashed horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r.batch_size for r in results if r.method != "single"}) or [1]
    methods = list(dict.fromkeys(r.method for r in results))
    written = []
    metrics = (
        ("accuracy.png", "accuracy", lambda r: r.accuracy * 100, "accuracy (%)"),
        ("tokens_per_item.png", "tokens per item",
         lambda r: r.input_tokens_per_item + r.output_tokens_per_item,
         "input + output tokens per item"),
    )  # fmt: skip
    for filename, label, value, ylabel in metrics:
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        for method in methods:
            rows = sorted((r for r in results if r.method == method), key=lambda r: r.batch_size)
            if method == "single":
                ax.axhline(value(rows[0]), linestyle="--", color="grey", label="single")
                continue
            ax.plot([r.batch_size for r in rows], [value(r) for r in rows], marker="o",
                    label=method)  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("batch size (questions per call)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {label}" if title else label)
        if filename == "accuracy.png":
            ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = out_dir / filename
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def write_report(
    results: Sequence[MethodResult],
    out_dir: Path,
    *,
    meta: dict[str, Any] | None = None,
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``results.json``, ``results.md``, ``predictions.jsonl`` and the plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    paths: dict[str, Path] = {}
    paired = comparisons_with_single(results)
    summaries = []
    price = price_of(meta)
    priced = costs(results, price[1]) if price else {}
    for r in results:
        summary = r.summary()
        if (r.method, r.batch_size) in paired:
            summary["vs_single"] = paired[(r.method, r.batch_size)]
        if priced:
            summary["cost"] = priced[(r.method, r.batch_size)]
        summaries.append(summary)
    paths["json"] = out_dir / "results.json"
    paths["json"].write_text(
        json.dumps({"meta": meta, "results": summaries}, indent=2) + "\n", encoding="utf-8"
    )
    paths["predictions"] = out_dir / "predictions.jsonl"
    with paths["predictions"].open("w", encoding="utf-8") as handle:
        for r in results:
            for item in r.items:
                record = {"method": r.method, "batch_size": r.batch_size, **asdict(item)}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    heading = f"# autodemo eval: {meta.get('dataset', '')}\n\n"
    details = "".join(f"- {key}: {value}\n" for key, value in meta.items())
    paths["markdown"] = out_dir / "results.md"
    diagnosis = diagnostics_markdown(results)
    paths["markdown"].write_text(
        heading + details + "\n" + markdown_table(results, price)
        + ("\n## Against single\n\n" + verdicts(results, price) + "\n" if verdicts(results) else "")
        + ("\n## Diagnostics\n\n" + diagnosis if diagnosis else ""),
        encoding="utf-8",
    )  # fmt: skip
    if plots and results:
        title = str(meta.get("dataset", ""))
        for path in plot_results(results, out_dir, title):
            paths[path.stem] = path
        paths["diagnostics"] = plot_diagnostics(results, out_dir, title)
    return paths


# what a summary in results.json stores of a MethodResult: every field but the per-item
# records (those are in predictions.jsonl); the other keys are derived metrics
_STORED = tuple(f.name for f in fields(MethodResult) if f.name != "items")


def read_report(out_dir: Path) -> tuple[dict[str, Any], list[MethodResult]]:
    """The ``meta`` and the results :func:`write_report` wrote to ``out_dir``, per-item
    records included (what ``autodemo eval --resume`` builds on).

    Raises :class:`~langchain_autodemo.errors.ConfigurationError` naming the file and the
    line when the folder holds no report or a damaged one.
    """
    json_path, predictions_path = out_dir / "results.json", out_dir / "predictions.jsonl"
    if not json_path.is_file() or not predictions_path.is_file():
        raise ConfigurationError(
            f"{out_dir} holds no earlier report (results.json and predictions.jsonl)"
        )
    try:
        report = json.loads(json_path.read_text(encoding="utf-8"))
        meta, summaries = dict(report["meta"]), list(report["results"])
        results = [
            MethodResult(
                **{key: value for key, value in stored_fields(summary).items() if key in _STORED}
            )
            for summary in summaries
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"{json_path} is not an autodemo eval report: {exc}") from None
    by_key = {(r.method, r.batch_size): r for r in results}
    with predictions_path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = (record.pop("method"), record.pop("batch_size"))
                record["reasons"] = tuple(record.get("reasons", ()))
                item = ItemRecord(**record)
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigurationError(
                    f"{predictions_path} line {number} is not a prediction record: {exc}"
                ) from None
            if key not in by_key:
                raise ConfigurationError(
                    f"{predictions_path} line {number} belongs to {key[0]} N={key[1]}, "
                    "which results.json does not list"
                )
            by_key[key].items.append(item)
    for r in results:
        if len(r.items) != r.n:
            raise ConfigurationError(
                f"{predictions_path} holds {len(r.items)} records for {r.method} "
                f"N={r.batch_size}, results.json says {r.n}"
            )
    return meta, results
