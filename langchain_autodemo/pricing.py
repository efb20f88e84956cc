"""What tokens cost: list prices with prompt caching, cache writes, tiers, and which part
of a call is cached.

Prices are USD per million tokens: ``input``, ``cached_input`` (a cache hit on a prompt
prefix), ``cache_write`` (input tokens written to the cache; ``None``: a write costs the
plain input price), ``output``, and ``batch_discount`` (the Batch API's reduction, which
OpenAI's flex tier also gets). Providers cache a prompt's prefix only from
``min_cached_tokens`` on and in steps of ``cache_granularity`` tokens (OpenAI: 1,024 and
128; Anthropic's cache needs a breakpoint, modelled as a step of 1).

How a job is charged (:meth:`Price.cost`, one model for ``autodemo eval``, ``tune``, ``run``
and the Batch API estimate): per call, the prefix it shares with an earlier call of the
job (:func:`shared_prefix_tokens`) is a cache *hit*, billed at ``cached_input``; the prefix a
later call shares with it, beyond what it read itself (:func:`reused_prefix_tokens`), is a
cache *write*, billed at ``cache_write`` (Anthropic: 1.25x input for its default 5-minute
cache, 2x for the 1-hour cache; OpenAI and Gemini's implicit caching: writes cost the plain
input price). So the first call of a shared prefix pays the write and the later ones the
read; a call whose prefix left the provider's cache writes it again.

A tier (``"online"``, ``"flex"``, ``"batch"``) scales every rate: the Batch API and
OpenAI's flex tier (online, slower, may be refused for capacity) bill at
``1 - batch_discount`` of the online rates, cached input and writes included; flex exists
only where ``flex`` is true (OpenAI's flex models), else :class:`ConfigurationError`.

The built-in table (:data:`PRICES_SOURCE`) holds list prices as published, each entry
with its ``source`` (the provider's page) and ``as_of`` (when it was read, and what was
verified); they change: override them with ``PriceTable.from_file("prices.json")``, whose
entries read ``{"my-model": {"input": 0.15, "cached_input": 0.075, "output": 0.60,
"cache_write": null, "batch_discount": 0.5, "flex": false, "min_cached_tokens": 1024,
"cache_granularity": 128, "source": "https://...", "as_of": "2026-12-07"}}``.
"""

from __future__ import annotations

import bisect
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.messages import text_of
from langchain_autodemo.planning import estimate_tokens

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

__all__ = [
    "PRICES_SOURCE",
    "TIERS",
    "Price",
    "PriceTable",
    "SharedPrefixes",
    "Tier",
    "cache_write_tokens",
    "cached_prefix_tokens",
    "prompt_text",
    "reused_prefix_tokens",
    "shared_prefix_chars",
    "shared_prefix_tokens",
    "spread_tokens",
]

Tier = Literal["online", "flex", "batch"]
"""How calls are served: ``online`` (standard), ``flex`` (OpenAI: online, slower, at Batch
API rates) or ``batch`` (a Batch API job)."""
TIERS: tuple[str, ...] = get_args(Tier)

PRICES_SOURCE = (
    "list prices (USD per 1M tokens) from the providers' pricing pages, each entry with "
    "its source and date (read 2026-12-07 from stored copies of the pages; entries not "
    "verified there keep the 2025-11 reading and say so); cached input: OpenAI's "
    "automatic prompt caching (1,024+ tokens, 128-token steps, writes free), Anthropic's "
    "cache reads (0.1x input) and 5-minute cache writes (1.25x input; 1-hour writes are "
    "2x), Gemini's implicit caching (writes free); flex and batch at 1 - batch_discount"
)

OPENAI_PRICING = "https://developers.openai.com/api/docs/pricing"
ANTHROPIC_PRICING = "https://platform.claude.com/docs/en/about-claude/pricing"
GEMINI_PRICING = "https://ai.google.dev/gemini-api/docs/pricing"


