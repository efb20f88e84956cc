"""``autodemo tune`` on scripted models: the choice, the drops, the config round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.cli import app
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.evaluation.datasets import Dataset, Example, Task
from langchain_autodemo.pricing import Price
from langchain_autodemo.prompts import Mode
from langchain_autodemo.tuning import TunedConfig, candidates, tune
from tests.fakes import (
    ScriptedChatModel,
    arithmetic_answer,
    asked_questions,
    single_question,
    well_formed,
)

PRICE = Price(1.0, 4.0, cached_input=0.5)
SUMS = Dataset(
    "sums",
    Task("numeric", "Add the numbers."),
    [Example(f"s{i}", f"What is {i} + {2 * i}?", str(3 * i)) for i in range(1, 17)],
    lambda: [("What is 100 + 1?", "100 and 1.\nThe answer is 101.")],
)


# A shared k-shot prefix that packing amortises (as on real few-shot workloads).
SHOTS = [(f"What is {i} + 100? " + "Some context. " * 40, f"Adding.\nThe answer is {i + 100}.")
         for i in range(3)]  # fmt: skip


def model(*, batch_right: bool, auto_demo_right: bool, terse_right: bool = True):
    """A model whose packed answers are right or wrong by mode (single: always right)."""

    def script(messages, n):
        prompt = str(messages[-1].content)
        questions = asked_questions(messages)
        if not questions:
            return f"The answer is {arithmetic_answer(single_question(messages))}."
        terse = "final answer only" in prompt
        restate = "without repeating" not in prompt
        right = (auto_demo_right if restate else batch_right) and (terse_right or not terse)

        def answer(q: str) -> str:
            return arithmetic_answer(q) if right else "0"

        if terse:
            return "\n".join(
                (f"Q[{i}]: {q}\n" if restate else "") + f"A[{i}]: {answer(q)}"
                for i, q in enumerate(questions, 1)
            )
        return well_formed(questions, answer, restate)

    return ScriptedChatModel(script=script)


def test_a_wrong_cheap_configuration_is_dropped_and_the_cheapest_right_one_chosen() -> None:
    llm = model(batch_right=False, auto_demo_right=True)
    space = candidates(["batch", "auto_demo"], [8], [True], ["full"])
    report = tune(llm, SUMS, space, price=PRICE, demonstrations=SHOTS)
    rows = {row.label: row for row in report.rows}
    assert rows["batch N=8"].status.startswith("dropped after round 1")
    assert rows["batch N=8"].result is not None and rows["batch N=8"].result.n == 4  # halved
    assert report.chosen_label == "auto_demo N=8" and rows["auto_demo N=8"].status == "chosen"
    assert (report.chosen.mode, report.chosen.batch_size) == ("auto_demo", 8)
    assert report.chosen.tuned_on["accuracy_difference"] == 0
    assert report.spent["calls"] > 0


def test_when_nothing_keeps_singles_accuracy_single_is_chosen() -> None:
    llm = model(batch_right=False, auto_demo_right=False)
    space = candidates(["batch", "auto_demo"], [4], [True])
    report = tune(llm, SUMS, space, price=PRICE, demonstrations=SHOTS)
    assert report.chosen_label == "single" and report.chosen.mode == "single"
    assert all(row.status.startswith("dropped") for row in report.rows[1:])


def test_terse_candidates_are_searched_first_and_dropped_when_they_lose() -> None:
    llm = model(batch_right=True, auto_demo_right=True, terse_right=False)
    space = candidates(["batch"], [8], [True, False])
    report = tune(llm, SUMS, space, price=PRICE, demonstrations=SHOTS)
    labels = [row.label for row in report.rows]
    assert labels.index("batch N=8 terse") < labels.index("batch N=8")  # cheaper first
    assert report.chosen_label == "batch N=8"


def test_packing_that_costs_more_than_single_is_not_chosen() -> None:
    """Tiny questions and no shared prompt: the packed prompt's format rules cost more per
    item than single calls, so even an accurate packed configuration loses to single."""
    llm = model(batch_right=True, auto_demo_right=True)
    report = tune(llm, SUMS, candidates(["auto_demo"], [8], [True]), price=PRICE)
    assert report.chosen_label == "single"
    assert report.rows[1].status == "passed"


def test_a_config_round_trips_and_builds_the_runner(tmp_path: Path) -> None:
    config = TunedConfig("auto_demo", 8, None, False, "Add.", (("1 + 1?", "The answer is 2."),))
    path = config.write(tmp_path / "tuned.json")
    assert TunedConfig.read(path) == config
    runner = AutoDemoBatchRunnable.from_config(path, model(batch_right=True, auto_demo_right=True))
    assert (runner.mode, runner.batch_size, runner.settings.reasoning) == (Mode.AUTO_DEMO, 8, False)
    assert runner.demonstrations == (("1 + 1?", "2"),)  # terse: the final answer alone
    assert AutoDemoBatchRunnable.from_config(path, runner.llm, batch_size=2).batch_size == 2


@pytest.mark.parametrize(
    "content", ['{"mode": "fast"}', '{"mode": "batch", "colour": 1}', "[1]", "not json"]
)
def test_a_bad_config_is_refused_by_name(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tuned.json"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match="tuned.json"):
        TunedConfig.read(path)


def test_the_tune_command_writes_its_report_and_config(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    result = CliRunner().invoke(
        app,
        ["tune", "--dataset", "gsm8k", "--limit", "8", "--model", "fake:answer=sum",
         "--methods", "batch", "--batch-sizes", "4", "--reasoning", "on", "--shots", "1",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"tune.json", "tune.md", "tuned.json", "pareto.png"}
    report = json.loads((out / "tune.json").read_text())
    assert report["chosen"] and report["meta"]["shots"] == 1
    assert TunedConfig.read(out / "tuned.json").demonstrations


def test_run_with_a_tuned_config_uses_its_settings(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?"}) + "\n" for i in range(1, 6))
    )
    config = TunedConfig("batch", 2, None, True, "Add the numbers.", SHOTS[:1]).write(
        tmp_path / "tuned.json"
    )
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app,
        ["run", str(source), "-o", str(out), "--model", "fake:answer=sum", "--config",
         str(config)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    answers = [json.loads(line)["answer"] for line in out.read_text().splitlines()]
    assert answers == ["2", "4", "6", "8", "10"]
    assert "calls: 3" in result.output  # batch size 2 from the config, not the default 8
    setup = json.loads((tmp_path / "out.jsonl.meta.json").read_text())
    assert json.dumps(setup).count('"batch"') >= 1 and "demonstrations" in json.dumps(setup)


def test_a_terse_search_is_measured_against_a_terse_single() -> None:
    llm = model(batch_right=True, auto_demo_right=True)
    report = tune(llm, SUMS, candidates(["batch"], [8], [False]), price=PRICE, demonstrations=SHOTS)
    assert report.rows[0].label == "single terse" and report.single.output_tokens < 16 * 6


def test_the_report_states_singles_output_floor_by_hand() -> None:
    """Packing shares the input only: the report says which share of single's cached cost
    is output, computed here from single's own tokens."""
    llm = model(batch_right=True, auto_demo_right=True)
    report = tune(llm, SUMS, candidates(["batch"], [8], [True]), price=PRICE,
                  demonstrations=SHOTS)  # fmt: skip
    single = report.single
    output = 1000 * single.output_tokens * 4.0 / 1e6 / single.n
    assert report.output_floor == pytest.approx(
        output / single.usd_per_1k_items(PRICE, cached=True)
    )
    assert 0 < report.output_floor < 1
    assert report.as_dict()["output_floor_vs_single_cached"] == round(report.output_floor, 3)
    assert f"Single's output is {report.output_floor:.2f}x of its cost" in report.markdown()


