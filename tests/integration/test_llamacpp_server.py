"""The llama.cpp server helper against a real server on SmolLM2-135M."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from langchain_autodemo.llamacpp import LlamaCppServer, LlamaCppServerError


def test_server_answers_streamed_chat(smollm2_server: LlamaCppServer) -> None:
    assert smollm2_server.running
    assert smollm2_server.base_url.startswith("http://127.0.0.1:")
    llm = smollm2_server.chat_model(max_tokens=16)
    chunks = list(llm.stream("Say hello."))
    assert len(chunks) > 1, "expected a streamed response"
    text = "".join(str(chunk.content) for chunk in chunks)
    assert text.strip()


def test_models_endpoint_lists_alias(smollm2_server: LlamaCppServer) -> None:
    with urllib.request.urlopen(f"{smollm2_server.base_url}/models", timeout=10) as response:
        body = response.read().decode()
    assert smollm2_server.model_alias in body


def test_server_stops_on_exit(smollm2_path) -> None:
    with LlamaCppServer(smollm2_path, n_ctx=512) as server:
        process = server._process
        assert process is not None and process.poll() is None
    assert process.poll() is not None
    assert not server.running


def test_bad_model_file_reports_server_output(tmp_path) -> None:
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"not a gguf file")
    with pytest.raises(LlamaCppServerError, match="exited with status"):
        LlamaCppServer(bogus, startup_timeout=60).start()


def test_the_completion_limit_is_obeyed_and_reported(smollm2_server: LlamaCppServer) -> None:
    """langchain-openai sends max_completion_tokens, which this server ignores: before the
    client renamed it, max_tokens=8 streamed hundreds of tokens ending in "stop"."""
    for llm, options in (
        (smollm2_server.chat_model(max_tokens=8), {}),
        (smollm2_server.chat_model(), {"max_tokens": 5}),
    ):
        chunks = list(llm.stream("Count from 1 to 100, separated by commas.", **options))
        tokens = sum(bool(c.content) for c in chunks)
        assert 1 <= tokens <= options.get("max_tokens", 8)
        reasons = [c.response_metadata.get("finish_reason") for c in chunks]
        assert "length" in reasons


def test_concurrent_streams_wait_their_turn(smollm2_server: LlamaCppServer) -> None:
    """The server's default interrupts a stream when another request arrives (a bare
    [DONE] after 0 tokens); LlamaCppServer turns that off, so every caller is answered."""
    llm = smollm2_server.chat_model(max_tokens=12)

    def stream(_: int) -> tuple[int, list]:
        chunks = list(llm.stream("Count from 1 to 100, separated by commas."))
        reasons = [c.response_metadata.get("finish_reason") for c in chunks]
        return sum(bool(c.content) for c in chunks), [r for r in reasons if r]

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(stream, range(3)))
    assert all(tokens > 0 and reasons == ["length"] for tokens, reasons in results), results


def test_usage_is_counted_by_the_models_own_tokenizer(smollm2_server: LlamaCppServer) -> None:
    """The server streams no usage; the client counts prompt (with its ChatML template)
    and completion with the server's tokenizer, sync and async, instead of estimating."""
    import asyncio

    import httpx

    from langchain_autodemo.llamacpp import chatml_prompt

    messages = [SystemMessage("Be brief."), HumanMessage("Name one colour.")]
    llm = smollm2_server.chat_model(max_tokens=8)
    chunks = list(llm.stream(messages))
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert len(usage) == 1 and usage[0]["output_tokens"] > 0
    url = f"http://{smollm2_server.host}:{smollm2_server.port}/extras/tokenize/count"
    count = httpx.post(url, json={"input": chatml_prompt(messages)}).json()["count"]
    assert usage[0]["input_tokens"] == count
    text = "".join(str(c.content) for c in chunks)
    assert usage[0]["output_tokens"] == httpx.post(url, json={"input": text}).json()["count"]

    async def astream() -> list:
        return [c async for c in llm.astream(messages)]

    assert [c.usage_metadata for c in asyncio.run(astream()) if c.usage_metadata] == usage
    # without the counting endpoint nothing is added: the engine estimates, flagged
    plain = smollm2_server.chat_model(max_tokens=8, token_count_url=None)
    assert not [c for c in plain.stream(messages) if c.usage_metadata]
