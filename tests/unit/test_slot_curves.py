"""``python -m benchmarks.slot_curves``: accuracy by slot beside single's on the same items."""

from __future__ import annotations

from benchmarks.slot_curves import curves


def test_slots_count_only_calls_of_four_or_more_and_compare_with_single() -> None:
    items = [
        {"id": f"i{k}", "position": k % 4, "call_items": 4, "correct": k % 4 != 3,
         "confidence": 0.9 if k % 4 != 3 else 0.2}
        for k in range(8)
    ] + [{"id": "re-asked", "position": 0, "call_items": 1, "correct": False}]  # fmt: skip
    single = {f"i{k}": True for k in range(8)}
    curve = curves("batch N=4", items, single)
    assert [s["slot"] for s in curve["slots"]] == [1, 2, 3, 4]
    last = curve["slots"][-1]
    assert (last["n"], last["accuracy"], last["single_accuracy"]) == (2, 0.0, 1.0)
    assert last["mean_confidence"] == 0.2 and curve["slots"][0]["accuracy"] == 1.0
