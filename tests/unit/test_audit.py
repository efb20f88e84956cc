"""Audit sampling (:mod:`langchain_autodemo.audit`) on scripted models: packed answers
checked against single answers in the background, the Wilson estimate, the fallback."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableLambda

from langchain_autodemo import AutoDemoBatchRunnable, ConfigurationError, Mode, track_usage
from langchain_autodemo.audit import (
    AUDIT_EVENT,
    FALLBACK_EVENT,
    AgreementEstimate,
    AuditedRunnable,
    AuditPolicy,
    answers_agree,
    wilson_interval,
)
from langchain_autodemo.engine import ItemResult
from langchain_autodemo.serving import prometheus_metrics
from tests.fakes import ScriptedChatModel, arithmetic_answer, asked_questions, single_question

PACKED_USAGE = {"input_tokens": 100, "output_tokens": 30, "total_tokens": 130}
SINGLE_USAGE = {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13}


class Model:
    """Packed calls answer questions with ``hard`` in them wrongly (sum + 1) while
    ``broken``; single calls always answer right, after ``single_delay`` seconds."""

    def __init__(self, *, broken: bool = True, single_delay: float = 0.0) -> None:
        self.broken = broken
        self.single_delay = single_delay
        self.singles: list[str] = []
        self.packed: list[list[str]] = []
        self.llm = ScriptedChatModel(script=self.script)

    def script(self, messages: list[BaseMessage], _: int) -> Any:
        questions = asked_questions(messages)
        if not questions:
            question = single_question(messages)
            self.singles.append(question)
            time.sleep(self.single_delay)
            answer = arithmetic_answer(question)
            return f"Working it out.\nThe answer is {answer}.", {"usage": SINGLE_USAGE}
        self.packed.append(questions)
        blocks = []
        for i, question in enumerate(questions, 1):
            answer = int(arithmetic_answer(question))
            if self.broken and ("hard" in question or self.broken == "all"):
                answer += 1
            blocks.append(f"Q[{i}]: {question}\nA[{i}]: Working it out.\nThe answer is {answer}.")
        return "\n\n".join(blocks), {"usage": PACKED_USAGE}


def questions(n: int, hard: set[int] = frozenset(), start: int = 0) -> list[str]:  # type: ignore[assignment]
    return [f"What is {i} + {i}?{' (hard)' if i in hard else ''}" for i in range(start, start + n)]


def runner_on(model: Model, batch_size: int = 4, **kwargs: Any) -> AutoDemoBatchRunnable:
    return AutoDemoBatchRunnable(model.llm, instructions="Add.", batch_size=batch_size, **kwargs)


class Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: Any = None,
        metadata: Any = None,
        **kwargs: Any,
    ) -> None:
        self.events.append((name, data))

    def named(self, name: str) -> list[Any]:
        return [data for event, data in self.events if event == name]


# -- the estimate ---------------------------------------------------------------------


def test_wilson_interval_matches_hand_computed_values() -> None:
    # 8/10 at 95%: p=0.8, z²=3.8415; centre=(0.8+0.19207)/1.38415=0.71675,
    # half=1.96*sqrt(0.016+0.0096037)/1.38415=0.22658
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    low, high = wilson_interval(10, 10)  # all agree: low = n / (n + z²)
    assert low == pytest.approx(10 / (10 + 1.959964**2), abs=1e-6)
    assert high == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("packed", "single", "agree"),
    [
        ("27", "27.0", True),
        ("The answer is 27.", "27", True),
        ("  New   York ", "new york!", True),
        ("Paris", "PARIS.", True),
        ("1,000", "1000", True),
        ("$5", "5.0000000001", True),
        ("27", "28", False),
        ("yes", "no", False),
        ("0", "0.000001", False),
    ],
)
def test_default_comparator(packed: str, single: str, agree: bool) -> None:
    assert answers_agree(packed, single) is agree


def test_comparator_reads_item_results_and_parsed_objects() -> None:
    def detail(answer: Any) -> ItemResult:
        return ItemResult(0, answer, str(answer), None, 1, 0, 1, 1)

    assert answers_agree(detail("27"), detail("27.0"))
    assert not answers_agree(detail("27"), detail("26"))
    assert answers_agree({"a": 1}, {"a": 1}) and not answers_agree({"a": 1}, {"a": 2})


def test_agreement_counts_packed_answers_that_single_calls_contradict() -> None:
    model = Model()
    audited = AuditedRunnable(
        runner_on(model),
        AuditPolicy(rate=1.0, seed=1, group_by=lambda q: "hard" if "hard" in q else "easy"),
    )
    inputs = questions(10, hard={2, 5, 7})
    answers = audited.batch(inputs)
    # the audit never changes what is returned: the packed (wrong) answers stay
    assert answers == [str(2 * i + (i in {2, 5, 7})) for i in range(10)]
    assert audited.drain(timeout=5)
    estimate = audited.agreement()
    low, high = wilson_interval(7, 10)
    assert (estimate.audited, estimate.agreed, estimate.rate) == (10, 7, 0.7)
    assert (estimate.low, estimate.high) == (pytest.approx(low), pytest.approx(high))
    assert not estimate.fallback_active
    assert (audited.agreement("hard").audited, audited.agreement("hard").agreed) == (3, 0)
    assert (audited.agreement("easy").audited, audited.agreement("easy").agreed) == (7, 7)
    assert sorted(model.singles) == sorted(inputs)
    assert estimate.summary() == (
        f"Audit: agreed 7/10 (rate 0.700, 95% CI [{low:.3f}, {high:.3f}]); fallback: off"
    )
    audited.close()


def test_a_custom_comparator_decides() -> None:
    model = Model()
    audited = AuditedRunnable(
        runner_on(model),
        AuditPolicy(rate=1.0, comparator=lambda packed, single: abs(int(packed) - int(single)) < 2),
    )
    audited.batch(questions(4, hard={1, 2}))
    audited.drain(timeout=5)
    assert (audited.agreement().audited, audited.agreement().agreed) == (4, 4)
    audited.close()


def test_the_audit_does_not_delay_the_answers() -> None:
    model = Model(broken=False, single_delay=1.0)
    audited = AuditedRunnable(runner_on(model), AuditPolicy(rate=1.0))
    started = time.perf_counter()
    answers = audited.batch(questions(2))
    assert time.perf_counter() - started < 0.5  # the single calls take 1 s each
    assert answers == ["0", "2"]
    assert audited.agreement().audited == 0  # still in flight
    assert audited.drain(timeout=5)
    assert audited.agreement().audited == 2
    audited.close()


def test_the_async_audit_does_not_delay_the_answers() -> None:
    model = Model(broken=False, single_delay=0.5)  # a blocking sleep: runs in LangChain's executor
    audited = AuditedRunnable(runner_on(model), AuditPolicy(rate=1.0))

    async def main() -> tuple[float, list[Any], int]:
        started = time.perf_counter()
        answers = await audited.abatch(questions(2))
        elapsed = time.perf_counter() - started
        before = audited.agreement().audited
        await audited.adrain()
        return elapsed, answers, before

    elapsed, answers, before = asyncio.run(main())
    assert elapsed < 0.4 and answers == ["0", "2"] and before == 0
    assert audited.agreement().audited == 2


def test_seeded_sampling_is_reproducible() -> None:
    inputs = questions(40)

    def audited_questions(seed: int) -> list[str]:
        model = Model(broken=False)
        audited = AuditedRunnable(runner_on(model), AuditPolicy(rate=0.25, seed=seed))
        audited.batch(inputs)
        audited.drain(timeout=5)
        audited.close()
        assert audited.agreement().audited == len(model.singles)
        return sorted(model.singles)

    first = audited_questions(7)
    assert first == audited_questions(7)
    assert first != audited_questions(8)
    assert 2 <= len(first) <= 20  # about a quarter of 40


def test_audit_calls_and_tokens_are_counted_apart_from_the_callers_usage() -> None:
    model = Model(broken=False)
    audited = AuditedRunnable(runner_on(model, batch_size=4), AuditPolicy(rate=1.0))
    with track_usage() as usage:
        audited.batch(questions(4))
        audited.drain(timeout=5)
    estimate = audited.agreement()
    assert (usage.calls, usage.input_tokens, usage.output_tokens) == (1, 100, 30)
    assert (estimate.audit_calls, estimate.audit_input_tokens, estimate.audit_output_tokens) == (
        4,
        40,
        12,
    )
    audited.close()


def test_each_item_gets_its_own_audit_event_only() -> None:
    model = Model()
    audited = AuditedRunnable(runner_on(model), AuditPolicy(rate=1.0))
    handlers = [Events() for _ in range(3)]
    inputs = questions(3, hard={1})
    audited.batch(inputs, [{"callbacks": [h]} for h in handlers])
    audited.drain(timeout=5)
    for index, handler in enumerate(handlers):
        (event,) = handler.named(AUDIT_EVENT)
        assert event["index"] == index
        assert event["agreed"] is (index != 1)
        assert event["packed"] == str(2 * index + (index == 1))
        assert event["single"] == str(2 * index)
        others = {str(2 * i + (i == 1)) for i in range(3) if i != index} - {str(2 * index)}
        assert not others & {event["packed"], event["single"]}
    audited.close()


def test_async_audit_events_reach_the_items_and_the_operator() -> None:
    model = Model()
    operator = Events()
    audited = AuditedRunnable(runner_on(model), AuditPolicy(rate=1.0), callbacks=[operator])
    mine = Events()

    async def main() -> None:
        await audited.ainvoke("What is 3 + 4? (hard)", {"callbacks": [mine]})
        await audited.adrain()

    asyncio.run(main())
    (event,) = mine.named(AUDIT_EVENT)
    assert (event["agreed"], event["packed"], event["single"]) == (False, "8", "7")
    assert operator.named(AUDIT_EVENT) == [event]


def test_failed_items_are_not_audited_and_results_stay_exceptions() -> None:
    def script(messages: list[BaseMessage], _: int) -> Any:
        return "no answer here"

    audited = AuditedRunnable(
        AutoDemoBatchRunnable(ScriptedChatModel(script=script), max_attempts=1),
        AuditPolicy(rate=1.0),
    )
    results = audited.batch(questions(2), return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)
    audited.drain(timeout=5)
    assert audited.agreement().audited == 0
    audited.close()


# -- the fallback ---------------------------------------------------------------------

POLICY = AuditPolicy(rate=1.0, seed=3, min_samples=5, min_agreement=0.8)


def test_fallback_switches_to_single_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    model = Model(broken="all")  # type: ignore[arg-type]
    operator = Events()
    audited = AuditedRunnable(runner_on(model), POLICY, callbacks=[operator])
    with caplog.at_level(logging.WARNING, logger="langchain_autodemo.audit"):
        audited.batch(questions(5))
        audited.drain(timeout=5)
    estimate = audited.agreement()
    assert estimate.fallback_active and (estimate.audited, estimate.agreed) == (5, 0)
    assert estimate.window_audited == 0  # fresh evidence after the switch
    assert "switching to fallback='single'" in caplog.text and "0/5" in caplog.text
    (switched,) = operator.named(FALLBACK_EVENT)
    assert switched["fallback_active"] is True and switched["high"] < 0.8

    # In fallback: single calls answer, the packed runner is shadowed on the same inputs.
    model.broken = False  # packing is fine again: n / (n + z²) > 0.8 needs 16 agreements
    model.singles.clear()
    model.packed.clear()
    assert audited.batch(questions(4, start=10)) == ["20", "22", "24", "26"]
    assert sorted(model.singles) == sorted(questions(4, start=10))
    audited.drain(timeout=5)
    assert model.packed == [questions(4, start=10)]  # the shadow
    estimate = audited.agreement()
    assert (estimate.window_audited, estimate.window_agreed) == (4, 4)
    audited.batch(questions(8, start=20))
    audited.drain(timeout=5)
    assert audited.agreement().fallback_active  # 12/12: low 0.757
    audited.batch(questions(4, start=30))
    audited.drain(timeout=5)
    estimate = audited.agreement()  # 16/16: low 0.806, back to packing
    assert not estimate.fallback_active and estimate.window_audited == 0
    assert (estimate.audited, estimate.agreed) == (21, 16)
    assert [e["fallback_active"] for e in operator.named(FALLBACK_EVENT)] == [True, False]
    model.packed.clear()
    audited.batch(questions(4, start=50))
    assert model.packed == [questions(4, start=50)]  # packed again
    audited.close()


def test_no_fallback_while_the_interval_still_reaches_min_agreement() -> None:
    model = Model()
    audited = AuditedRunnable(runner_on(model), POLICY)
    audited.batch(questions(10, hard={3}))  # 9/10: 95% CI [0.596, 0.982] holds 0.8
    audited.drain(timeout=5)
    estimate = audited.agreement()
    assert estimate.low < 0.8 < estimate.high and not estimate.fallback_active
    audited.batch(questions(10, hard={11, 13, 15, 17, 19}, start=10))  # 14/20: upper 0.855
    audited.drain(timeout=5)
    assert not audited.fallback_active
    audited.batch(questions(4, hard={20, 21, 22, 23}, start=20))  # 14/24: upper 0.76
    audited.drain(timeout=5)
    assert audited.fallback_active
    audited.close()


def test_fallback_without_recover_stays_until_reset() -> None:
    model = Model(broken="all")  # type: ignore[arg-type]
    policy = AuditPolicy(rate=1.0, min_samples=5, min_agreement=0.8, recover=False)
    audited = AuditedRunnable(runner_on(model), policy)
    audited.batch(questions(5))
    audited.drain(timeout=5)
    model.broken = False
    for start in range(10, 60, 10):
        audited.batch(questions(8, start=start))
        audited.drain(timeout=5)
    assert audited.agreement().fallback_active
    estimate = audited.agreement()
    assert (estimate.window_audited, estimate.window_agreed, estimate.audited) == (40, 40, 45)
    assert estimate.window_low > 0.9 > estimate.low
    audited.reset()
    assert not audited.agreement().fallback_active and audited.agreement().window_audited == 0
    audited.close()


def test_fallback_to_a_smaller_batch_size() -> None:
    model = Model(broken="all")  # type: ignore[arg-type]
    audited = AuditedRunnable(
        runner_on(model, batch_size=8),
        AuditPolicy(rate=1.0, min_samples=5, min_agreement=0.8, fallback=2),
    )
    audited.batch(questions(5))
    audited.drain(timeout=5)
    assert audited.fallback_active and audited.current.batch_size == 2
    model.packed.clear()
    audited.batch(questions(6, start=10))
    assert sorted(len(call) for call in model.packed) == [2, 2, 2]
    audited.close()


def test_async_fallback_switches_and_recovers() -> None:
    model = Model(broken="all")  # type: ignore[arg-type]
    audited = AuditedRunnable(runner_on(model), POLICY)

    async def main() -> list[bool]:
        seen = []
        await audited.abatch(questions(5))
        await audited.adrain()
        seen.append(audited.fallback_active)
        model.broken = False
        for start in (10, 20):
            answers = await audited.abatch(questions(8, start=start))
            assert answers == [str(2 * i) for i in range(start, start + 8)]
            await audited.adrain()
            seen.append(audited.fallback_active)
        return seen

    assert asyncio.run(main()) == [True, True, False]


def test_no_fallback_policy_only_estimates() -> None:
    model = Model(broken="all")  # type: ignore[arg-type]
    audited = AuditedRunnable(runner_on(model), AuditPolicy(rate=1.0, min_samples=5, fallback=None))
    audited.batch(questions(8))
    audited.drain(timeout=5)
    assert audited.agreement().agreed == 0 and not audited.fallback_active
    audited.close()


# -- the wrapper ----------------------------------------------------------------------


def test_single_copy_keeps_the_runners_settings_and_parser() -> None:
    from langchain_core.output_parsers import CommaSeparatedListOutputParser

    runner = runner_on(Model(), output_parser=CommaSeparatedListOutputParser(), reasoning=False)
    single = runner.with_settings(mode=Mode.SINGLE)
    assert single.mode is Mode.SINGLE and runner.mode is Mode.AUTO_DEMO
    assert single.instructions == runner.instructions  # the format hint is not doubled
    assert single.instructions.count("comma separated") == 1
    assert single.settings.parse_value is runner.settings.parse_value
    assert single.llm is runner.llm and not single.settings.reasoning


def test_composes_like_a_runnable() -> None:
    model = Model(broken=False)
    audited = AuditedRunnable(runner_on(model), AuditPolicy(rate=1.0))
    chain = audited | RunnableLambda(lambda answer: int(answer) * 10)
    assert chain.batch(questions(3)) == [0, 20, 40]
    assert chain.invoke("What is 2 + 2?") == 40
    audited.drain(timeout=5)
    assert audited.agreement().audited == 4
    audited.close()


def test_batch_as_completed_is_audited() -> None:
    model = Model()
    audited = AuditedRunnable(runner_on(model), AuditPolicy(rate=1.0))
    got = dict(audited.batch_as_completed(questions(4, hard={0})))
    assert got == {0: "1", 1: "2", 2: "4", 3: "6"}
    audited.drain(timeout=5)
    assert (audited.agreement().audited, audited.agreement().agreed) == (4, 3)
    audited.close()


@pytest.mark.parametrize(
    "policy",
    [
        {"rate": 1.5},
        {"rate": -0.1},
        {"min_agreement": 0.0},
        {"min_samples": 0},
        {"fallback": 0},
        {"fallback": "batch"},
    ],
)
def test_bad_policies_are_refused(policy: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        AuditPolicy(**policy)


# -- Prometheus -----------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-z_]+)\{((?:[a-z_]+="(?:[^"\\]|\\.)*",?)+)\} (-?[0-9.e+-]+|NaN)$')


def test_prometheus_text_parses_and_matches_the_estimate() -> None:
    model = Model()
    first = AuditedRunnable(
        runner_on(model), AuditPolicy(rate=1.0, group_by=lambda q: "hard" in q), name="math"
    )
    second = AuditedRunnable(runner_on(Model()), AuditPolicy(rate=0.0), name='say "hi"')
    first.batch(questions(6, hard={0, 1}))
    first.drain(timeout=5)
    text = prometheus_metrics([first, second])
    samples: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# TYPE autodemo_audit_[a-z_]+ (counter|gauge)$", line), line
            continue
        match = _SAMPLE.match(line)
        assert match, line
        samples[(match[1], match[2])] = float(match[3])
    assert samples[("autodemo_audit_items_total", 'runner="math",group="True"')] == 2
    assert samples[("autodemo_audit_agreed_total", 'runner="math",group="True"')] == 0
    assert samples[("autodemo_audit_agreed_total", 'runner="math",group="False"')] == 4
    assert samples[("autodemo_audit_agreement_low", 'runner="math",group="False"')] == (
        pytest.approx(wilson_interval(4, 4)[0])
    )
    assert samples[("autodemo_audit_calls_total", 'runner="math"')] == 6
    assert samples[("autodemo_audit_fallback_active", 'runner="math"')] == 0
    assert samples[("autodemo_audit_items_total", 'runner="say \\"hi\\"",group="default"')] == 0
    # no audit behind it: the agreement bound is unknown (NaN), never a misleading 0
    assert math.isnan(
        samples[("autodemo_audit_agreement_low", 'runner="say \\"hi\\"",group="default"')]
    )
    assert samples[("autodemo_audit_errors_total", 'runner="math"')] == 0
    assert samples[("autodemo_audit_abandoned_total", 'runner="math"')] == 0
    assert isinstance(first.agreement(), AgreementEstimate)
    first.close()
