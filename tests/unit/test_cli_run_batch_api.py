"""``autodemo run --via batch-api`` in process, on the in-memory batch provider: the same
resume, summary, error numbering and exit status as online answering (one path).

The real emulator and openai SDK are exercised in ``tests/integration/test_batch_api_cli.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from langchain_autodemo.cli import app
from langchain_autodemo.cli import batch_api as batch_cli
from langchain_autodemo.cli.resume import setup_path
from langchain_autodemo.testing import ScriptedAutoDemoModel
from tests.unit.test_batch_api import InMemoryBatchProvider

MODEL = f"import:{__name__}:make_model"


def make_model() -> ScriptedAutoDemoModel:
    return ScriptedAutoDemoModel()


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> InMemoryBatchProvider:
    memory = InMemoryBatchProvider()

    class InMemoryJob(batch_cli.BatchApiJob):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, provider=memory, **kwargs)

    monkeypatch.setattr(batch_cli, "BatchApiJob", InMemoryJob)
    return memory


def _input(path: Path, n: int) -> Path:
    path.write_text(
        "".join(json.dumps({"n": i, "question": f"What is {i} + {10 * i}?"}) + "\n"
                for i in range(1, n + 1))
    )  # fmt: skip
    return path


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run(source: Path, out: Path, *extra: str) -> Any:
    return CliRunner().invoke(
        app, ["run", str(source), "-o", str(out), "--model", MODEL, "--via", "batch-api",
              "-n", "2", "--batch-option", "poll_interval=0.01", "--no-progress", *extra],
    )  # fmt: skip


def test_batch_api_run_shares_the_online_resume_and_summary(
    provider: InMemoryBatchProvider, tmp_path: Path
) -> None:
    source, out = _input(tmp_path / "in.jsonl", 5), tmp_path / "out.jsonl"
    out.write_text(json.dumps({"input_line": 2, "n": 2, "question": "What is 2 + 20?",
                               "answer": "kept"}) + "\n")  # fmt: skip
    result = _run(source, out)
    assert result.exit_code == 0, result.output
    assert "Resuming: 1 of 5 items already in" in result.output
    assert "Items: 5/5 answered or failed (4 this run, 0 errors) | batch requests: 2" in (
        result.output
    )
    assert "Cost: " in result.output and f"Wrote {out}" in result.output
    records = _records(out)
    assert [r["input_line"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["answer"] for r in records] == ["11", "kept", "33", "44", "55"]
    assert not out.with_name("out.jsonl.batch-api.sqlite").exists()
    assert json.loads(setup_path(out).read_text())["setup"]["model"] == MODEL
    again = _run(source, out)
    assert again.exit_code == 0 and "Nothing to do" in again.output, again.output
    changed = _run(source, out, "-n", "3")
    assert changed.exit_code == 2 and "batch_size: was 2, now 3" in changed.output


def test_batch_api_errors_name_the_input_line_and_exit_1(
    provider: InMemoryBatchProvider, tmp_path: Path
) -> None:
    provider.end_state = "failed"
    source, out = _input(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    out.write_text(json.dumps({"input_line": 1, "n": 1, "question": "What is 1 + 10?",
                               "answer": "11"}) + "\n")  # fmt: skip
    result = _run(source, out)
    assert result.exit_code == 1, result.output
    assert "2 of 3 items ended in an error" in result.output
    failed = [r for r in _records(out) if "error" in r]
    assert [r["input_line"] for r in failed] == [2, 3]
    assert [r["error"].split(":")[0] for r in failed] == ["input line 2", "input line 3"]
