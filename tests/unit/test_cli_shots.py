"""``autodemo eval --shots K --price-model M``: shared exemplars recorded, priced reports."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from langchain_autodemo.cli import app

ARGS = ["eval", "--dataset", "gsm8k", "--limit", "4", "--batch-sizes", "4", "--model",
        "fake:answer=sum", "--no-progress", "--no-plots"]  # fmt: skip


def test_shots_are_recorded_never_evaluated_and_priced(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app, [*ARGS, "--methods", "single,auto_demo", "--shots", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    meta = report["meta"]
    assert meta["shots"] == 3 and len(meta["exemplars"]) == 3
    evaluated = {json.loads(line)["id"] for line in (out / "predictions.jsonl").open()}
    assert all(i.startswith("gsm8k-test-") for i in evaluated)  # exemplars come from train
    assert meta["prices"]["model"] == "gpt-4o-mini" and meta["prices"]["cached_input"]
    for row in report["results"]:
        assert row["cost"]["usd_per_1k_items"] > 0
        assert row["cost"]["usd_per_1k_items_cached"] <= row["cost"]["usd_per_1k_items"]
    assert "x single cached" in result.output


def test_resume_refuses_another_number_of_shots(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    first = CliRunner().invoke(app, [*ARGS, "--methods", "single", "--out", str(out)])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(
        app, [*ARGS, "--methods", "auto_demo", "--shots", "2", "--resume", "--out", str(out)]
    )
    assert again.exit_code != 0 and "shots" in again.output
