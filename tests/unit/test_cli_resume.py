"""Kill ``autodemo run`` mid-run for real, re-run it, and check nothing is lost or doubled."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

N_ITEMS = 12


def _command(source: Path, out: Path, delay: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "langchain_autodemo.cli",
        "run",
        str(source),
        "-o",
        str(out),
        "--model",
        f"fake:answer=sum,delay={delay}",
        "--batch-size",
        "2",
        "--no-progress",
    ]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _start_and_stop_midway(source: Path, out: Path, sig: int) -> subprocess.CompletedProcess:
    process = subprocess.Popen(
        _command(source, out, delay=0.4),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 60
    while len(_lines(out)) < 3:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.05)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(
            json.dumps({"n": i, "question": f"What is {i} + {100 * i}?"}) + "\n"
            for i in range(1, N_ITEMS + 1)
        )
    )
    return path


def _check_complete(out: Path) -> None:
    records = [json.loads(line) for line in _lines(out)]
    lines = [r["input_line"] for r in records]
    assert sorted(lines) == list(range(1, N_ITEMS + 1)), "every item exactly once"
    assert lines == sorted(lines), "a completed run is rewritten in input order"
    for record in records:
        assert record["answer"] == str(101 * record["n"])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_interrupted_run_resumes_without_loss_or_duplicates(
    source: Path, tmp_path: Path, sig: int
) -> None:
    out = tmp_path / "out.jsonl"
    stopped = _start_and_stop_midway(source, out, sig)
    assert stopped.returncode != 0
    if sig == signal.SIGINT:
        assert stopped.returncode == 130, stopped.stderr
        assert "re-run the same command" in stopped.stderr
        assert "Traceback" not in stopped.stderr
        # what was spent before Ctrl-C is reported, not zero: >= 3 items took >= 2 calls
        spent = re.search(r"calls: (\d+) .*tokens in/out: (\d+)/(\d+)", stopped.stderr)
        assert spent, stopped.stderr
        calls, tokens_in, tokens_out = map(int, spent.groups())
        assert calls >= 2 and tokens_in > 0 and tokens_out > 0, stopped.stderr
        assert "per 1,000 items)" in stopped.stderr  # priced per item written before Ctrl-C
    partial = _lines(out)
    assert 3 <= len(partial) < N_ITEMS, "stopped mid-run"
    done_before = {json.loads(line)["input_line"] for line in partial}
    if sig == signal.SIGKILL:  # a kill can also land in the middle of a write
        with out.open("a") as handle:
            handle.write('{"input_line": 9, "n": 9, "question": "What is 9')

    resumed = subprocess.run(  # the same command: another model spec is another setup
        _command(source, out, delay=0.4), capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming: {len(done_before)} of {N_ITEMS}" in resumed.stderr
    assert f"({N_ITEMS - len(done_before)} this run" in resumed.stderr
    _check_complete(out)
