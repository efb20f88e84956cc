"""Per-item confidence from token log-probabilities and selective escalation.

The scripted model is right when asked alone and, in packed calls, wrong on a hidden
share of items (every question whose sum is a multiple of 5), with a low probability on
exactly those answers' tokens. Escalation must find them; a model without
log-probabilities escalates the later slots; an escalated answer is always its own
input's.
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, BaseMessage

from langchain_autodemo import AutoDemoBatchRunnable, track_usage
from langchain_autodemo.engine import ItemResult
from langchain_autodemo.planning import escalation_picks
from langchain_autodemo.testing import ScriptedChatModel
from tests.fakes import arithmetic_answer, asked_questions, single_question

LOW, HIGH = math.log(0.2), math.log(0.99)


def _hidden(question: str) -> bool:
    return int(arithmetic_answer(question)) % 5 == 0


def _packed_wrong(*, logprobs: bool = True, wrong_slot: int | None = None):
    """Packed calls: wrong (answer + 1) on hidden items, or on slot ``wrong_slot``
    (1-based) when given; low log-probability on exactly those answers. Alone: right."""

    def script(messages: list[BaseMessage], _: int) -> Any:
        questions = asked_questions(messages)
        if not questions:
            answer = arithmetic_answer(single_question(messages))
            text = f"Working it out.\nThe answer is {answer}."
            meta: dict[str, Any] = {}
            if logprobs:
                meta["logprob"] = lambda offset, piece: HIGH
            return text, meta
        text, doubtful = "", []
        for slot, question in enumerate(questions, 1):
            wrong = slot == wrong_slot if wrong_slot is not None else _hidden(question)
            value = str(int(arithmetic_answer(question)) + (1 if wrong else 0))
            head = f"Q[{slot}]: {question}\nA[{slot}]: Working it out.\nThe answer is "
            if text:
                text += "\n\n"
            text += head
            if wrong:
                doubtful.append((len(text), len(text) + len(value)))
            text += value + "."
        meta = {}
        if logprobs:
            meta["logprob"] = lambda offset, piece: (
                LOW if any(s < offset + len(piece) and offset < e for s, e in doubtful) else HIGH
            )
        return text, meta

    return script


QUESTIONS = [f"What is {a} + {b}?" for a, b in zip(range(3, 43), range(7, 87, 2), strict=True)]


def _runner(script: Any, **kwargs: Any) -> AutoDemoBatchRunnable:
    return AutoDemoBatchRunnable(
        ScriptedChatModel(script=script, chunk_size=1), batch_size=8, **kwargs
    )


def _right(results: list[Any]) -> int:
    return sum(r == arithmetic_answer(q) for q, r in zip(QUESTIONS, results, strict=True))


def test_the_packed_model_is_wrong_on_a_hidden_share_without_escalation() -> None:
    hidden = sum(_hidden(q) for q in QUESTIONS)
    assert 0 < hidden <= len(QUESTIONS) // 4
    results = _runner(_packed_wrong()).batch(QUESTIONS)
    assert _right(results) == len(QUESTIONS) - hidden


@pytest.mark.parametrize("entry", ["batch", "abatch"])
def test_confidence_marks_the_wrong_answers(entry: str) -> None:
    runner = _runner(_packed_wrong(), include_details=True, confidence=True)
    results = runner.batch(QUESTIONS) if entry == "batch" else asyncio.run(runner.abatch(QUESTIONS))
    for question, result in zip(QUESTIONS, results, strict=True):
        assert isinstance(result, ItemResult)
        assert result.confidence is not None
        # the final answer's tokens alone decide it: one piece per character here
        digits = len(str(result.answer))
        expected = 0.2**digits if _hidden(question) else 0.99**digits
        assert result.confidence == pytest.approx(expected), (question, result)


@pytest.mark.parametrize("entry", ["batch", "abatch"])
def test_escalation_finds_the_hidden_wrong_answers(entry: str) -> None:
    runner = _runner(_packed_wrong(), escalate=0.25, include_details=True)
    with track_usage() as usage:
        if entry == "batch":
            results = runner.batch(QUESTIONS)
        else:
            results = asyncio.run(runner.abatch(QUESTIONS))
    assert [r.answer for r in results] == [arithmetic_answer(q) for q in QUESTIONS]
    for question, result in zip(QUESTIONS, results, strict=True):
        assert result.index == QUESTIONS.index(question)
        if result.escalated:
            assert result.packed_answer is not None
    hidden = sum(_hidden(q) for q in QUESTIONS)
    # 25% of each call of 8: two answers per call, 10 in all
    assert usage.escalations == 2 * len(QUESTIONS) // 8
    assert hidden <= usage.escalations
    assert usage.escalation_input_tokens > 0
    assert usage.reasks == 0


def test_a_threshold_escalates_every_doubtful_answer_and_no_other() -> None:
    runner = _runner(_packed_wrong(), escalate_below=0.5, include_details=True)
    with track_usage() as usage:
        results = runner.batch(QUESTIONS)
    assert [r.answer for r in results] == [arithmetic_answer(q) for q in QUESTIONS]
    assert usage.escalations == sum(_hidden(q) for q in QUESTIONS)
    assert {r.index for r in results if r.escalated} == {
        i for i, q in enumerate(QUESTIONS) if _hidden(q)
    }


def test_without_log_probabilities_the_later_slots_are_escalated() -> None:
    runner = _runner(_packed_wrong(logprobs=False, wrong_slot=8), escalate=0.125)
    results = runner.with_config({}).batch(QUESTIONS)
    assert results == [arithmetic_answer(q) for q in QUESTIONS]


@pytest.mark.parametrize("entry", ["batch", "abatch"])
def test_without_log_probabilities_the_least_accurate_measured_slot_goes_first(entry: str) -> None:
    """A tuned record's slot accuracy orders the fallback: slot 3 is the one to doubt,
    not the latest."""
    measured = (0.95, 0.9, 0.4, 0.9, 0.9, 0.85, 0.8, 0.8)
    runner = _runner(
        _packed_wrong(logprobs=False, wrong_slot=3), escalate=0.125, slot_accuracy=measured,
        include_details=True,
    )  # fmt: skip
    results = runner.batch(QUESTIONS) if entry == "batch" else asyncio.run(runner.abatch(QUESTIONS))
    assert [r.answer for r in results] == [arithmetic_answer(q) for q in QUESTIONS]
    assert {r.index for r in results if r.escalated} == set(range(2, len(QUESTIONS), 8))
    # without the measurement the latest slot is doubted, and slot 3 stays wrong
    plain = _runner(_packed_wrong(logprobs=False, wrong_slot=3), escalate=0.125).batch(QUESTIONS)
    assert _right(plain) == len(QUESTIONS) - len(QUESTIONS) // 8


def test_the_slot_fallback_picks_by_measured_accuracy_then_later_slot() -> None:
    answered = [(10 + s, s, None) for s in range(6)]
    # slot 4 and 5 lie past the list: they count as its last value (0.7)
    assert escalation_picks(answered, 0.34, slot_accuracy=(0.9, 0.5, 0.95, 0.7)) == {11, 15}
    assert escalation_picks(answered, 0.5, slot_accuracy=(0.9, 0.5, 0.95, 0.7)) == {11, 15, 14}
    # answers with a confidence are ranked by it; the slot order only breaks the rest
    mixed = [(1, 0, 0.3), (2, 1, None), (3, 2, 0.9)]
    assert escalation_picks(mixed, 0.34, slot_accuracy=(0.1, 0.9, 0.1)) == {2}


def test_escalation_off_asks_for_no_log_probabilities_and_escalates_nothing() -> None:
    runner = _runner(_packed_wrong(), include_details=True)
    with track_usage() as usage:
        results = runner.batch(QUESTIONS)
    assert usage.escalations == 0
    assert all(not r.escalated for r in results)


def test_a_failed_escalation_keeps_the_packed_answer() -> None:
    def script(messages: list[BaseMessage], number: int) -> Any:
        if not asked_questions(messages):
            return ConnectionError("down")
        return _packed_wrong()(messages, number)

    runner = _runner(script, escalate=0.25, include_details=True, retry_initial_delay=0.0)
    results = runner.batch(QUESTIONS)
    assert all(isinstance(r, ItemResult) for r in results)
    assert [r.index for r in results] == list(range(len(QUESTIONS)))
    kept = [r for r in results if r.reasons and "escalation failed" in r.reasons[-1]]
    assert len(kept) == 10 and not any(r.escalated for r in kept)


def test_the_chat_openai_model_is_asked_for_log_probabilities() -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url="http://127.0.0.1:9/v1", api_key="none", model="x")
    runner = AutoDemoBatchRunnable(llm, escalate=0.1)
    assert runner.model.logprobs is True and runner.model.top_logprobs == 1  # type: ignore[attr-defined]
    assert llm.logprobs is None  # the user's model is not changed
    plain = AutoDemoBatchRunnable(llm)
    assert plain.model is llm


def test_escalation_settings_are_checked() -> None:
    from langchain_autodemo import ConfigurationError

    for bad in (-0.1, 1.5, "0.2", True):
        with pytest.raises(ConfigurationError, match="escalate"):
            _runner(_packed_wrong(), escalate=bad)


def test_escalation_picks_is_order_free_and_counts_by_rounding() -> None:
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 16)
        answered = [(i, i, rng.choice([None, rng.random()])) for i in range(n)]
        share = rng.choice([0.0, 0.1, 0.2, 0.3, 0.5, 1.0])
        picks = escalation_picks(answered, share)
        shuffled = answered[:]
        rng.shuffle(shuffled)
        assert escalation_picks(shuffled, share) == picks
        assert len(picks) == min(n, math.floor(share * n + 0.5))
        if picks and len(picks) < n:
            doubt = {i: (-1.0 if c is None else c, -s) for i, s, c in answered}
            assert max(doubt[i] for i in picks) <= min(doubt[i] for i in range(n) if i not in picks)


def test_confidence_reads_the_answer_tokens_only() -> None:
    """Fed chunk by chunk, as h11 is tested: the answer's own tokens decide."""
    from langchain_autodemo.engine import EngineSettings
    from langchain_autodemo.planning import PlannedBatch
    from langchain_autodemo.prompts import Mode

    settings = EngineSettings(mode=Mode.AUTO_DEMO)
    from langchain_autodemo.engine import Engine

    texts = ["What is 1 + 4?", "What is 2 + 2?"]
    engine = Engine(texts, [PlannedBatch((0, 1))], settings)
    (call,) = engine.initial_calls()
    session = engine.open(call)
    tokens = [
        ("Q[1]: What is 1 + 4?\nA[1]: The answer is ", -0.5),
        ("5", math.log(0.3)),
        (".\n\nQ[2]: What is 2 + 2?\nA[2]: The answer is ", -0.7),
        ("4", math.log(0.9)),
        (".", -0.1),
    ]
    for piece, value in tokens:
        lp = {"content": [{"token": piece, "logprob": value}]}
        session.feed(AIMessageChunk(content=piece, response_metadata={"logprobs": lp}))
    session.feed(AIMessageChunk(content="", response_metadata={"finish_reason": "stop"}))
    report = session.finish()
    assert report.accepted[0].confidence == pytest.approx(0.3)
    assert report.accepted[1].confidence == pytest.approx(0.9)


