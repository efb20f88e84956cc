"""What a job costs: its tokens at batch prices, online prices, and one call per item.

Prices come from :mod:`langchain_autodemo.pricing` (list prices with their source;
``PriceTable.from_file("prices.json")`` overrides them, or ``--batch-option
prices=prices.json`` on the command line).

The row "online, one call per item" is an estimate: its input is every item's
single-question prompt, counted as the provider counted this job's prompts (the job's
reported input tokens over its prompts' character estimate, times the single prompts'
character estimate); its output is the job's output, less the restated questions in
``auto_demo`` mode (one call per item does not restate). With prompt caching, its first
call writes the shared prefix (at the cache-write price, 1.25x input on Anthropic) and the
later calls read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_autodemo.engine import restated_tokens
from langchain_autodemo.planning import estimate_message_tokens
from langchain_autodemo.pricing import Price, PriceTable
from langchain_autodemo.prompts import build_single_messages

if TYPE_CHECKING:
    from langchain_autodemo.batch_api.job import BatchApiJob

__all__ = ["CostLine", "CostReport", "Price", "PriceTable"]


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
    """This job via the Batch API, the same calls online, one call per item online."""
    single_cached: CostLine | None = None
    """One call per item online, the shared prompt prefix served from the provider's cache
    from the second call on (the honest baseline)."""

    @classmethod
    def for_job(cls, job: BatchApiJob, price: Price, model: str) -> CostReport:
        usage = job.usage
        settings = job.runner.settings
        prompts = [
            build_single_messages(
                text,
                instructions=settings.asked_instructions,
                reasoning=settings.reasoning,
                demonstrations=job.runner.demonstrations,
            )
            for text in job.engine_texts
        ]
        single_prompts = sum(estimate_message_tokens(p) for p in prompts)
        scale = usage.input_tokens / job.prompt_estimate if job.prompt_estimate else 1.0
        echo = scale * sum(restated_tokens(text, settings) for text in job.engine_texts)
        single_in = scale * single_prompts
        single_out = max(0.0, usage.output_tokens - echo)
        # single calls share everything before the question (system prompt, instructions,
        # shared exemplars): a provider caches it from the second call on
        prefix = scale * estimate_message_tokens(prompts[0][:-1]) if prompts else 0
        single_cached = price.cacheable(prefix) * max(0, len(prompts) - 1)
        # ... after the first call wrote it (at the cache-write price, where charged)
        single_written = price.cacheable(prefix) if len(prompts) > 1 else 0
        lines = (
            CostLine("Batch API, this job", usage.input_tokens, usage.output_tokens,
                     price.cost(usage.input_tokens, usage.output_tokens, tier="batch",
                                cached_tokens=usage.cached_input_tokens)),
            CostLine("online, same calls", usage.input_tokens, usage.output_tokens,
                     price.cost(usage.input_tokens, usage.output_tokens, tier="online",
                                cached_tokens=usage.cached_input_tokens)),
            CostLine("online, one call per item (estimated)", single_in, single_out,
                     price.cost(single_in, single_out, tier="online")),
        )  # fmt: skip
        cached = CostLine(
            "online, one call per item with prompt caching (estimated)", single_in, single_out,
            price.cost(single_in, single_out, cached_tokens=single_cached,
                       written_tokens=single_written, tier="online"),
        )  # fmt: skip
        return cls(model, price, len(job.engine_texts), usage.estimated_tokens, lines, cached)

    def summary(self) -> str:
        """One line: ``$0.0123 at gpt-4o-mini batch prices (online: $0.0246; ...)``."""
        batch, online, single = self.lines
        cached = (
            f" (~${self.single_cached.usd:.4f} with prompt caching)" if self.single_cached else ""
        )
        return (
            f"cost at {self.model} prices: ${batch.usd:.4f} via the Batch API, "
            f"${online.usd:.4f} for the same calls online, ~${single.usd:.4f} for one "
            f"call per item online{cached}"
            + (" (tokens partly estimated)" if self.estimated_tokens else "")
        )

    def table(self) -> str:
        rows = [
            "| | input tokens | output tokens | USD | USD per 1,000 items |",
            "|---|---:|---:|---:|---:|",
        ]
        for line in (*self.lines, *([self.single_cached] if self.single_cached else [])):
            per_1k = 1000 * line.usd / self.items if self.items else 0.0
            rows.append(
                f"| {line.label} | {line.input_tokens:,.0f} | {line.output_tokens:,.0f} "
                f"| {line.usd:.4f} | {per_1k:.4f} |"
            )
        return "\n".join(rows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "price_per_million": {
                "input": self.price.input,
                "output": self.price.output,
                "batch_discount": self.price.batch_discount,
                "cached_input": self.price.cached_input,
                "cache_write": self.price.cache_write,
            },
            "source": self.price.source,
            "as_of": self.price.as_of,
            "items": self.items,
            "estimated_tokens": self.estimated_tokens,
            "lines": [line.__dict__ for line in self.lines],
            "single_cached": self.single_cached.__dict__ if self.single_cached else None,
        }
