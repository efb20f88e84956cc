"""Diagnostics of ``autodemo eval`` on a scripted run whose every number is known by hand,
and the paired comparison's statistics against known values."""

from __future__ import annotations

import doctest
import importlib
import json
import math
import re
from pathlib import Path

import pytest
from langchain_core.messages import BaseMessage, HumanMessage

from langchain_autodemo.evaluation.datasets import Dataset, Example, Task
from langchain_autodemo.evaluation.diagnostics import (
    mcnemar_exact,
    paired_bootstrap_interval,
    reason_kind,
)
from langchain_autodemo.evaluation.harness import MethodResult, evaluate
from langchain_autodemo.evaluation.methods import parse_methods
from langchain_autodemo.evaluation.report import write_report
from langchain_autodemo.testing import ScriptedChatModel

USAGE = {"input_tokens": 100, "output_tokens": 40, "total_tokens": 140}
MISSING = "missing from the completion"


def _sums(n: int) -> Dataset:
    examples = [Example(f"s{i}", f"What is {i} + {2 * i}?", str(3 * i)) for i in range(1, n + 1)]
    return Dataset("sums", Task("numeric", "Add the numbers."), examples)


def _number(question: str) -> int:
    return int(re.match(r"What is (\d+) \+", question).group(1))  # type: ignore[union-attr]


class HandCheckedModel(ScriptedChatModel):
    """Test double with a known behaviour, 100 input and 40 output tokens per call.

    Packed prompts: item 4 is left out the first time it is asked, items 6 and 8 are
    answered wrong, ``never`` items are never answered. One-question prompts (``single``):
    every item right except item 7.
    """

    never: frozenset[int] = frozenset()
    chunk_size: int = 0

    def _script(self, messages: list[BaseMessage], call_number: int) -> tuple[str, dict]:
        user = str([m for m in messages if isinstance(m, HumanMessage)][-1].content)
        asked = re.findall(r"^Q\[(\d+)\]: (.*)$", user, re.MULTILINE)
        if not asked:
            i = _number(user)
            return f"Adding.\nThe answer is {3 * i + (i == 7)}.", {"usage": USAGE}
        blocks = []
        for slot, question in asked:
            i = _number(question)
            if i in self.never or (i == 4 and len(asked) > 1):
                continue
            value = 3 * i + (i in (6, 8))
            blocks.append(f"Q[{slot}]: {question}\nA[{slot}]: Adding.\nThe answer is {value}.")
        return "\n\n".join(blocks), {"usage": USAGE}


def _run(tmp_path: Path | None = None) -> tuple[MethodResult, MethodResult]:
    single, auto_demo = evaluate(
        HandCheckedModel(), _sums(8), parse_methods("single,auto_demo"), [4]
    )
    return single, auto_demo


def test_diagnostics_of_a_hand_checked_run() -> None:
    single, auto_demo = _run()
    # Calls: items 1-4 (4 left out), items 5-8, then item 4 alone: 3 calls, 1 re-ask.
    assert (auto_demo.correct, auto_demo.calls, auto_demo.reasks) == (6, 3, 1)
    assert (auto_demo.input_tokens, auto_demo.output_tokens) == (300, 120)
    assert (auto_demo.reask_input_tokens, auto_demo.reask_output_tokens) == (100, 40)
    d = auto_demo.summary()["diagnostics"]
    position = d["position"]
    assert [(p["position"], p["correct"], p["n"]) for p in position["by_position"]] == [
        (0, 3, 3),  # items 1, 5 and the re-asked 4
        (1, 1, 2),  # 2 right, 6 wrong
        (2, 2, 2),  # 3, 7
        (3, 0, 1),  # 8 wrong
    ]
    # Quarters count calls of at least 4 questions: the 1-item re-ask is left out.
    assert [(q["correct"], q["n"]) for q in position["by_quarter"]] == [
        (2, 2),
        (1, 2),
        (2, 2),
        (0, 1),
    ]
    assert position["first_quarter"] == {"n": 2, "correct": 2, "accuracy": 1.0}
    assert position["last_quarter"] == {"n": 1, "correct": 0, "accuracy": 0.0}
    assert position["unplaced"] == 0
    assert d["reasks"] == {
        "items": 1, "share": 0.125, "correct": 1, "rejections": 1, "reasons": {MISSING: 1},
    }  # fmt: skip
    assert d["attempts"] == {"mean": 1.125, "histogram": {"1": 7, "2": 1}}
    tokens = d["tokens"]
    assert tokens["per_item"] == 52.5 and tokens["first_ask_per_item"] == 35.0
    assert tokens["reask_per_item"] == 17.5
    assert (tokens["reask_input_per_item"], tokens["reask_output_per_item"]) == (12.5, 5.0)
    assert math.isclose(tokens["reask_share"], 1 / 3)
    # single: one call per item, none re-asked, no quarters (1-question calls).
    s = single.summary()["diagnostics"]
    assert s["reasks"]["items"] == 0 and s["attempts"]["histogram"] == {"1": 8}
    assert (
        s["position"]["first_quarter"]["n"] == 0
        and s["position"]["first_quarter"]["accuracy"] is None
    )
    assert s["tokens"]["per_item"] == 140.0 and s["tokens"]["reask_per_item"] == 0.0