# -- escalation as a dimension of the search ----------------------------------------------


def doubtful_model(*, logprobs: bool = True):
    """Packed: wrong (answer + 1) on every fourth question (its index a multiple of 4), with
    a low log-probability on exactly that answer; alone: always right."""
    import math

    def script(messages, n):
        questions = asked_questions(messages)
        if not questions:
            return f"The answer is {arithmetic_answer(single_question(messages))}."
        text, doubtful = "", []
        for slot, question in enumerate(questions, 1):
            wrong = int(arithmetic_answer(question)) % 12 == 0
            value = str(int(arithmetic_answer(question)) + int(wrong))
            text += ("\n\n" if text else "") + f"Q[{slot}]: {question}\nA[{slot}]: The answer is "
            if wrong:
                doubtful.append((len(text), len(text) + len(value)))
            text += value + "."
        if not logprobs:
            return text
        low, high = math.log(0.1), math.log(0.99)

        def logprob(offset: int, piece: str) -> float:
            hit = any(s < offset + len(piece) and offset < e for s, e in doubtful)
            return low if hit else high

        return text, {"logprob": logprob}

    return ScriptedChatModel(script=script, chunk_size=1)


def test_escalation_replayed_from_confidence_wins_the_search() -> None:
    space = candidates(["auto_demo"], [8], [True], ["full"], escalate=[0, 0.25])
    llm = doubtful_model()
    report = tune(llm, SUMS, space, price=PRICE, demonstrations=SHOTS)
    rows = {row.label: row for row in report.rows}
    plain, escalated = rows["auto_demo N=8"], rows["auto_demo N=8 esc=0.25"]
    assert plain.result is not None and plain.result.accuracy == 0.75
    assert escalated.result is not None and escalated.result.accuracy == 1.0
    assert plain.status.startswith("dropped after round 1")
    # slices of 4, 4 and 8 items: one answer of each call of 4 and two of the call of 8
    assert escalated.result.escalations == 4
    packed_calls = [m for m in llm.calls if asked_questions(m)]
    assert len(packed_calls) == 3  # the replay asked the model nothing more
    assert escalated.result.calls == 3 + 4
    assert report.chosen_label == "auto_demo N=8 esc=0.25"
    assert report.chosen.escalate == 0.25
    # confidence finds the packed errors perfectly here, and the report says so
    assert plain.confidence is not None and plain.confidence["auroc_vs_gold"] == 1.0
    assert plain.confidence["escalation_to_match_single"]["share"] <= 0.25
    assert "esc=0.25" in report.markdown() and "AUROC 1.00 vs gold" in report.markdown()


