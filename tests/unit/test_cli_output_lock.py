"""One ``autodemo run`` at a time per output: a second is refused (exit 2), never a
second writer answering the same items again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from langchain_autodemo.cli import app
from langchain_autodemo.cli.resume import OutputError, lock_path, output_lock


def _source(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} + 1?"}) + "\n"
                            for i in range(1, n + 1)))  # fmt: skip
    return path


def test_the_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with output_lock(out):
        assert lock_path(out).name == "out.jsonl.lock"
        with pytest.raises(OutputError, match="another autodemo run is writing"), output_lock(out):
            pass
    with output_lock(out):  # released when the run ends
        pass


def test_run_is_refused_while_another_run_holds_the_output(tmp_path: Path) -> None:
    source, out = _source(tmp_path, 4), tmp_path / "out.jsonl"
    args = ["run", str(source), "-o", str(out), "-m", "fake:answer=sum", "--no-progress"]
    with output_lock(out):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "another autodemo run is writing" in result.output and "out.jsonl.lock" in result.output
    assert not out.exists()
    assert CliRunner().invoke(app, args).exit_code == 0  # and runs once it is free


def test_two_concurrent_runs_never_answer_an_item_twice(tmp_path: Path) -> None:
    n = 12  # 6 calls of 1 s: the second run starts while the first writes
    source, out = _source(tmp_path, n), tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "langchain_autodemo.cli", "run", str(source), "-o",
               str(out), "-m", "fake:answer=sum,delay=1", "-n", "2", "--no-progress",
               "--no-sort"]  # fmt: skip
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 60
    while not (out.exists() and out.read_text()):  # the first run is writing
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    assert second.returncode == 2, second.stderr
    assert "another autodemo run is writing" in second.stderr
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    lines = [json.loads(line)["input_line"] for line in out.read_text().splitlines()]
    assert sorted(lines) == list(range(1, n + 1))
