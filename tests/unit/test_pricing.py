"""Dollars with prompt caching, shared exemplars (k-shot) and the eval's cost columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.evaluation.harness import MethodResult
from langchain_autodemo.evaluation.report import costs, markdown_table
from langchain_autodemo.pricing import Price, PriceTable, cached_prefix_tokens
from tests.fakes import ScriptedChatModel, solver

OPENAI_LIKE = Price(1.0, 4.0, cached_input=0.5, min_cached_tokens=1024, cache_granularity=128)


@pytest.mark.parametrize(
    ("prefix", "cached"),
    [(0, 0), (1023, 0), (1024, 1024), (1151, 1024), (1152, 1152), (5000, 4992)],
)
def test_openai_caches_from_1024_tokens_in_steps_of_128(prefix: int, cached: int) -> None:
    assert OPENAI_LIKE.cacheable(prefix) == cached


def test_a_provider_without_caching_caches_nothing() -> None:
    assert Price(1.0, 4.0).cacheable(10_000) == 0
    assert Price(1.0, 4.0).cost(1000, 0, cached_tokens=1000) == Price(1.0, 4.0).cost(1000, 0)


def test_cached_tokens_are_billed_at_the_cached_price() -> None:
    # 2,000 input of which 1,024 cached, 100 output: (976 * 1 + 1024 * 0.5 + 100 * 4) / 1e6
    assert OPENAI_LIKE.cost(2000, 100, cached_tokens=1024) == pytest.approx(1888 / 1e6)
    assert OPENAI_LIKE.cost(2000, 100, cached_tokens=1024, batch=True) == pytest.approx(944 / 1e6)


def test_the_shared_prefix_of_each_call_is_what_an_earlier_call_already_sent() -> None:
    shared = "s" * 4400  # 1,100 tokens at 4 characters per token
    prompts = [shared + "question one", shared + "question two", "other" * 100]
    tokens = [1103, 1103, 125]
    assert cached_prefix_tokens(prompts, tokens, OPENAI_LIKE) == [0, 1024, 0]


def test_a_price_file_adds_caching_rules(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {"mine": {"input": 1, "output": 2, "cached_input": 0.1, "min_cached_tokens": 10}}
        )
    )
    price = PriceTable.from_file(path).price("mine")
    assert (price.cached_input, price.min_cached_tokens, price.cache_granularity) == (0.1, 10, 128)
    path.write_text(json.dumps({"mine": {"input": "x"}}))
    with pytest.raises(ConfigurationError, match="mine"):
        PriceTable.from_file(path)


def test_every_built_in_price_names_its_caching() -> None:
    for name, price in PriceTable.default().prices.items():
        assert price.cached_input is not None and price.cached_input < price.input, name


# -- shared exemplars reach every mode, first -------------------------------------------------

EXEMPLARS = [("What is 10 + 10?", "10 and 10 make 20.\nThe answer is 20.")]


@pytest.mark.parametrize("mode", ["single", "batch", "auto_demo"])
def test_shared_exemplars_come_first_in_every_mode(mode: str) -> None:
    model = ScriptedChatModel(script=solver())
    runner = AutoDemoBatchRunnable(model, mode=mode, batch_size=2, demonstrations=EXEMPLARS)
    assert runner.batch(["What is 1 + 2?", "What is 3 + 4?"]) == ["3", "7"]
    for call in model.calls:
        human, ai = call[1], call[2]
        assert isinstance(human, HumanMessage) and "What is 10 + 10?" in str(human.content)
        assert isinstance(ai, AIMessage) and "The answer is 20." in str(ai.content)


def test_a_restatement_of_a_shared_exemplar_is_never_an_inputs_answer() -> None:
    def script(messages, n):
        return "Q[1]: What is 10 + 10?\nA[1]: The answer is 20."

    model = ScriptedChatModel(script=script)
    runner = AutoDemoBatchRunnable(model, batch_size=2, demonstrations=EXEMPLARS, max_attempts=1)
    results = runner.batch(["What is 10 + 11?", "What is 3 + 4?"], return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)


@pytest.mark.parametrize("bad", [[("q",)], [("q", "")], ["qa"], [(1, "a")]])
def test_malformed_exemplars_are_refused(bad) -> None:
    with pytest.raises(ConfigurationError, match="demonstrations"):
        AutoDemoBatchRunnable(ScriptedChatModel(script=solver()), demonstrations=bad)


# -- the report's cost columns ------------------------------------------------------------------


def _result(method: str, n: int, inp: int, out: int, shared: list[float]) -> MethodResult:
    return MethodResult(
        dataset="d", method=method, batch_size=1 if method == "single" else 8, n=n, correct=0,
        parse_failures=0, errors=0, calls=len(shared), reasks=0, input_tokens=inp,
        output_tokens=out, estimated_tokens=False, wall_time_s=1.0, call_shared_tokens=shared,
    )  # fmt: skip


def test_costs_per_1k_items_against_single_with_caching_by_hand() -> None:
    single = _result("single", 4, 4 * 1200, 4 * 100, [0, 1100, 1100, 1100])
    packed = _result("auto_demo", 4, 1600, 4 * 150, [0])
    table = costs([single, packed], OPENAI_LIKE)
    # single: input 4800 (3 x 1024 cached), output 400
    single_cached = (4800 - 3072) * 1.0 + 3072 * 0.5 + 400 * 4.0
    single_plain = 4800 * 1.0 + 400 * 4.0
    packed_plain = 1600 * 1.0 + 600 * 4.0
    s, p = table[("single", 1)], table[("auto_demo", 8)]
    assert s["usd_per_1k_items"] == pytest.approx(1000 * single_plain / 1e6 / 4, abs=1e-5)
    assert s["usd_per_1k_items_cached"] == pytest.approx(1000 * single_cached / 1e6 / 4, abs=1e-5)
    assert p["vs_single_cached"] == pytest.approx(packed_plain / single_cached, abs=1e-3)
    text = markdown_table([single, packed], ("my-model", OPENAI_LIKE))
    assert "x single cached" in text and "my-model" in text


def test_the_sorted_shared_prefix_equals_the_pairwise_one() -> None:
    import os
    import random

    from langchain_autodemo.pricing import shared_prefix_chars

    def pairwise(prompts: list[str]) -> list[int]:
        return [
            max((len(os.path.commonprefix([p, e])) for e in prompts[:i]), default=0)
            for i, p in enumerate(prompts)
        ]

    rng = random.Random(7)
    for _ in range(300):
        prompts = [
            "".join(rng.choice("ab") for _ in range(rng.randint(0, 8)))
            for _ in range(rng.randint(0, 12))
        ]
        assert shared_prefix_chars(prompts) == pairwise(prompts), prompts


def test_a_windowed_shared_prefix_compares_with_the_last_prompts_only() -> None:
    import os
    import random

    from langchain_autodemo.errors import ConfigurationError
    from langchain_autodemo.pricing import SharedPrefixes

    rng = random.Random(11)
    for _ in range(300):
        window = rng.randint(1, 4)
        prompts = [
            "".join(rng.choice("ab") for _ in range(rng.randint(0, 6)))
            for _ in range(rng.randint(0, 12))
        ]
        seen = SharedPrefixes(window=window)
        expected = [
            max((len(os.path.commonprefix([p, e])) for e in prompts[max(0, i - window) : i]),
                default=0)
            for i, p in enumerate(prompts)
        ]  # fmt: skip
        assert [seen.add(p) for p in prompts] == expected, (window, prompts)
    with pytest.raises(ConfigurationError, match="window"):
        SharedPrefixes(window=0)
