"""What a job costs: its tokens at batch prices, online prices, and one call per item.

Prices are USD per million tokens. :meth:`PriceTable.default` holds list prices as
published by OpenAI and Anthropic in 2025 (standard tier; both providers' batch APIs
take 50% off); they change, so override them: ``PriceTable.from_file("prices.json")``
with ``{"my-model": {"input": 0.15, "output": 0.60, "batch_discount": 0.5}}``, or
``--batch-option prices=prices.json`` on the command line.

The row "online, one call per item" is an estimate: its input is every item's
single-question prompt, counted as the provider counted this job's prompts (the job's
reported input tokens over its prompts' character estimate, times the single prompts'
character estimate); its output is the job's output, less the restated questions in
``auto_demo`` mode (one call per item does not restate).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.parser import text_of
from langchain_autodemo.planning import estimate_tokens
from langchain_autodemo.prompts import Mode, build_single_messages

if TYPE_CHECKING:
    from langchain_autodemo.batch_api.job import BatchApiJob

__all__ = ["CostLine", "CostReport", "Price", "PriceTable"]


@dataclass(frozen=True)
class Price:
    """USD per million tokens, online; ``batch_discount`` is the Batch API's reduction."""

    input: float
    output: float
    batch_discount: float = 0.5

    def cost(self, input_tokens: float, output_tokens: float, *, batch: bool) -> float:
        factor = (1.0 - self.batch_discount) if batch else 1.0
        return factor * (input_tokens * self.input + output_tokens * self.output) / 1e6


# List prices (USD / 1M tokens, standard tier) as published in 2025; override as needed.
_DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1": Price(2.00, 8.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-sonnet-4": Price(3.00, 15.00),
}


class PriceTable:
    """Model name -> :class:`Price`; a name also matches its dated versions
    (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``), the longest known prefix winning.

    Example:
        >>> table = PriceTable.default()
        >>> table.price("gpt-4o-mini-2024-07-18")
        Price(input=0.15, output=0.6, batch_discount=0.5)
        >>> round(table.price("gpt-4o-mini").cost(1_000_000, 100_000, batch=True), 4)
        0.105
    """

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self.prices = dict(prices)

    @classmethod
    def default(cls) -> PriceTable:
        return cls(_DEFAULT_PRICES)

    @classmethod
    def from_file(cls, path: str | Path, *, base: PriceTable | None = None) -> PriceTable:
        """Read ``{"model": {"input": ..., "output": ..., "batch_discount": ...}}``;
        entries override (and extend) ``base`` (default: the built-in list)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read the price table {path}: {exc}") from None
        prices = dict((base or cls.default()).prices)
        if not isinstance(data, dict):
            raise ConfigurationError(f"{path}: expected a JSON object of model -> prices")
        for name, entry in data.items():
            try:
                prices[name] = Price(
                    float(entry["input"]),
                    float(entry["output"]),
                    float(entry.get("batch_discount", 0.5)),
                )
            except (TypeError, KeyError, ValueError):
                raise ConfigurationError(
                    f"{path}: {name!r} needs numeric 'input' and 'output' (USD per 1M tokens)"
                ) from None
        return cls(prices)

    def price(self, model: str) -> Price:
        if model in self.prices:
            return self.prices[model]
        matches = [name for name in self.prices if model.startswith(name)]
        if not matches:
            raise ConfigurationError(
                f"no price for model {model!r}; known: {', '.join(sorted(self.prices))} "
                "(add it with a price file, or name a known model to price like)"
            )
        return self.prices[max(matches, key=len)]


@dataclass(frozen=True)
class CostLine:
    label: str
    input_tokens: float
    output_tokens: float
    usd: float


@dataclass(frozen=True)
class CostReport:
    """The job's cost three ways (``lines``), for one model's prices."""

    model: str
    price: Price
    items: int
    estimated_tokens: bool
    lines: tuple[CostLine, ...]

    @classmethod
    def for_job(cls, job: BatchApiJob, price: Price, model: str) -> CostReport:
        usage = job.usage
        settings = job.runner.settings
        single_prompts = sum(
            estimate_tokens(text_of(m))
            for text in job.engine_texts
            for m in build_single_messages(
                text, instructions=settings.instructions, reasoning=settings.reasoning
            )
        )
        scale = usage.input_tokens / job.prompt_estimate if job.prompt_estimate else 1.0
        echo = 0.0
        if settings.mode is Mode.AUTO_DEMO:
            echo = scale * sum(estimate_tokens(text) for text in job.engine_texts)
        single_in = scale * single_prompts
        single_out = max(0.0, usage.output_tokens - echo)
        lines = (
            CostLine("Batch API, this job", usage.input_tokens, usage.output_tokens,
                     price.cost(usage.input_tokens, usage.output_tokens, batch=True)),
            CostLine("online, same calls", usage.input_tokens, usage.output_tokens,
                     price.cost(usage.input_tokens, usage.output_tokens, batch=False)),
            CostLine("online, one call per item (estimated)", single_in, single_out,
                     price.cost(single_in, single_out, batch=False)),
        )  # fmt: skip
        return cls(model, price, len(job.engine_texts), usage.estimated_tokens, lines)

    def summary(self) -> str:
        """One line: ``$0.0123 at gpt-4o-mini batch prices (online: $0.0246; ...)``."""
        batch, online, single = self.lines
        return (
            f"cost at {self.model} prices: ${batch.usd:.4f} via the Batch API, "
            f"${online.usd:.4f} for the same calls online, ~${single.usd:.4f} for one "
            f"call per item online"
            + (" (tokens partly estimated)" if self.estimated_tokens else "")
        )

    def table(self) -> str:
        rows = ["| | input tokens | output tokens | USD |", "|---|---:|---:|---:|"]
        for line in self.lines:
            rows.append(
                f"| {line.label} | {line.input_tokens:,.0f} | {line.output_tokens:,.0f} "
                f"| {line.usd:.4f} |"
            )
        return "\n".join(rows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "price_per_million": {
                "input": self.price.input,
                "output": self.price.output,
                "batch_discount": self.price.batch_discount,
            },
            "items": self.items,
            "estimated_tokens": self.estimated_tokens,
            "lines": [line.__dict__ for line in self.lines],
        }
