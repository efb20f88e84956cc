"""The bootstrap pool: the model's own checked answers, stored in Chroma once, retrieved
into the prompts of the ``+bootstrap`` methods. Scripted models, embedded Chroma."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from langchain_autodemo.evaluation.bootstrap import (
    BootstrapSettings,
    bootstrap_pool,
    demonstration_answer,
    reads_back,
)
from langchain_autodemo.evaluation.datasets import Dataset, DatasetError, Example, Task
from langchain_autodemo.evaluation.harness import evaluate
from langchain_autodemo.evaluation.methods import Method, MethodError, parse_method
from langchain_autodemo.testing import ScriptedAutoDemoModel
from tests.fakes import StoppedServerModel

TOPICS = ("apples", "trains", "coins")


class TopicEmbeddings(Embeddings):
    """Test double: one axis per topic word, so the nearest question is known in advance."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        vector = np.full(len(TOPICS), 0.01)
        for axis, topic in enumerate(TOPICS):
            vector[axis] += text.count(topic)
        return vector.tolist()


class CountingModel(ScriptedAutoDemoModel):
    """Test double: the scripted sum model that also says, in each answer, which call
    wrote it (so a demonstration's origin is visible in later prompts)."""

    def _completion(self, messages: list[BaseMessage]) -> str:
        return super()._completion(messages).replace("Working it out.", "Adding up (own words).")


def _dataset(train: list[tuple[str, str]], tests: int = 4) -> Dataset:
    examples = [
        Example(f"t{i}", f"How many {TOPICS[i % 3]}: {i} + {i}?", str(2 * i))
        for i in range(1, tests + 1)
    ]
    return Dataset("topics", Task("numeric", "Add the numbers."), examples, lambda: list(train))


# Gold answers as a dataset's pool gives them; the sum model gets 2 and 5 wrong.
TRAIN = [
    ("apples: 1 + 2 apples?", "The answer is 3."),
    ("apples: 2 + 2 apples?", "The answer is 5."),  # wrong gold: the checker rejects 4
    ("trains: 3 + 4 trains?", "The answer is 7."),
    ("coins: 5 + 5 coins?", "The answer is 10."),
    ("coins: 1 + 1 coins?", "The answer is 3."),  # wrong gold
    ("trains: 6 + 1 trains?", "The answer is 7."),
]


def _settings(tmp_path: Path, **kwargs: object) -> BootstrapSettings:
    return BootstrapSettings(store=tmp_path / "store", **kwargs)  # type: ignore[arg-type]


def test_the_pool_keeps_only_checked_answers_in_the_models_own_words(tmp_path: Path) -> None:
    llm = CountingModel()
    pool = bootstrap_pool(
        llm, _dataset(TRAIN), _settings(tmp_path, batch_size=3), embeddings=TopicEmbeddings()
    )
    assert not pool.reused
    assert (pool.attempted, pool.kept) == (6, 4)
    assert pool.calls == len(llm.calls) == 2  # 6 items packed 3 per call
    assert pool.input_tokens > 0 and pool.output_tokens > 0
    stored = pool.collection.get(include=["documents", "metadatas", "embeddings"])
    answers = dict(
        zip(stored["documents"], (m["answer"] for m in stored["metadatas"]), strict=True)
    )
    assert answers == {
        "apples: 1 + 2 apples?": "Adding up (own words).\nThe answer is 3.",
        "trains: 3 + 4 trains?": "Adding up (own words).\nThe answer is 7.",
        "coins: 5 + 5 coins?": "Adding up (own words).\nThe answer is 10.",
        "trains: 6 + 1 trains?": "Adding up (own words).\nThe answer is 7.",
    }
    vectors = np.asarray(stored["embeddings"])
    assert vectors.shape == (4, len(TOPICS))
    assert pool.collection.metadata["complete"] is True
    assert pool.collection.metadata["kept"] == 4


