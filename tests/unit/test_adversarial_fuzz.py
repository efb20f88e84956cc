"""A fixed-seed slice of the adversarial alignment fuzz (tests/adversarial.py).

The full run is ``python -m tests.adversarial --cases 3000`` (benchmarks/results/
fuzz_alignment.json); since issue 20 it also draws digit slips, inputs that contain each
other, embedded ``Q[i]/A[i]`` blocks, operator-only differences, non-Latin scripts with
faithful-copy variations, merged restatements and never-ending streams; since
reliability round 3 also endless streams of empty chunks and of reasoning alone.
"""

from __future__ import annotations

from tests.adversarial import fuzz


def test_no_hostile_input_or_completion_misaligns_an_answer() -> None:
    tally = fuzz(160, first_seed=1000)
    assert tally.misaligned == 0, tally.examples
    assert tally.hangs == 0  # every never-ending stream was cut at its output budget
    # ... the streams of empty chunks and of reasoning alone included
    assert tally.endless["blank"] > 0 and tally.endless["reasoning"] > 0, tally.endless
    assert tally.items == tally.correct + tally.errors + tally.wrong_own
    # The slice really exercises both outcomes: recovered answers and explicit errors.
    assert tally.correct > tally.items // 2 and tally.errors > 0
    assert set(tally.by_driver) == {"batch", "abatch", "as_completed", "aas_completed"}
    # Round 3: poison inputs, escalations and isolated callers were drawn, and no isolated
    # caller's error or reasons showed another input.
    assert tally.poisoned > 0 and tally.escalated > 0 and tally.isolated > 0
    assert tally.leaks == 0, "an isolated caller saw another input's text"
