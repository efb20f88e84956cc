"""Write evaluation results: JSON, a Markdown table, per-item predictions and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from langchain_autodemo.evaluation.harness import MethodResult

__all__ = ["markdown_table", "plot_results", "write_report"]

_COLUMNS = (
    ("method", "method"),
    ("N", "batch size"),
    ("accuracy", "accuracy"),
    ("parse fail", "parse-failure rate"),
    ("calls", "calls"),
    ("retries", "retries"),
    ("in tok/item", "input tokens per item"),
    ("out tok/item", "output tokens per item"),
    ("wall s", "wall time"),
    ("items/s", "items per second"),
)


def markdown_table(results: Sequence[MethodResult]) -> str:
    """One row per (method, batch size); accuracy as ``correct/n (pct)``."""
    header = "| " + " | ".join(short for short, _ in _COLUMNS) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(_COLUMNS))) + "|"
    rows = [header, rule]
    for r in results:
        cells = [
            r.method,
            "-" if r.method == "single" else str(r.batch_size),
            f"{r.correct}/{r.n} ({r.accuracy:.0%})",
            f"{r.parse_failures}/{r.n} ({r.parse_failure_rate:.0%})",
            str(r.calls),
            str(r.retries),
            f"{r.input_tokens_per_item:.0f}",
            f"{r.output_tokens_per_item:.0f}",
            f"{r.wall_time_s:.1f}",
            f"{r.items_per_s:.2f}",
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
    return "\n".join(rows) + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "") + "\n"


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
    paths["json"] = out_dir / "results.json"
    paths["json"].write_text(
        json.dumps({"meta": meta, "results": [r.summary() for r in results]}, indent=2) + "\n",
        encoding="utf-8",
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
    paths["markdown"].write_text(
        heading + details + "\n" + markdown_table(results), encoding="utf-8"
    )
    if plots and results:
        title = str(meta.get("dataset", ""))
        for path in plot_results(results, out_dir, title):
            paths[path.stem] = path
    return paths
