"""``from langchain_autodemo import tune``: tuning the chain a user ships (their prompt,
their examples, their scorer, their output parser), then deploying it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, FewShotChatMessagePromptTemplate

from langchain_autodemo import AutoDemoBatchRunnable, ConfigurationError, TunedConfig, tune
from langchain_autodemo.evaluation.datasets import examples_dataset
from langchain_autodemo.testing import ScriptedChatModel
from tests.fakes import asked_questions

SYSTEM = "You label movie reviews as positive or negative. House style: lower case. " + (
    "A long style guide every call shares, which packing amortises. " * 150
)
FEW_SHOT = FewShotChatMessagePromptTemplate(
    example_prompt=ChatPromptTemplate.from_messages([("human", "{review}"), ("ai", "{label}")]),
    examples=[{"review": "A joy.", "label": "positive"}, {"review": "Dull.", "label": "negative"}],
)
PROMPT = ChatPromptTemplate.from_messages([("system", SYSTEM), FEW_SHOT, ("human", "{review}")])
GOOD = ["loved", "great", "superb", "fine", "charming", "fun", "moving", "sharp"]
BAD = ["boring", "awful", "flat", "tedious", "clumsy", "weak", "dreary", "bland"]
EXAMPLES = [({"review": f"It was {w} {i}."}, "positive") for i, w in enumerate(GOOD)] + [
    ({"review": f"It was {w} {i}."}, "negative") for i, w in enumerate(BAD)
]


def labeller(seen: list[list[BaseMessage]]):
    def label(text: str) -> str:
        return "positive" if any(w in text for w in GOOD) else "negative"

    def script(messages: list[BaseMessage], _: int) -> Any:
        seen.append(messages)
        questions = asked_questions(messages)
        if not questions:
            return label(str(messages[-1].content))
        return "\n".join(f"Q[{i}]: {q}\nA[{i}]: {label(q)}" for i, q in enumerate(questions, 1))

    return script


def test_tune_measures_the_users_prompt_and_deploys_it(tmp_path: Path) -> None:
    seen: list[list[BaseMessage]] = []
    llm = ScriptedChatModel(script=labeller(seen))
    report = tune(llm, EXAMPLES, prompt=PROMPT, scorer="label", methods=["auto_demo"],
                  batch_sizes=[4], reasoning=[False], restate=["full"], escalate=[0])  # fmt: skip
    # every request carried the user's system message and their few-shot examples
    assert seen and all(
        isinstance(m[0], SystemMessage) and SYSTEM in str(m[0].content) for m in seen
    )
    assert all("A joy." in " ".join(str(x.content) for x in m) for m in seen)
    assert report.chosen_label == "auto_demo N=4 terse"
    assert report.single.accuracy == 1.0
    assert "| auto_demo N=4 terse |" in str(report)
    saved = report.save(tmp_path / "tuned.json")
    assert TunedConfig.read(saved).batch_size == 4
    chain = PROMPT | report.runner(llm)
    assert chain.batch([{"review": "So charming."}, {"review": "So dreary."}]) == [
        "positive",
        "negative",
    ]


def test_examples_take_the_shapes_users_have() -> None:
    class LangSmithExample:
        inputs = {"review": "It was fine."}
        outputs = {"label": "positive"}

    data = examples_dataset(
        [
            ({"review": "x"}, "positive"),
            {"inputs": {"review": "y"}, "outputs": {"answer": "negative"}},
            LangSmithExample(),
        ],
        prompt=PROMPT,
        scorer="label",
    )
    assert [e.gold for e in data.examples] == ["positive", "negative", "positive"]
    assert [e.text for e in data.examples] == ["x", "y", "It was fine."]
    assert data.task.labels == ("negative", "positive")
    with pytest.raises(ConfigurationError, match="example 0"):
        examples_dataset([("only one part",)])
    with pytest.raises(ConfigurationError, match="scorer"):
        examples_dataset([("q", "a")], scorer="fuzzy")


def test_a_custom_scorer_gets_the_answer_and_the_expected_output() -> None:
    calls: list[tuple[Any, Any]] = []

    def scorer(answer: Any, expected: Any) -> float:
        calls.append((answer, expected))
        return 1.0 if answer == expected["label"] else 0.0

    seen: list[list[BaseMessage]] = []
    examples = [({"review": e[0]["review"]}, {"label": e[1], "note": "n"}) for e in EXAMPLES[:8]]
    report = tune(ScriptedChatModel(script=labeller(seen)), examples, prompt=PROMPT,
                  scorer=scorer, methods=["batch"], batch_sizes=[4], reasoning=[False],
                  escalate=[0])  # fmt: skip
    assert report.single.accuracy == 1.0
    assert calls and all(isinstance(e, dict) and e["note"] == "n" for _, e in calls)


def test_a_string_evaluator_scores_too() -> None:
    class Exact:
        def evaluate_strings(self, *, prediction: str, reference: str) -> dict[str, Any]:
            return {"score": int(prediction.strip() == reference)}

    seen: list[list[BaseMessage]] = []
    report = tune(ScriptedChatModel(script=labeller(seen)), EXAMPLES[:8], prompt=PROMPT,
                  scorer=Exact(), methods=["batch"], batch_sizes=[4], reasoning=[False],
                  escalate=[0])  # fmt: skip
    assert report.single.accuracy == 1.0


def test_without_a_prompt_the_inputs_go_as_they_are() -> None:
    seen: list[list[BaseMessage]] = []
    examples = [(f"Review: {w}.", "positive") for w in GOOD[:4]]
    report = tune(ScriptedChatModel(script=labeller(seen)), examples, scorer="exact",
                  methods=["batch"], batch_sizes=[4], reasoning=[False], escalate=[0])  # fmt: skip
    assert report.single.accuracy == 1.0
    assert any(isinstance(m, HumanMessage) and "Review: loved." in str(m.content)
               for ms in seen for m in ms)  # fmt: skip
    assert json.loads(json.dumps(report.as_dict()))["chosen"]
    assert isinstance(report.runner(ScriptedChatModel(script=labeller(seen))),
                      AutoDemoBatchRunnable)  # fmt: skip


def _saved_prompt(tmp_path: Path) -> Path:
    from langchain_autodemo.evaluation.datasets import load_prompt, save_prompt

    path = save_prompt(PROMPT, tmp_path / "prompt.json")
    # what it loads renders the same messages as the prompt itself
    values = {"review": "Fine."}
    assert load_prompt(path).invoke(values).to_messages() == PROMPT.invoke(values).to_messages()
    return path


def test_a_prompt_as_role_template_pairs(tmp_path: Path) -> None:
    from langchain_autodemo.evaluation.datasets import load_prompt

    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([["system", "Label it."], ["human", "{review}"]]))
    assert load_prompt(path).invoke({"review": "x"}).to_messages()[-1].content == "x"
    path.write_text('{"lc": 1, "type": "not_implemented", "id": ["x"], "repr": "?"}')
    with pytest.raises(ConfigurationError, match="save_prompt"):
        load_prompt(path)


def _records(tmp_path: Path) -> Path:
    path = tmp_path / "reviews.jsonl"
    rows = [{"review": inputs["review"], "label": label, "id": n}
            for n, (inputs, label) in enumerate(EXAMPLES)]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def labelling_model() -> ScriptedChatModel:
    """``--model import:tests.unit.test_tune_your_chain:labelling_model``; it checks that
    every request carries the user's system message."""

    def script(messages: list[BaseMessage], n: int) -> Any:
        system = str(messages[0].content)
        if not system.startswith("You label movie reviews"):
            return ValueError("the user's system message is missing")
        if "Answer each question accurately" in system:  # the CLI's default instructions
            return ValueError("the run added instructions the chain does not have")
        return labeller([])(messages, n)

    return ScriptedChatModel(script=script)