def test_eval_and_serve_take_escalate(tmp_path: Any) -> None:
    """``autodemo eval --escalate``: the scripted model sends no log-probabilities, so the
    later slots are escalated; the report counts them in their own column."""
    import json

    from typer.testing import CliRunner

    from langchain_autodemo.cli import app

    out = tmp_path / "results"
    args = ["eval", "--dataset", "gsm8k", "--limit", "8", "--methods", "single,auto_demo",
            "--batch-sizes", "4", "--model", "fake:answer=sum", "--out", str(out),
            "--escalate", "0.25", "--no-plots"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["results"]
    packed = next(r for r in rows if r["method"] == "auto_demo")
    assert packed["escalations"] == 2  # one of each call of 4
    assert "| escalated |" in result.output
    bad = CliRunner().invoke(app, [*args[:-3], "--escalate", "1.5"])
    assert bad.exit_code == 2
    helped = CliRunner().invoke(app, ["serve", "--help"])
    assert "--escalate" in helped.output


def test_autodemo_run_escalates_and_records_it(tmp_path: Any) -> None:
    import json

    from typer.testing import CliRunner

    from langchain_autodemo.cli import app

    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS[:8]))
    args = ["run", str(source), "-o", str(out), "--model", "fake:answer=sum", "-n", "4",
            "--escalate", "0.25", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["answer"] for r in records] == [arithmetic_answer(q) for q in QUESTIONS[:8]]
    # no log-probabilities from the scripted model: the last slot of each call of 4
    assert [i for i, r in enumerate(records) if r.get("escalated")] == [3, 7]
    assert "escalations 2" in result.output
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text())
    assert meta["setup"]["escalate"] == 0.25
    # resuming with another share is another setup: refused, naming it
    refused = CliRunner().invoke(app, [*args[:-2], "0.5", "--no-progress"])
    assert refused.exit_code == 2 and "escalate" in refused.output


