"""The Ray Data path (:mod:`langchain_autodemo.ray_data`) on a real local Ray cluster
started here (2 CPUs), against the scripted OpenAI-compatible server (a test double)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ray = pytest.importorskip("ray")

from typer.testing import CliRunner  # noqa: E402

from langchain_autodemo import ray_data  # noqa: E402
from langchain_autodemo.cli import app  # noqa: E402
from tests.integration.batch_api_servers import scripted_upstream  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CRASH_MARKER = Path(tempfile.gettempdir()) / "autodemo-ray-test-crashed"


def crashing_model() -> object:
    """A scripted model whose worker process dies (``os._exit``) the first time it is
    asked a question containing CRASH; the spec ``import:...:crashing_model`` names it."""
    from langchain_autodemo.testing import ScriptedAutoDemoModel

    class Crashing(ScriptedAutoDemoModel):
        def _completion(self, messages: list) -> str:  # type: ignore[override]
            if "CRASH" in str(messages[-1].content) and not CRASH_MARKER.exists():
                CRASH_MARKER.touch()
                os._exit(1)  # the worker dies mid-job: Ray restarts it and retries the task
            return super()._completion(messages)

    return Crashing()


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    # The workers import this module (the crashing model): the checkout on their path.
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with scripted_upstream() as url:
        yield url


def _rows(n: int) -> list[dict[str, object]]:
    return [{"id": i, "question": f"What is {i} + {i % 5}?"} for i in range(n)]


def _config(url: str, model: str = "scripted", **changes: object) -> ray_data.RayJobConfig:
    settings: dict[str, object] = {
        "model": f"openai-compatible:{url}#{model}",
        "batch_size": 4,
        "retry_initial_delay": 0.01,
        "retry_max_delay": 0.05,
        **changes,
    }
    return ray_data.RayJobConfig(**settings)  # type: ignore[arg-type]


def _calls(url: str) -> dict[str, int]:
    return httpx.get(url.removesuffix("/v1") + "/stats").json()


def test_every_row_answered_bad_rows_are_error_rows(cluster: None, upstream: str) -> None:
    rows = _rows(30)
    rows[3]["question"] = ""  # an input error: no model call
    rows[11]["question"] = "What is BAD 1?"  # the server fails every call that asks it
    ds = ray.data.from_items(rows, override_num_blocks=3)
    config = _config(upstream, "scripted:failall=BAD")
    out = ds.map_batches(
        ray_data.AutoDemoProcessor,
        fn_constructor_kwargs={"config": config},
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_format="numpy",
        batch_size=10,
    ).to_pandas()
    assert len(out) == 30 and sorted(out["id"]) == list(range(30))
    by_id = out.set_index("id")
    errors = out[out["error_kind"].notna()]
    # A failed call fails the items that shared it (ids 10-13 with batch_size 4) once
    # the runner's attempts are spent: error rows, the task itself succeeds.
    assert {3, 11} <= set(errors["id"]) <= {3, 10, 11, 12, 13}, errors.to_dict("records")
    for i in set(range(30)) - set(errors["id"]):
        assert by_id.loc[i, "answer"] == str(i + i % 5)
        assert by_id.loc[i, "input_tokens"] > 0  # its share of its call's usage
    assert out["output_tokens"].sum() > 0
    assert by_id.loc[3, "error_kind"] == "AutoDemoInputError"
    assert by_id.loc[3, "error_message"] == "the input is empty"
    assert "scripted failure" in by_id.loc[11, "error_message"]
    assert errors["answer"].isna().all()


def test_rerun_skips_done_ids_and_never_duplicates(
    cluster: None, upstream: str, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    config = _config(upstream, "scripted:delay=0")
    first = ray_data.run_job(ray.data.from_items(_rows(12)), output, config, workers=2)
    assert (first.total, first.already_done, first.written, first.errors) == (12, 0, 12, 0)
    # A crash after a retried write task: a staged copy of a written file (duplicates)
    # and a torn file, both left for the next run to commit.
    staged = output / "_staging-crashed"
    staged.mkdir()
    written = sorted(output.glob("*.parquet"))
    shutil.copy(written[0], staged / ("retried-" + written[0].name))
    (staged / "torn.parquet").write_bytes(b"PAR1 torn")
    before = _calls(upstream).get("scripted:delay=0", 0)
    second = ray_data.run_job(ray.data.from_items(_rows(20)), output, config, workers=2)
    assert (second.already_done, second.written, second.failed) == (12, 8, 0)
    assert second.usage["rows"] == 8  # only the new ids were asked
    assert _calls(upstream)["scripted:delay=0"] - before == second.usage["calls"]
    frame = ray_data.read_output(output)
    assert sorted(frame["id"]) == list(range(20))  # each id once, none missing
    assert not list(output.glob("_staging-*"))


def test_shared_rate_limit_holds_across_workers(cluster: None, upstream: str) -> None:
    limiter = ray_data.RateLimiter.remote(requests_per_minute=120)  # 2/s, burst 2
    config = _config(upstream, "scripted:rate", batch_size=2)
    ds = ray.data.from_items(_rows(16), override_num_blocks=4)
    out = ray_data.answer_dataset(
        ds, config, workers=2, rows_per_task=4, rate_limiter=limiter
    ).to_pandas()
    assert out["error_kind"].isna().all()
    grants = sorted(ray.get(limiter.grants.remote()))
    assert len(grants) == _calls(upstream)["scripted:rate"] >= 8
    for i, start in enumerate(grants):  # no one-second window holds more than burst + rate
        assert sum(1 for t in grants[i:] if t < start + 1.0) <= 4
    assert grants[-1] - grants[0] >= (len(grants) - 2) / 2 - 0.1


def test_retry_after_pauses_every_worker(cluster: None) -> None:
    class RateLimited(Exception):
        retry_after = 2.0  # what a provider's Retry-After header says

    limiter = ray_data.RateLimiter.remote(requests_per_minute=6000)
    calls = ray_data._RateLimitedCalls(limiter, max_tokens=None)
    calls.on_llm_error(RateLimited(), run_id=uuid.uuid4())
    wait = ray.get(limiter.acquire.remote(0))  # any worker's next call
    assert 1.5 < wait <= 2.0


def test_similarity_grouping_packs_like_the_selector(cluster: None) -> None:
    topics = ["How many apples does {} have?", "What is the capital city of {}?"]
    names = ["Anna", "Ben", "Chloe", "Dan", "Eve", "Finn", "Gus", "Hana"]
    texts = [topic.format(name) for name in names for topic in topics] * 2
    rows = [{"id": i, "question": text} for i, text in enumerate(texts)]
    packed = ray_data.group_by_similarity(
        ray.data.from_items(rows), batch_size=4, clusters=2
    ).materialize()
    assert sorted(r["id"] for r in packed.take_all()) == list(range(len(rows)))
    grouped = ray_data.intra_batch_cosine(packed)
    single = ray_data.selector_cosine(texts, 4)
    assert grouped >= 0.9 * single
    config = ray_data.RayJobConfig(model="fake:answer=sum", batch_size=4)
    answered = ray_data.answer_dataset(packed, config).to_pandas()
    assert sorted(answered["id"]) == list(range(len(rows)))
    assert answered["error_kind"].isna().all()


def test_cli_engine_ray(cluster: None, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    questions = [f"What is {i} + 1?" for i in range(10)] + ["What is DROP 2?"]
    source.write_text("".join(json.dumps({"id": i, "question": q}) + "\n"
                              for i, q in enumerate(questions)))  # fmt: skip
    output = tmp_path / "out.jsonl"
    args = ["run", str(source), "-o", str(output), "--engine", "ray", "--workers", "2",
            "--rpm", "60000", "--tpm", "6000000", "--restate", "head",
            "-m", "fake:answer=sum,drop=DROP", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Items: 11/11 answered or failed (11 this run, 1 errors)" in result.output
    assert "Cost at gpt-4o-mini online list prices" in result.output
    # The online engine's contract: one JSONL file, the input record, answer or error.
    assert output.is_file() and not (tmp_path / "out.jsonl.parts").exists()
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["input_line"] for r in records] == list(range(1, 12))
    assert records[2] == {"input_line": 3, "id": 2, "question": "What is 2 + 1?", "answer": "3"}
    assert set(records[10]) == {"input_line", "id", "question", "error"}
    assert records[10]["error"].startswith("input line 11: ")
    local = tmp_path / "local.jsonl"
    online = CliRunner().invoke(app, ["run", str(source), "-o", str(local), "--restate", "head",
                                      "-m", "fake:answer=sum,drop=DROP", "--no-progress"])  # fmt: skip
    assert online.exit_code == 1, online.output
    assert [set(json.loads(line)) for line in local.read_text().splitlines()] == [
        set(r) for r in records
    ]
    # Resumed by the Ray engine: what the online engine wrote is kept, the rest asked.
    lines = local.read_text().splitlines()
    local.write_text("".join(line + "\n" for line in lines[:4]))
    again = CliRunner().invoke(app, ["run", str(source), "-o", str(local), "--engine", "ray",
                                     "--workers", "2", "--restate", "head", "-m",
                                     "fake:answer=sum,drop=DROP", "--no-progress"])  # fmt: skip
    assert again.exit_code == 1, again.output
    assert "Resuming: 4 of 11" in again.output and "(7 this run, 1 errors)" in again.output
    assert local.read_text().splitlines() == lines
    # Another model over it is refused (the online engine's setup check).
    other = CliRunner().invoke(app, ["run", str(source), "-o", str(local), "--engine", "ray",
                                     "--restate", "head", "-m", "fake:answer=const:7"])  # fmt: skip
    assert other.exit_code == 2 and "was written with another setup" in other.output
    bad = CliRunner().invoke(app, [*args[:-2], "--via", "batch-api"])
    assert bad.exit_code == 2
    local_rpm = ["run", str(source), "-o", str(tmp_path / "x.jsonl"), "--rpm", "10", "-m", "fake:"]
    refused = CliRunner().invoke(app, local_rpm)
    assert refused.exit_code == 2 and "--rpm" in refused.output


def test_worker_killed_mid_job_then_rerun(cluster: None, tmp_path: Path) -> None:
    CRASH_MARKER.unlink(missing_ok=True)
    rows = _rows(24)
    rows[13]["question"] = "What is CRASH 5 + 1?"
    output = tmp_path / "out.jsonl"
    config = ray_data.RayJobConfig(
        model="import:tests.integration.test_ray_data:crashing_model", batch_size=4
    )
    ds = ray.data.from_items(rows, override_num_blocks=4)
    result = ray_data.run_job(ds, output, config, workers=2, rows_per_task=6)
    assert CRASH_MARKER.exists()  # a worker did die
    frame = ray_data.read_output(output)
    assert sorted(frame["id"]) == list(range(24))  # none missing, none twice
    assert frame["error_kind"].isna().all() and result.errors == 0
    assert frame.set_index("id").loc[13, "answer"] == "6"
    again = ray_data.run_job(ds, output, config, workers=2)
    assert (again.already_done, again.written, again.usage["calls"]) == (24, 0, 0)
    CRASH_MARKER.unlink()