@dataclass(frozen=True)
class Price:
    """USD per million tokens, online; ``batch_discount`` is the Batch API's (and flex's)
    reduction.

    ``cached_input`` is the price of an input token served from the provider's prompt
    cache (``None``: the provider caches nothing); ``cache_write`` the price of an input
    token written to it (``None``: writes cost ``input``, as OpenAI's and Gemini's implicit
    caching; Anthropic: 1.25x input for the default 5-minute cache, 2x for the 1-hour one,
    which a price file can set). ``flex``: the provider offers a flex tier at Batch API
    rates (OpenAI). ``tier`` is the tier :meth:`cost` charges unless told otherwise
    (:meth:`PriceTable.price` sets it). ``source`` and ``as_of``: where and when the
    numbers were read."""

    input: float
    output: float
    batch_discount: float = 0.5
    cached_input: float | None = None
    min_cached_tokens: int = 1024
    cache_granularity: int = 128
    cache_write: float | None = None
    flex: bool = False
    tier: str = "online"
    source: str = ""
    as_of: str = ""

    def factor(self, tier: str | None = None) -> float:
        """What ``tier`` (default: this price's) multiplies every rate by.

        Example:
            >>> Price(1.0, 2.0, flex=True).factor("flex")
            0.5
        """
        tier = self.tier if tier is None else tier
        if tier not in TIERS:
            raise ConfigurationError(f"unknown tier {tier!r}: use online, flex or batch")
        if tier == "flex" and not self.flex:
            raise ConfigurationError(
                "the flex tier is OpenAI's (on its flex models); this price has none"
            )
        return 1.0 if tier == "online" else 1.0 - self.batch_discount

    @property
    def write_price(self) -> float:
        """USD per million input tokens written to the cache (``input`` where writes are
        not charged extra)."""
        return self.input if self.cache_write is None else self.cache_write

    def cost(
        self,
        input_tokens: float,
        output_tokens: float,
        *,
        batch: bool = False,
        cached_tokens: float = 0.0,
        written_tokens: float = 0.0,
        tier: str | None = None,
    ) -> float:
        """USD for these tokens at ``tier`` (default: this price's; ``batch=True``: the
        Batch API); ``cached_tokens`` (part of ``input_tokens``) at the cached price,
        ``written_tokens`` (part of the rest) at the cache-write price.

        Example:
            >>> claude = Price(3.0, 15.0, cached_input=0.3, cache_write=3.75)
            >>> round(claude.cost(2000, 0, written_tokens=1500) * 1e6, 2)  # a first call
            7125.0
            >>> round(claude.cost(2000, 0, cached_tokens=1500) * 1e6, 2)  # a later one
            1950.0
        """
        factor = self.factor("batch" if batch else tier)
        if self.cached_input is None:
            return factor * (input_tokens * self.input + output_tokens * self.output) / 1e6
        cached = min(cached_tokens, input_tokens)
        written = min(written_tokens, input_tokens - cached)
        usd = (
            (input_tokens - cached - written) * self.input
            + cached * self.cached_input
            + written * self.write_price
        )
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


def _openai(input: float, cached: float, output: float, *, flex: bool = False, note: str) -> Price:
    return Price(input, output, cached_input=cached, flex=flex, source=OPENAI_PRICING,
                 as_of=note)  # fmt: skip


def _anthropic(input: float, cached: float, output: float, minimum: int, note: str) -> Price:
    # 5-minute cache writes (the default TTL) at 1.25x input; 1-hour writes are 2x
    return Price(input, output, cached_input=cached, cache_write=round(1.25 * input, 4),
                 min_cached_tokens=minimum, cache_granularity=1, source=ANTHROPIC_PRICING,
                 as_of=note)  # fmt: skip


def _gemini(input: float, cached: float, output: float, minimum: int, note: str) -> Price:
    return Price(input, output, cached_input=cached, min_cached_tokens=minimum,
                 cache_granularity=1, source=GEMINI_PRICING, as_of=note)  # fmt: skip


_KEPT = "2025-11 (kept: not re-verified from a stored page on 2026-12-07)"
_CLAUDE = (
    "2026-12-07 (prices: platform.claude.com pricing table as stored, undated; minimum "
    "prefix: Anthropic's prompt-caching docs as quoted in stored pages)"
)
_GEMINI_MIN = "minimum prefix 2,048: ai.google.dev caching page, last updated 2026-10-13"

