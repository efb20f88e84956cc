"""Why a method wins or loses: per-position accuracy, re-asks and their reasons, attempts,
token split, and a paired comparison with ``single``.

Pure functions over the per-item records of a :class:`~.harness.MethodResult`; no I/O.

Positions are 0-based within the prompt of the call that answered the item. Quarters are
``4 * position // items in that call``, and only calls that asked at least
:data:`QUARTER_MIN_ITEMS` questions count towards them: a re-ask of one or two items has
no first or last quarter to speak of.

The paired comparison counts the items one method got right and the other wrong. With
64 items a difference of a few points is easily noise, so it comes with the exact
McNemar p-value (a two-sided binomial test on those discordant items) and a paired
bootstrap 95% interval of the accuracy difference.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from langchain_autodemo.agreement import answers_agree, wilson_interval

if TYPE_CHECKING:
    from langchain_autodemo.evaluation.harness import ItemRecord, MethodResult

__all__ = [
    "QUARTER_MIN_ITEMS",
    "auroc",
    "comparisons_with_single",
    "confidence_power",
    "diagnostics",
    "mcnemar_exact",
    "paired_bootstrap_interval",
    "paired_comparison",
    "reason_kind",
]

QUARTER_MIN_ITEMS = 4
_DIGITS = re.compile(r"\d+")


def reason_kind(reason: str) -> str:
    """A rejection reason without its item-specific detail, so that reasons can be counted.

    Numbers become ``N``; after ``model call failed:`` the exception type is kept and its
    message dropped; other reasons are cut at their first ``:``.

    Example:
        >>> reason_kind("index 9 is outside the batch")
        'index N is outside the batch'
        >>> reason_kind("model call failed: TimeoutError: read timed out after 30 s")
        'model call failed: TimeoutError'
        >>> reason_kind("answer could not be parsed: invalid literal for int()")
        'answer could not be parsed'
    """
    parts = [part.strip() for part in reason.split(":")]
    keep = 2 if parts[0] == "model call failed" and len(parts) > 1 else 1
    return _DIGITS.sub("N", ": ".join(parts[:keep])) or "unknown"


def _rate(correct: int, n: int) -> dict[str, Any]:
    return {"n": n, "correct": correct, "accuracy": correct / n if n else None}


def position_accuracy(items: Sequence[ItemRecord]) -> dict[str, Any]:
    """Accuracy by position in the answering call, by quarter, first and last quarter."""
    placed = [i for i in items if i.position is not None and i.call_items]
    by_position: dict[int, list[bool]] = {}
    by_quarter: dict[int, list[bool]] = {q: [] for q in range(4)}
    for item in placed:
        assert item.position is not None and item.call_items is not None
        by_position.setdefault(item.position, []).append(item.correct)
        if item.call_items >= QUARTER_MIN_ITEMS:
            by_quarter[4 * item.position // item.call_items].append(item.correct)
    return {
        "by_position": [
            {"position": p, **_rate(sum(v), len(v))} for p, v in sorted(by_position.items())
        ],
        "by_quarter": [{"quarter": q + 1, **_rate(sum(v), len(v))} for q, v in by_quarter.items()],
        "first_quarter": _rate(sum(by_quarter[0]), len(by_quarter[0])),
        "last_quarter": _rate(sum(by_quarter[3]), len(by_quarter[3])),
        "unplaced": len(items) - len(placed),
    }


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """The area under the ROC curve of ``scores`` for finding the ``positive`` items: the
    chance that a random positive scores above a random negative (ties count half);
    ``None`` without both kinds.

    Example:
        >>> auroc([0.9, 0.8, 0.3, 0.1], [True, True, False, False])
        1.0
        >>> auroc([0.5, 0.5], [True, False])
        0.5
    """
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    if not pos or not neg:
        return None
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def confidence_power(result: MethodResult, single: MethodResult | None = None) -> dict[str, Any]:
    """How well the answers' confidence finds packed errors: the AUROC of doubt (one minus
    confidence) for the wrong answers (against the gold answer) and for the answers
    that differ from single's (what escalation changes), over the answers that have a
    confidence; and mean confidence and accuracy by slot (position in the call)."""
    scored = [i for i in result.items if i.confidence is not None and i.prediction is not None]
    doubt = [1.0 - float(i.confidence or 0.0) for i in scored]
    alone = {i.id: i for i in single.items} if single is not None else {}

    def answer(item: ItemRecord) -> str | None:
        return item.extracted if item.extracted is not None else item.prediction

    def differs(item: ItemRecord) -> bool:
        other = alone.get(item.id)
        return other is not None and not answers_agree(answer(item), answer(other))

    by_slot: dict[int, list[ItemRecord]] = {}
    for item in scored:
        by_slot.setdefault(item.position or 0, []).append(item)
    return {
        "scored": len(scored),
        "auroc_vs_gold": auroc(doubt, [not i.correct for i in scored]),
        "auroc_vs_single": auroc(doubt, [differs(i) for i in scored]) if alone else None,
        "by_slot": [
            {
                "slot": slot + 1,
                "n": len(items),
                "mean_confidence": sum(float(i.confidence or 0.0) for i in items) / len(items),
                "accuracy": sum(i.correct for i in items) / len(items),
            }
            for slot, items in sorted(by_slot.items())
        ],
    }


def diagnostics(result: MethodResult) -> dict[str, Any]:
    """Position, re-ask, attempt and token diagnostics of one method at one batch size."""
    items = result.items
    n = len(items)
    reasked = [i for i in items if i.attempts > 1 or i.reasons]
    reasons = Counter(reason_kind(r) for i in items for r in i.reasons)
    attempts = Counter(i.attempts for i in items)
    reask_tokens = result.reask_input_tokens + result.reask_output_tokens
    total_tokens = result.input_tokens + result.output_tokens
    return {
        "position": position_accuracy(items),
        "confidence": confidence_power(result)
        if any(i.confidence is not None for i in items)
        else None,
        "reasks": {
            "items": len(reasked),
            "share": len(reasked) / n if n else 0.0,
            "correct": sum(i.correct for i in reasked),
            "rejections": sum(reasons.values()),
            "reasons": dict(reasons.most_common()),
        },
        "attempts": {
            "mean": sum(i.attempts for i in items) / n if n else 0.0,
            "histogram": {str(k): attempts[k] for k in sorted(attempts)},
        },
        "tokens": {
            "per_item": total_tokens / n if n else 0.0,
            "first_ask_per_item": (total_tokens - reask_tokens) / n if n else 0.0,
            "reask_per_item": reask_tokens / n if n else 0.0,
            "reask_input_per_item": result.reask_input_tokens / n if n else 0.0,
            "reask_output_per_item": result.reask_output_tokens / n if n else 0.0,
            "reask_share": reask_tokens / total_tokens if total_tokens else 0.0,
            "estimated": result.estimated_tokens,
        },
    }


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value for ``only_first`` vs ``only_second`` discordant pairs.

    Under the null each discordant pair falls either way with probability 1/2, so the
    p-value is twice the smaller binomial tail, capped at 1 (as ``scipy.stats.binomtest``
    with ``p=0.5``; exact integer arithmetic).

    Example:
        >>> mcnemar_exact(0, 5)
        0.0625
        >>> mcnemar_exact(3, 3)
        1.0
    """
    if only_first < 0 or only_second < 0:
        raise ValueError("discordant counts must be non-negative")
    total = only_first + only_second
    if total == 0:
        return 1.0
    tail = sum(math.comb(total, k) for k in range(min(only_first, only_second) + 1))
    return min(1.0, 2 * tail / 2**total)


