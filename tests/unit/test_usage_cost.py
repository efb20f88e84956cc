"""Usage in dollars (issue 22): ``track_usage`` prices its tokens, provider-reported cached
input at the cached price, and ``autodemo run`` ends with the run's cost line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from langchain_autodemo import AutoDemoBatchRunnable, UsageStats, track_usage
from langchain_autodemo.cli.commands import app
from langchain_autodemo.pricing import Price
from langchain_autodemo.testing import ScriptedChatModel
from tests.fakes import asked_questions, well_formed

PRICE = Price(0.15, 0.60, cached_input=0.075)


def test_usd_prices_cached_input_at_the_cached_price_by_hand() -> None:
    stats = UsageStats(input_tokens=2_000, output_tokens=500, cached_input_tokens=1_024)
    # (2000 - 1024) * 0.15 + 1024 * 0.075 + 500 * 0.60, per million
    assert stats.usd(PRICE) == pytest.approx((976 * 0.15 + 1024 * 0.075 + 500 * 0.60) / 1e6)
    assert stats.usd(PRICE, batch=True) == pytest.approx(stats.usd(PRICE) / 2)
    assert stats.usd_per_1k_items(PRICE) is None  # no item yet
    stats.items = 4
    assert stats.usd_per_1k_items(PRICE) == pytest.approx(250 * stats.usd(PRICE))


def test_provider_reported_cached_tokens_reach_track_usage() -> None:
    def script(messages: list[Any], _: int) -> Any:
        usage = {"input_tokens": 1500, "output_tokens": 40, "total_tokens": 1540,
                 "input_token_details": {"cache_read": 1280}}  # fmt: skip
        return well_formed(asked_questions(messages), lambda q: "4"), {"usage": usage}

    runner = AutoDemoBatchRunnable(ScriptedChatModel(script=script), batch_size=2)
    with track_usage() as usage:
        runner.batch(["2 + 2?", "1 + 3?"])
    assert (usage.input_tokens, usage.cached_input_tokens) == (1500, 1280)
    assert usage.as_dict()["cached_input_tokens"] == 1280
    assert usage.usd(PRICE) < UsageStats(input_tokens=1500, output_tokens=40).usd(PRICE)


def test_autodemo_run_ends_with_its_cost_and_refuses_an_unknown_price_model(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"question": f"{i} + 1?"}) + "\n" for i in range(4)))
    args = ["run", str(source), "-o", str(tmp_path / "out.jsonl"), "-m", "fake:answer=sum",
            "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--price-model", "gpt-4.1-mini"])
    assert result.exit_code == 0, result.output
    assert "Cost at gpt-4.1-mini online list prices: $" in result.output
    assert "per 1,000 items" in result.output
    bad = CliRunner().invoke(app, [*args[:3], str(tmp_path / "o2.jsonl"), *args[4:],
                                   "--price-model", "nope"])  # fmt: skip
    assert bad.exit_code == 2 and "no price for model 'nope'" in bad.output
    assert not (tmp_path / "o2.jsonl").exists()  # refused before anything was written


def test_autodemo_run_prices_the_shared_prefix_a_provider_would_cache(tmp_path: Path) -> None:
    import re

    from langchain_autodemo.pricing import PriceTable

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"question": f"{i} + 1?"}) + "\n" for i in range(6)))
    long_task = "Add the numbers. " * 400  # about 1,700 tokens shared by every call
    result = CliRunner().invoke(app, [
        "run", str(source), "-o", str(tmp_path / "out.jsonl"), "-m", "fake:answer=sum",
        "-n", "2", "-i", long_task, "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    tokens = re.search(r"tokens in/out: (\d+)/(\d+)", result.output)
    cost = re.search(
        r"list prices: \$([\d.]+) \(\$([\d.]+) per 1,000 items\); with prompt caching "
        r"\$([\d.]+) \(\$([\d.]+) per 1,000 items, (\d+) input tokens of prefixes shared",
        result.output,
    )
    assert tokens and cost, result.output
    inputs, outputs = int(tokens[1]), int(tokens[2])
    cacheable = int(cost[5])
    price = PriceTable.default().price("gpt-4o-mini")
    # Three calls: the first caches nothing, the next two their shared system message
    # (1,024 tokens and whole 128-token steps past it).
    per_call = inputs / 3
    assert 2 * 1024 <= cacheable <= 2 * per_call and (cacheable - 2 * 1024) % 128 == 0
    assert float(cost[1]) == pytest.approx(price.cost(inputs, outputs), abs=1e-4)
    assert float(cost[3]) == pytest.approx(
        price.cost(inputs, outputs, cached_tokens=cacheable), abs=1e-4
    )
    assert float(cost[4]) == pytest.approx(1000 * float(cost[3]) / 6, abs=1e-3)
    assert float(cost[3]) < float(cost[1])
