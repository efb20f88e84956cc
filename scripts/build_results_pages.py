"""Write the site's Results pages from the saved reports, so no figure is copied by hand.

Reads ``docs/results/*/results.json`` (and one level deeper, for before/after pairs) written by
``autodemo eval``, and ``docs/results/tune-*/tune.json`` written by ``autodemo tune``; writes
one page per report under ``docs/results-pages/`` plus an index. Every page shows the table
and the command that made it. Run by the mkdocs hook (``scripts/docs_hooks.py``) before every
build, or by hand:

    python scripts/build_results_pages.py [OUT_DIR]

Only the standard library is used: the JSON files are the source of truth.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
DEFAULT_OUT = ROOT / "docs" / "results-pages"

# tune.json records its command line since 2026-12-06 (meta.command); for the reports written
# before that, these are the commands as logged when they ran. Every figure comes from JSON.
TUNE_COMMANDS = {
    "tune-sst2-8shot-terse": "autodemo tune --dataset sst2 --limit 64 --shots 8 --reasoning off "
    "--methods batch,auto_demo --batch-sizes 8,16 --out docs/results/tune-sst2-8shot-terse",
    "tune-rte-6shot-terse": "autodemo tune --dataset rte --limit 64 --shots 6 --reasoning off "
    "--methods batch,auto_demo --batch-sizes 8,16 --out docs/results/tune-rte-6shot-terse",
    "tune-sst2-zeroshot-terse": "autodemo tune --dataset sst2 --limit 64 --reasoning off "
    "--methods batch,auto_demo --batch-sizes 8,16 --out docs/results/tune-sst2-zeroshot-terse",
    "tune-gsm8k-8shot": "autodemo tune --dataset gsm8k --limit 64 --shots 8 --reasoning on "
    "--methods batch,auto_demo --batch-sizes 8 --restate both --max-tokens 4000 "
    "--out docs/results/tune-gsm8k-8shot",
    "tune-rte-zeroshot-terse": "autodemo tune --dataset rte --limit 64 --reasoning off "
    "--methods batch,auto_demo --batch-sizes 8 --restate both "
    "--out docs/results/tune-rte-zeroshot-terse",
    "tune-boolq-4shot-terse": "autodemo tune --dataset boolq --limit 64 --shots 4 --reasoning off "
    "--methods batch,auto_demo --batch-sizes 16 --restate head "
    "--out docs/results/tune-boolq-4shot-terse --resume",
}


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.0%}"


def _pts(x: float) -> str:
    return f"{x * 100:+.0f}"


def _wrap(command: str, width: int = 76) -> str:
    """One shell command over several lines (``\\`` continuations) so it reads without scrolling."""
    lines, line = [], ""
    for word in command.split(" "):
        if line and len(line) + 1 + len(word) > width and word.startswith("-"):
            lines.append(line + " \\")
            line = "    " + word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join(lines + [line])


def _command_block(commands: list[str]) -> str:
    body = "\n".join(_wrap(c) for c in commands)
    return f"```bash\n{body}\n```\n"


def eval_page(folder: Path, rel: str) -> tuple[str, str, str]:
    report = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    meta, rows = report["meta"], report["results"]
    title = f"{rel} ({meta.get('dataset', '?')}, eval)"
    priced = any("cost" in r for r in rows)
    header = [
        "method", "N", "accuracy", "vs single (95%)", "parse fail", "errors", "calls",
        "re-asks", "in tok/item", "out tok/item", "wall s",
    ]
    if priced:
        header += ["$/1k", "$/1k cached", "x single cached"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    for r in rows:
        vs = r.get("vs_single") or {}
        if vs and "accuracy_difference" in vs:
            lo, hi = vs.get("bootstrap_95") or (None, None)
            band = f" ({_pts(lo)}..{_pts(hi)})" if lo is not None else ""
            vs_cell = f"{_pts(vs['accuracy_difference'])} pts{band}, p = {vs.get('mcnemar_p', float('nan')):.2g}"
        else:
            vs_cell = "-"
        cells = [
            f"`{r['method']}`",
            "-" if r["method"] == "single" else str(r["batch_size"]),
            f"{r['correct']}/{r['n']} ({_pct(r['accuracy'])})",
            vs_cell,
            f"{r['parse_failures']}/{r['n']}",
            str(r.get("errors", 0)),
            str(r["calls"]),
            str(r.get("reasks", r.get("retries", ""))),
            f"{r['input_tokens_per_item']:.0f}",
            f"{r['output_tokens_per_item']:.0f}",
            f"{r['wall_time_s']:.1f}",
        ]
        if priced:
            cost = r.get("cost") or {}
            ratio = cost.get("vs_single_cached")
            cells += [
                f"{cost['usd_per_1k_items']:.4f}" if cost else "",
                f"{cost['usd_per_1k_items_cached']:.4f}" if cost else "",
                "-" if ratio is None else f"{ratio:.2f}x",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"- model: {meta.get('model', '?')}",
        f"- data: {meta.get('source', meta.get('dataset', '?'))}, {meta.get('items', '?')} items"
        + (f", {meta['shots']}-shot" if meta.get("shots") else "")
        + ("" if meta.get("reasoning", True) else ", final answer only (`--no-reasoning`)"),
        f"- started: {meta.get('started', '?')}"
        + (f"; wall time {meta['wall_time_s']:.0f} s" if meta.get("wall_time_s") else ""),
    ]
    if any(r.get("estimated_tokens") for r in rows):
        notes.append("- token counts are estimated (llama.cpp streams no usage; characters / 4)")
    prices = meta.get("prices")
    if priced and prices:
        notes.append(
            f"- USD per 1,000 items at {prices.get('model')} list prices (input {prices.get('input')}, "
            f"cached input {prices.get('cached_input')}, output {prices.get('output')} per 1M tokens); "
            "`x single cached` divides by single's cost with prompt caching"
        )
    commands = [meta["command"]] if meta.get("command") else []
    earlier = list(meta.get("earlier_commands") or [])
    cmd_text = "The command that wrote this report"
    if earlier:
        cmd_text = ("The commands that wrote this report (earlier runs first; the last one "
                    "resumed the same folder)")
    images = [p.name for p in sorted(folder.glob("*.png"))]
    depth = "../" * (rel.count("/") + 1)
    img_md = "\n".join(
        f"![{name}]({depth}results/{rel}/{name})" for name in images
    )
    page = [
        f"# {title}",
        "",
        "<!-- generated by scripts/build_results_pages.py from "
        f"docs/results/{rel}/results.json: do not edit -->",
        "",
        f"{cmd_text}:",
        "",
        _command_block(earlier + commands),
        "\n".join(lines),
        "",
        "\n".join(notes),
        "",
        f"Source: `docs/results/{rel}/results.json` (per-item records in `predictions.jsonl`, "
        "the report as `autodemo eval` wrote it in `results.md`).",
        "",
    ]
    if img_md:
        page += ["## Plots", "", img_md, ""]
    best = max((r for r in rows if r["method"] != "single"), key=lambda r: r["accuracy"], default=None)
    single = next((r for r in rows if r["method"] == "single"), None)
    summary = ""
    if single:
        summary += f"single {single['correct']}/{single['n']}"
    if best:
        label = best["method"] + ("" if best["method"] == "single" else f" N={best['batch_size']}")
        summary += ("; " if summary else "") + f"best packed: {label} {best['correct']}/{best['n']}"
    return title, "\n".join(page), summary


def tune_page(folder: Path, rel: str) -> tuple[str, str, str]:
    report = json.loads((folder / "tune.json").read_text(encoding="utf-8"))
    meta, rows = report["meta"], report["rows"]
    title = f"{rel} ({meta.get('dataset', '?')}, tune)"
    header = ["configuration", "status", "accuracy (95%)", "vs single (95%)", "calls", "re-asks",
              "$/1k", "$/1k cached", "x single cached"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    for r in rows:
        if r.get("accuracy") is None:
            lines.append(f"| {r['label']} | {r['status']} |" + " |" * (len(header) - 2))
            continue
        lo, hi = r.get("accuracy_95") or (None, None)
        acc = f"{_pct(r['accuracy'])} on {r['items']}" + (f" ({_pct(lo)}-{_pct(hi)})" if lo is not None else "")
        vs = r.get("vs_single") or {}
        if vs:
            blo, bhi = vs.get("bootstrap_95") or (None, None)
            vs_cell = f"{_pts(vs['accuracy_difference'])} ({_pts(blo)}..{_pts(bhi)}) pts"
        else:
            vs_cell = "-"
        ratio = r.get("vs_single_cached")
        lines.append("| " + " | ".join([
            r["label"], r["status"], acc, vs_cell, str(r.get("calls", "")), str(r.get("reasks", r.get("retries", ""))),
            f"{r['usd_per_1k_items']:.4f}", f"{r['usd_per_1k_items_cached']:.4f}",
            "-" if ratio is None else f"{ratio:.2f}x",
        ]) + " |")
    spent = report.get("spent") or {}
    prices = meta.get("prices") or {}
    command = meta.get("command") or TUNE_COMMANDS.get(rel)
    page = [
        f"# {title}",
        "",
        f"<!-- generated by scripts/build_results_pages.py from docs/results/{rel}/tune.json: do not edit -->",
        "",
        "The command that wrote this report:" if command else
        "This tune.json does not record its command.",
        "",
        _command_block([command]) if command else "",
        "\n".join(lines),
        "",
        f"Chosen: **{report.get('chosen')}**. Prices: {report.get('price_model', prices.get('model'))}"
        " with prompt caching.",
        "",
        f"- model: {meta.get('model', '?')}",
        f"- data: {meta.get('dataset')}, {meta.get('items')} items"
        + (f", {meta['shots']}-shot" if meta.get("shots") else ", zero-shot")
        + f"; tolerance {meta.get('tolerance', 0) * 100:.0f} points against single",
        f"- the tuning itself: {spent.get('calls', 0):.0f} calls, {spent.get('input_tokens', 0):.0f} input "
        f"and {spent.get('output_tokens', 0):.0f} output tokens (${spent.get('usd', 0):.4f} uncached)",
        "",
        f"Source: `docs/results/{rel}/tune.json`; the chosen configuration, loadable with "
        f"`autodemo run --config` / `TunedConfig`, is `docs/results/{rel}/tuned.json`.",
        "",
    ]
    if (folder / "pareto.png").is_file():
        page += ["## Accuracy against cost", "", f"![pareto](../results/{rel}/pareto.png)", ""]
    summary = f"chose {report.get('chosen')}"
    return title, "\n".join(page), summary


# A results page is one wide table: without the table of contents beside it, a 10-column
# eval table fits a 1,400-pixel window (it scrolled, hiding its last columns, before).
WIDE = "---\nhide:\n  - toc\n---\n\n"


def build(out: Path) -> list[Path]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    entries: list[tuple[str, str, str, str]] = []  # kind, rel, title, summary
    for path in sorted(RESULTS.glob("tune-*/tune.json")):
        rel = path.parent.relative_to(RESULTS).as_posix()
        title, text, summary = tune_page(path.parent, rel)
        (out / f"{rel}.md").write_text(WIDE + text, encoding="utf-8")
        entries.append(("tune", rel, title, summary))
    for path in sorted(list(RESULTS.glob("*/results.json")) + list(RESULTS.glob("*/*/results.json"))):
        rel = path.parent.relative_to(RESULTS).as_posix()
        title, text, summary = eval_page(path.parent, rel)
        target = out / f"{rel}.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(WIDE + text, encoding="utf-8")
        entries.append(("eval", rel, title, summary))
    index = [
        "# Results",
        "",
        "<!-- generated by scripts/build_results_pages.py: do not edit -->",
        "",
        "Every page in this section is generated at build time from the reports the commands "
        "saved under `docs/results/` (`results.json` from `autodemo eval`, `tune.json` from "
        "`autodemo tune`): each shows its table and the command that made it. All runs are on "
        "a local Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) on a llama.cpp server on a 2-core CPU "
        "machine, temperature 0; what they show and where packing loses is in "
        "[Reading the results](../findings.md).",
        "",
        "## `autodemo tune`: the cheapest configuration within tolerance",
        "",
        "| report | outcome |",
        "|---|---|",
    ]
    index += [f"| [{rel}]({rel}.md) | {summary} |" for kind, rel, _, summary in entries if kind == "tune"]
    index += ["", "## `autodemo eval`: methods against single", "", "| report | outcome |", "|---|---|"]
    index += [f"| [{rel}]({rel}.md) | {summary} |" for kind, rel, _, summary in entries if kind == "eval"]
    (out / "index.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    return [out / "index.md"] + [out / f"{rel}.md" for _, rel, _, _ in entries]


def nav(out: Path) -> list[Any]:
    """The Results section's nav entries, in the order the index lists them."""
    pages = sorted(p.relative_to(out.parent).as_posix() for p in out.rglob("*.md") if p.name != "index.md")
    return pages


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    written = build(out)
    print(f"wrote {len(written)} pages under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
