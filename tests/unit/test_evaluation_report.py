"""The harness on a scripted fake model, and the JSON / Markdown / PNG report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_autodemo.evaluation.datasets import Dataset, Example, Task
from langchain_autodemo.evaluation.harness import evaluate
from langchain_autodemo.evaluation.methods import parse_methods
from langchain_autodemo.evaluation.report import markdown_table, write_report
from langchain_autodemo.testing import ScriptedAutoDemoModel


def _sums(n: int, wrong_every: int = 0) -> Dataset:
    examples = []
    for i in range(1, n + 1):
        gold = 3 * i + (1 if wrong_every and i % wrong_every == 0 else 0)
        examples.append(Example(f"s{i}", f"What is {i} + {2 * i}?", str(gold)))
    return Dataset("sums", Task("numeric", "Add the numbers."), examples)


def test_evaluate_scores_every_method_and_batch_size() -> None:
    data = _sums(10, wrong_every=5)  # the fake is right except on items 5 and 10
    llm = ScriptedAutoDemoModel(answer="sum")
    results = evaluate(llm, data, parse_methods("single,batch,auto_demo"), [4, 8])
    assert [(r.method, r.batch_size) for r in results] == [
        ("single", 1),
        ("batch", 4),
        ("batch", 8),
        ("auto_demo", 4),
        ("auto_demo", 8),
    ]
    for r in results:
        assert r.n == 10 and r.correct == 8 and r.parse_failures == 0 and r.errors == 0
        assert r.accuracy == 0.8
        assert r.input_tokens > 0 and r.output_tokens > 0
        assert [item.id for item in r.items] == [f"s{i}" for i in range(1, 11)]
    single, batch4, batch8 = results[0], results[1], results[2]
    assert single.calls == 10 and batch4.calls == 3 and batch8.calls == 2
    assert batch8.input_tokens_per_item < single.input_tokens_per_item


def test_unparsable_answers_count_as_parse_failures() -> None:
    data = _sums(4)
    llm = ScriptedAutoDemoModel(answer="const:no idea")
    (result,) = evaluate(llm, data, parse_methods("auto_demo"), [4])
    assert result.correct == 0
    assert result.parse_failures == 4 and result.parse_failure_rate == 1.0


def test_write_report(tmp_path: Path) -> None:
    data = _sums(6)
    results = evaluate(ScriptedAutoDemoModel(), data, parse_methods("single,auto_demo"), [2, 4])
    paths = write_report(results, tmp_path / "out", meta={"dataset": "sums", "model": "fake"})
    summary = json.loads(paths["json"].read_text())
    assert summary["meta"]["dataset"] == "sums"
    rows = summary["results"]
    assert [(r["method"], r["batch_size"]) for r in rows] == [
        ("single", 1),
        ("auto_demo", 2),
        ("auto_demo", 4),
    ]
    for key in (
        "accuracy",
        "parse_failure_rate",
        "calls",
        "input_tokens_per_item",
        "output_tokens_per_item",
        "wall_time_s",
        "items_per_s",
    ):
        assert key in rows[0]
    assert rows[0]["accuracy"] == 1.0
    predictions = paths["predictions"].read_text().splitlines()
    assert len(predictions) == 18
    table = paths["markdown"].read_text()
    assert "| auto_demo | 4 | 6/6 (100%)" in table
    for name in ("accuracy", "tokens_per_item"):
        png = paths[name]
        assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5000


def test_markdown_table_marks_single_without_batch_size() -> None:
    results = evaluate(ScriptedAutoDemoModel(), _sums(2), parse_methods("single"), [4])
    assert "| single | - | 2/2 (100%)" in markdown_table(results)


def test_similarity_and_demo_pool_methods_on_the_real_selector() -> None:
    data = _sums(8)
    data.demo_pool = lambda: [
        (f"What is {i} + {i}?", f"{i} plus {i}.\nThe answer is {2 * i}.") for i in range(20, 30)
    ]
    llm = ScriptedAutoDemoModel()
    methods = parse_methods("auto_demo,auto_demo+similarity,auto_demo+demo_pool,batch+similarity")
    results = {r.method: r for r in evaluate(llm, data, methods, [4])}
    for result in results.values():
        assert result.correct == 8 and result.calls == 2, result.method
    plain, pooled = results["auto_demo"], results["auto_demo+demo_pool"]
    assert pooled.input_tokens_per_item > plain.input_tokens_per_item, "demos are in the prompt"


def test_auto_demo_restates_so_it_costs_more_output_than_batch() -> None:
    results = evaluate(ScriptedAutoDemoModel(), _sums(4), parse_methods("batch,auto_demo"), [4])
    batch, auto_demo = results
    assert auto_demo.output_tokens > batch.output_tokens


def test_read_report_gives_back_what_write_report_wrote(tmp_path: Path) -> None:
    from langchain_autodemo.evaluation.report import read_report

    data = _sums(6, wrong_every=4)
    results = evaluate(ScriptedAutoDemoModel(), data, parse_methods("single,auto_demo"), [2, 4])
    write_report(results, tmp_path, meta={"dataset": "sums"}, plots=False)
    meta, again = read_report(tmp_path)
    assert meta == {"dataset": "sums"}
    assert again == results  # every stored field and every per-item record


def test_evaluate_does_not_rerun_what_done_holds() -> None:
    data = _sums(6)
    first = evaluate(ScriptedAutoDemoModel(), data, parse_methods("single,auto_demo"), [2])
    llm = ScriptedAutoDemoModel()
    started = []
    results = evaluate(
        llm, data, parse_methods("single,auto_demo"), [2, 3], done=first,
        on_start=lambda method, size, n: started.append((method.name, size)),
    )  # fmt: skip
    assert started == [("auto_demo", 3)]
    assert len(llm.calls) == 2  # 6 items at N=3; single and auto_demo N=2 were not asked
    assert results[0] is first[0] and results[1] is first[1]
    assert [(r.method, r.batch_size) for r in results] == [
        ("single", 1), ("auto_demo", 2), ("auto_demo", 3),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "predictions.jsonl").unlink(), "holds no earlier report"),
        (lambda d: (d / "results.json").write_text("{"), "is not an autodemo eval report"),
        (lambda d: (d / "predictions.jsonl").write_text("{}\n"), "line 1 is not a prediction"),
        (
            lambda d: (d / "predictions.jsonl").write_text(
                "\n".join((d / "predictions.jsonl").read_text().splitlines()[:-1]) + "\n"
            ),
            "holds 1 records for auto_demo N=2, results.json says 2",
        ),
    ],
)
def test_read_report_names_what_is_wrong(tmp_path: Path, damage, message: str) -> None:
    from langchain_autodemo.errors import ConfigurationError
    from langchain_autodemo.evaluation.report import read_report

    results = evaluate(ScriptedAutoDemoModel(), _sums(2), parse_methods("auto_demo"), [2])
    write_report(results, tmp_path, meta={}, plots=False)
    damage(tmp_path)
    with pytest.raises(ConfigurationError, match=message):
        read_report(tmp_path)
