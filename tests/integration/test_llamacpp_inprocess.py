"""``llamacpp-inprocess:``: langchain-community's ChatLlamaCpp on SmolLM2-135M, no server."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from langchain_autodemo import AutoDemoBatchRunnable, AutoDemoItemError
from langchain_autodemo.models import ModelSpecError, open_model


@pytest.fixture(scope="module")
def inprocess(smollm2_path: Path):
    with open_model(f"llamacpp-inprocess:{smollm2_path}", max_tokens=64) as opened:
        yield opened


def test_streams_tokens_and_reports_the_finish_reason(inprocess) -> None:
    assert inprocess.description == f"llama.cpp in process: {Path(inprocess.llm.model_path).name}"
    assert inprocess.server is None
    chunks = list(inprocess.llm.stream("Count from 1 to 50.", max_tokens=8))
    assert sum(bool(c.content) for c in chunks) > 1, "streamed token by token"
    reasons = [c.response_metadata.get("finish_reason") for c in chunks]
    assert "length" in reasons, "in process, a cut completion says so (the server says stop)"


def test_concurrent_calls_take_turns(inprocess) -> None:
    """One llama_cpp.Llama is not thread-safe: 2 threads at once must still answer all."""
    runner = AutoDemoBatchRunnable(inprocess.llm, instructions="Add the numbers.", batch_size=2)
    questions = [f"What is {i} plus {i}?" for i in range(1, 5)]
    results = runner.batch(questions, {"max_concurrency": 2}, return_exceptions=True)
    assert len(results) == 4
    for result in results:
        assert isinstance(result, AutoDemoItemError) or str(result).strip()


async def test_async_streams_take_turns_too(inprocess) -> None:
    async def tokens() -> int:
        return sum([bool(c.content) async for c in inprocess.llm.astream("Say hi.", max_tokens=6)])

    assert all(n > 0 for n in await asyncio.gather(tokens(), tokens()))


def test_a_file_that_is_not_a_model_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"not a gguf file")
    with (
        pytest.raises(ModelSpecError, match="broken.gguf"),
        open_model(f"llamacpp-inprocess:{bogus}"),
    ):
        pass


def test_an_unfinished_stream_does_not_block_the_next_call(inprocess) -> None:
    """A lock held while the caller iterates deadlocked here: the next call waited forever."""
    unfinished = iter(inprocess.llm.stream("Count from 1 to 100.", max_tokens=16))
    assert next(unfinished) is not None
    answer: list[str] = []
    caller = threading.Thread(
        target=lambda: answer.append(str(inprocess.llm.invoke("Say hi.", max_tokens=4).content))
    )
    caller.start()
    caller.join(timeout=120)
    assert not caller.is_alive(), "the next call is blocked by the unfinished stream"
    assert answer and answer[0].strip()
    unfinished.close()
