"""``autodemo tune``: find the cheapest configuration that keeps single's accuracy.

On a labelled sample, :func:`tune` measures ``single`` (the reference: one call per
item, the user's current practice; terse when every candidate is) and then the candidate
configurations (mode x batch size x grouping x reasoning, on the run's shared
exemplars), cheapest first by a token estimate, in rounds of successive halving: every
surviving candidate answers the next slice of the sample (a quarter, then the next
quarter, then the second half), and after each round a candidate is dropped when its
paired accuracy against single on the items so far is significantly lower (exact
McNemar, ``alpha``) or lower by more than ``drop_margin``. Once a candidate has passed
on the whole sample, the candidates whose estimated cost is higher are not measured
further: they cannot be the cheapest.

The choice is the candidate with the lowest cost per item (USD with prompt caching at
the chosen prices) whose accuracy on the whole sample is within ``tolerance`` of
single's and not significantly below it; when none is, the choice is ``single``. The
result is a :class:`TunedConfig` that :meth:`AutoDemoBatchRunnable.from_config` and
``autodemo run --config`` load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from langchain_autodemo._validation import require_share
from langchain_autodemo.agreement import wilson_interval
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.evaluation.datasets import Dataset, examples_dataset
from langchain_autodemo.evaluation.diagnostics import paired_comparison, position_accuracy
from langchain_autodemo.evaluation.harness import (
    ItemRecord,
    MethodResult,
    run_method,
    stored_fields,
)
from langchain_autodemo.evaluation.methods import Method, parse_method
from langchain_autodemo.planning import (
    ITEM_MARKER_TOKENS,
    TOKENS_PER_WORD,
    escalation_picks,
    estimate_tokens,
    restatement_tokens,
)
from langchain_autodemo.pricing import Price
from langchain_autodemo.prompts import DEFAULT_HEAD_WORDS, Mode, Restate
from langchain_autodemo.settings import Settings, TunedConfig

__all__ = [
    "Candidate",
    "MeasurementLog",
    "TuneReport",
    "TunedConfig",
    "candidates",
    "merge_results",
    "measured_slot_accuracy",
    "tune",
    "with_escalation",
]


@dataclass(frozen=True)
class Candidate:
    """One configuration of the search: a method (mode and grouping) and the settings
    record it is asked with (batch size, reasoning, restatement, escalation)."""

    method: Method
    settings: Settings

    @property
    def label(self) -> str:
        s = self.settings
        size = "" if self.method.mode is Mode.SINGLE else f" N={s.batch_size}"
        head = " head" if s.restate is Restate.HEAD else ""
        escalation = f" esc={s.escalate:g}" if s.escalate else ""
        terse = "" if s.reasoning else " terse"
        return f"{self.method.name}{size}{head}{terse}{escalation}"

    @property
    def packed(self) -> Candidate:
        """The same configuration without escalation (what is asked of the model)."""
        return replace(self, settings=self.settings.replace(escalate=0.0))

    def config(
        self, instructions: str | None, demonstrations: Sequence[tuple[str, str]]
    ) -> TunedConfig:
        fields = self.settings.replace(instructions=instructions, demonstrations=demonstrations)
        return TunedConfig(**{name: getattr(fields, name) for name in Settings.field_names()})


def _candidate(method: Method, **fields: Any) -> Candidate:
    """A candidate of ``method``: its mode and grouping in the record too."""
    grouping: Any = method.grouping  # the record refuses a grouping it cannot build
    return Candidate(method, Settings(mode=method.mode, grouping=grouping, **fields))


def candidates(
    methods: Sequence[str] = ("batch", "auto_demo", "auto_demo+similarity"),
    batch_sizes: Sequence[int] = (4, 8, 16),
    reasoning: Sequence[bool] = (True, False),
    restate: Sequence[Restate | str] = (Restate.FULL, Restate.HEAD),
    escalate: Sequence[float] = (0.0,),
) -> list[Candidate]:
    """The search space (without ``single``, the reference); ``restate`` applies to
    ``auto_demo`` methods (the others copy nothing); ``escalate`` lists the escalation
    shares to try (each is replayed on the packed measurement: no extra model calls)."""
    shares = [require_share("escalate", share) for share in escalate]
    found = []
    for name in methods:
        method = parse_method(name)
        if method.mode is Mode.SINGLE or method.bootstrap or method.needs_pool:
            raise ConfigurationError(f"tune searches batch and auto_demo methods, not {name!r}")
        copies = [Restate(r) for r in restate] if method.mode is Mode.AUTO_DEMO else [Restate.FULL]
        for size in batch_sizes:
            for reasons in reasoning:
                for copy in dict.fromkeys(copies):
                    for share in dict.fromkeys(shares):
                        found.append(
                            _candidate(
                                method, batch_size=size, reasoning=reasons, restate=copy,
                                escalate=share,
                            )
                        )  # fmt: skip
    return found


def estimated_tokens_per_item(
    candidate: Candidate, question_tokens: float, prefix_tokens: float, price: Price
) -> float:
    """A cost proxy (USD-weighted tokens per item) that orders the search cheapest first."""
    answer = 120.0 if candidate.settings.reasoning else 6.0
    # only the question's size is known here: a head is estimated from its words
    heads = candidate.settings.restate is Restate.HEAD
    head = DEFAULT_HEAD_WORDS * TOKENS_PER_WORD if heads else None
    restate = restatement_tokens(
        question_tokens, restated=candidate.method.mode is Mode.AUTO_DEMO, head_tokens=head
    )
    size = candidate.settings.batch_size
    input_tokens = prefix_tokens / size + question_tokens + 60 / size
    output_tokens = answer + restate + ITEM_MARKER_TOKENS
    packed = input_tokens * price.input + output_tokens * price.output
    # an escalated item is also asked alone: its whole prompt and its answer again
    alone = (prefix_tokens + question_tokens + 60) * price.input + (
        answer + ITEM_MARKER_TOKENS
    ) * price.output
    return packed + candidate.settings.escalate * alone


@dataclass
class Row:
    """One configuration's standing."""

    label: str
    config: TunedConfig
    result: MethodResult | None = None
    status: str = "not run"
    comparison: dict[str, Any] | None = None
    confidence: dict[str, Any] | None = None
    """For a packed measurement: how well its confidence finds packed errors, and the
    escalation share that would bring it within tolerance of single (replayed)."""

    def summary(self, price: Price, single_cached: float) -> dict[str, Any]:
        data: dict[str, Any] = {"label": self.label, "status": self.status}
        if self.result is not None:
            r = self.result
            cached = r.usd_per_1k_items(price, cached=True)
            data.update(
                items=r.n,
                accuracy=r.accuracy,
                accuracy_95=list(wilson_interval(r.correct, r.n)),
                usd_per_1k_items=round(r.usd_per_1k_items(price, cached=False), 5),
                usd_per_1k_items_cached=round(cached, 5),
                vs_single_cached=round(cached / single_cached, 3) if single_cached else None,
                calls=r.calls,
                reasks=r.reasks,
                escalations=r.escalations,
            )
        if self.confidence is not None:
            data["confidence"] = self.confidence
        if self.comparison is not None:
            data["vs_single"] = {
                k: self.comparison[k]
                for k in ("accuracy_difference", "mcnemar_p", "bootstrap_95", "n")
            }
        return data


