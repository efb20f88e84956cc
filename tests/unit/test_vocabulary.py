"""One name per concept (issue 25): renamed public names keep a deprecated alias that
warns and gives the same value."""

from __future__ import annotations

import pytest

from langchain_autodemo import AutoDemoBatchRunnable
from langchain_autodemo.testing import ScriptedAutoDemoModel


def test_item_result_call_items_is_what_the_call_asked_and_batch_size_is_deprecated() -> None:
    runner = AutoDemoBatchRunnable(ScriptedAutoDemoModel(), batch_size=4, include_details=True)
    results = runner.batch([f"What is {i} + 1?" for i in range(6)])
    assert [r.call_items for r in results] == [4, 4, 4, 4, 2, 2]
    with pytest.warns(DeprecationWarning, match="call_items"):
        assert results[-1].batch_size == 2


def test_usage_counts_reasks_and_the_retry_names_are_deprecated_aliases() -> None:
    from langchain_autodemo import track_usage

    runner = AutoDemoBatchRunnable(ScriptedAutoDemoModel(skip=2), batch_size=4)
    with track_usage() as usage:
        runner.batch([f"What is {i} + 1?" for i in range(4)])
    assert usage.reasks >= 1 and usage.reask_output_tokens > 0
    assert set(usage.as_dict()) >= {"reasks", "reask_input_tokens", "reask_output_tokens"}
    assert "retries" not in usage.as_dict()
    for old, new in (("retries", "reasks"), ("retry_input_tokens", "reask_input_tokens"),
                     ("retry_output_tokens", "reask_output_tokens")):  # fmt: skip
        with pytest.warns(DeprecationWarning, match=new):
            assert getattr(usage, old) == getattr(usage, new)


def test_a_model_calls_is_retry_is_a_deprecated_alias_of_is_reask() -> None:
    from langchain_autodemo.engine import Engine, EngineSettings
    from langchain_autodemo.planning import PlannedBatch

    engine = Engine(["1 + 1?"], [PlannedBatch((0,))], EngineSettings())
    [call] = engine.initial_calls()
    assert call.is_reask is False
    with pytest.warns(DeprecationWarning, match="is_reask"):
        assert call.is_retry is False


def test_results_written_with_the_old_names_are_read_under_the_new_ones(tmp_path) -> None:
    from langchain_autodemo.evaluation.harness import stored_fields

    assert stored_fields({"retries": 2, "retry_input_tokens": 5, "calls": 3}) == {
        "reasks": 2, "reask_input_tokens": 5, "calls": 3,
    }  # fmt: skip


def test_similarity_is_the_groupings_name_and_partition_a_deprecated_alias() -> None:
    from langchain_autodemo import SimilarityBatchSelector
    from langchain_autodemo.embeddings import WordLlamaEmbeddings

    embeddings = WordLlamaEmbeddings()
    assert SimilarityBatchSelector(embeddings=embeddings).grouping == "similarity"
    with pytest.warns(DeprecationWarning, match="similarity"):
        old = SimilarityBatchSelector(embeddings=embeddings, grouping="partition")
    assert old.grouping == "similarity"


def test_plan_is_the_planning_steps_name_and_batch_plan_a_deprecated_alias() -> None:
    from langchain_autodemo import runnable

    with pytest.warns(DeprecationWarning, match="BatchPlan"):
        assert runnable.BatchPlan is runnable.Plan


def test_a_ray_jobs_tuned_config_is_tuned_config_and_config_a_deprecated_alias() -> None:
    from langchain_autodemo.ray_data import RayJobConfig

    with pytest.warns(DeprecationWarning, match="tuned_config"):
        job = RayJobConfig(config="tuned.json")
    assert job.tuned_config == "tuned.json"
    with pytest.warns(DeprecationWarning, match="tuned_config"):
        assert job.config == "tuned.json"
    assert RayJobConfig(tuned_config="t.json").replace(batch_size=4).tuned_config == "t.json"


def test_apply_tuned_config_is_the_runs_name_and_with_config_a_deprecated_alias() -> None:
    from langchain_autodemo.cli import run

    with pytest.warns(DeprecationWarning, match="apply_tuned_config"):
        assert run.with_config is run.apply_tuned_config