def paired_bootstrap_interval(
    first: Sequence[bool],
    second: Sequence[bool],
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``accuracy(first) - accuracy(second)``, resampling
    items (pairs stay together); seeded, so a report is reproducible."""
    import numpy as np

    if len(first) != len(second) or not first:
        raise ValueError("paired samples must be non-empty and of equal length")
    diff = np.asarray(first, dtype=np.int8) - np.asarray(second, dtype=np.int8)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_comparison(result: MethodResult, baseline: MethodResult) -> dict[str, Any]:
    """Items right in one and wrong in the other (matched by id), McNemar p, 95% interval."""
    theirs = {item.id: item.correct for item in baseline.items}
    pairs = [(item.correct, theirs[item.id]) for item in result.items if item.id in theirs]
    ours = [a for a, _ in pairs]
    base = [b for _, b in pairs]
    only_ours = sum(a and not b for a, b in pairs)
    only_base = sum(b and not a for a, b in pairs)
    n = len(pairs)
    low, high = paired_bootstrap_interval(ours, base) if pairs else (0.0, 0.0)
    # The baseline on the very items of the first and last quarters: a drop from first to
    # last quarter that the baseline shows too is the items' difficulty, not the position.
    # (GSM8K-64, Qwen 1.5B, auto_demo N=8: 11/16 -> 4/16; single on the same items 11/16 -> 6/16.)
    # Hence the same bucketing as position_accuracy, scored with the baseline's verdicts.
    as_baseline = position_accuracy(
        [replace(item, correct=theirs[item.id]) for item in result.items if item.id in theirs]
    )
    agreement = agreement_with(result, baseline)
    return {
        "baseline": baseline.method,
        "n": n,
        **agreement,
        "both_right": sum(a and b for a, b in pairs),
        "both_wrong": sum(not a and not b for a, b in pairs),
        "only_this": only_ours,
        "only_baseline": only_base,
        "accuracy_difference": (only_ours - only_base) / n if n else 0.0,
        "mcnemar_p": mcnemar_exact(only_ours, only_base),
        "bootstrap_95": [low, high],
        "baseline_first_quarter": as_baseline["first_quarter"],
        "baseline_last_quarter": as_baseline["last_quarter"],
    }


def agreement_with(result: MethodResult, baseline: MethodResult) -> dict[str, Any]:
    """How often ``result``'s answer agrees with ``baseline``'s on the same item, over the
    items both answered, with its 95% Wilson interval. Needs no labels: it is what
    :class:`~langchain_autodemo.audit.AuditedRunnable` estimates in production. Answers are
    compared as the task reads them (the scorer's extracted answer, e.g. GSM8K's last
    number, where the model left out the final-answer line) with the audit's comparator
    (:func:`~langchain_autodemo.agreement.answers_agree`): the comparator a user passes the
    audit for such a task."""

    def answer(item: ItemRecord) -> str | None:
        return item.extracted if item.extracted is not None else item.prediction

    theirs = {item.id: answer(item) for item in baseline.items}
    pairs = [
        (answer(item), theirs[item.id])
        for item in result.items
        if answer(item) is not None and theirs.get(item.id) is not None
    ]
    agreed = sum(answers_agree(ours, base) for ours, base in pairs)
    low, high = wilson_interval(agreed, len(pairs)) if pairs else (0.0, 1.0)
    return {
        "agreement": agreed / len(pairs) if pairs else None,
        "agreement_95": [low, high],
        "agreement_n": len(pairs),
    }


def comparisons_with_single(
    results: Iterable[MethodResult],
) -> dict[tuple[str, int], dict[str, Any]]:
    """``(method, batch size) -> paired comparison`` with the ``single`` result of the same
    dataset, for every other result; empty when ``single`` was not run."""
    results = list(results)
    singles = {r.dataset: r for r in results if r.method == "single"}
    return {
        (r.method, r.batch_size): paired_comparison(r, singles[r.dataset])
        for r in results
        if r.method != "single" and r.dataset in singles
    }