@dataclass
class TuneReport:
    chosen: TunedConfig
    chosen_label: str
    rows: list[Row]
    single: MethodResult
    price_model: str
    price: Price
    spent: dict[str, float]
    """What the tuning itself cost: calls, tokens, USD (uncached, at the chosen prices)."""
    notes: list[str] = field(default_factory=list)
    """Warnings about the search itself (a sample too small for its batch sizes)."""

    @property
    def output_floor(self) -> float | None:
        """The share of single's cost (with caching) that is its output: packing shares
        the input only, so a configuration whose answers are as long as single's costs
        at least this much of single (``None`` without a single cost)."""
        single_cached = self.single.usd_per_1k_items(self.price, cached=True)
        if not single_cached or not self.single.n:
            return None
        output = 1000 * self.price.cost(0, self.single.output_tokens) / self.single.n
        return output / single_cached

    def save(self, path: str | Path) -> Path:
        """Write the chosen configuration as ``tuned.json`` (what ``from_config`` and
        ``autodemo run --config`` load)."""
        return self.chosen.write(path)

    def runner(self, llm: Any, **overrides: Any) -> Any:
        """The chosen configuration's runner on ``llm`` (``overrides``: any constructor
        argument, e.g. your ``output_parser``); compose it after your prompt."""
        from langchain_autodemo.runnable import AutoDemoBatchRunnable

        return AutoDemoBatchRunnable.from_config(self.chosen, llm, **overrides)

    def __str__(self) -> str:
        return self.markdown()

    def as_dict(self) -> dict[str, Any]:
        single_cached = self.single.usd_per_1k_items(self.price, cached=True)
        floor = self.output_floor
        return {
            "chosen": self.chosen_label,
            "config": asdict(self.chosen),
            "price_model": self.price_model,
            "tier": self.price.tier,
            "cached_input_multiplier": _multiplier(self.price.cached_input, self.price),
            "cache_write_multiplier": _multiplier(self.price.write_price, self.price),
            "chosen_without_caching": self.chosen_without_caching,
            "output_floor_vs_single_cached": None if floor is None else round(floor, 3),
            "notes": self.notes,
            "spent": self.spent,
            "rows": [row.summary(self.price, single_cached) for row in self.rows],
        }

    @property
    def chosen_without_caching(self) -> str | None:
        """What the search would choose were nothing served from the provider's cache:
        the cheapest row that kept single's accuracy, uncached (``None`` without rows)."""
        kept = [
            row for row in self.rows
            if row.result is not None and row.status in ("passed", "chosen", "reference")
        ]  # fmt: skip
        best = min(
            kept, key=lambda row: row.result.usd_per_1k_items(self.price, cached=False),  # type: ignore[union-attr]
            default=None,
        )  # fmt: skip
        return None if best is None else best.label

    def price_header(self) -> str:
        """The prices the table's cost columns are at: model, tier, and the cache's
        multipliers on the input price."""
        p = self.price
        factor = p.factor()
        cached = _multiplier(p.cached_input, p)
        write = _multiplier(p.write_price, p)
        return (
            f"Prices: {self.price_model}, {p.tier} tier"
            + (f" ({factor:g}x the online rates)" if factor != 1 else "")
            + f": input ${p.input * factor:g}, output ${p.output * factor:g} per 1M tokens; "
            + (
                f"cached input {cached:g}x input, cache writes {write:g}x input "
                f"(minimum cached prefix {p.min_cached_tokens:,} tokens)."
                if cached is not None
                else "no prompt caching."
            )
        )

    def markdown(self) -> str:
        single_cached = self.single.usd_per_1k_items(self.price, cached=True)
        lines = [
            self.price_header(),
            "",
            "| configuration | status | accuracy (95%) | vs single (95%) | $/1k | $/1k cached "
            "| x single cached |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for row in self.rows:
            s = row.summary(self.price, single_cached)
            if "accuracy" not in s:
                lines.append(f"| {row.label} | {row.status} | | | | | |")
                continue
            low, high = s["accuracy_95"]
            versus = "-"
            if row.comparison is not None:
                d = row.comparison["accuracy_difference"] * 100
                b_low, b_high = row.comparison["bootstrap_95"]
                versus = f"{d:+.0f} ({b_low * 100:+.0f}..{b_high * 100:+.0f}) pts"
            ratio = "-" if s["vs_single_cached"] is None else f"{s['vs_single_cached']:.2f}x"
            lines.append(
                f"| {row.label} | {row.status} | {s['accuracy']:.0%} on {s['items']} "
                f"({low:.0%}-{high:.0%}) | {versus} | {s['usd_per_1k_items']:.4f} "
                f"| {s['usd_per_1k_items_cached']:.4f} | {ratio} |"
            )
        lines.append("")
        uncached = self.chosen_without_caching
        if uncached is not None and self.price.cached_input is not None:
            lines.append(
                f"With prompt caching the choice is {self.chosen_label}; with caching off it "
                f"would be {uncached}" + (" (the same)." if uncached == self.chosen_label else ".")
            )
            lines.append("")
        lines.append(
            f"Chosen: **{self.chosen_label}**. Prices: {self.price_model} ({self.price.tier}) "
            "with prompt caching. "
            f"The tuning itself: {self.spent['calls']:.0f} calls, "
            f"{self.spent['input_tokens']:.0f} input and {self.spent['output_tokens']:.0f} "
            f"output tokens (${self.spent['usd']:.4f} uncached)."
        )
        for note in self.notes:
            lines.append("")
            lines.append(f"**Note:** {note}")
        evidence = [row for row in self.rows if row.confidence is not None]
        if evidence:
            lines.append("")
            lines.append(
                "Confidence (token log-probabilities) against packed errors, and the "
                "escalation share that would bring each packed measurement within "
                "tolerance of single (replayed on its items):"
            )
            lines.append("")
            for row in evidence:
                c = row.confidence or {}
                need = c.get("escalation_to_match_single")
                gold, alone = c.get("auroc_vs_gold"), c.get("auroc_vs_single")
                power = (
                    f"AUROC {_fmt(gold)} vs gold, {_fmt(alone)} vs single "
                    f"({c.get('scored', 0)} answers scored)"
                    if c.get("scored")
                    else "no confidences (no log-probabilities): escalation takes the latest slots"
                )
                if need is None:
                    reach = "no share up to 1 reaches single"
                else:
                    ratio = need.get("vs_single_cached")
                    at = "" if ratio is None else f" at {ratio:.2f}x single cached"
                    reach = f"escalating {need['share']:.0%} reaches it{at}"
                lines.append(f"- {row.label}: {power}; {reach}.")
        floor = self.output_floor
        if floor is not None:
            lines.append("")
            lines.append(
                f"Single's output is {floor:.2f}x of its cost with caching: packing shares "
                "the input only, so a configuration whose answers are as long as single's "
                f"costs at least {floor:.2f}x single (a restatement adds to it)."
            )
        return "\n".join(lines) + "\n"


def _multiplier(rate: float | None, price: Price) -> float | None:
    """``rate`` as a multiple of ``price``'s input price (``None``: no such rate)."""
    if rate is None or not price.input:
        return None
    return round(rate / price.input, 4)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


class MeasurementLog(MutableMapping[tuple[str, int, int], MethodResult]):
    """Measurements of a search kept in a JSONL file, one line each, appended as they
    land: what ``autodemo tune --resume`` reuses."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._data: dict[tuple[str, int, int], MethodResult] = {}
        if self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    result = stored_fields(dict(record["result"]))
                    result["items"] = [
                        ItemRecord(**{**item, "reasons": tuple(item.get("reasons", ()))})
                        for item in result["items"]
                    ]
                    key = (str(record["label"]), int(record["start"]), int(record["stop"]))
                    self._data[key] = MethodResult(**result)
                except (ValueError, KeyError, TypeError) as exc:
                    if number == len(lines):
                        break  # a torn last line: that measurement is taken again
                    raise ConfigurationError(f"{self.path} line {number}: {exc}") from None

    def __getitem__(self, key: tuple[str, int, int]) -> MethodResult:
        return self._data[key]

    def __setitem__(self, key: tuple[str, int, int], value: MethodResult) -> None:
        self._data[key] = value
        record = {"label": key[0], "start": key[1], "stop": key[2], "result": asdict(value)}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def __delitem__(self, key: tuple[str, int, int]) -> None:
        raise TypeError("measurements are only added")

    def __iter__(self) -> Any:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def merge_results(a: MethodResult | None, b: MethodResult) -> MethodResult:
    """``a`` and ``b`` (measured on consecutive slices) as one result. Each slice numbers
    its calls from 0, so ``b``'s call ids are moved past ``a``'s: a call id names one
    call of the merged result (escalation replays group answers by it)."""
    if a is None:
        return b
    offset = 1 + max((r.call_id for r in a.items if r.call_id is not None), default=-1)
    moved = [r if r.call_id is None else replace(r, call_id=r.call_id + offset) for r in b.items]
    return replace(
        a,
        n=a.n + b.n,
        correct=a.correct + b.correct,
        parse_failures=a.parse_failures + b.parse_failures,
        errors=a.errors + b.errors,
        calls=a.calls + b.calls,
        reasks=a.reasks + b.reasks,
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        estimated_tokens=a.estimated_tokens or b.estimated_tokens,
        wall_time_s=a.wall_time_s + b.wall_time_s,
        items=[*a.items, *moved],
        reask_input_tokens=a.reask_input_tokens + b.reask_input_tokens,
        reask_output_tokens=a.reask_output_tokens + b.reask_output_tokens,
        escalations=a.escalations + b.escalations,
        escalation_input_tokens=a.escalation_input_tokens + b.escalation_input_tokens,
        escalation_output_tokens=a.escalation_output_tokens + b.escalation_output_tokens,
        call_shared_tokens=[*a.call_shared_tokens, *b.call_shared_tokens],
        call_reused_tokens=_joined_reuse(a, b),
    )


def _joined_reuse(*parts: MethodResult) -> list[float]:
    """The parts' per-call cache reuse end to end (each part was its own run, so each
    writes its prefix once); empty where a part kept none (its writes are then estimated
    from the hits, :func:`~langchain_autodemo.pricing.cache_write_tokens`)."""
    if any(len(p.call_reused_tokens) != len(p.call_shared_tokens) for p in parts):
        return []
    return [tokens for p in parts for tokens in p.call_reused_tokens]


def with_escalation(packed: MethodResult, single: MethodResult, share: float) -> MethodResult:
    """What ``packed`` measures with selective escalation at ``share``, replayed without
    a model call: in each packed call, the answers
    :func:`~langchain_autodemo.planning.escalation_picks` picks from their recorded
    confidences take the single answer to the same item (the reference asked it exactly
    as an escalation does: alone, with the same instructions, exemplars and layout), and
    their single calls' tokens are added to the cost. Exact when single is deterministic
    (temperature 0) and its reasoning setting is the candidate's."""
    if share <= 0 or not packed.items:
        return packed
    by_id = {record.id: (k, record) for k, record in enumerate(single.items)}
    calls: dict[int, list[tuple[int, int, float | None]]] = {}
    for k, record in enumerate(packed.items):
        if record.call_id is not None and (record.call_items or 1) > 1 and record.id in by_id:
            calls.setdefault(record.call_id, []).append(
                (k, record.position or 0, record.confidence)
            )
    picked: set[int] = set()
    unsure = any(c is None for answered in calls.values() for _, _, c in answered)
    # the order a record's slot_accuracy gives answers without a confidence (in-sample here)
    accuracy = measured_slot_accuracy(packed) if unsure else ()
    for answered in calls.values():
        picked |= escalation_picks(answered, share, slot_accuracy=accuracy)
    # single's prompt-cache share per call, where its calls map one to one onto its items
    shared = single.call_shared_tokens if len(single.call_shared_tokens) == single.n else None
    items: list[ItemRecord] = []
    extra_in = extra_out = 0.0
    extra_shared: list[float] = []
    extra_reused: list[float] = []
    for k, record in enumerate(packed.items):
        if k not in picked:
            items.append(record)
            continue
        j, alone = by_id[record.id]
        items.append(replace(alone, escalated=True, confidence=record.confidence))
        extra_in += alone.input_tokens
        extra_out += alone.output_tokens
        if shared is not None:
            # the first escalation of the run writes single's prefix to the cache, the
            # later ones read it
            first = not extra_shared
            extra_shared.append(0.0 if first else shared[j])
            extra_reused.append(0.0)
    if extra_reused:
        extra_reused[0] = max(extra_shared[1:], default=0.0)
    added_in, added_out = round(extra_in), round(extra_out)
    return replace(
        packed,
        correct=sum(r.correct for r in items),
        parse_failures=sum(not r.parsed for r in items),
        errors=sum(r.error is not None for r in items),
        calls=packed.calls + len(picked),
        input_tokens=packed.input_tokens + added_in,
        output_tokens=packed.output_tokens + added_out,
        items=items,
        escalations=packed.escalations + len(picked),
        escalation_input_tokens=packed.escalation_input_tokens + added_in,
        escalation_output_tokens=packed.escalation_output_tokens + added_out,
        call_shared_tokens=[*packed.call_shared_tokens, *extra_shared],
        call_reused_tokens=[*packed.call_reused_tokens, *extra_reused]
        if len(packed.call_reused_tokens) == len(packed.call_shared_tokens)
        else [],
    )


