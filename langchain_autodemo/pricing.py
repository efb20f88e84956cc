"""What tokens cost: list prices with prompt caching, and which part of a call is cached.

Prices are USD per million tokens: ``input``, ``cached_input`` (a cache hit on a prompt
prefix), ``output``, and the Batch API's ``batch_discount``. Providers cache a prompt's
prefix only from ``min_cached_tokens`` on and in steps of ``cache_granularity`` tokens
(OpenAI: 1,024 and 128; Anthropic's cache reads need an explicit breakpoint, modelled as
a step of 1). :func:`cached_prefix_tokens` says, per call of a job, how many input tokens
it shares with an earlier call of that job (the system message, the instructions, shared
exemplars and demonstrations): that is what a provider's cache would serve.

The built-in table (:data:`PRICES_SOURCE`) holds list prices as published; they change:
override them with ``PriceTable.from_file("prices.json")``, whose entries read
``{"my-model": {"input": 0.15, "cached_input": 0.075, "output": 0.60,
"batch_discount": 0.5, "min_cached_tokens": 1024, "cache_granularity": 128}}``.
"""

from __future__ import annotations

import bisect
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.parser import text_of
from langchain_autodemo.planning import estimate_tokens

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

__all__ = [
    "PRICES_SOURCE",
    "Price",
    "PriceTable",
    "SharedPrefixes",
    "cached_prefix_tokens",
    "prompt_text",
    "shared_prefix_chars",
    "shared_prefix_tokens",
    "spread_tokens",
]

PRICES_SOURCE = (
    "list prices (standard tier, USD per 1M tokens) from the providers' pricing pages, "
    "read 2025-11; cached input: OpenAI's automatic prompt caching (prompts of 1,024+ "
    "tokens, 128-token steps), Anthropic's cache reads (0.1x input; cache writes at "
    "1.25x are not modelled), Gemini's implicit caching"
)


@dataclass(frozen=True)
class Price:
    """USD per million tokens, online; ``batch_discount`` is the Batch API's reduction.

    ``cached_input`` is the price of an input token served from the provider's prompt
    cache (``None``: the provider caches nothing)."""

    input: float
    output: float
    batch_discount: float = 0.5
    cached_input: float | None = None
    min_cached_tokens: int = 1024
    cache_granularity: int = 128

    def cost(
        self,
        input_tokens: float,
        output_tokens: float,
        *,
        batch: bool = False,
        cached_tokens: float = 0.0,
    ) -> float:
        """USD for these tokens; ``cached_tokens`` (part of ``input_tokens``) at the
        cached price."""
        factor = (1.0 - self.batch_discount) if batch else 1.0
        cached = min(cached_tokens, input_tokens) if self.cached_input is not None else 0.0
        cached_price = self.cached_input if self.cached_input is not None else self.input
        usd = (input_tokens - cached) * self.input + cached * cached_price
        return factor * (usd + output_tokens * self.output) / 1e6

    def cacheable(self, prefix_tokens: float) -> int:
        """How many tokens of a shared prefix this provider serves from its cache.

        Example:
            >>> Price(0.15, 0.6, cached_input=0.075).cacheable(1_500)
            1408
            >>> Price(0.15, 0.6, cached_input=0.075).cacheable(1_000)
            0
        """
        if self.cached_input is None or prefix_tokens < self.min_cached_tokens:
            return 0
        step = max(1, self.cache_granularity)
        extra = int(prefix_tokens - self.min_cached_tokens) // step * step
        return self.min_cached_tokens + extra


# As published (PRICES_SOURCE); override with a price file.
_DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60, cached_input=0.075),
    "gpt-4o": Price(2.50, 10.00, cached_input=1.25),
    "gpt-4.1-nano": Price(0.10, 0.40, cached_input=0.025),
    "gpt-4.1-mini": Price(0.40, 1.60, cached_input=0.10),
    "gpt-4.1": Price(2.00, 8.00, cached_input=0.50),
    "claude-3-5-haiku": Price(
        0.80, 4.00, cached_input=0.08, min_cached_tokens=2048, cache_granularity=1
    ),
    "claude-haiku-4-5": Price(
        1.00, 5.00, cached_input=0.10, min_cached_tokens=2048, cache_granularity=1
    ),
    "claude-sonnet-4": Price(
        3.00, 15.00, cached_input=0.30, min_cached_tokens=1024, cache_granularity=1
    ),
    "gemini-2.5-flash": Price(
        0.30, 2.50, cached_input=0.075, min_cached_tokens=1024, cache_granularity=1
    ),
}