# As published (PRICES_SOURCE); override with a price file.
_DEFAULT_PRICES: dict[str, Price] = {
    # OpenAI: writes free; 1,024-token minimum, 128-token steps; flex on the gpt-5 family
    "gpt-4o-mini": _openai(0.15, 0.075, 0.60, note=_KEPT),
    "gpt-4o": _openai(2.50, 1.25, 10.00, note=_KEPT),
    "gpt-4.1-nano": _openai(0.10, 0.025, 0.40, note=_KEPT),
    "gpt-4.1-mini": _openai(0.40, 0.10, 1.60, note=_KEPT),
    "gpt-4.1": _openai(2.00, 0.50, 8.00, note=_KEPT),
    "gpt-5-nano": _openai(
        0.05,
        0.005,
        0.40,
        flex=True,
        note="2026-12-07 (developers.openai.com/api/docs/models/gpt-5-nano as stored, "
        "undated; flex: OpenAI's 2025-11 flex table, not re-verified)",
    ),  # fmt: skip
    "gpt-5-mini": _openai(
        0.25,
        0.025,
        2.00,
        flex=True,
        note="2026-12-07 (developers.openai.com/api/docs/models/gpt-5-mini as stored, "
        "undated; flex: OpenAI's 2025-11 flex table, not re-verified)",
    ),  # fmt: skip
    "gpt-5": _openai(
        1.25,
        0.125,
        10.00,
        flex=True,
        note="2025-11 (input and output cross-checked on third-party pages of 2026-03; "
        "cached input and flex not re-verified from a stored OpenAI page)",
    ),  # fmt: skip
    # Anthropic: reads 0.1x input, 5-minute writes 1.25x; minimum prefix per model
    "claude-3-5-haiku": _anthropic(0.80, 0.08, 4.00, 2048, _CLAUDE),
    "claude-haiku-4-5": _anthropic(1.00, 0.10, 5.00, 4096, _CLAUDE),
    "claude-sonnet-4": _anthropic(3.00, 0.30, 15.00, 1024, _CLAUDE),
    "claude-sonnet-4-5": _anthropic(3.00, 0.30, 15.00, 1024, _CLAUDE),
    "claude-sonnet-4-6": _anthropic(
        3.00,
        0.30,
        15.00,
        2048,
        _CLAUDE + "; 2,048 for Sonnet 4.6 per a stored gateway page (docs.orq.ai) and "
        "the behaviour reported in anthropic-sdk-python#1194, whose quote of Anthropic's "
        "docs says 1,024",
    ),  # fmt: skip
    "claude-opus-4": _anthropic(15.00, 1.50, 75.00, 1024, _CLAUDE),
    "claude-opus-4-1": _anthropic(15.00, 1.50, 75.00, 1024, _CLAUDE),
    "claude-opus-4-5": _anthropic(5.00, 0.50, 25.00, 4096, _CLAUDE),
    "claude-opus-4-6": _anthropic(5.00, 0.50, 25.00, 4096, _CLAUDE),
    # Gemini: implicit caching, writes free (storage is not charged for implicit caches)
    "gemini-2.5-flash": _gemini(
        0.30,
        0.075,
        2.50,
        2048,
        f"input/output: 2025-11, cross-checked on third-party pages of 2026-03; cached "
        f"input kept from 2025-11 (not re-verified); {_GEMINI_MIN}",
    ),  # fmt: skip
    "gemini-2.5-pro": _gemini(
        1.25,
        0.31,
        10.00,
        2048,
        f"prompts up to 200k tokens; input/output from third-party pages of 2026-03, "
        f"cached input from a 2025 forum quote of Google's page (not verified); "
        f"{_GEMINI_MIN}",
    ),  # fmt: skip
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
            prices[name] = _entry(path, name, entry)
        return cls(prices)

    def price(self, model: str, tier: str = "online") -> Price:
        """``model``'s price, charging ``tier`` (``ConfigurationError`` naming the model
        for an unknown model, or for flex where its provider has none)."""
        if model in self.prices:
            found = self.prices[model]
        else:
            matches = [name for name in self.prices if model.startswith(name)]
            if not matches:
                raise ConfigurationError(
                    f"no price for model {model!r}; known: {', '.join(sorted(self.prices))} "
                    "(add it with a price file, or name a known model to price like)"
                )
            found = self.prices[max(matches, key=len)]
        if tier not in TIERS:
            raise ConfigurationError(f"unknown tier {tier!r}: use online, flex or batch")
        if tier == "flex" and not found.flex:
            raise ConfigurationError(
                f"--tier flex: {model!r} has no flex tier (flex is OpenAI's, on its flex "
                "models, e.g. gpt-5-mini); use online or batch, or mark the model "
                '"flex": true in a price file'
            )
        return replace(found, tier=tier)

    def as_dict(self, model: str, tier: str = "online") -> dict[str, Any]:
        return {"model": model, **asdict(self.price(model, tier)), "table": PRICES_SOURCE}


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "input": (int, float),
    "output": (int, float),
    "batch_discount": (int, float),
    "cached_input": (int, float, type(None)),
    "cache_write": (int, float, type(None)),
    "min_cached_tokens": (int,),
    "cache_granularity": (int,),
    "flex": (bool,),
    "source": (str,),
    "as_of": (str,),
}
_WANTED = {
    (int, float): "a number (USD per 1M tokens)",
    (int, float, type(None)): "a number (USD per 1M tokens) or null",
    (int,): "a whole number of tokens",
    (bool,): "true or false",
    (str,): "a string",
}