def test_the_pool_is_built_once_and_reused_by_a_later_run(tmp_path: Path) -> None:
    data, embeddings = _dataset(TRAIN), TopicEmbeddings()
    first = bootstrap_pool(CountingModel(), data, _settings(tmp_path), embeddings=embeddings)
    again_model = CountingModel()
    again = bootstrap_pool(again_model, data, _settings(tmp_path), embeddings=embeddings)
    assert again.reused and again_model.calls == []
    assert (again.name, again.kept, again.attempted, again.calls) == (
        first.name, first.kept, first.attempted, first.calls,
    )  # fmt: skip
    assert again.collection.count() == first.kept
    # Another model, another sample size or another way of asking: another pool.
    for settings in (
        _settings(tmp_path, model="another model"),
        _settings(tmp_path, size=3),
        _settings(tmp_path, mode="single"),
    ):
        other_model = CountingModel()
        other = bootstrap_pool(other_model, data, settings, embeddings=embeddings)
        assert not other.reused and other.name != first.name and other_model.calls


def test_an_interrupted_build_is_redone_not_reused(tmp_path: Path) -> None:
    data, embeddings = _dataset(TRAIN), TopicEmbeddings()

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bootstrap_pool(
            CountingModel(), data, _settings(tmp_path), embeddings=embeddings, on_item=interrupt
        )
    llm = CountingModel()
    pool = bootstrap_pool(llm, data, _settings(tmp_path), embeddings=embeddings)
    assert not pool.reused and llm.calls and pool.kept == 4


def test_single_mode_asks_one_item_per_call(tmp_path: Path) -> None:
    llm = CountingModel()
    pool = bootstrap_pool(
        llm, _dataset(TRAIN), _settings(tmp_path, mode="single"), embeddings=TopicEmbeddings()
    )
    assert len(llm.calls) == 6 and pool.kept == 4


def test_a_training_question_that_is_also_a_test_question_is_left_out(tmp_path: Path) -> None:
    data = _dataset([("How many trains: 1 + 1?", "The answer is 2."), *TRAIN])
    pool = bootstrap_pool(CountingModel(), data, _settings(tmp_path), embeddings=TopicEmbeddings())
    assert pool.attempted == len(TRAIN)


def test_a_dataset_without_training_records_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="past --limit are the training sample"):
        bootstrap_pool(CountingModel(), _dataset([]), _settings(tmp_path))


def test_demonstration_answer_puts_the_final_line_in_the_package_format() -> None:
    assert demonstration_answer("2 + 2 = 4.\nThe answer is 4.", "4") == (
        "2 + 2 = 4.\nThe answer is 4."
    )
    assert demonstration_answer("2 + 2 = 4.\n**Final Answer:** \\boxed{4}", "4") == (
        "2 + 2 = 4.\nThe answer is 4."
    )
    assert demonstration_answer("It is four", "4") == "It is four\nThe answer is 4."


def _demonstrations(messages: list[BaseMessage]) -> str:
    """The demonstration exchange of a packed prompt (empty when there is none)."""
    return "\n".join(str(m.content) for m in messages if isinstance(m, AIMessage))


def _asked(messages: list[BaseMessage]) -> list[str]:
    last = [m for m in messages if isinstance(m, HumanMessage)][-1]
    return re.findall(r"^Q\[\d+\]: (.*)$", str(last.content), re.MULTILINE)


def _topic(question: str) -> str:
    return re.search(r"How many (\w+):", question).group(1)  # type: ignore[union-attr]


