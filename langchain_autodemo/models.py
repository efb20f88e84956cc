"""Model specs for the CLI: which chat model to use, and how to start and stop it.

=============================  ==========================================================
spec                           model
=============================  ==========================================================
*(none)* / ``default``         the local Qwen2.5-Coder-1.5B-Instruct GGUF (``autodemo models
                               fetch``) on a llama.cpp server started for the command
``llamacpp:PATH.gguf``         that GGUF file (or a key such as ``llamacpp:smollm2``) on a
                               llama.cpp server started on 127.0.0.1 and stopped at the end
``llamacpp-inprocess:PATH``     that GGUF file (or key) loaded into this process with
                               langchain-community's ``ChatLlamaCpp``: no server
``openai:MODEL``               OpenAI through langchain-openai (needs ``OPENAI_API_KEY``)
``openai-compatible:URL``      any OpenAI-compatible server; ``URL#MODEL`` names the model;
                               the key is ``$OPENAI_API_KEY`` or ``"none"``; usage is
                               requested in streams (``stream_usage=True``)
``import:MODULE:FACTORY``      ``FACTORY()`` from an importable module returns the chat model
``fake:OPTIONS``               test-only scripted model (:mod:`langchain_autodemo.testing`)
=============================  ==========================================================

:func:`open_model` is a context manager, so a server it starts is always stopped.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.llamacpp import (
    LlamaCppServer,
    LlamaCppServerError,
    inprocess_chat_model,
    legacy_max_tokens_chat_openai,
)
from langchain_autodemo.local_models import DEFAULT_MODEL, ModelNotFoundError, find_model

__all__ = [
    "KINDS",
    "SPEC_FORMS",
    "ModelSpec",
    "ModelSpecError",
    "OpenModel",
    "open_model",
    "parse_model_spec",
]

SPEC_FORMS: dict[str, tuple[str, str]] = {
    "default": (
        "default (or no --model)",
        "the local Qwen2.5-Coder-1.5B GGUF on a llama.cpp server",
    ),
    "llamacpp": (
        "llamacpp:PATH.gguf",
        "a GGUF file (or a key: llamacpp:smollm2) on a llama.cpp server",
    ),
    "llamacpp-inprocess": (
        "llamacpp-inprocess:PATH.gguf",
        "a GGUF file (or key) loaded into this process: no server",
    ),
    "openai": ("openai:MODEL", "OpenAI (needs OPENAI_API_KEY)"),
    "openai-compatible": (
        "openai-compatible:URL#MODEL",
        "an OpenAI-compatible server; #MODEL is optional",
    ),
    "import": ("import:MODULE:FACTORY", "FACTORY() of an importable module: the chat model"),
    "fake": ("fake:OPTIONS", "test-only scripted model, e.g. fake:answer=sum"),
}
"""Each spec kind: its form and what it names (the CLI's help lists them all)."""

KINDS = tuple(SPEC_FORMS)


class ModelSpecError(ConfigurationError):
    """A model spec that cannot be used (the message is meant for the user)."""


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    target: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "default" else f"{self.kind}:{self.target}"


@dataclass
class OpenModel:
    """A ready chat model and a human-readable description of it."""

    llm: Any
    description: str
    server: LlamaCppServer | None = None


def parse_model_spec(spec: str | None) -> ModelSpec:
    """Check a spec's syntax (nothing is started or contacted)."""
    if spec is None or not spec.strip() or spec.strip().lower() == "default":
        return ModelSpec("default")
    kind, sep, target = spec.strip().partition(":")
    kind = kind.lower()
    if not sep or kind not in KINDS[1:]:
        forms = ", ".join(form for form, _ in list(SPEC_FORMS.values())[1:])
        raise ModelSpecError(
            f"unknown model spec {spec!r}: use {forms}, or leave --model out for the local "
            "default model"
        )
    target = target.strip()
    if not target and kind != "fake":
        raise ModelSpecError(f"model spec {spec!r} lacks its part after '{kind}:'")
    if kind == "openai-compatible" and not target.startswith(("http://", "https://")):
        raise ModelSpecError(f"openai-compatible needs an http(s) URL, got {target!r}")
    if kind == "import" and ":" not in target:
        raise ModelSpecError("import spec must look like import:package.module:factory")
    return ModelSpec(kind, target)


def _chat_openai(*, compatible: bool = False, **kwargs: Any) -> Any:
    from langchain_openai import ChatOpenAI

    settings: dict[str, Any] = {"temperature": 0, "streaming": True}
    settings.update({k: v for k, v in kwargs.items() if v is not None})
    # OpenAI-compatible servers (llama.cpp's among them) read the limit from max_tokens.
    return legacy_max_tokens_chat_openai(**settings) if compatible else ChatOpenAI(**settings)


def _import_from_here(module_name: str) -> Any:
    """``import module_name`` as ``python -m`` would from the current folder: the console
    script's ``sys.path`` lacks it, so a user's ``mymodels.py`` beside their data was not
    found (``--model import:mymodels:make``)."""
    import sys

    here = os.getcwd()
    if here in sys.path:
        return importlib.import_module(module_name)
    sys.path.insert(0, here)
    try:
        return importlib.import_module(module_name)
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(here)


@contextmanager
def open_model(
    spec: str | ModelSpec | None,
    *,
    max_tokens: int | None = None,
    n_ctx: int = 8192,
    startup_timeout: float = 300.0,
) -> Iterator[OpenModel]:
    """Yield the chat model a spec names; servers started here stop on exit."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    if parsed.kind in ("default", "llamacpp"):
        name = DEFAULT_MODEL if parsed.kind == "default" else parsed.target
        try:
            path = find_model(name)
        except ModelNotFoundError as exc:
            raise ModelSpecError(str(exc)) from None
        server = LlamaCppServer(
            path, n_ctx=n_ctx, startup_timeout=startup_timeout, max_tokens=max_tokens or 4096
        )
        try:
            server.start()
        except LlamaCppServerError as exc:
            raise ModelSpecError(str(exc)) from None
        try:
            yield OpenModel(server.chat_model(), f"llama.cpp server: {path.name}", server)
        finally:
            server.stop()
        return
    if parsed.kind == "llamacpp-inprocess":
        try:
            llm = inprocess_chat_model(parsed.target, n_ctx=n_ctx, max_tokens=max_tokens or 4096)
        except (ModelNotFoundError, ImportError, ValueError) as exc:  # ValueError: a bad file
            raise ModelSpecError(str(exc)) from None
        yield OpenModel(llm, f"llama.cpp in process: {Path(llm.model_path).name}")
        return
    if parsed.kind == "openai":
        if not os.environ.get("OPENAI_API_KEY"):
            raise ModelSpecError("openai:MODEL needs the OPENAI_API_KEY environment variable")
        llm = _chat_openai(model=parsed.target, max_tokens=max_tokens, stream_usage=True)
        yield OpenModel(llm, str(parsed))
        return
    if parsed.kind == "openai-compatible":
        url, _, model = parsed.target.partition("#")
        # ChatOpenAI asks for usage in streams only on OpenAI's own URL; ask every server.
        # One that ignores the request (llama-cpp-python 0.3.36's server accepts
        # ``stream_options`` and sends no usage chunk) still gets estimates, flagged.
        llm = _chat_openai(
            compatible=True,
            base_url=url,
            model=model or "default",
            api_key=os.environ.get("OPENAI_API_KEY") or "none",
            max_tokens=max_tokens,
            stream_usage=True,
        )
        yield OpenModel(llm, str(parsed))
        return
    if parsed.kind == "import":
        module_name, _, attribute = parsed.target.rpartition(":")
        try:
            factory = getattr(_import_from_here(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ModelSpecError(f"cannot import {parsed.target!r}: {exc}") from None
        yield OpenModel(factory(), str(parsed))
        return
    # fake
    from langchain_autodemo.testing import parse_fake_spec

    try:
        llm = parse_fake_spec(parsed.target)
    except ValueError as exc:
        raise ModelSpecError(str(exc)) from None
    yield OpenModel(llm, f"scripted fake model ({parsed.target or 'answer=sum'})")