def _entry(path: str | Path, name: str, entry: Any) -> Price:
    """One price-file entry as a :class:`Price`; a wrong field is refused by name."""
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{path}: {name!r} must be an object of prices")
    for required in ("input", "output"):
        if required not in entry:
            raise ConfigurationError(
                f"{path}: {name!r} needs numeric 'input' and 'output' (USD per 1M tokens)"
            )
    known = {f.name for f in fields(Price)} - {"tier"}
    for key, value in entry.items():
        if key not in known:
            raise ConfigurationError(
                f"{path}: {name!r} has an unknown field {key!r}; known: {', '.join(sorted(known))}"
            )
        types = _FIELD_TYPES[key]
        # a bool is an int to Python: only "flex" takes one
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigurationError(
                f"{path}: {name!r} field {key!r} must be {_WANTED[types]}, got {value!r}"
            )
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ConfigurationError(f"{path}: {name!r} field {key!r} must be >= 0, got {value}")
    if not 0 <= entry.get("batch_discount", 0.5) < 1:
        raise ConfigurationError(f"{path}: {name!r} field 'batch_discount' must be in [0, 1)")
    values: dict[str, Any] = {
        k: float(v) if float in _FIELD_TYPES[k] and isinstance(v, int) else v
        for k, v in entry.items()
    }
    return Price(**values)


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
    earlier ones, not all of them. ``reused[k]``: the characters of the ``k``-th prompt
    that a later prompt shared (what it wrote to a provider's cache for them).

    Example:
        >>> seen = SharedPrefixes(window=1)
        >>> [seen.add(p) for p in ["abcx", "abcy", "zzz", "abcxq"]]
        [0, 3, 0, 0]
        >>> seen.reused
        [3, 0, 0, 0]
    """

    def __init__(self, window: int | None = None) -> None:
        if window is not None and window < 1:
            raise ConfigurationError(f"window must be at least 1, got {window}")
        self.window = window
        self.reused: list[int] = []
        self._sorted: list[tuple[str, int]] = []
        self._order: deque[tuple[str, int]] = deque()

    def add(self, prompt: str) -> int:
        """The characters ``prompt`` shares with an earlier prompt; then remember it."""
        index = len(self.reused)
        entry = (prompt, index)
        place = bisect.bisect_left(self._sorted, entry)
        shared, source = 0, None
        for text, k in self._sorted[max(0, place - 1) : place + 1]:
            common = _common_prefix_length(prompt, text)
            if common > shared:
                shared, source = common, k
        if source is not None:
            self.reused[source] = max(self.reused[source], shared)
        self.reused.append(0)
        self._sorted.insert(place, entry)
        self._order.append(entry)
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


def reused_prefix_tokens(prompts: Sequence[str], input_tokens: Sequence[float]) -> list[float]:
    """Per call, the input tokens of its prefix that a later call of the same job shares
    (what the call writes to a provider's cache for them), by the call's own tokens per
    character.

    Example:
        >>> reused_prefix_tokens(["abcx", "abcy", "zzz"], [40, 40, 30])
        [30.0, 0.0, 0.0]
    """
    seen = SharedPrefixes()
    for prompt in prompts:
        seen.add(prompt)
    return [
        tokens * chars / len(prompt) if prompt else 0.0
        for prompt, tokens, chars in zip(prompts, input_tokens, seen.reused, strict=True)
    ]


def cache_write_tokens(
    shared: Sequence[float], reused: Sequence[float] | None, price: Price
) -> int:
    """The input tokens a job writes to a provider's cache: per call, the cacheable prefix
    a later call reads from it, less what the call read itself (``shared``, reused:
    :func:`shared_prefix_tokens`, :func:`reused_prefix_tokens`). Without ``reused``
    (records from before it was kept) each new, longer hit is taken as written once,
    by an earlier call.

    Example:
        >>> claude = Price(3.0, 15.0, cached_input=0.3, min_cached_tokens=1024,
        ...                cache_granularity=1)
        >>> cache_write_tokens([0, 3000, 3000], [3000, 3000, 0], claude)  # written once
        3000
        >>> cache_write_tokens([0, 3000, 3000], None, claude)
        3000
    """
    if reused is not None and len(reused) == len(shared):
        return sum(
            max(0, price.cacheable(later) - price.cacheable(earlier))
            for earlier, later in zip(shared, reused, strict=True)
        )
    written = 0
    for tokens in shared:
        hit = price.cacheable(tokens)
        written = max(written, hit)
    return written