def test_bootstrap_methods_retrieve_the_nearest_own_answers_into_each_batch(
    tmp_path: Path,
) -> None:
    data = _dataset(TRAIN, tests=6)  # topics: trains, coins, apples, trains, coins, apples
    llm = CountingModel()
    methods = [parse_method("auto_demo+bootstrap"), parse_method("auto_demo+similarity+bootstrap")]
    results = evaluate(
        llm, data, methods, [2], embeddings=TopicEmbeddings(), demos_per_batch=1,
        bootstrap=_settings(tmp_path, batch_size=3),
    )  # fmt: skip
    assert [r.method for r in results] == ["auto_demo+bootstrap", "auto_demo+similarity+bootstrap"]
    assert all(r.correct == 6 and r.calls == 3 for r in results)
    assert results[0].bootstrap == results[1].bootstrap
    assert results[0].bootstrap is not None and results[0].bootstrap["kept"] == 4
    calls = llm.calls
    assert len(calls) == 2 + 3 + 3
    build, in_order, grouped = calls[:2], calls[2:5], calls[5:]
    assert all(_demonstrations(c) == "" for c in build)  # the pool build shows no demos
    # +bootstrap alone keeps input order; +similarity puts one topic in each call.
    texts = [e.text for e in data.examples]
    assert [_asked(c) for c in in_order] == [texts[0:2], texts[2:4], texts[4:6]]
    assert sorted(len({_topic(q) for q in _asked(c)}) for c in grouped) == [1, 1, 1]
    for call in in_order + grouped:
        shown = _demonstrations(call)
        assert shown.startswith("Q[1]: ") and shown.count("A[") == 1, shown
        assert "A[1]: Adding up (own words).\nThe answer is" in shown
        assert "2 + 2 apples" not in shown and "1 + 1 coins" not in shown  # rejected answers
    for call in grouped:  # the nearest checked answer: one of the call's own topic
        (topic,) = {_topic(q) for q in _asked(call)}
        assert topic in _demonstrations(call)


def test_a_second_evaluation_reuses_the_pool_without_asking_the_model(tmp_path: Path) -> None:
    data, method = _dataset(TRAIN), [parse_method("auto_demo+bootstrap")]
    kwargs = {"embeddings": TopicEmbeddings(), "bootstrap": _settings(tmp_path, batch_size=3)}
    evaluate(CountingModel(), data, method, [4], **kwargs)  # type: ignore[arg-type]
    llm = CountingModel()
    (result,) = evaluate(llm, data, method, [4], **kwargs)  # type: ignore[arg-type]
    assert len(llm.calls) == result.calls == 1  # only the evaluation call itself
    assert result.bootstrap is not None and result.bootstrap["reused"] is True


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("auto_demo+bootstrap", Method("auto_demo", None, True)),
        ("auto_demo+similarity+bootstrap", Method("auto_demo", "similarity", True)),
        ("AUTO_DEMO+bootstrap+similarity", Method("auto_demo", "similarity", True)),
        ("batch+bootstrap", Method("batch", None, True)),
    ],
)
def test_bootstrap_method_names(name: str, method: Method) -> None:
    parsed = parse_method(name)
    assert parsed == method and parsed.bootstrap
    assert parse_method(parsed.name) == parsed


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("single+bootstrap", "nothing to group"),
        ("auto_demo+demo_pool+bootstrap", "two demonstration pools"),
        ("auto_demo+similarity+neighbors", "one grouping"),
        ("auto_demo+bootstrap+bootstrap", "at most one"),
        ("auto_demo+bootstrapp", "unknown grouping"),
    ],
)
def test_bad_bootstrap_method_names_are_clear_errors(name: str, message: str) -> None:
    with pytest.raises(MethodError, match=message):
        parse_method(name)


def test_autodemo_eval_builds_the_pool_from_the_records_past_limit_then_reuses_it(
    tmp_path: Path,
) -> None:
    import json

    from typer.testing import CliRunner

    from langchain_autodemo.cli import app

    data = tmp_path / "sums.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i + (i == 7))}) + "\n"
            for i in range(1, 9)
        )
    )
    store, out = tmp_path / "store", tmp_path / "out"
    args = [
        "eval", "--dataset", str(data), "--limit", "4", "--model", "fake:answer=sum",
        "--methods", "single,auto_demo+bootstrap", "--batch-sizes", "2",
        "--bootstrap-store", str(store), "--demos-per-batch", "2", "--out", str(out),
        "--no-progress",
    ]  # fmt: skip
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "bootstrap pool: 3/4 answers kept (built in" in first.output  # record 7's gold is off
    summary = json.loads((out / "results.json").read_text())
    assert summary["meta"]["bootstrap"]["kept"] == 3 and summary["meta"]["demos_per_batch"] == 2
    row = summary["results"][1]
    assert row["method"] == "auto_demo+bootstrap" and row["accuracy"] == 1.0
    assert row["vs_single"]["n"] == 4 and row["bootstrap"]["reused"] is False
    assert "Bootstrap pool `autodemo-bootstrap-sums-" in (out / "results.md").read_text()
    assert (out / "diagnostics.png").exists()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "bootstrap pool: 3/4 answers kept (reused)" in again.output
    assert json.loads((out / "results.json").read_text())["meta"]["bootstrap"]["reused"] is True


