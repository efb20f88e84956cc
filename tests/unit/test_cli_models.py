"""Model specs: parsing, clear errors, and what each spec builds (nothing is contacted)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from langchain_autodemo.models import ModelSpec, ModelSpecError, open_model, parse_model_spec
from langchain_autodemo.testing import ScriptedAutoDemoModel


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, ModelSpec("default")),
        ("", ModelSpec("default")),
        ("default", ModelSpec("default")),
        ("openai:gpt-4o-mini", ModelSpec("openai", "gpt-4o-mini")),
        ("openai-compatible:http://127.0.0.1:8080/v1#qwen",
         ModelSpec("openai-compatible", "http://127.0.0.1:8080/v1#qwen")),
        ("llamacpp:models/x.gguf", ModelSpec("llamacpp", "models/x.gguf")),
        ("LLAMACPP:smollm2", ModelSpec("llamacpp", "smollm2")),
        ("llamacpp-inprocess:smollm2", ModelSpec("llamacpp-inprocess", "smollm2")),
        ("fake:", ModelSpec("fake", "")),
    ],
)  # fmt: skip
def test_parse_model_spec(spec, expected) -> None:
    assert parse_model_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gpt-4o", "unknown model spec 'gpt-4o'"),
        ("anthropic:claude", "unknown model spec"),
        ("openai:", "lacks its part"),
        ("openai-compatible:localhost:8080", "needs an http(s) URL"),
        ("import:module_without_factory", "import:package.module:factory"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ModelSpecError, match=re.escape(message)):
        parse_model_spec(spec)


def test_openai_needs_a_key(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelSpecError, match="OPENAI_API_KEY"), open_model("openai:gpt-4o-mini"):
        pass


def test_openai_and_compatible_build_chat_openai(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with open_model("openai:gpt-4o-mini", max_tokens=300) as opened:
        assert opened.llm.model_name == "gpt-4o-mini"
        assert opened.llm.temperature == 0 and opened.llm.streaming
        assert opened.llm.max_tokens == 300
    monkeypatch.delenv("OPENAI_API_KEY")
    with open_model("openai-compatible:http://127.0.0.1:9/v1#local", max_tokens=64) as opened:
        assert opened.llm.openai_api_base == "http://127.0.0.1:9/v1"
        assert opened.llm.model_name == "local"
        assert opened.server is None
        # llama.cpp's server (and others) read only max_tokens, not max_completion_tokens
        payload = opened.llm._get_request_payload("hi")
        assert payload["max_tokens"] == 64 and "max_completion_tokens" not in payload
        payload = opened.llm._get_request_payload("hi", max_tokens=5)
        assert payload["max_tokens"] == 5
        # ChatOpenAI would only ask OpenAI's own URL for usage in streams
        assert opened.llm.stream_usage is True


def test_missing_local_model_says_make_models(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AUTODEMO_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelSpecError, match="make models"), open_model(None):
        pass
    with pytest.raises(ModelSpecError, match="make models"), open_model("llamacpp:nope.gguf"):
        pass
    with (
        pytest.raises(ModelSpecError, match="autodemo models fetch smollm2"),
        open_model("llamacpp-inprocess:smollm2"),
    ):
        pass


def make_fake() -> ScriptedAutoDemoModel:
    return ScriptedAutoDemoModel(answer="const:42")


def test_import_and_fake_specs() -> None:
    with open_model(f"import:{__name__}:make_fake") as opened:
        assert isinstance(opened.llm, ScriptedAutoDemoModel) and opened.llm.answer == "const:42"
    with pytest.raises(ModelSpecError, match="cannot import"), open_model("import:no.such:thing"):
        pass
    with open_model("fake:answer=echo,delay=0") as opened:
        assert opened.llm.answer == "echo"
    with pytest.raises(ModelSpecError, match="bad fake model option"), open_model("fake:x=1"):
        pass


def test_the_max_tokens_client_is_traced_as_chat_openai() -> None:
    """Traces name the model ``ChatOpenAI``, not the internal subclass that renames a field."""
    import httpx
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.tracers.context import collect_runs
    from langchain_openai import ChatOpenAI

    from langchain_autodemo.llamacpp import legacy_max_tokens_chat_openai

    sent: list[dict] = []

    def reply(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "created": 0, "model": "local",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "4"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        })  # fmt: skip

    class Names(BaseCallbackHandler):
        def __init__(self) -> None:
            self.started: list[str] = []

        def on_chat_model_start(self, serialized, messages, **kwargs) -> None:
            self.started.append(serialized["id"][-1])

    llm = legacy_max_tokens_chat_openai(
        model="local", base_url="http://127.0.0.1:9/v1", api_key="none", max_tokens=7,
        http_socket_options=(),  # no socket-option probe (unit tests forbid sockets)
        http_client=httpx.Client(transport=httpx.MockTransport(reply)),
    )  # fmt: skip
    assert isinstance(llm, ChatOpenAI) and llm.get_name() == "ChatOpenAI"
    handler = Names()
    with collect_runs() as runs:
        assert llm.invoke("2+2?", {"callbacks": [handler]}).content == "4"
    assert [run.name for run in runs.traced_runs] == ["ChatOpenAI"]
    assert handler.started == ["ChatOpenAI"]
    assert sent[0]["max_tokens"] == 7 and "max_completion_tokens" not in sent[0]
    with open_model("openai-compatible:http://127.0.0.1:9/v1#local") as opened:
        assert opened.llm.get_name() == "ChatOpenAI"


def test_an_import_spec_finds_a_module_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--model import:mymodels:make`` beside the user's data, as ``python -m`` finds it."""
    import sys

    (tmp_path / "my_local_models_for_autodemo.py").write_text(
        "from langchain_autodemo.testing import ScriptedAutoDemoModel\n"
        "def make():\n    return ScriptedAutoDemoModel()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    with open_model("import:my_local_models_for_autodemo:make") as opened:
        assert opened.llm.invoke("What is 1 + 2?").content
    assert str(tmp_path) not in sys.path
