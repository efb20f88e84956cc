"""Replay real model completions through the engine, before and after an alignment change.

The 18 raw Qwen2.5-Coder-1.5B completions of tests/data (GSM8K, batches of 8 and 16,
Auto-Demo and plain batch prompts) are fed to one engine call each, in 4-character chunks
ending with a ``stop`` finish reason, exactly as a driver would. The same replay runs on
the package as of ``--before`` (extracted with ``git archive`` into a temporary folder) and
on the working tree, so the cost of stricter rules is counted on what a real model wrote:
how many items each version accepts at the first attempt (an item it does not accept is
re-asked), how many of the accepted ones match the gold answer, and which items changed.

    python benchmarks/replay_real_completions.py --before 66c6778 \\
        --out benchmarks/results/replay_real_completions.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "real_completions_qwen1.5b_gsm8k.jsonl"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _number(text: str | None) -> float | None:
    found = _NUMBER.findall(text or "")
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def replay() -> list[dict[str, Any]]:
    """Each item of each completion: accepted answer or rejection reason (this package)."""
    from langchain_core.messages import AIMessageChunk

    from langchain_autodemo.engine import Engine, EngineSettings
    from langchain_autodemo.planning import PlannedBatch
    from langchain_autodemo.prompts import Mode

    rows = []
    for number, line in enumerate(DATA.read_text().splitlines()):
        record = json.loads(line)
        questions, text = record["questions"], record["completion"]
        mode = Mode.AUTO_DEMO if record["prompt_style"] == "auto_demo" else Mode.BATCH
        settings = EngineSettings(mode=mode, batch_size=len(questions))
        engine = Engine(questions, [PlannedBatch(tuple(range(len(questions))))], settings)
        session = engine.open(engine.initial_calls()[0])
        read = len(text)
        for i in range(0, len(text), 4):
            session.feed(AIMessageChunk(content=text[i : i + 4]))
            if session.done_reading:
                read = i + 4
                break
        else:
            session.feed(AIMessageChunk(content="", response_metadata={"finish_reason": "stop"}))
        report = session.finish()
        for k, gold in enumerate(record["gold"]):
            result = report.accepted.get(k)
            rows.append(
                {
                    "completion": number,
                    "style": record["prompt_style"],
                    "batch": len(questions),
                    "item": k,
                    "read": read,
                    "accepted": result is not None,
                    "answer": None if result is None else str(result.answer),
                    "correct": result is not None and _number(str(result.answer)) == float(gold),
                    "reason": report.failures.get(k),
                }
            )
    return rows


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def part(selected: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "items": len(selected),
            "accepted": sum(r["accepted"] for r in selected),
            "accepted_correct": sum(r["correct"] for r in selected),
            "re_asked": sum(not r["accepted"] for r in selected),
            "reasons": dict(
                Counter(
                    str(r["reason"]).split(":")[0] for r in selected if not r["accepted"]
                ).most_common()
            ),
        }

    return {
        "all": part(rows),
        "auto_demo": part([r for r in rows if r["style"] == "auto_demo"]),
        "batch": part([r for r in rows if r["style"] == "batch"]),
    }


def _run_before(ref: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "langchain_autodemo"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        output = subprocess.run(
            [sys.executable, __file__, "--rows"],
            check=True,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": folder, "PATH": ""},
            cwd=folder,
        ).stdout
    return json.loads(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="66c6778", help="git ref of the earlier package")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rows", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rows:
        print(json.dumps(replay()))
        return
    before, after = _run_before(args.before), replay()
    changed = [
        {
            "completion": b["completion"],
            "style": b["style"],
            "batch": b["batch"],
            "item": b["item"],
            "before": b["answer"] if b["accepted"] else f"re-asked: {b['reason']}",
            "after": a["answer"] if a["accepted"] else f"re-asked: {a['reason']}",
        }
        for b, a in zip(before, after, strict=True)
        if (b["accepted"], b["answer"]) != (a["accepted"], a["answer"])
    ]
    pairs = list(zip(before, after, strict=True))
    report = {
        "data": str(DATA.relative_to(ROOT)),
        "before": {"ref": args.before, **_summary(before)},
        "after": {"ref": "working tree", **_summary(after)},
        "re_asks_added": sum(b["accepted"] and not a["accepted"] for b, a in pairs),
        "re_asks_removed": sum(a["accepted"] and not b["accepted"] for b, a in pairs),
        "changed_items": changed,
        "command": "python benchmarks/replay_real_completions.py --before " + args.before,
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