def test_per_item_records_carry_their_provenance() -> None:
    _, auto_demo = _run()
    items = {item.id: item for item in auto_demo.items}
    four, eight = items["s4"], items["s8"]
    assert (four.call_id, four.position, four.call_items, four.attempts) == (2, 0, 1, 2)
    assert four.reasons == (MISSING,) and four.restated_question == "What is 4 + 8?"
    assert (four.input_tokens, four.output_tokens) == (100.0, 40.0)
    assert four.raw_answer == "Adding.\nThe answer is 12."
    assert (eight.call_id, eight.position, eight.call_items, eight.attempts) == (1, 3, 4, 1)
    assert eight.reasons == () and not eight.correct
    assert (eight.input_tokens, eight.output_tokens) == (25.0, 10.0)  # a quarter of its call


def test_an_item_that_is_never_answered_keeps_its_attempts_and_reasons() -> None:
    (result,) = evaluate(HandCheckedModel(never=frozenset({2})), _sums(2),
                         parse_methods("auto_demo"), [2])  # fmt: skip
    failed = {item.id: item for item in result.items}["s2"]
    assert failed.error and failed.position is None and failed.call_id is None
    assert failed.attempts == 3 and failed.reasons == (MISSING,) * 3
    d = result.summary()["diagnostics"]
    assert d["position"]["unplaced"] == 1
    assert d["reasks"]["items"] == 1 and d["reasks"]["rejections"] == 3
    assert d["attempts"]["histogram"] == {"1": 1, "3": 1}


def test_report_has_the_diagnostics_paired_comparison_and_plot(tmp_path: Path) -> None:
    results = list(_run())
    paths = write_report(results, tmp_path, meta={"dataset": "sums"})
    rows = json.loads(paths["json"].read_text())["results"]
    assert "vs_single" not in rows[0]
    vs = rows[1]["vs_single"]
    # auto_demo right, single wrong: item 7; the reverse: items 6 and 8.
    assert {k: vs[k] for k in ("n", "both_right", "both_wrong", "only_this", "only_baseline")} == {
        "n": 8, "both_right": 5, "both_wrong": 0, "only_this": 1, "only_baseline": 2,
    }  # fmt: skip
    assert vs["accuracy_difference"] == -0.125 and vs["mcnemar_p"] == 1.0
    low, high = vs["bootstrap_95"]
    assert -1.0 <= low <= -0.125 <= high <= 1.0
    assert rows[1]["diagnostics"]["reasks"]["reasons"] == {MISSING: 1}
    records = [json.loads(line) for line in paths["predictions"].read_text().splitlines()]
    four = next(r for r in records if r["method"] == "auto_demo" and r["id"] == "s4")
    assert {k: four[k] for k in ("call_id", "position", "call_items", "attempts", "reasons")} == {
        "call_id": 2, "position": 0, "call_items": 1, "attempts": 2, "reasons": [MISSING],
    }  # fmt: skip
    assert four["restated_question"] == "What is 4 + 8?" and four["input_tokens"] == 100.0
    markdown = paths["markdown"].read_text()
    assert "## Diagnostics" in markdown
    # single on the same items: right on s1 and s5 (first quarter) and on s8 (last)
    assert (vs["baseline_first_quarter"]["correct"], vs["baseline_first_quarter"]["n"]) == (2, 2)
    assert (vs["baseline_last_quarter"]["correct"], vs["baseline_last_quarter"]["n"]) == (1, 1)
    assert (
        "| auto_demo | 4 | 2/2 (100%); single 2/2 | 0/1 (0%); single 1/1 | 1/8 (12%) |" in markdown
    )
    assert "| +1 / -2 | 1 | -12.5 pts [" in markdown
    assert f"| auto_demo | 4 | {MISSING} | 1 |" in markdown
    png = paths["diagnostics"]
    assert png.name == "diagnostics.png"
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5000