def measured_slot_accuracy(result: MethodResult) -> tuple[float, ...]:
    """Packed accuracy by slot (position in the call, first slot first) over the
    answers of ``result``'s packed calls, rounded to 3 places: the fallback order of
    escalation where a model sends no log-probabilities (:attr:`Settings.slot_accuracy
    <langchain_autodemo.settings.Settings.slot_accuracy>`). A slot no answer sat in
    counts as the one before it; empty for single calls.
    """
    packed = [r for r in result.items if (r.call_items or 1) > 1 and not r.escalated]
    by_slot = {row["position"]: row["accuracy"] for row in position_accuracy(packed)["by_position"]}
    shares: list[float] = []
    for slot in range(max(by_slot, default=-1) + 1):
        share = by_slot.get(slot, shares[-1] if shares else 1.0)
        shares.append(round(share, 3))
    return tuple(shares)


def _escalation_evidence(
    packed: MethodResult, single: MethodResult, tolerance: float, price: Price
) -> dict[str, Any]:
    """The confidence's power to find this packed measurement's errors, and the smallest
    escalation share (in steps of 0.05, replayed) whose accuracy is within ``tolerance``
    of single's on the same items, with what it would cost against single."""
    from langchain_autodemo.evaluation.diagnostics import confidence_power

    ids = {r.id for r in packed.items}
    part = [r for r in single.items if r.id in ids]
    alone = replace(single, items=part, n=len(part), correct=sum(r.correct for r in part))
    evidence = confidence_power(packed, alone)  # with the per-slot curve
    single_cost = single.usd_per_1k_items(price, cached=True)
    needed = None
    for step in range(21):
        share = step / 20
        trial = with_escalation(packed, alone, share)
        if trial.accuracy >= alone.accuracy - tolerance - 1e-9:
            cost = trial.usd_per_1k_items(price, cached=True)
            needed = {
                "share": share,
                "accuracy": trial.accuracy,
                "vs_single_cached": round(cost / single_cost, 3) if single_cost else None,
            }
            break
    evidence["escalation_to_match_single"] = needed
    return evidence


