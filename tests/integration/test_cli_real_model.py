"""``autodemo`` end to end on SmolLM2-135M behind a real llama.cpp server.

SmolLM2 follows the Auto-Demo format badly, which is the point: whatever it writes, every
record must end with an answer or an explicit error, never silently missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from langchain_autodemo.cli import app
from langchain_autodemo.llamacpp import LlamaCppServer


def test_run_on_a_shared_server(smollm2_server: LlamaCppServer, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": i, "question": f"What is {i} plus {i}?"}) + "\n" for i in range(1, 6)
        )
    )
    out = tmp_path / "out.jsonl"
    spec = f"openai-compatible:{smollm2_server.base_url}#{smollm2_server.model_alias}"
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(source),
            "-o",
            str(out),
            "--model",
            spec,
            "--batch-size",
            "5",
            "--max-tokens",
            "128",
            "--instructions",
            "Add the numbers.",
            "--no-progress",
        ],
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input_line"] for r in records] == [1, 2, 3, 4, 5]
    for record in records:
        assert ("answer" in record) != ("error" in record), record
        assert (record.get("answer") or record.get("error") or "").strip()
    assert "calls:" in result.output and "Items: 5/5" in result.output
    errors = sum("error" in record for record in records)
    assert result.exit_code == (1 if errors else 0), result.output  # 0 only if all answered
    if errors:
        assert f"{errors} of 5 items ended in an error" in result.output


def test_eval_starts_and_stops_its_own_server(smollm2_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--dataset",
            "gsm8k",
            "--limit",
            "2",
            "--batch-sizes",
            "2",
            "--methods",
            "single,auto_demo",
            "--model",
            f"llamacpp:{smollm2_path}",
            "--max-tokens",
            "128",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "results.json").read_text())
    rows = summary["results"]
    assert [(r["method"], r["batch_size"]) for r in rows] == [("single", 1), ("auto_demo", 2)]
    for row in rows:
        assert row["n"] == 2 and row["calls"] >= 1
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0
        assert 0.0 <= row["accuracy"] <= 1.0
    predictions = [
        json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()
    ]
    assert len(predictions) == 4
    for item in predictions:  # an answer or an explicit error, for every item
        assert (item["prediction"] is not None) or item["error"], item
    assert (out / "accuracy.png").exists() and (out / "tokens_per_item.png").exists()
    assert "llama.cpp server: SmolLM2" in summary["meta"]["model"]