@pytest.mark.parametrize(
    ("only_first", "only_second", "p"),
    [
        (0, 0, 1.0),
        (0, 5, 0.0625),  # 2 / 2^5
        (1, 9, 0.021484375),  # 2 * (1 + 10) / 2^10
        (2, 8, 0.109375),  # 2 * (1 + 10 + 45) / 2^10
        (13, 8, 0.3833103179931641),  # scipy.stats.binomtest(8, 21).pvalue
        (8, 13, 0.3833103179931641),
        (5, 5, 1.0),
        (0, 20, 2 / 2**20),
    ],
)
def test_mcnemar_exact_against_known_values(only_first: int, only_second: int, p: float) -> None:
    assert math.isclose(mcnemar_exact(only_first, only_second), p, rel_tol=1e-12)


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_paired_bootstrap_interval() -> None:
    assert paired_bootstrap_interval([True] * 10, [True] * 10) == (0.0, 0.0)
    assert paired_bootstrap_interval([True] * 10, [False] * 10) == (1.0, 1.0)
    first = [True] * 30 + [False] * 34
    second = [True] * 20 + [False] * 44
    low, high = paired_bootstrap_interval(first, second)
    assert low < 10 / 64 < high and low > 0.0  # ten more right, never fewer
    assert paired_bootstrap_interval(first, second) == (low, high)  # seeded
    with pytest.raises(ValueError):
        paired_bootstrap_interval([True], [True, False])


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("missing from the completion", "missing from the completion"),
        ("index 12 is outside the batch", "index N is outside the batch"),
        ("answer marker does not match question 3", "answer marker does not match question N"),
        ("model call failed: RateLimitError: slow down", "model call failed: RateLimitError"),
        ("cut off: the completion was truncated", "cut off"),
    ],
)
def test_reason_kinds_count_reasons_without_their_details(reason: str, kind: str) -> None:
    assert reason_kind(reason) == kind


@pytest.mark.parametrize(
    "name", ["langchain_autodemo.evaluation.diagnostics", "langchain_autodemo.evaluation.bootstrap"]
)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted and result.failed == 0


def test_agreement_with_single_is_counted_as_the_audit_counts_it() -> None:
    from langchain_autodemo.evaluation.diagnostics import agreement_with
    from langchain_autodemo.evaluation.harness import ItemRecord

    def result(method: str, predictions: list[str | None]) -> MethodResult:
        items = [
            ItemRecord(f"i{k}", "1", p, p, p == "1", p is not None)
            for k, p in enumerate(predictions)
        ]
        return MethodResult("d", method, 8, len(items), sum(i.correct for i in items), 0, 0,
                            1, 0, 0, 0, False, 0.0, items)  # fmt: skip

    single = result("single", ["1", "2", "3.0", "4", None])
    packed = result("batch", ["1", "5", "3", None, "9"])
    agreement = agreement_with(packed, single)
    # items both answered: 0, 1, 2 -> "1"=="1", "5"!="2", "3"=="3.0" (numeric tolerance)
    assert agreement["agreement_n"] == 3 and agreement["agreement"] == 2 / 3
    low, high = agreement["agreement_95"]
    assert 0.2 < low < 2 / 3 < high < 1.0