def test_the_replay_matches_a_real_escalated_run() -> None:
    """What tune replays is what the runner does with escalate= on the same model."""
    from langchain_autodemo.evaluation.harness import run_method
    from langchain_autodemo.evaluation.methods import parse_method
    from langchain_autodemo.tuning import with_escalation

    method = parse_method("auto_demo")
    packed = run_method(doubtful_model(), SUMS, method, 8, confidence=True)
    alone = run_method(doubtful_model(), SUMS, parse_method("single"), 1)
    replayed = with_escalation(packed, alone, 0.25)
    real = run_method(doubtful_model(), SUMS, method, 8, escalate=0.25)
    assert [i.prediction for i in replayed.items] == [i.prediction for i in real.items]
    assert [i.escalated for i in replayed.items] == [i.escalated for i in real.items]
    assert replayed.escalations == real.escalations == 4
    assert replayed.calls == real.calls


def test_an_escalating_config_round_trips_and_builds_an_escalating_runner(tmp_path: Path) -> None:
    config = TunedConfig(mode="batch", batch_size=8, escalate=0.2)
    loaded = TunedConfig.read(config.write(tmp_path / "tuned.json"))
    assert loaded.escalate == 0.2
    runner = AutoDemoBatchRunnable.from_config(loaded, doubtful_model())
    assert runner.settings.escalate == 0.2


def test_a_batch_size_its_calls_never_reached_is_not_chosen() -> None:
    """``--batch-sizes 64`` on 16 items: its calls hold at most 8 (the last round's half),
    so N=64 was never measured and cannot be the choice; the report says why."""
    llm = model(batch_right=True, auto_demo_right=True)
    space = candidates(["auto_demo"], [64], [True], ["full"])
    report = tune(llm, SUMS, space, price=PRICE, demonstrations=SHOTS)
    row = next(r for r in report.rows if r.label == "auto_demo N=64")
    assert row.status == "not reached: its calls held at most 8 items"
    assert report.chosen_label == "single"
    assert report.notes and "under 4x the largest batch size (64)" in report.notes[0]
    assert "under 4x the largest batch size" in report.markdown()


def test_a_terse_config_never_asks_to_think_step_by_step() -> None:
    numeric = Dataset("sums", Task("numeric", "Solve it. Think step by step, then give the "
                                   "final answer as a single number."), SUMS.examples)  # fmt: skip
    llm = model(batch_right=True, auto_demo_right=True)
    report = tune(llm, numeric, candidates(["batch"], [8], [False]), price=PRICE,
                  demonstrations=SHOTS)  # fmt: skip
    for row in report.rows:
        assert "step by step" not in (row.config.instructions or "")
    prompts = [str(m[0].content) for m in llm.calls]
    assert prompts and all("step by step" not in p for p in prompts)


