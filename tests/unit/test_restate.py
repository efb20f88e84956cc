"""``restate="head"``: auto_demo copies each question's first words, not all of it.

The head must still prove which input an answer belongs to: a copied head is an exact
copy of its input only in a call where no head could be the start of another text the
prompt shows (:func:`heads_distinguishable`); any other call restates in full. Checked at
the engine (fed chunk by chunk), through the runner, in the tuner's search space and
config file, and in the adversarial fuzz (tests/adversarial.py draws both settings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from langchain_autodemo import AutoDemoBatchRunnable, track_usage
from langchain_autodemo.alignment import EchoMatcher, heads_distinguishable
from langchain_autodemo.engine import Engine, EngineSettings
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.planning import PlannedBatch
from langchain_autodemo.prompts import Mode, Restate, build_batch_messages, head_of
from langchain_autodemo.testing import ScriptedAutoDemoModel
from tests.fakes import ScriptedChatModel, asked_questions, feed_completion

QUESTIONS = [
    "Janet has 16 ducks that lay eggs every day and sells the rest. How many?",
    "Tom buys 3 apples at the store for 2 dollars each. What does he pay?",
    "A robe takes 2 bolts of blue fiber and half that much white. How many?",
]


def engine_call(inputs: list[str], demos: tuple[tuple[str, str], ...] = (), words: int = 4):
    engine = Engine(
        inputs,
        [PlannedBatch(tuple(range(len(inputs))), demonstrations=demos)],
        EngineSettings(batch_size=len(inputs), restate=Restate.HEAD, head_words=words),
    )
    [call] = engine.initial_calls()
    return engine, call


def judge(inputs: list[str], completion: str, **kwargs: Any) -> tuple[dict[int, Any], dict]:
    engine, call = engine_call(inputs, **kwargs)
    report = feed_completion(engine.open(call), completion, chunk=3)
    return {i: r.answer for i, r in report.accepted.items()}, report.failures


def block(i: int, restated: str | None, answer: str) -> str:
    head = f"Q[{i}]: {restated}\n" if restated is not None else ""
    return f"{head}A[{i}]: Thinking.\nThe answer is {answer}.\n\n"


# -- the prompt ---------------------------------------------------------------------------


def test_head_is_the_first_words_on_one_line() -> None:
    assert head_of("A  b\nc d e", 3) == "A b c"
    assert head_of("short", 8) == "short"


def test_the_prompt_asks_for_heads_and_its_demonstrations_show_them() -> None:
    demo = ("Ann reads 12 pages a day for a week. How many pages?", "84")
    messages = build_batch_messages(
        QUESTIONS[:2], demonstrations=[demo], head_words=4, reasoning=False
    )
    asked = str(messages[-1].content)
    assert "Copy the first 4 words of the question" in asked
    assert "Q[i]: <first 4 words of question i>" in asked
    assert QUESTIONS[0] in asked  # the questions themselves are shown whole
    assert str(messages[2].content) == "Q[1]: Ann reads 12 pages\nA[1]: 84"
    # batch mode restates nothing: head_words changes nothing there
    assert build_batch_messages(QUESTIONS[:2], mode=Mode.BATCH, head_words=4) == (
        build_batch_messages(QUESTIONS[:2], mode=Mode.BATCH)
    )


# -- when heads may stand for their inputs ------------------------------------------------


def test_heads_that_open_alike_or_start_another_text_are_not_distinguishable() -> None:
    texts = ["Tom has 3 cats.", "Tom has 3 dogs."]
    assert not heads_distinguishable([head_of(t, 3) for t in texts], texts)
    assert heads_distinguishable([head_of(t, 4) for t in texts], texts)
    # a short input that is the start of a longer one
    texts = ["Is it raining", "Is it raining in Paris today?"]
    assert not heads_distinguishable([head_of(t, 8) for t in texts], texts)
    # an input that opens like a demonstration (texts after the heads are distractors)
    texts = ["Tom has 3 cats. How many legs?", "Tom has 3 cats. How many ears?"]
    assert not heads_distinguishable([head_of(texts[0], 5)], texts)
    assert not heads_distinguishable([""], ["?"])


def test_a_call_whose_heads_collide_restates_in_full() -> None:
    inputs = ["Tom has 3 cats. How many legs?", "Tom has 3 cats. How many ears?"]
    _, call = engine_call(inputs, words=4)
    assert call.heads is None
    assert "word for word" in str(call.messages[-1].content)
    _, call = engine_call(QUESTIONS, words=4)
    assert call.heads == tuple(head_of(q, 4) for q in QUESTIONS)
    # a demonstration that opens like an input also forces full restatements
    demo = ("Janet has 16 ducks and 3 geese. How many birds?", "19")
    _, call = engine_call(QUESTIONS, demos=(demo,), words=4)
    assert call.heads is None


def test_only_auto_demo_asks_for_heads() -> None:
    for mode in (Mode.BATCH, Mode.SINGLE):
        engine = Engine(
            QUESTIONS,
            [PlannedBatch((i,)) for i in range(3)] if mode is Mode.SINGLE
            else [PlannedBatch((0, 1, 2))],
            EngineSettings(mode=mode, restate=Restate.HEAD),
        )  # fmt: skip
        assert all(call.heads is None for call in engine.initial_calls())


# -- what a head completion delivers ------------------------------------------------------


def test_heads_in_order_deliver_every_answer() -> None:
    completion = "".join(block(i, head_of(q, 4), f"v{i}") for i, q in enumerate(QUESTIONS, 1))
    accepted, failures = judge(QUESTIONS, completion)
    assert accepted == {0: "v1", 1: "v2", 2: "v3"} and not failures


def test_a_full_copy_or_a_longer_head_still_counts() -> None:
    completion = (
        block(1, QUESTIONS[0], "v1")
        + block(2, head_of(QUESTIONS[1], 7), "v2")
        + block(3, head_of(QUESTIONS[2], 4), "v3")
    )
    accepted, failures = judge(QUESTIONS, completion)
    assert accepted == {0: "v1", 1: "v2", 2: "v3"} and not failures


def test_swapped_heads_move_their_answers_only_as_a_closed_swap() -> None:
    h = [head_of(q, 4) for q in QUESTIONS]
    swapped = block(1, h[1], "B") + block(2, h[0], "A") + block(3, h[2], "C")
    accepted, failures = judge(QUESTIONS, swapped)
    assert accepted == {0: "A", 1: "B", 2: "C"} and not failures


def test_a_head_that_slips_to_another_input_is_reasked_never_moved() -> None:
    h = [head_of(q, 4) for q in QUESTIONS]
    # block 1 restates input 2's head but answers its own question: input 2 is answered
    # again under its own index, so nothing corroborates a move
    slipped = block(1, h[1], "A") + block(2, h[1], "B") + block(3, h[2], "C")
    accepted, failures = judge(QUESTIONS, slipped)
    assert accepted.get(0) is None and 0 in failures
    assert accepted.get(1) in (None, "B") and accepted.get(2) == "C"


def test_a_demonstrations_head_is_attributed_to_no_input() -> None:
    demo = ("Mary owns 7 goats and 2 sheep. How many animals?", "9")
    h = [head_of(q, 4) for q in QUESTIONS]
    completion = block(1, head_of(demo[0], 4), "9") + block(2, h[1], "B") + block(3, h[2], "C")
    accepted, failures = judge(QUESTIONS, completion, demos=(demo,))
    assert 0 not in accepted and "demonstration" in failures[0]
    assert accepted == {1: "B", 2: "C"}


def test_a_head_too_short_to_tell_is_reasked() -> None:
    inputs = ["Tom has 3 cats and 2 dogs. How many legs?", "Tom has 5 birds. How many legs?"]
    _, call = engine_call(inputs, words=4)
    assert call.heads is not None
    completion = block(1, "Tom has", "14") + block(2, head_of(inputs[1], 4), "10")
    accepted, failures = judge(inputs, completion)
    assert 0 not in accepted and accepted == {1: "10"}


def test_the_matcher_trusts_no_head_that_two_inputs_share() -> None:
    matcher = EchoMatcher(["Tom has 3 cats.", "Tom has 3 dogs."], heads=["Tom has 3", "Tom has 3"])
    verdict = matcher.match("Tom has 3", 0)
    assert verdict.position is None and verdict.ambiguous
    with pytest.raises(ValueError):
        EchoMatcher(["a b"], heads=[])


# -- through the runner -------------------------------------------------------------------


def test_runner_with_heads_answers_every_input_in_order_for_fewer_output_tokens() -> None:
    questions = [f"What is {i} + {i + 1}? Add the two numbers and reply." for i in range(12)]
    outputs = {}
    for restate in ("full", "head"):
        runner = AutoDemoBatchRunnable(
            ScriptedAutoDemoModel(answer="sum"), batch_size=6, restate=restate, reasoning=False
        )
        with track_usage() as usage:
            assert runner.batch(questions) == [str(2 * i + 1) for i in range(12)]
        outputs[restate] = usage.output_tokens
    assert outputs["head"] < 0.7 * outputs["full"]


def test_runner_reasks_a_garbled_head_and_keeps_the_order() -> None:
    inputs = QUESTIONS

    def script(messages: list[Any], call: int) -> str:
        asked = asked_questions(messages)
        if call == 1:  # the first head is missing: re-asked
            return block(1, None, "x") + "".join(
                block(i, head_of(q, 8), f"ok:{q[:5]}") for i, q in enumerate(asked[1:], 2)
            )
        return "".join(block(i, head_of(q, 8), f"ok:{q[:5]}") for i, q in enumerate(asked, 1))

    runner = AutoDemoBatchRunnable(ScriptedChatModel(script=script), restate="head", batch_size=3)
    assert runner.batch(inputs) == [f"ok:{q[:5]}" for q in inputs]


def test_bad_restate_settings_are_refused_clearly() -> None:
    model = ScriptedAutoDemoModel()
    with pytest.raises(ConfigurationError, match="unknown restate 'tail'.*full, head"):
        AutoDemoBatchRunnable(model, restate="tail")
    with pytest.raises((ConfigurationError, ValueError), match="head_words"):
        AutoDemoBatchRunnable(model, restate="head", head_words=0)
    assert AutoDemoBatchRunnable(model, restate="head").settings.restate is Restate.HEAD


# -- in the tuner -------------------------------------------------------------------------


def test_the_search_space_tries_heads_for_auto_demo_only() -> None:
    from langchain_autodemo.tuning import candidates

    space = candidates(["batch", "auto_demo"], [8], [False])
    assert [c.label for c in space] == ["batch N=8 terse", "auto_demo N=8 terse",
                                        "auto_demo N=8 head terse"]  # fmt: skip
    assert [c.label for c in candidates(["auto_demo"], [8], [True], ["full"])] == ["auto_demo N=8"]


def test_config_round_trip_keeps_restate_and_refuses_a_bad_one(tmp_path: Path) -> None:
    from langchain_autodemo.tuning import TunedConfig

    path = TunedConfig(mode="auto_demo", batch_size=8, restate="head").write(tmp_path / "t.json")
    runner = AutoDemoBatchRunnable.from_config(path, ScriptedAutoDemoModel())
    assert runner.settings.restate is Restate.HEAD
    data = json.loads(path.read_text())
    data["restate"] = "tail"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match="restate must be"):
        TunedConfig.read(path)


def test_a_resumed_tune_asks_the_model_nothing_it_has_answered(tmp_path: Path) -> None:
    from langchain_autodemo.evaluation.datasets import load_dataset
    from langchain_autodemo.pricing import PriceTable
    from langchain_autodemo.tuning import MeasurementLog, candidates, tune

    data = load_dataset("sst2", limit=8)
    price = PriceTable.default().price("gpt-4o-mini")
    space = candidates(["auto_demo"], [4], [False])
    model = ScriptedAutoDemoModel(answer="echo")
    log = MeasurementLog(tmp_path / "m.jsonl")
    first = tune(model, data, space, price=price, measured=log)
    again = MeasurementLog(tmp_path / "m.jsonl")
    assert len(again) == len(log) > 0

    class Refusing(ScriptedAutoDemoModel):
        def _completion(self, messages: list[Any]) -> str:
            raise AssertionError("a resumed search asked the model again")

    second = tune(Refusing(answer="echo"), data, space, price=price, measured=again)
    assert second.as_dict()["rows"] == first.as_dict()["rows"]