def test_the_cli_takes_the_users_prompt_in_tune_eval_and_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from langchain_autodemo.cli import app

    prompt, records = _saved_prompt(tmp_path), _records(tmp_path)
    model = f"import:{__name__}:labelling_model"
    cli = CliRunner()
    tuned = cli.invoke(app, ["tune", "--dataset", str(records), "--prompt", str(prompt),
                             "--answer-key", "label", "--model", model, "--methods", "batch",
                             "--batch-sizes", "4", "--reasoning", "off", "--escalate", "0",
                             "--out", str(tmp_path / "tune")])  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    config = json.loads((tmp_path / "tune" / "tuned.json").read_text())
    assert config["tuned_on"]["prompt_sha256"] and config["mode"] == "batch"
    assert "100% on 16" in tuned.output
    evaluated = cli.invoke(app, ["eval", "--dataset", str(records), "--prompt", str(prompt),
                                 "--answer-key", "label", "--model", model, "--methods",
                                 "single,batch", "--batch-sizes", "4", "--no-reasoning",
                                 "--no-plots", "--out", str(tmp_path / "eval")])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())["results"]
    assert all(r["correct"] == 16 for r in rows)
    out = tmp_path / "labels.jsonl"
    ran = cli.invoke(app, ["run", str(records), "-o", str(out), "--prompt", str(prompt),
                           "--model", model, "--config", str(tmp_path / "tune" / "tuned.json"),
                           "--no-progress"])  # fmt: skip
    assert ran.exit_code == 0, ran.output
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["answer"] for a in answers] == [label for _, label in EXAMPLES]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no review field"}\n{"review": 5}\n')
    refused = cli.invoke(app, ["run", str(bad), "-o", str(tmp_path / "x.jsonl"), "--prompt",
                               str(prompt), "--model", model])  # fmt: skip
    assert refused.exit_code == 2
    assert "lacks the prompt's field(s) review" in refused.output and ":2:" in refused.output


def test_run_config_uses_the_prompt_it_was_tuned_with(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from langchain_autodemo.cli import app

    prompt, records = _saved_prompt(tmp_path), _records(tmp_path)
    import hashlib

    digest = hashlib.sha256(prompt.read_bytes()).hexdigest()[:16]
    config = TunedConfig("batch", 4, reasoning=False,
                         tuned_on={"prompt": str(prompt), "prompt_sha256": digest})  # fmt: skip
    config.write(tmp_path / "tuned.json")
    out = tmp_path / "labels.jsonl"
    model = f"import:{__name__}:labelling_model"
    ran = CliRunner().invoke(app, ["run", str(records), "-o", str(out), "--model", model,
                                   "--config", str(tmp_path / "tuned.json"), "--no-progress"])  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert "the prompt" in ran.output and "was tuned with" in ran.output
    assert [json.loads(x)["answer"] for x in out.read_text().splitlines()][:2] == [
        "positive",
        "positive",
    ]
    other = tmp_path / "other.json"
    other.write_text(json.dumps([["system", "You label movie reviews, briefly."],
                                 ["human", "{review}"]]))  # fmt: skip
    warned = CliRunner().invoke(app, ["run", str(records), "-o", str(tmp_path / "o2.jsonl"),
                                      "--model", model, "--config", str(tmp_path / "tuned.json"),
                                      "--prompt", str(other), "--no-progress"])  # fmt: skip
    assert warned.exit_code == 0, warned.output
    assert "tuned with another prompt" in " ".join(warned.output.split())
