"""How well agreement with single predicts an accuracy loss: the live audit's signal,
computed offline from the real-model reports in ``docs/results/``.

Run: ``python -m benchmarks.agreement_vs_accuracy [FOLDER ...]`` (default: every folder of
``docs/results`` with a ``single`` row). Writes ``docs/results/agreement-vs-accuracy.md`` and
``.json``. No model is called: each report's ``predictions.jsonl`` holds every item's answer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from langchain_autodemo.evaluation.diagnostics import comparisons_with_single
from langchain_autodemo.evaluation.report import read_report

RESULTS = Path("docs/results")


def main(folders: list[Path]) -> None:
    rows = []
    for folder in folders:
        try:
            meta, results = read_report(folder)
        except Exception as exc:  # a folder that is not an eval report
            print(f"skip {folder}: {exc}", file=sys.stderr)
            continue
        for (method, size), c in comparisons_with_single(results).items():
            if c.get("agreement") is None:
                continue
            rows.append(
                {
                    "report": folder.name,
                    "dataset": meta.get("dataset"),
                    "shots": meta.get("shots", 0),
                    "reasoning": meta.get("reasoning", True),
                    "method": method,
                    "batch_size": size,
                    "n": c["n"],
                    "accuracy_difference": round(c["accuracy_difference"], 4),
                    "accuracy_difference_95": [round(x, 4) for x in c["bootstrap_95"]],
                    "mcnemar_p": round(c["mcnemar_p"], 4),
                    "agreement": round(c["agreement"], 4),
                    "agreement_95": [round(x, 4) for x in c["agreement_95"]],
                    "agreement_n": c["agreement_n"],
                }
            )
    lines = [
        "# Agreement with single against the measured accuracy difference",
        "",
        "`python -m benchmarks.agreement_vs_accuracy` (offline, from each report's "
        "predictions). Agreement: the share of items both answered where the method's answer "
        "equals single's (the audit's comparator); what `AuditPolicy` estimates live.",
        "",
        "| report | method | N | accuracy vs single (95%) | McNemar p | agreement (95%) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        low, high = r["accuracy_difference_95"]
        a_low, a_high = r["agreement_95"]
        lines.append(
            f"| {r['report']} | {r['method']} | {r['batch_size']} | "
            f"{r['accuracy_difference'] * 100:+.0f} ({low * 100:+.0f}..{high * 100:+.0f}) pts | "
            f"{r['mcnemar_p']:.2f} | {r['agreement']:.0%} of {r['agreement_n']} "
            f"({a_low:.0%}-{a_high:.0%}) |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "agreement-vs-accuracy.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "agreement-vs-accuracy.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    given = [Path(a) for a in sys.argv[1:]]
    main(given or sorted(p for p in RESULTS.iterdir() if (p / "results.json").is_file()))
