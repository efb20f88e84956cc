"""A guard that protects: the audit's warm-up (online) never serves packed answers the
evidence has not vouched for; ``autodemo run``'s rewrite is in test_cli_audit.py."""

from __future__ import annotations

import asyncio

import pytest

from langchain_autodemo import ConfigurationError
from langchain_autodemo.audit import AuditedRunnable, AuditPolicy
from langchain_autodemo.runnable import AutoDemoBatchRunnable
from langchain_autodemo.testing import ScriptedAutoDemoModel
from tests.unit.test_cli_audit import PackedWrongModel

QUESTIONS = [f"What is {i} + {10 * i}?" for i in range(1, 81)]
RIGHT = [str(11 * i) for i in range(1, 81)]


def _audited(model: ScriptedAutoDemoModel, **policy: object) -> AuditedRunnable:
    runner = AutoDemoBatchRunnable(model, batch_size=4)
    return AuditedRunnable(runner, AuditPolicy(seed=0, warmup=True, **policy))  # type: ignore[arg-type]


def _answer_in_rounds(audited: AuditedRunnable, rounds: int = 10) -> list[str]:
    size = len(QUESTIONS) // rounds
    answers: list[str] = []
    for start in range(0, len(QUESTIONS), size):
        answers += audited.batch(QUESTIONS[start : start + size])
        audited.drain()  # the evidence of one round decides the next
    return answers


def test_a_warm_up_never_serves_a_packed_answer_that_disagrees() -> None:
    audited = _audited(PackedWrongModel(), rate=0.05)
    assert audited.warming_up and audited.fallback_active
    assert _answer_in_rounds(audited) == RIGHT  # single answers throughout
    assert audited.warming_up  # packing never earned its way in
    estimate = audited.agreement()
    assert estimate.audited >= 20 and estimate.agreed == 0


def test_a_warm_up_ends_once_packing_is_vouched_for() -> None:
    audited = _audited(ScriptedAutoDemoModel(), rate=0.05)
    answers = _answer_in_rounds(audited)
    assert answers == RIGHT
    assert not audited.warming_up and not audited.fallback_active
    # the warm-up audited every item until the Wilson lower bound passed 0.9 (35/35)
    estimate = audited.agreement()
    assert 35 <= estimate.audited <= 48


def test_a_warm_up_in_asyncio() -> None:
    audited = _audited(PackedWrongModel())

    async def rounds() -> list[str]:
        answers: list[str] = []
        for start in range(0, 40, 8):
            answers += await audited.abatch(QUESTIONS[start : start + 8])
            await audited.adrain()
        return answers

    assert asyncio.run(rounds()) == RIGHT[:40]
    assert audited.warming_up


def test_warm_up_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="warmup needs a fallback"):
        AuditPolicy(warmup=True, fallback=None)
    with pytest.raises(ConfigurationError, match="warmup_rate"):
        AuditPolicy(warmup_rate=1.5)
