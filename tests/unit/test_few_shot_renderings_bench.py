"""The few-shot renderings benchmark measures what it says: ``turns`` sends the user's
exemplars as plain chat turns before the packed questions, ``demonstrations`` as the
call's solved demonstrations (the package's behaviour), ``single`` as turns."""

from __future__ import annotations

from benchmarks.few_shot_renderings import measure
from langchain_autodemo.testing import ScriptedAutoDemoModel


def test_each_rendering_sends_the_messages_it_names() -> None:
    rows = {
        (method, rendering): measure(
            ScriptedAutoDemoModel(), "rte", 2, False, method, rendering, items=4
        )
        for method, rendering in [("single", "single"), ("auto_demo", "demonstrations"),
                                  ("auto_demo", "turns"), ("batch", "turns")]
    }  # fmt: skip
    assert rows["single", "single"]["first_call_roles"] == ["system", "human", "ai", "human", "ai",
                                                            "human"]  # fmt: skip
    assert rows["auto_demo", "turns"]["first_call_roles"] == ["system", "human", "ai", "human",
                                                              "ai", "human"]  # fmt: skip
    assert rows["batch", "turns"]["first_call_roles"][-1] == "human"
    # both exemplars in one solved Q[i]/A[i] block, then the packed questions
    assert rows["auto_demo", "demonstrations"]["first_call_roles"] == ["system", "human", "ai",
                                                                       "human"]  # fmt: skip
    for row in rows.values():
        assert row["n"] == 4 and len(row["items"]) == 4 and row["errors"] == 0
        assert row["calls"] == (4 if row["method"] == "single" else 1)
