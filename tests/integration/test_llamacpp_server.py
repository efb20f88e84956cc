"""The llama.cpp server helper against a real server on SmolLM2-135M."""

from __future__ import annotations

import urllib.request

import pytest

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