def test_explicit_flags_win_over_the_config_and_say_so(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?"}) + "\n" for i in range(1, 7))
    )
    config = TunedConfig("batch", 2, None, True, "Add the numbers.").write(tmp_path / "t.json")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app,
        ["run", str(source), "-o", str(out), "--model", "fake:answer=sum", "--config",
         str(config), "-n", "3", "-i", "Sum them."],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "calls: 2 " in result.output  # -n 3 over the file's 2
    text = " ".join(result.output.split())
    assert "--batch-size 3 overrides" in text and "--instructions 'Sum them.' overrides" in text
    setup = json.loads((tmp_path / "out.jsonl.meta.json").read_text())["setup"]
    assert (setup["batch_size"], setup["instructions"], setup["mode"]) == (3, "Sum them.", "batch")


def test_merged_slices_keep_each_call_apart() -> None:
    """Each slice numbers its calls from 0: merged, two slices' call 0 must stay two calls,
    or a replay over the merged result escalates per the wrong groups."""
    from langchain_autodemo.evaluation.harness import run_method
    from langchain_autodemo.evaluation.methods import parse_method
    from langchain_autodemo.tuning import merge_results, with_escalation

    method = parse_method("auto_demo")
    first = SUMS.__class__(SUMS.name, SUMS.task, SUMS.examples[:8])
    second = SUMS.__class__(SUMS.name, SUMS.task, SUMS.examples[8:])
    packed = [run_method(doubtful_model(), d, method, 8, confidence=True) for d in (first, second)]
    alone = [run_method(doubtful_model(), d, parse_method("single"), 1) for d in (first, second)]
    merged = merge_results(packed[0], packed[1])
    assert len({r.call_id for r in merged.items}) == 2
    one_by_one = merge_results(
        *(with_escalation(p, s, 0.25) for p, s in zip(packed, alone, strict=True))
    )
    at_once = with_escalation(merged, merge_results(alone[0], alone[1]), 0.25)
    assert [r.escalated for r in at_once.items] == [r.escalated for r in one_by_one.items]


def slot_model():
    """Packed: wrong (answer + 1) on the second question of every call, with no
    log-probabilities; alone: always right."""

    def script(messages, n):
        questions = asked_questions(messages)
        if not questions:
            return f"The answer is {arithmetic_answer(single_question(messages))}."
        return "\n\n".join(
            f"Q[{slot}]: {q}\nA[{slot}]: The answer is {int(arithmetic_answer(q)) + (slot == 2)}."
            for slot, q in enumerate(questions, 1)
        )

    return ScriptedChatModel(script=script)


def test_without_log_probabilities_tune_measures_the_slots_and_the_config_carries_them(
    tmp_path: Path,
) -> None:
    """The fallback order is the tuning sample's slot accuracy: the replay escalates the
    weak slot (not the latest), the chosen config carries the measurement, and a runner
    built from it escalates the same slot on new inputs."""
    space = candidates(["auto_demo"], [4], [True], ["full"], escalate=[0, 0.25])
    report = tune(slot_model(), SUMS, space, price=PRICE, demonstrations=SHOTS)
    rows = {row.label: row for row in report.rows}
    assert rows["auto_demo N=4"].result is not None
    assert rows["auto_demo N=4"].result.accuracy == 0.75
    assert rows["auto_demo N=4 esc=0.25"].result is not None
    assert rows["auto_demo N=4 esc=0.25"].result.accuracy == 1.0
    assert report.chosen_label == "auto_demo N=4 esc=0.25"
    assert report.chosen.slot_accuracy == (1.0, 0.0, 1.0, 1.0)
    loaded = TunedConfig.read(report.chosen.write(tmp_path / "tuned.json"))
    assert loaded.slot_accuracy == (1.0, 0.0, 1.0, 1.0)
    runner = AutoDemoBatchRunnable.from_config(loaded, slot_model(), include_details=True)
    questions = [f"What is {i} + {i + 5}?" for i in range(40, 48)]
    results = runner.batch(questions)
    assert [r.answer for r in results] == [arithmetic_answer(q) for q in questions]
    assert {r.index for r in results if r.escalated} == {1, 5}


def test_a_single_choice_carries_no_slot_measurement() -> None:
    llm = model(batch_right=False, auto_demo_right=False)
    report = tune(llm, SUMS, candidates(["batch"], [4], [True]), price=PRICE,
                  demonstrations=SHOTS)  # fmt: skip
    assert report.chosen_label == "single" and report.chosen.slot_accuracy == ()
