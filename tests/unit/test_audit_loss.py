"""Audits that cannot finish are bounded and counted, never a hang nor a silent loss.

- An audit model call is bounded (``AuditPolicy.call_timeout``): against single calls that
  never answer, the audit ends and counts in ``audit_errors``.
- The audit threads are daemons: a process whose audits hang still exits once its
  answers are in (checked in a subprocess with a guard timeout), and says how many
  audits it abandoned.
- ``asyncio.run(audited.abatch(...))`` closes its loop under the audit tasks: each lost
  audit counts in ``audits_abandoned`` and a warning says so, once.
- ``/metrics`` shows ``audit_errors`` and ``abandoned``, and an agreement bound with no
  audit behind it as ``NaN``, never 0.

Timeouts here are hang guards only; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import logging
import math
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import BaseMessage

from langchain_autodemo import AuditPolicy, AutoDemoBatchRunnable
from langchain_autodemo.audit import AuditedRunnable
from langchain_autodemo.serving import create_app, prometheus_metrics
from tests.fakes import ScriptedChatModel, asked_questions, solver

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = [f"What is {i} + {i}?" for i in range(4)]
ANSWERS = [str(2 * i) for i in range(4)]


def hanging_singles(release: threading.Event) -> ScriptedChatModel:
    """Packed calls are answered; single (audit) calls wait for ``release``."""
    answer = solver()

    def script(messages: list[BaseMessage], n: int) -> Any:
        if not asked_questions(messages):
            release.wait(60)  # a hang guard: the test releases it at its end
        return answer(messages, n)

    return ScriptedChatModel(script=script)


def audited_on(model: ScriptedChatModel, **policy: Any) -> AuditedRunnable:
    runner = AutoDemoBatchRunnable(model, batch_size=4, max_attempts=1, retry_initial_delay=0.0)
    return runner.with_audit(AuditPolicy(rate=1.0, seed=0, **policy))


# -- item: hanging audit calls -------------------------------------------------------------


def test_a_process_whose_audits_hang_still_exits_and_says_so() -> None:
    script = textwrap.dedent(
        """
        import threading
        from langchain_autodemo import AuditPolicy, AutoDemoBatchRunnable
        from tests.fakes import ScriptedChatModel, asked_questions, solver

        answer, never = solver(), threading.Event()

        def script(messages, n):
            if not asked_questions(messages):
                never.wait()  # an audit (single) call that never answers
            return answer(messages, n)

        runner = AutoDemoBatchRunnable(ScriptedChatModel(script=script), batch_size=4)
        audited = runner.with_audit(AuditPolicy(rate=1.0))
        print(audited.batch([f"What is {i} + {i}?" for i in range(4)]), flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,  # the guard: before the fix the interpreter joined the hung audit
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(ANSWERS)
    assert "4 audit(s) were still running at interpreter exit" in done.stderr
    assert "audits_abandoned" in done.stderr


@pytest.mark.parametrize("driver", ["batch", "abatch"])
def test_an_audit_call_that_hangs_ends_at_its_deadline_as_an_audit_error(driver: str) -> None:
    release = threading.Event()
    audited = audited_on(hanging_singles(release), call_timeout=0.2)
    try:
        if driver == "batch":
            assert audited.batch(QUESTIONS) == ANSWERS
            assert audited.drain(timeout=60)  # a guard: the deadline ends every audit
        else:

            async def main() -> list[Any]:
                answers = await audited.abatch(QUESTIONS)
                await asyncio.wait_for(audited.adrain(), 60)
                release.set()  # the abandoned streams' threads end before the loop closes
                return answers

            assert asyncio.run(main()) == ANSWERS
    finally:
        release.set()
    estimate = audited.agreement()
    assert estimate.audit_errors == 4 and estimate.audited == 0
    assert estimate.audits_abandoned == 0


def test_close_with_a_timeout_abandons_and_counts_the_audits_still_running() -> None:
    release = threading.Event()
    audited = audited_on(hanging_singles(release), call_timeout=None)
    try:
        assert audited.batch(QUESTIONS) == ANSWERS
        assert audited.close(timeout=0.2) is False
        assert audited.agreement().audits_abandoned == 4
    finally:
        release.set()
    # ... and an abandoned audit that finishes later is not counted twice
    audited.drain(timeout=60)
    estimate = audited.agreement()
    assert estimate.audits_abandoned == 4 and estimate.audited == 0


def test_the_audit_call_timeout_must_be_positive() -> None:
    from langchain_autodemo import ConfigurationError

    with pytest.raises(ConfigurationError, match="call_timeout"):
        AuditPolicy(call_timeout=0)


# -- item: audits under asyncio.run ------------------------------------------------------


def test_audits_cancelled_with_their_loop_are_counted_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = ScriptedChatModel(script=solver())
    audited = audited_on(model)
    with caplog.at_level(logging.WARNING, logger="langchain_autodemo.audit"):
        for _ in range(3):
            assert asyncio.run(audited.abatch(QUESTIONS)) == ANSWERS
    estimate = audited.agreement()
    # Every audit is accounted for: recorded, failed, or abandoned; none vanishes.
    assert estimate.audited + estimate.audit_errors + estimate.audits_abandoned == 12
    assert estimate.audits_abandoned > 0  # the loop closed before they ran
    said = [r for r in caplog.records if "audits_abandoned" in r.getMessage()]
    assert len(said) == 1 and "event loop" in said[0].getMessage()
    metrics = prometheus_metrics([audited])
    assert f"autodemo_audit_abandoned_total{{{_runner(audited)}}} {estimate.audits_abandoned}" in (
        metrics
    )


def test_awaiting_adrain_keeps_every_audit() -> None:
    audited = audited_on(ScriptedChatModel(script=solver()))

    async def main() -> None:
        await audited.abatch(QUESTIONS)
        await audited.adrain()

    asyncio.run(main())
    estimate = audited.agreement()
    assert estimate.audited == 4 and estimate.audits_abandoned == 0


# -- item: /metrics ------------------------------------------------------------------------


def _runner(audited: AuditedRunnable) -> str:
    return f'runner="{audited.get_name()}"'


def _samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_metrics_show_errors_abandoned_and_no_agreement_without_audits() -> None:
    audited = audited_on(ScriptedChatModel(script=solver()))
    samples = _samples(prometheus_metrics([audited]))
    labels = _runner(audited)
    assert samples[f"autodemo_audit_errors_total{{{labels}}}"] == 0
    assert samples[f"autodemo_audit_abandoned_total{{{labels}}}"] == 0
    group = f'{labels},group="default"'
    assert math.isnan(samples[f"autodemo_audit_agreement_low{{{group}}}"])
    assert math.isnan(samples[f"autodemo_audit_window_agreement_low{{{group}}}"])
    assert samples[f"autodemo_audit_items_total{{{group}}}"] == 0


@pytest.fixture
def _fresh_sse_exit_event():
    from sse_starlette.sse import AppStatus

    AppStatus.should_exit_event = None
    yield
    AppStatus.should_exit_event = None


@pytest.mark.usefixtures("_fresh_sse_exit_event")
async def test_served_metrics_count_failed_audits_and_show_no_agreement_before_any() -> None:
    release = threading.Event()
    app = create_app(
        AutoDemoBatchRunnable(hanging_singles(release), batch_size=4, max_attempts=1),
        max_wait_seconds=0.2,
        audit=AuditPolicy(rate=1.0, seed=0, call_timeout=0.2),
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            before = (await client.get("/metrics")).text
            assert "autodemo_audit_agreement_low{" in before and "} NaN" in before
            answers = await asyncio.gather(
                *(client.post("/autodemo/invoke", json={"input": q}) for q in QUESTIONS)
            )
            assert [a.json()["output"] for a in answers] == ANSWERS
            errors = 0.0
            for _ in range(600):  # a guard: the audits end at their call deadline
                samples = {
                    k.split("{")[0]: v
                    for k, v in _samples((await client.get("/metrics")).text).items()
                }
                errors = samples["autodemo_audit_errors_total"]
                if errors == 4:
                    break
                await asyncio.sleep(0.05)
            assert errors == 4
            assert math.isnan(samples["autodemo_audit_agreement_low"])
    finally:
        release.set()
