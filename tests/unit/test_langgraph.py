"""The README's LangGraph example (cookbook/langgraph_app.py) runs, here on a scripted model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from langchain_core.tracers.context import collect_runs

from tests.fakes import ScriptedChatModel, arithmetic_answer, asked_questions, well_formed

EXAMPLE = Path(__file__).parents[2] / "cookbook" / "langgraph_app.py"
QUESTIONS = [f"What is {i} + {i}?" for i in range(1, 6)]


def load_example():
    spec = importlib.util.spec_from_file_location("langgraph_app", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def skips_the_last(messages, n):
    return well_formed(
        [q for q in asked_questions(messages) if q != QUESTIONS[-1]], arithmetic_answer
    )


def test_the_graph_answers_every_question_in_order_with_few_calls() -> None:
    model = ScriptedChatModel(script=skips_the_last)
    app = load_example().build_graph(model, batch_size=4)
    state = app.invoke({"questions": QUESTIONS})
    assert state["answers"] == ["2", "4", "6", "8", ""]
    assert set(state["errors"]) == {4}  # the one never answered: an explicit error
    assert len(model.calls) <= 2 + 3  # two packed calls, then re-asks of the missing one


async def test_item_runs_nest_under_the_graph_node_under_ainvoke() -> None:
    model = ScriptedChatModel(script=skips_the_last)
    app = load_example().build_graph(model, batch_size=8)
    with collect_runs() as runs:
        state = await app.ainvoke({"questions": QUESTIONS[:4]})
    assert state["answers"] == ["2", "4", "6", "8"] and state["errors"] == {}
    (node,) = [run for run in walk(runs.traced_runs) if run.name == "answer"]
    items = [run for run in node.child_runs if run.run_type == "chain"]
    assert sorted(run.inputs["input"] for run in items) == sorted(QUESTIONS[:4])
    assert len(model.calls) == 1


def walk(runs):
    for run in runs:
        yield run
        yield from walk(run.child_runs)
