"""One name per concept (issue 25): renamed public names keep a deprecated alias that
warns and gives the same value."""

from __future__ import annotations

import pytest

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.testing import ScriptedAutoDemoModel


def test_item_result_call_items_is_what_the_call_asked_and_batch_size_is_deprecated() -> None:
    runner = AutoDemoBatchRunnable(ScriptedAutoDemoModel(), batch_size=4, include_details=True)
    results = runner.batch([f"What is {i} + 1?" for i in range(6)])
    assert [r.call_items for r in results] == [4, 4, 4, 4, 2, 2]
    with pytest.warns(DeprecationWarning, match="call_items"):
        assert results[-1].batch_size == 2