def test_ray_rows_carry_confidence_and_escalation() -> None:
    from langchain_autodemo import ray_data

    row = ray_data._output_row(  # the row builder both Ray paths use
        ItemResult(0, "5", "5", None, 2, 0, 3, 1, confidence=0.25, escalated=True)
    )
    assert (row["confidence"], row["escalated"]) == (0.25, True)
    assert set(row) == set(ray_data.OUTPUT_COLUMNS)


def test_serve_takes_a_config_and_explicit_flags_win(tmp_path: Any) -> None:
    from langchain_core.runnables import RunnableLambda

    from langchain_autodemo.cli.commands import SERVE_DEFAULTS, served_overrides
    from langchain_autodemo.tuning import TunedConfig

    assert served_overrides(dict(SERVE_DEFAULTS)) == {}
    flags = {**SERVE_DEFAULTS, "batch_size": 4, "instructions": "Mine."}
    assert served_overrides(flags) == {"batch_size": 4, "instructions": "Mine."}
    config = TunedConfig("batch", 16, None, False, "Theirs.", escalate=0.2).write(
        tmp_path / "tuned.json"
    )
    runner = AutoDemoBatchRunnable.from_config(
        config, RunnableLambda(lambda _: ""), **served_overrides(flags)
    )
    assert (runner.batch_size, runner.mode.value, runner.settings.escalate) == (4, "batch", 0.2)
    assert runner.settings.instructions == "Mine." and runner.settings.reasoning is False


def test_serve_needs_instructions_or_a_config() -> None:
    from typer.testing import CliRunner

    from langchain_autodemo.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", "fake:"])
    assert result.exit_code == 2
    assert "needs --instructions or --config" in result.output
