"""The Auto-Demo runner inside a LangGraph graph (the maintained path instead of LangServe).

A graph whose ``answer`` node packs every question of the state into few model calls and
writes one answer or one explicit error per question, in order. Deploy the compiled graph
as any LangGraph graph (``langgraph dev`` / LangGraph Platform, or your own FastAPI app).

Run it: ``AUTODEMO_MODEL=fake:answer=sum python cookbook/langgraph_app.py`` (leave
``AUTODEMO_MODEL`` out for the local Qwen2.5-Coder-1.5B; ``pip install -e ".[langgraph]"``).
"""

from __future__ import annotations

import os
from typing import Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.graph import END, START, StateGraph

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoItemError


class State(TypedDict, total=False):
    questions: list[str]
    answers: list[str]
    errors: dict[int, str]  # question index -> why it got no answer


def build_graph(llm: BaseChatModel, *, batch_size: int = 8) -> Any:
    runner = AutoDemoBatchRunnable(
        llm, instructions="Solve the math word problem.", batch_size=batch_size
    )

    def written(results: list[Any]) -> State:
        return {
            "answers": [r if not isinstance(r, AutoDemoItemError) else "" for r in results],
            "errors": {i: r.reason for i, r in enumerate(results) if isinstance(r, Exception)},
        }

    # Passing the node's config on makes each question's run a child of this node's run,
    # so the graph's traces and callbacks see every packed model call.
    def answer(state: State, config: RunnableConfig) -> State:
        return written(runner.batch(state["questions"], config, return_exceptions=True))

    async def aanswer(state: State, config: RunnableConfig) -> State:
        return written(await runner.abatch(state["questions"], config, return_exceptions=True))

    graph = StateGraph(State)
    graph.add_node("answer", RunnableLambda(answer, afunc=aanswer))  # invoke and ainvoke
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph.compile()


if __name__ == "__main__":
    import asyncio

    from langchain_autodemo.models import open_model

    with open_model(os.environ.get("AUTODEMO_MODEL")) as opened:
        app = build_graph(opened.llm)
        questions = ["Tom has 3 apples and buys 5 more. How many?", "What is 6 plus 7?"]
        print(asyncio.run(app.ainvoke({"questions": questions})))
