"""Eval metrics say re-ask (``reask_tokens_per_item``), and results written with the old
names (``retry_*``, e.g. the reports under docs/results) still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_autodemo.evaluation.harness import MethodResult, stored_fields
from langchain_autodemo.evaluation.report import read_report

OLD_REPORT = Path(__file__).resolve().parents[2] / "docs" / "results" / "gsm8k-n8"


def _result() -> MethodResult:
    return MethodResult(
        dataset="d", method="auto_demo", batch_size=4, n=4, correct=3, parse_failures=0,
        errors=0, calls=3, reasks=2, input_tokens=400, output_tokens=100,
        estimated_tokens=False, wall_time_s=1.0, reask_input_tokens=30, reask_output_tokens=10,
    )  # fmt: skip


def test_the_summary_writes_reask_names_only() -> None:
    summary = _result().summary()
    assert summary["reask_tokens_per_item"] == 10.0
    assert not [key for key in json.dumps(summary).split('"') if key.startswith("retry")]


def test_the_old_property_is_a_deprecated_alias() -> None:
    with pytest.warns(DeprecationWarning, match="reask_tokens_per_item"):
        assert _result().retry_tokens_per_item == 10.0


def test_old_keys_are_read_under_the_new_names() -> None:
    assert stored_fields({"retry_tokens_per_item": 1.5}) == {"reask_tokens_per_item": 1.5}


@pytest.mark.skipif(not (OLD_REPORT / "results.json").is_file(), reason="no stored report")
def test_a_report_written_with_the_old_names_still_loads() -> None:
    stored = json.loads((OLD_REPORT / "results.json").read_text(encoding="utf-8"))["results"]
    assert any("retry_tokens_per_item" in row for row in stored)  # written before the rename
    _, results = read_report(OLD_REPORT)
    by_key = {(r.method, r.batch_size): r for r in results}
    for row in stored:
        result = by_key[(row["method"], row["batch_size"])]
        assert result.reask_tokens_per_item == pytest.approx(row["retry_tokens_per_item"])
