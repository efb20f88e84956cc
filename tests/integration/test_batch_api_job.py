"""``BatchApiJob`` end to end: real openai SDK -> real emulator process -> scripted upstream.

The upstream is the scripted chat server (a test double that answers Auto-Demo prompts,
:mod:`tests.scripted_chat_server`); its model name chooses failures and corruptions.
Everything runs as real processes on 127.0.0.1; the kill test kills a real process
with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from langchain_openai import ChatOpenAI

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoItemError, track_usage
from langchain_autodemo.batch_api import BatchApiJob, BatchJobStateError
from tests.integration.batch_api_servers import ROOT, emulator, environment, scripted_upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with scripted_upstream() as url:
        yield url


@pytest.fixture(scope="module")
def batch_url(upstream: str) -> Iterator[str]:
    with emulator(upstream) as url:
        yield url


def _runner(url: str, model: str = "scripted", **settings) -> AutoDemoBatchRunnable:
    llm = ChatOpenAI(model=model, base_url=url, api_key="none", temperature=0, max_retries=0)
    settings.setdefault("batch_size", 4)
    return AutoDemoBatchRunnable(llm, instructions="Add the numbers.", **settings)


def _questions(n: int, word: str = "", start: int = 1) -> list[str]:
    return [f"What is {i} + {10 * i}{' ' + word if word else ''}?" for i in range(start, start + n)]


def _sums(n: int, start: int = 1) -> list[str]:
    return [str(11 * i) for i in range(start, start + n)]


def _batches(url: str, job: BatchApiJob) -> list[openai.types.Batch]:
    client = openai.OpenAI(base_url=url, api_key="none")
    return [
        b
        for b in client.batches.list(limit=100)
        if (b.metadata or {}).get("autodemo_tag", "").startswith(job.job_id)
    ]


def test_answers_every_input_in_order_with_follow_up_rounds(batch_url: str) -> None:
    events: list[str] = []
    runner = _runner(batch_url, "scripted:skip=3")
    with track_usage() as tracked:
        job = runner.submit_batch_job(_questions(10), on_event=events.append)
        progress = []
        answers = job.wait(poll_interval=0.05, on_progress=progress.append)
    assert answers == _sums(10)
    assert job.done and progress[-1].done and progress[-1].items_done == 10
    # 10 inputs / 4 per call = 3 requests; skip=3 leaves out Q[3] of each: one re-ask round
    rounds = [e for e in events if e.startswith("Submitted batch")]
    assert len(rounds) == 2 and "round 1, 3 requests" in rounds[0] and "round 2" in rounds[1]
    batches = _batches(batch_url, job)
    assert len(batches) == 2 and all(b.status == "completed" for b in batches)
    # tokens are those the batches report, request by request
    assert job.usage.calls == 3 + len(job.state.parts(1)[0].custom_ids)
    assert job.usage.input_tokens == sum(b.usage.input_tokens for b in batches)
    assert job.usage.output_tokens == sum(b.usage.output_tokens for b in batches)
    assert not job.usage.estimated_tokens
    assert tracked.calls == job.usage.calls and tracked.items == 10
    cost = job.cost(model="gpt-4o-mini")
    batch_line, online_line, _ = cost.lines
    assert batch_line.usd == pytest.approx(online_line.usd / 2)
    assert "Batch API" in cost.table() and "$" in cost.summary()


def test_failed_requests_in_the_error_file_are_asked_again(batch_url: str) -> None:
    questions = _questions(4, "apples") + _questions(4, start=5) + _questions(4, "pears", 9)
    runner = _runner(batch_url, "scripted:fail=apples,failall=pears", max_attempts=3)
    job = BatchApiJob(runner, questions)
    results = job.wait(poll_interval=0.05, return_exceptions=True)
    assert results[:8] == _sums(8)  # the apples failed once (HTTP 500), then answered
    for result in results[8:]:  # the pears fail every time: explicit errors, no hang
        assert isinstance(result, AutoDemoItemError)
        assert "scripted failure" in str(result) and "[500]" in str(result)
        assert result.attempts == 3
    with pytest.raises(AutoDemoItemError):
        job.results()


def test_corrupted_and_truncated_completions_are_asked_again(batch_url: str) -> None:
    questions = _questions(4, "plums") + _questions(4, "figs", 5)
    job = BatchApiJob(_runner(batch_url, "scripted:corrupt=plums,truncate=figs"), questions)
    assert job.wait(poll_interval=0.05) == _sums(8)
    assert job.usage.reasks >= 2


def test_an_expired_batch_resubmits_only_the_requests_without_a_result(upstream: str) -> None:
    events: list[str] = []
    with emulator(upstream, "--expire-after", "0.6") as url:
        runner = _runner(url, "scripted:delay=0.25", batch_size=1, mode="single")
        job = BatchApiJob(runner, _questions(6), on_event=events.append, max_resubmits=10)
        assert job.wait(poll_interval=0.05) == _sums(6)
        batches = _batches(url, job)
    expired = [b for b in batches if b.status == "expired"]
    assert expired, [b.status for b in batches]
    assert any("expired with" in e and "submitting those again" in e for e in events)
    # every request ran exactly once: the resubmissions carried only the unanswered ones
    assert sum(b.request_counts.completed for b in batches) == 6
    assert job.usage.calls == 6 and job.usage.reasks == 0


def test_work_is_split_over_several_files_within_the_limits(upstream: str) -> None:
    with emulator(upstream, "--max-requests-per-file", "2") as url:
        job = BatchApiJob(_runner(url, batch_size=2), _questions(10), max_requests_per_file=2)
        assert job.wait(poll_interval=0.05) == _sums(10)
        assert len(_batches(url, job)) == 3  # 5 requests, 2 per file
        by_bytes = BatchApiJob(_runner(url, batch_size=2), _questions(6), max_bytes_per_file=1000)
        assert by_bytes.wait(poll_interval=0.05) == _sums(6)
        parts = by_bytes.state.parts(0)
        assert len(parts) == 3 and all(len(p.custom_ids) == 1 for p in parts)
        # over the provider's limit: the batch fails, its items get explicit errors
        too_big = BatchApiJob(_runner(url, batch_size=1, max_attempts=1), _questions(3, start=20))
        for result in too_big.wait(poll_interval=0.05, return_exceptions=True):
            assert isinstance(result, AutoDemoItemError)
            assert "the batch failed: too_many_requests" in str(result)


def test_a_cancelled_batch_keeps_its_answers_and_fails_the_rest(batch_url: str) -> None:
    runner = _runner(batch_url, "scripted:delay=0.3", batch_size=1, mode="single")
    job = BatchApiJob(runner, _questions(6, start=40))
    deadline = time.monotonic() + 30
    while not any(b.completed for b in job.progress().batches):  # cancel mid-batch
        assert time.monotonic() < deadline
        job.step()
        time.sleep(0.05)
    job.cancel()
    results = job.wait(poll_interval=0.05, return_exceptions=True)
    answered = [r for r in results if not isinstance(r, AutoDemoItemError)]
    failed = [r for r in results if isinstance(r, AutoDemoItemError)]
    assert answered and failed and len(answered) + len(failed) == 6
    assert all("cancelled" in str(error) for error in failed)
    assert len(_batches(batch_url, job)) == 1  # cancelled items are not asked again


def test_online_follow_ups(batch_url: str) -> None:
    events: list[str] = []
    runner = _runner(batch_url, "scripted:skip=2")
    job = BatchApiJob(runner, _questions(8, start=60), follow_ups="online", on_event=events.append)
    assert job.wait(poll_interval=0.05) == _sums(8, start=60)
    assert len(_batches(batch_url, job)) == 1
    assert any("online" in e for e in events)


def test_a_state_file_of_another_job_is_refused(batch_url: str, tmp_path: Path) -> None:
    state = tmp_path / "job.sqlite"
    first = BatchApiJob(_runner(batch_url), _questions(2), state=state)
    assert first.wait(poll_interval=0.05) == _sums(2)
    again = BatchApiJob(_runner(batch_url), _questions(2), state=state)
    assert again.reattached and again.done and again.results() == _sums(2)
    with pytest.raises(BatchJobStateError, match="another batch job"):
        BatchApiJob(_runner(batch_url), _questions(3), state=state)
    with pytest.raises(BatchJobStateError, match="differ"):  # same inputs, other model settings
        changed = _runner(batch_url)
        changed.llm.temperature = 0.5
        BatchApiJob(changed, _questions(2), state=state).step()


def test_a_kill_during_submission_finds_the_batch_by_its_tag(
    batch_url: str, tmp_path: Path
) -> None:
    state = tmp_path / "job.sqlite"
    first = BatchApiJob(_runner(batch_url, "scripted:delay=0.2"), _questions(4), state=state)
    first.step()
    # As if the process died after batches.create() and before it recorded the batch id:
    with sqlite3.connect(state) as db:
        db.execute("UPDATE parts SET state = 'submitting', batch_id = NULL")
    events: list[str] = []
    again = BatchApiJob(
        _runner(batch_url, "scripted:delay=0.2"), _questions(4), state=state, on_event=events.append
    )
    assert again.wait(poll_interval=0.05) == _sums(4)
    assert any("found by its tag" in e for e in events)
    assert len(_batches(batch_url, again)) == 1


_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from langchain_openai import ChatOpenAI
    from langchain_autodemo import AutoDemoBatchRunnable
    from langchain_autodemo.batch_api import BatchApiJob

    url, state, out = sys.argv[1:4]
    llm = ChatOpenAI(model="scripted:delay=0.4,skip=2", base_url=url, api_key="none",
                     temperature=0, max_retries=0)
    runner = AutoDemoBatchRunnable(llm, instructions="Add the numbers.", batch_size=2)
    questions = [f"What is {i} + {10 * i}?" for i in range(1, 9)]
    job = BatchApiJob(runner, questions, state=state, on_event=lambda m: print(m, flush=True))
    answers = job.wait(poll_interval=0.05)
    open(out, "w").write(json.dumps(answers))
    """
)


def test_a_killed_process_re_attaches_to_its_pending_batch(batch_url: str, tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(_SCRIPT)
    state, out = tmp_path / "job.sqlite", tmp_path / "answers.json"
    command = [sys.executable, str(script), batch_url, str(state), str(out)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=environment()
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("Submitted batch"), line
    batch_id = line.split()[2]
    process.send_signal(signal.SIGKILL)  # while the batch is pending
    process.wait(timeout=30)
    assert not out.exists()
    client = openai.OpenAI(base_url=batch_url, api_key="none")
    assert client.batches.retrieve(batch_id).status in ("validating", "in_progress")

    rerun = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=environment(), timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"Re-attached to batch {batch_id}" in rerun.stdout
    assert json.loads(out.read_text()) == _sums(8)
    with sqlite3.connect(state) as db:
        job_id = json.loads(db.execute("SELECT value FROM job WHERE key='job_id'").fetchone()[0])
    tags = [
        (b.metadata or {}).get("autodemo_tag")
        for b in client.batches.list(limit=100)
        if (b.metadata or {}).get("autodemo_tag", "").startswith(job_id)
    ]
    assert len(tags) == len(set(tags)) == 2, tags  # round 1 once, round 2 once: never twice
    assert os.path.getsize(state) > 0
