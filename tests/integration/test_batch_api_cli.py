"""``autodemo run --via batch-api`` against the real emulator process (scripted upstream).

The upstream is the scripted chat server (a test double, :mod:`tests.scripted_chat_server`);
the kill test kills a real ``autodemo run`` process with SIGKILL while its batch is pending.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

from langchain_autodemo.cli import app
from tests.integration.batch_api_servers import ROOT, emulator, environment, scripted_upstream


@pytest.fixture(scope="module")
def batch_url() -> Iterator[str]:
    with scripted_upstream() as upstream, emulator(upstream) as url:
        yield url


def _input(path: Path, n: int, start: int = 1) -> Path:
    path.write_text(
        "".join(
            json.dumps({"n": i, "question": f"What is {i} + {100 * i}?"}) + "\n"
            for i in range(start, start + n)
        )
    )
    return path


def _args(source: Path, out: Path, url: str, model: str, *extra: str) -> list[str]:
    return ["run", str(source), "-o", str(out), "--model", f"openai-compatible:{url}#{model}",
            "--via", "batch-api", "--batch-size", "2", "--batch-option", "poll_interval=0.05",
            "--instructions", "Add the numbers.", *extra]  # fmt: skip


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_via_batch_api_end_to_end(batch_url: str, tmp_path: Path) -> None:
    source, out = _input(tmp_path / "in.jsonl", 7), tmp_path / "out.jsonl"
    args = _args(source, out, batch_url, "scripted:skip=2", "--batch-option",
                 "price_model=gpt-4o-mini")  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = _records(out)
    assert [r["input_line"] for r in records] == list(range(1, 8))
    assert [r["answer"] for r in records] == [str(101 * r["n"]) for r in records]
    assert result.output.count("Submitted batch batch_") == 2  # a re-ask round for skip=2
    assert "Items: 7/7" in result.output and "batch requests: " in result.output
    assert "via the Batch API" in result.output and "gpt-4o-mini prices" in result.output
    assert "request" in result.output  # the progress bar, fed by the request counts
    assert not (tmp_path / "out.jsonl.batch-api.sqlite").exists()  # done: state removed
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "Nothing to do" in again.output


def test_batch_api_needs_a_batch_capable_model(tmp_path: Path) -> None:
    source, out = _input(tmp_path / "in.jsonl", 2), tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["run", str(source), "-o", str(out), "--model",
                                      "fake:answer=sum", "--via", "batch-api"])  # fmt: skip
    assert result.exit_code == 2 and "needs a Batch API" in result.output
    result = CliRunner().invoke(app, ["run", str(source), "-o", str(out), "--via", "mail"])
    assert result.exit_code == 2 and "unknown --via 'mail'" in result.output
    result = CliRunner().invoke(
        app, ["run", str(source), "-o", str(out), "--model", "openai-compatible:http://x/v1",
              "--via", "batch-api", "--batch-option", "poll_every=3"],
    )  # fmt: skip
    assert result.exit_code == 2 and "bad --batch-option 'poll_every=3'" in result.output
    assert not out.exists()


def test_a_killed_run_re_attaches_to_its_pending_batch(batch_url: str, tmp_path: Path) -> None:
    source, out = _input(tmp_path / "in.jsonl", 6), tmp_path / "out.jsonl"
    state = tmp_path / "out.jsonl.batch-api.sqlite"
    command = [sys.executable, "-m", "langchain_autodemo.cli",
               *_args(source, out, batch_url, "scripted:delay=0.5,skip=2"), "--no-progress"]  # fmt: skip
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
        env=environment(),
    )  # fmt: skip
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("Submitted batch"):
            break
    else:
        raise AssertionError("".join(seen))
    batch_id = line.split()[2]
    process.send_signal(signal.SIGKILL)  # the batch is pending at the emulator
    process.wait(timeout=30)
    assert state.exists() and not out.read_text().strip()
    client = openai.OpenAI(base_url=batch_url, api_key="none")
    assert client.batches.retrieve(batch_id).status in ("validating", "in_progress")

    rerun = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=environment(), timeout=180
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "Re-attaching to batch job" in rerun.stderr
    assert f"Re-attached to batch {batch_id}" in rerun.stderr
    records = _records(out)
    assert [r["input_line"] for r in records] == list(range(1, 7))
    assert [r["answer"] for r in records] == [str(101 * r["n"]) for r in records]
    tags = [
        (b.metadata or {}).get("autodemo_tag")
        for b in client.batches.list(limit=100)
        if b.id == batch_id or (b.metadata or {}).get("autodemo_tag", "").startswith(
            (client.batches.retrieve(batch_id).metadata or {})["autodemo_tag"].split("-r")[0]
        )
    ]  # fmt: skip
    assert len(tags) == len(set(tags)) == 2, tags  # round 1 once (re-attached), round 2 once
    assert not state.exists()