class PriceTable:
    """Model name -> :class:`Price`; a name also matches its dated versions
    (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``), the longest known prefix winning.

    Example:
        >>> table = PriceTable.default()
        >>> table.price("gpt-4o-mini-2024-07-18").input
        0.15
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
        """Read ``{"model": {"input": ..., "output": ..., ...}}`` (see the module);
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
                cached = entry.get("cached_input")
                prices[name] = Price(
                    float(entry["input"]),
                    float(entry["output"]),
                    float(entry.get("batch_discount", 0.5)),
                    None if cached is None else float(cached),
                    int(entry.get("min_cached_tokens", 1024)),
                    int(entry.get("cache_granularity", 128)),
                )
            except (TypeError, KeyError, ValueError, AttributeError):
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

    def as_dict(self, model: str) -> dict[str, Any]:
        return {"model": model, **asdict(self.price(model)), "source": PRICES_SOURCE}


def prompt_text(messages: Sequence[BaseMessage]) -> str:
    """A call's prompt as a prefix cache compares it: each message as ``type: text``, one
    per line (so a change of role changes the text, as it changes what is cached)."""
    return "\n".join(f"{m.type}: {text_of(m)}" for m in messages)


def spread_tokens(prompts: Sequence[str], input_tokens: float) -> list[float]:
    """A job's counted input tokens spread over its calls by each prompt's estimated
    size: per-call counts where the model reported only a total.

    Example:
        >>> spread_tokens(["a" * 39, "a" * 79], 300)  # estimated 10 and 20 tokens
        [100.0, 200.0]
    """
    estimates = [estimate_tokens(p) for p in prompts]
    total = sum(estimates)
    scale = input_tokens / total if total else 1.0
    return [scale * e for e in estimates]


class SharedPrefixes:
    """Prompts seen so far, and for each new one the longest prefix it shares with one
    of them: a job's calls fed one by one as they are sent.

    ``window`` keeps only that many most recent prompts (bounded memory for a long run,
    and closer to a provider's cache, which keeps a prefix for minutes, not forever);
    ``None`` keeps every prompt. Among sorted strings the longest common prefix with a
    new one is found next to its place in the order, so each prompt is compared with two
    earlier ones, not all of them.

    Example:
        >>> seen = SharedPrefixes(window=1)
        >>> [seen.add(p) for p in ["abcx", "abcy", "zzz", "abcxq"]]
        [0, 3, 0, 0]
    """

    def __init__(self, window: int | None = None) -> None:
        if window is not None and window < 1:
            raise ConfigurationError(f"window must be at least 1, got {window}")
        self.window = window
        self._sorted: list[str] = []
        self._order: deque[str] = deque()

    def add(self, prompt: str) -> int:
        """The characters ``prompt`` shares with an earlier prompt; then remember it."""
        place = bisect.bisect_left(self._sorted, prompt)
        neighbours = self._sorted[max(0, place - 1) : place + 1]
        shared = max((_common_prefix_length(prompt, n) for n in neighbours), default=0)
        self._sorted.insert(place, prompt)
        self._order.append(prompt)
        if self.window is not None and len(self._order) > self.window:
            oldest = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        return shared


def _common_prefix_length(a: str, b: str) -> int:
    """``len(os.path.commonprefix([a, b]))`` by bisection on slice equality: string
    comparison runs in C, where ``commonprefix`` steps through a shared system prompt one
    character at a time in Python (it runs once per model call of ``autodemo run``)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def shared_prefix_chars(prompts: Sequence[str]) -> list[int]:
    """For each prompt, the length of the longest prefix it shares with an earlier one
    (:class:`SharedPrefixes` over all of them).

    Example:
        >>> shared_prefix_chars(["abcx", "abcy", "zzz", "abcxq"])
        [0, 3, 0, 4]
    """
    seen = SharedPrefixes()
    return [seen.add(prompt) for prompt in prompts]


def shared_prefix_tokens(prompts: Sequence[str], input_tokens: Sequence[float]) -> list[float]:
    """Per call, the input tokens of the prefix it shares with an earlier call of the same
    job, by the call's own tokens per character: what a provider's prompt cache could serve
    before its own rules (:meth:`Price.cacheable`) apply."""
    return [
        tokens * chars / len(prompt) if prompt else 0.0
        for prompt, tokens, chars in zip(
            prompts, input_tokens, shared_prefix_chars(prompts), strict=True
        )
    ]


def cached_prefix_tokens(
    prompts: Sequence[str], input_tokens: Sequence[float], price: Price
) -> list[int]:
    """Per call, the input tokens a provider's prompt cache would serve: its shared prefix
    (:func:`shared_prefix_tokens`) rounded down to the provider's cache steps.

    Example:
        >>> p = Price(0.15, 0.6, cached_input=0.075)
        >>> shared = "x" * 8000
        >>> cached_prefix_tokens([shared + "a", shared + "b"], [2000, 2000], p)
        [0, 1920]
    """
    return [price.cacheable(t) for t in shared_prefix_tokens(prompts, input_tokens)]