def test_a_build_whose_model_calls_failed_is_an_error_and_never_reused(tmp_path: Path) -> None:
    from langchain_autodemo.errors import EvaluationError

    data, embeddings = _dataset(TRAIN), TopicEmbeddings()
    with pytest.raises(EvaluationError, match="6 of 6 training items lost to failed model calls"):
        bootstrap_pool(StoppedServerModel(), data, _settings(tmp_path), embeddings=embeddings)
    llm = CountingModel()
    pool = bootstrap_pool(llm, data, _settings(tmp_path), embeddings=embeddings)
    assert not pool.reused and llm.calls and pool.kept == 4


def test_a_method_whose_every_model_call_failed_stops_the_evaluation() -> None:
    from langchain_autodemo.errors import EvaluationError

    done = []
    with pytest.raises(EvaluationError, match="auto_demo: every item's model call failed"):
        evaluate(
            StoppedServerModel(), _dataset(TRAIN), [parse_method("auto_demo")], [2],
            on_result=done.append,
        )  # fmt: skip
    assert done == []


class NoFinalLineModel(CountingModel):
    """Test double: the sum model that, for the coins questions, ends its reasoning with a
    sentence instead of the final line (as Qwen2.5-Coder-1.5B did for 2 of its 27 kept
    GSM8K answers)."""

    def _completion(self, messages: list[BaseMessage]) -> str:
        text = super()._completion(messages)
        return text.replace(
            "Adding up (own words).\nThe answer is 10.", "Five and five.\nSo 10 coins."
        )


def test_a_kept_answer_without_a_final_line_gets_the_checked_value_not_its_whole_block(
    tmp_path: Path,
) -> None:
    pool = bootstrap_pool(
        NoFinalLineModel(), _dataset(TRAIN), _settings(tmp_path, batch_size=6),
        embeddings=TopicEmbeddings(),
    )  # fmt: skip
    stored = pool.collection.get(include=["documents", "metadatas"])
    answers = dict(
        zip(stored["documents"], (m["answer"] for m in stored["metadatas"]), strict=True)
    )
    # the block "Five and five.\nSo 10 coins." has no final line: its value is the number
    # the checker read (10), never the block itself
    assert answers["coins: 5 + 5 coins?"] == "Five and five.\nThe answer is 10."
    for answer in answers.values():
        finals = [line for line in answer.splitlines() if line.startswith("The answer is")]
        assert finals == [answer.splitlines()[-1]]
        assert re.fullmatch(r"The answer is \d+\.", finals[0]), answer


@pytest.mark.parametrize(
    ("demonstration", "ok"),
    [
        ("3 + 4 = 7.\nThe answer is 7.", True),
        ("The answer is 7.\nThen more words.", False),  # the parser would drop the tail
        ("Adding up.\nThe answer is Adding up.", False),  # a final line without the value
        ("Adding up.\nQ[2]: another question\nThe answer is 7.", False),  # a marker inside
        ("Adding up to 7.", False),  # no final line at all
        ("3 + 4 = 8.\nThe answer is 8.", False),  # the checker rejects it
    ],
)
def test_only_a_demonstration_the_parser_reads_back_as_the_accepted_answer_is_kept(
    demonstration: str, ok: bool
) -> None:
    assert reads_back(demonstration, _dataset(TRAIN), "The answer is 7.") is ok
