"""A fixed-seed slice of the adversarial alignment fuzz (tests/adversarial.py).

The full run (11,000 cases, README) is ``python -m tests.adversarial --cases 11000``.
"""

from __future__ import annotations

from tests.adversarial import fuzz


def test_no_hostile_input_or_completion_misaligns_an_answer() -> None:
    tally = fuzz(160, first_seed=1000)
    assert tally.misaligned == 0, tally.examples
    assert tally.items == tally.correct + tally.errors + tally.wrong_own
    # The slice really exercises both outcomes: recovered answers and explicit errors.
    assert tally.correct > tally.items // 2 and tally.errors > 0
    assert set(tally.by_driver) == {"batch", "abatch", "as_completed", "aas_completed"}
