"""``autodemo run --audit RATE``: the agreement estimate and the fallback, in the summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from langchain_core.messages import BaseMessage, HumanMessage
from typer.testing import CliRunner

from langchain_autodemo.audit import wilson_interval
from langchain_autodemo.cli import app
from langchain_autodemo.testing import ScriptedAutoDemoModel


class PackedWrongModel(ScriptedAutoDemoModel):
    """Right on its own, one too many in every packed answer."""

    def _completion(self, messages: list[BaseMessage]) -> str:
        text = super()._completion(messages)
        user = str([m for m in messages if isinstance(m, HumanMessage)][-1].content)
        if "Q[1]" not in user:
            return text
        return re.sub(r"The answer is (\d+)", lambda m: f"The answer is {int(m[1]) + 1}", text)


def packed_wrong() -> PackedWrongModel:
    return PackedWrongModel()


def _questions(path: Path, n: int) -> Path:
    lines = [json.dumps({"question": f"What is {i} + {10 * i}?"}) for i in range(1, n + 1)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(tmp_path: Path, model: str, n: int, *extra: str) -> tuple[int, str, list[dict]]:
    source = _questions(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app,
        ["run", str(source), "-o", str(out), "--model", model, "--no-progress", *extra],
    )
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return result.exit_code, result.output, records


def test_run_audit_prints_the_agreement(tmp_path: Path) -> None:
    code, output, records = _run(tmp_path, "fake:answer=sum", 6, "-n", "3", "--audit", "1")
    assert code == 0, output
    low, high = wilson_interval(6, 6)
    assert f"Audit: agreed 6/6 (rate 1.000, 95% CI [{low:.3f}, {high:.3f}]); fallback: off" in (
        output
    )
    assert "calls: 2 " in output  # the audit's 6 single calls are not the run's
    assert [r["answer"] for r in records] == [str(11 * i) for i in range(1, 7)]


def test_run_audit_falls_back_when_packing_disagrees(tmp_path: Path) -> None:
    model = f"import:{__name__}:packed_wrong"
    code, output, records = _run(tmp_path, model, 21, "-n", "3", "--audit", "1")
    assert code == 0, output
    low, high = wilson_interval(0, 21)
    assert f"Audit: agreed 0/21 (rate 0.000, 95% CI [{low:.3f}, {high:.3f}]); fallback: on" in (
        output
    )
    # the guard: every item answered packed since the agreement was last known good (here:
    # all of them) is asked again under the fallback and rewritten
    assert [r["answer"] for r in records] == [str(11 * i) for i in range(1, 22)]
    assert "21 item(s) answered packed since the agreement was last known good" in output


def test_the_guard_protects_the_job_it_guards(tmp_path: Path) -> None:
    """Right alone, wrong packed, 160 inputs at --audit 0.25: before the guard, all 160
    were answered packed (0 right) and the fallback came too late; now nearly all are
    right, and the file holds one record per input."""
    model = f"import:{__name__}:packed_wrong"
    code, output, records = _run(tmp_path, model, 160, "-n", "4", "--audit", "0.25")
    assert code == 0, output
    assert "fallback: on" in output
    right = sum(r["answer"] == str(11 * i) for i, r in enumerate(records, 1))
    assert len(records) == 160 and right >= 155, right
    assert [r["input_line"] for r in records] == list(range(1, 161))


def test_the_guard_leaves_an_honest_job_alone(tmp_path: Path) -> None:
    code, output, records = _run(tmp_path, "fake:answer=sum", 160, "-n", "4", "--audit", "0.25")
    assert code == 0, output
    assert "fallback: off" in output and "asked again under the fallback" not in output
    assert [r["answer"] for r in records] == [str(11 * i) for i in range(1, 161)]


def test_the_guard_compacts_an_unsorted_output(tmp_path: Path) -> None:
    model = f"import:{__name__}:packed_wrong"
    code, output, records = _run(tmp_path, model, 24, "-n", "3", "--audit", "1", "--no-sort")
    assert code == 0, output
    assert sorted(r["input_line"] for r in records) == list(range(1, 25))  # no duplicates
    assert all(r["answer"] == str(11 * r["input_line"]) for r in records)


def test_run_without_audit_prints_no_audit_line(tmp_path: Path) -> None:
    code, output, _ = _run(tmp_path, "fake:answer=sum", 3)
    assert code == 0, output
    assert "Audit:" not in output


@pytest.mark.parametrize(
    "extra", [["--audit", "1.5"], ["--audit", "0.1", "--mode", "single"]], ids=["rate", "single"]
)
def test_run_audit_refuses_what_it_cannot_do(tmp_path: Path, extra: list[str]) -> None:
    code, output, records = _run(tmp_path, "fake:answer=sum", 3, *extra)
    assert code == 2 and not records
    assert "--audit" in output
