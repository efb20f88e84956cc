"""Prices that match a 2026 bill (issue 32, item 6): cache writes, the minimum cacheable
prefix per model, tiers (online, flex, batch) and a source and date on every entry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from langchain_autodemo.cli import app
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.evaluation.harness import MethodResult
from langchain_autodemo.pricing import (
    PriceTable,
    SharedPrefixes,
    cache_write_tokens,
    reused_prefix_tokens,
    shared_prefix_tokens,
)
from langchain_autodemo.tuning import TunedConfig

TABLE = PriceTable.default()
SHARED = "s" * 12_000  # 3,000 tokens at 4 characters per token
PROMPTS = [SHARED + f"question {i}" for i in range(3)]
TOKENS = [3003.0, 3003.0, 3003.0]


def _result(prompts: list[str], tokens: list[float]) -> MethodResult:
    return MethodResult(
        dataset="d", method="single", batch_size=1, n=len(prompts), correct=0,
        parse_failures=0, errors=0, calls=len(prompts), reasks=0,
        input_tokens=round(sum(tokens)), output_tokens=0, estimated_tokens=False,
        wall_time_s=1.0, call_shared_tokens=shared_prefix_tokens(prompts, tokens),
        call_reused_tokens=reused_prefix_tokens(prompts, tokens),
    )  # fmt: skip


# -- cache writes ------------------------------------------------------------------------------


def test_the_first_call_writes_the_prefix_and_the_later_ones_read_it() -> None:
    shared = shared_prefix_tokens(PROMPTS, TOKENS)
    reused = reused_prefix_tokens(PROMPTS, TOKENS)
    assert shared[0] == 0 and reused[0] == pytest.approx(3000, abs=5)
    assert reused[2] == 0  # the last call is read by nobody: it writes nothing
    sonnet = TABLE.price("claude-sonnet-4")
    hits = sum(sonnet.cacheable(t) for t in shared)
    writes = cache_write_tokens(shared, reused, sonnet)
    assert writes == sonnet.cacheable(reused[0]) == pytest.approx(3000, abs=5)
    result = _result(PROMPTS, TOKENS)
    assert (result.cached_input_tokens(sonnet), result.cache_write_tokens(sonnet)) == (
        hits,
        writes,
    )
    # by hand: the write at 1.25x input ($3.75), two reads at 0.1x ($0.30), the rest at $3
    plain = result.input_tokens - hits - writes
    by_hand = (plain * 3.00 + writes * 3.75 + hits * 0.30) / 1e6
    assert result.usd_per_1k_items(sonnet, cached=True) == pytest.approx(1000 * by_hand / 3)
    assert sonnet.cache_write == pytest.approx(1.25 * sonnet.input)


def test_openai_pays_nothing_extra_for_a_cache_write() -> None:
    mini = TABLE.price("gpt-4o-mini")
    assert mini.cache_write is None and mini.write_price == mini.input
    assert mini.cost(3000, 10, written_tokens=3000) == mini.cost(3000, 10)
    result = _result(PROMPTS, TOKENS)
    hits = result.cached_input_tokens(mini)
    by_hand = ((result.input_tokens - hits) * 0.15 + hits * 0.075) / 1e6
    assert result.usd_per_1k_items(mini, cached=True) == pytest.approx(1000 * by_hand / 3)


def test_a_prefix_that_left_the_cache_is_written_again() -> None:
    seen = SharedPrefixes(window=1)
    for prompt in ["A" * 40 + "1", "B" * 40 + "1", "A" * 40 + "2"]:
        seen.add(prompt)
    assert seen.reused == [0, 0, 0]  # the third call's A-prefix left the window: a miss
    whole = SharedPrefixes()
    for prompt in ["A" * 40 + "1", "B" * 40 + "1", "A" * 40 + "2"]:
        whole.add(prompt)
    assert whole.reused == [40, 0, 0]


def test_records_without_reuse_charge_one_write_per_prefix() -> None:
    legacy = _result(PROMPTS, TOKENS)
    legacy.call_reused_tokens = []
    sonnet = TABLE.price("claude-sonnet-4")
    assert legacy.cache_write_tokens(sonnet) == _result(PROMPTS, TOKENS).cache_write_tokens(sonnet)


# -- the minimum cacheable prefix per model --------------------------------------------------


@pytest.mark.parametrize(
    ("model", "minimum"),
    [
        ("claude-opus-4-5", 4096), ("claude-opus-4-6", 4096), ("claude-sonnet-4-6", 2048),
        ("claude-sonnet-4", 1024), ("claude-sonnet-4-5", 1024), ("claude-opus-4", 1024),
        ("claude-opus-4-1", 1024), ("claude-haiku-4-5", 4096), ("claude-3-5-haiku", 2048),
        ("gemini-2.5-flash", 2048), ("gemini-2.5-pro", 2048), ("gpt-5-mini", 1024),
    ],
)  # fmt: skip
def test_each_model_caches_from_its_own_minimum(model: str, minimum: int) -> None:
    price = TABLE.price(model)
    assert price.min_cached_tokens == minimum
    assert price.cacheable(minimum - 1) == 0 and price.cacheable(minimum) == minimum


def test_a_3000_token_prefix_is_cached_on_sonnet_4_but_not_on_haiku_4_5() -> None:
    result = _result(PROMPTS, TOKENS)
    sonnet, haiku = TABLE.price("claude-sonnet-4-20250514"), TABLE.price("claude-haiku-4-5")
    assert sonnet.cacheable(3000) == 3000 and haiku.cacheable(3000) == 0
    assert result.cached_input_tokens(sonnet) > 0 and result.cache_write_tokens(sonnet) > 0
    assert result.cached_input_tokens(haiku) == result.cache_write_tokens(haiku) == 0
    assert result.usd_per_1k_items(haiku, cached=True) == result.usd_per_1k_items(
        haiku, cached=False
    )


def test_openai_caches_in_128_token_steps() -> None:
    assert TABLE.price("gpt-5").cacheable(1024 + 200) == 1024 + 128


# -- tiers -------------------------------------------------------------------------------------


def test_flex_is_priced_at_batch_rates() -> None:
    online, flex = TABLE.price("gpt-5-mini"), TABLE.price("gpt-5-mini", "flex")
    assert flex.tier == "flex" and flex.flex
    args = (10_000, 2_000)
    assert flex.cost(*args, cached_tokens=4096) == pytest.approx(
        online.cost(*args, cached_tokens=4096, batch=True)
    )
    assert flex.cost(*args) == pytest.approx(online.cost(*args) / 2)
    assert TABLE.price("gpt-5-mini", "batch").cost(*args) == pytest.approx(flex.cost(*args))
    result = _result(PROMPTS, TOKENS)
    assert result.usd_per_1k_items(flex, cached=True) == pytest.approx(
        result.usd_per_1k_items(online, cached=True, tier="batch")
    )


@pytest.mark.parametrize("model", ["claude-sonnet-4", "gemini-2.5-flash", "gpt-4o-mini"])
def test_flex_is_refused_by_name_where_the_model_has_none(model: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{model}.*no flex tier"):
        TABLE.price(model, "flex")
    with pytest.raises(ConfigurationError, match="flex"):
        TABLE.price(model).cost(1, 1, tier="flex")


def test_an_unknown_tier_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="online, flex or batch"):
        TABLE.price("gpt-5", "priority")


# -- sources, dates and price files -------------------------------------------------------------


def test_every_built_in_entry_has_a_source_and_a_date() -> None:
    for name, price in TABLE.prices.items():
        assert price.source.startswith("https://"), name
        assert re.search(r"20\d\d-\d\d", price.as_of), name
        assert price.cached_input is not None and price.cached_input < price.input, name
        if name.startswith("claude"):
            assert price.cache_write == pytest.approx(1.25 * price.input), name
        else:
            assert price.cache_write is None, name
        assert price.flex == name.startswith("gpt-5"), name


def test_a_price_file_sets_the_new_fields(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    entry = {"input": 3, "output": 15, "cached_input": 0.3, "cache_write": 6,
             "min_cached_tokens": 2048, "cache_granularity": 1, "flex": True,
             "source": "https://example.com/prices", "as_of": "2026-12-07"}  # fmt: skip
    path.write_text(json.dumps({"claude-sonnet-4": entry}))
    price = PriceTable.from_file(path).price("claude-sonnet-4", "flex")
    assert (price.cache_write, price.min_cached_tokens, price.flex) == (6.0, 2048, True)
    assert (price.source, price.as_of) == ("https://example.com/prices", "2026-12-07")
    assert isinstance(price.input, float)


@pytest.mark.parametrize(
    ("field", "value", "wanted"),
    [
        ("cache_write", "1.25x", "a number"), ("min_cached_tokens", 1.5, "whole number"),
        ("flex", "yes", "true or false"), ("as_of", 20261207, "a string"),
        ("input", True, "a number"), ("cached_input", -1, ">= 0"),
    ],
)  # fmt: skip
def test_a_bad_price_file_field_is_refused_naming_model_and_field(
    tmp_path: Path, field: str, value: object, wanted: str
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"mine": {"input": 1, "output": 2, field: value}}))
    with pytest.raises(ConfigurationError, match=f"'mine' field '{field}' must be.*{wanted}"):
        PriceTable.from_file(path)


def test_an_unknown_price_file_field_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"mine": {"input": 1, "output": 2, "cache_wirte": 1}}))
    with pytest.raises(ConfigurationError, match="'mine' has an unknown field 'cache_wirte'"):
        PriceTable.from_file(path)


# -- --tier through the command line ------------------------------------------------------------

EVAL = ["eval", "--dataset", "gsm8k", "--limit", "4", "--batch-sizes", "4", "--model",
        "fake:answer=sum", "--no-progress", "--no-plots", "--methods", "single,batch"]  # fmt: skip


def test_eval_prices_its_report_at_the_tier(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app, [*EVAL, "--price-model", "gpt-5-mini", "--tier", "flex", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert (meta["prices"]["model"], meta["prices"]["tier"]) == ("gpt-5-mini", "flex")
    assert meta["prices"]["source"].startswith("https://") and meta["prices"]["as_of"]
    assert "flex tier" in result.output
    refused = CliRunner().invoke(app, [*EVAL, "--tier", "flex", "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "'gpt-4o-mini' has no flex tier" in refused.output
    assert not (tmp_path / "x" / "results.json").exists()


TUNE = ["tune", "--dataset", "gsm8k", "--limit", "8", "--model", "fake:answer=sum",
        "--methods", "batch", "--batch-sizes", "4", "--reasoning", "on", "--restate", "full",
        "--escalate", "0"]  # fmt: skip


def test_tune_reports_and_records_its_price_model_and_tier(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    result = CliRunner().invoke(
        app, [*TUNE, "--price-model", "claude-sonnet-4", "--tier", "batch", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    tuned = TunedConfig.read(out / "tuned.json")
    assert (tuned.tuned_on["price_model"], tuned.tuned_on["tier"]) == ("claude-sonnet-4", "batch")
    markdown = (out / "tune.md").read_text()
    assert "Prices: claude-sonnet-4, batch tier (0.5x the online rates)" in markdown
    assert "cached input 0.1x input, cache writes 1.25x input" in markdown
    assert "minimum cached prefix 1,024 tokens" in markdown
    assert "with caching off it would be" in markdown
    report = json.loads((out / "tune.json").read_text())
    assert (report["tier"], report["cache_write_multiplier"]) == ("batch", 1.25)
    again = CliRunner().invoke(
        app, [*TUNE, "--price-model", "claude-sonnet-4", "--tier", "online", "--resume",
              "--out", str(out)],
    )  # fmt: skip
    assert again.exit_code == 2 and "tier" in again.output


def test_tune_refuses_flex_for_a_model_without_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, [*TUNE, "--price-model", "claude-haiku-4-5", "--tier", "flex", "--out",
              str(tmp_path / "t")],
    )  # fmt: skip
    assert result.exit_code == 2 and "'claude-haiku-4-5' has no flex tier" in result.output


def _run_args(tmp_path: Path, name: str) -> list[str]:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"question": f"{i} + 1?"}) + "\n" for i in range(6)))
    return ["run", str(source), "-o", str(tmp_path / name), "-m", "fake:answer=sum",
            "--no-progress"]  # fmt: skip


def test_run_prices_its_cost_line_at_the_tier(tmp_path: Path) -> None:
    args = _run_args(tmp_path, "out.jsonl")
    result = CliRunner().invoke(app, [*args, "--price-model", "gpt-5-mini", "--tier", "flex"])
    assert result.exit_code == 0, result.output
    assert "Cost at gpt-5-mini flex list prices: $" in result.output
    bad = CliRunner().invoke(
        app, [*_run_args(tmp_path, "o2.jsonl"), "--price-model", "claude-sonnet-4",
              "--tier", "flex"],
    )  # fmt: skip
    assert bad.exit_code == 2 and "'claude-sonnet-4' has no flex tier" in bad.output
    assert not (tmp_path / "o2.jsonl").exists()


def test_run_charges_the_cache_write_on_anthropic(tmp_path: Path) -> None:
    long_task = "Add the numbers. " * 400  # about 1,700 tokens shared by every call
    result = CliRunner().invoke(
        app, [*_run_args(tmp_path, "out.jsonl"), "-n", "2", "-i", long_task,
              "--price-model", "claude-sonnet-4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    match = re.search(r"(\d+) written to the cache at 1.25x", result.output)
    assert match and int(match.group(1)) > 1024, result.output