def _slices(n: int) -> list[tuple[int, int]]:
    """Successive-halving rounds: the first quarter, the second quarter, the second half."""
    cuts = sorted({0, max(1, n // 4), max(1, n // 2), n})
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def tune(
    llm: Any,
    data: Dataset | Iterable[Any],
    space: Sequence[Candidate] | None = None,
    *,
    prompt: Any = None,
    scorer: str | Callable[[Any, Any], Any] | Any = "exact",
    methods: Sequence[str] = ("batch", "auto_demo"),
    batch_sizes: Sequence[int] = (4, 8, 16),
    reasoning: Sequence[bool] = (True,),
    restate: Sequence[Restate | str] = (Restate.FULL, Restate.HEAD),
    escalate: Sequence[float] = (0.0, 0.1, 0.2, 0.3),
    runner_options: Mapping[str, Any] | None = None,
    price: Price | None = None,
    price_model: str = "gpt-4o-mini",
    tier: str | None = None,
    demonstrations: Sequence[tuple[str, str]] = (),
    tolerance: float = 0.02,
    alpha: float = 0.05,
    drop_margin: float = 0.15,
    embeddings: Any = None,
    max_concurrency: int = 1,
    on_result: Callable[[str, MethodResult], None] | None = None,
    measured: MutableMapping[tuple[str, int, int], MethodResult] | None = None,
) -> TuneReport:
    """Find the cheapest configuration that keeps single's accuracy on a labelled sample
    (see the module docstring): what ``autodemo tune`` does, from Python, on your chain.

    ``data`` is a :class:`~langchain_autodemo.evaluation.datasets.Dataset`, or your
    examples: ``(inputs, expected)`` pairs, ``{"inputs": ..., "outputs": ...}`` records or
    LangSmith ``Example`` objects
    (see :func:`~langchain_autodemo.evaluation.datasets.examples_dataset`). With ``prompt`` (a
    ``ChatPromptTemplate``: system message, few-shot turns, variables filled from each
    example's inputs) every request is built exactly as ``prompt | runner`` builds it.
    ``scorer`` is ``"exact"``, ``"numeric"``, ``"label"``, a callable ``(answer,
    expected) -> bool | score`` or a LangChain string evaluator.

    The search space is ``methods`` x ``batch_sizes`` x ``reasoning`` x ``restate`` x
    ``escalate`` unless ``space`` gives it; ``runner_options`` go to every runner (your
    ``output_parser``, say). ``measured`` holds earlier measurements by (label, first
    item, end) and receives the new ones: a resumed search asks the model only what it
    has not answered yet. Costs are at ``price`` (default: ``price_model``'s built-in
    list price) and ``tier`` (``online``, ``flex`` or ``batch``; default: the price's),
    cache hits at the cached price and each shared prefix's first write at the
    cache-write price (:mod:`langchain_autodemo.pricing`).

    Example:
        .. code-block:: python

            from langchain_autodemo import tune

            report = tune(llm, [({"review": r}, label) for r, label in sample], prompt=prompt,
                          scorer="label", batch_sizes=(8, 16))
            print(report)                   # the table
            report.save("tuned.json")       # for from_config / autodemo run --config
            chain = prompt | report.runner(llm)
    """
    dataset = (
        data if isinstance(data, Dataset) else examples_dataset(data, prompt=prompt, scorer=scorer)
    )
    if space is None:
        space = candidates(methods, batch_sizes, reasoning, restate, escalate)
    if price is None:
        from langchain_autodemo.pricing import PriceTable

        price = PriceTable.default().price(price_model, tier or "online")
    elif tier is not None:
        price = replace(price, tier=tier)
    price.factor()  # an unknown tier, or flex where the provider has none, is refused here
    task = dataset.task
    slices = _slices(len(dataset))
    log: MutableMapping[tuple[str, int, int], MethodResult] = {} if measured is None else measured
    used: dict[tuple[str, int, int], MethodResult] = {}  # what this search asked the model

    def measure(candidate: Candidate, start: int, stop: int) -> MethodResult:
        if candidate.settings.escalate:  # replayed on the packed measurement and single's answers
            return with_escalation(
                measure(candidate.packed, start, stop),
                measure(reference, start, stop),
                candidate.settings.escalate,
            )
        key = (candidate.label, start, stop)
        if key in log:
            used[key] = log[key]
            return log[key]
        part = replace(dataset, examples=dataset.examples[start:stop])
        selector = candidate.method.selector(embeddings=embeddings)
        # confidences are recorded for every packed measurement: escalation replays on them
        result = run_method(
            llm, part, candidate.method, candidate.settings.batch_size, selector=selector,
            max_concurrency=max_concurrency,
            settings=candidate.settings.replace(demonstrations=demonstrations),
            confidence=candidate.method.batched, runner_options=runner_options,
        )  # fmt: skip
        log[key] = used[key] = result
        if on_result is not None:
            on_result(candidate.label, result)
        return result

    # The reference is single as the search would run it: with reasoning unless every
    # candidate leaves it out (a terse search is measured against a terse single, which is
    # the cheaper and, on label tasks, the usual baseline).
    reference = _candidate(
        Method(Mode.SINGLE), batch_size=1, reasoning=any(c.settings.reasoning for c in space)
    )
    single: MethodResult | None = None
    for start, stop in slices:
        single = merge_results(single, measure(reference, start, stop))
    assert single is not None
    question = sum(estimate_tokens(e.text) for e in dataset.examples) / max(1, len(dataset))
    prefix = sum(estimate_tokens(q) + estimate_tokens(a) for q, a in demonstrations)
    ordered = sorted(space, key=lambda c: estimated_tokens_per_item(c, question, prefix, price))
    rows = [
        Row(c.label, c.config(task.instructions_for(c.settings.reasoning), demonstrations))
        for c in ordered
    ]
    passed_estimate: float | None = None
    for candidate, row in zip(ordered, rows, strict=True):
        estimate = estimated_tokens_per_item(candidate, question, prefix, price)
        if passed_estimate is not None and estimate > passed_estimate:
            row.status = "skipped: dearer than a passing configuration"
            continue
        row.status = "passed"
        for round_number, (start, stop) in enumerate(slices, 1):
            row.result = merge_results(row.result, measure(candidate, start, stop))
            so_far = replace(single, items=single.items[:stop], n=stop)
            row.comparison = paired_comparison(row.result, so_far)
            difference = row.comparison["accuracy_difference"]
            significant = row.comparison["mcnemar_p"] < alpha and difference < 0
            if significant or difference < -drop_margin:
                row.status = f"dropped after round {round_number} ({difference * 100:+.0f} pts)"
                break
        reached = max((r.call_items or 0 for r in row.result.items), default=0) if row.result else 0
        if (
            row.status == "passed"
            and candidate.method.batched
            and reached < candidate.settings.batch_size
        ):
            # its calls never held that many items: a batch size measured on smaller calls
            # is not what it says (a sample too small, or every call split by the budget)
            row.status = f"not reached: its calls held at most {reached} items"
        if row.status == "passed":
            difference = row.comparison["accuracy_difference"] if row.comparison else 0.0
            if difference < -tolerance:
                row.status = f"outside tolerance ({difference * 100:+.0f} pts)"
            elif passed_estimate is None:
                passed_estimate = estimate
    for candidate, row in zip(ordered, rows, strict=True):
        if row.result is not None and not candidate.settings.escalate and candidate.method.batched:
            row.confidence = _escalation_evidence(row.result, single, tolerance, price)
    instructions = task.instructions_for(reference.settings.reasoning)
    single_row = Row(reference.label, reference.config(instructions, demonstrations), single,
                     "reference")  # fmt: skip
    finalists = [r for r in rows if r.status == "passed" and r.result is not None]
    single_cost = single.usd_per_1k_items(price, cached=True)

    def cost_of(row: Row) -> float:
        return row.result.usd_per_1k_items(price, cached=True) if row.result else math.inf

    best = min(finalists, key=cost_of, default=None)
    if best is not None and cost_of(best) >= single_cost:
        best = None
    chosen_row = best or single_row
    chosen_row.status = "chosen"
    results = list(used.values())  # escalation replays ask nothing of their own
    spent = {
        "calls": float(sum(r.calls for r in results)),
        "input_tokens": float(sum(r.input_tokens for r in results)),
        "output_tokens": float(sum(r.output_tokens for r in results)),
        "usd": sum(price.cost(r.input_tokens, r.output_tokens) for r in results),
    }
    chosen_result = chosen_row.result or single
    comparison = chosen_row.comparison or {}
    slot_accuracy: tuple[float, ...] = ()
    for candidate, row in zip(ordered, rows, strict=True):
        if row is chosen_row and candidate.method.batched:
            # the fallback order of escalation without log-probabilities: measured, not
            # asked again (every slice of the packed measurement is in the log)
            packed: MethodResult | None = None
            for start, stop in slices:
                packed = merge_results(packed, measure(candidate.packed, start, stop))
            slot_accuracy = measured_slot_accuracy(packed) if packed is not None else ()
    chosen = replace(
        chosen_row.config,
        slot_accuracy=slot_accuracy,
        tuned_on={
            "dataset": dataset.name,
            "items": len(dataset),
            "accuracy": chosen_result.accuracy,
            "single_accuracy": single.accuracy,
            "accuracy_difference": comparison.get("accuracy_difference", 0.0),
            "vs_single_cached": round(
                chosen_result.usd_per_1k_items(price, cached=True) / single_cost, 3
            )
            if single_cost
            else None,
            "price_model": price_model,
            "tier": price.tier,
        },
    )
    largest = max((c.settings.batch_size for c in space if c.method.batched), default=1)
    notes = []
    if len(dataset) < 4 * largest:
        notes.append(
            f"The sample ({len(dataset)} items) is under 4x the largest batch size ({largest}): "
            "its first rounds pack partial calls, and a batch size its calls did not reach "
            "is never chosen. Use at least 4x the largest batch size."
        )
    return TuneReport(
        chosen, chosen_row.label, [single_row, *rows], single, price_model, price, spent, notes
    )
