"""Run a local GGUF model behind llama-cpp-python's OpenAI-compatible server.

:class:`LlamaCppServer` starts ``python -m llama_cpp.server`` on 127.0.0.1 on a free
port, waits until it answers, hands out :class:`langchain_openai.ChatOpenAI` clients
bound to it, and stops it again::

    with LlamaCppServer("smollm2") as server:
        llm = server.chat_model()
        print(llm.invoke("Say hi").content)

Three quirks of llama-cpp-python's server (checked with 0.3.36) matter to callers: a
*streamed* response carries no token usage (``usage_metadata`` is ``None``; 0.3.36
accepts ``stream_options={"include_usage": true}`` and ignores it); it reads
the completion limit only from ``max_tokens``, while langchain-openai 1.x sends
``max_completion_tokens``, so a plain ``ChatOpenAI`` gets no limit at all (the clients
made here rename it back; with the limit obeyed, a cut completion reports
``finish_reason="length"``); and by default a new request interrupts the one being
streamed (started here with ``--interrupt_requests False``, requests queue instead).

:func:`inprocess_chat_model` runs the same llama.cpp inside this process instead.

Models are assembled at set-up time (``autodemo models fetch NAME``, see
:mod:`langchain_autodemo.local_models`), never downloaded at run time.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from langchain_autodemo.errors import AutoDemoError
from langchain_autodemo.local_models import find_model
from langchain_autodemo.usage import reported_usage

__all__ = [
    "LlamaCppServer",
    "LlamaCppServerError",
    "inprocess_chat_model",
    "legacy_max_tokens_chat_openai",
]

_INSTALL_HINT = "install it with `pip install 'langchain-autodemo[llamacpp]'` (or `make setup`)"


class LlamaCppServerError(AutoDemoError, RuntimeError):
    """The llama.cpp server could not be started (or died while starting)."""


def _default_threads() -> int:
    return int(os.environ.get("AUTODEMO_LLAMACPP_THREADS") or 2)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: have the kernel terminate the server if its parent dies (even by SIGKILL)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _tail(handle: IO[bytes] | None, limit: int = 4000) -> str:
    if handle is None:
        return ""
    try:
        handle.flush()
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - limit))
        return handle.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""


class LlamaCppServer:
    """``python -m llama_cpp.server`` as a context manager.

    Args:
        model: path of a ``.gguf`` file, or a key / file name for
            :func:`~langchain_autodemo.local_models.find_model`.
        n_ctx: context window (prompt + completion tokens).
        n_threads: CPU threads for generation (default ``$AUTODEMO_LLAMACPP_THREADS`` or
            2). On a machine shared with another busy process, 1 can be many times faster:
            llama.cpp's threads spin while they wait for each other.
        host: interface to bind; only loopback is sensible.
        port: fixed port, or ``None`` for a free one.
        startup_timeout: seconds to wait for ``GET /v1/models`` to answer.
        extra_args: more command-line options for ``llama_cpp.server``.
        max_tokens: default completion limit of :meth:`chat_model`.

    The server's stdout/stderr go to a temporary file; :attr:`log_tail` shows the end,
    and start-up errors include it.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 180.0,
        extra_args: Sequence[str] = (),
        max_tokens: int = 2048,
    ) -> None:
        self.model_path = find_model(os.fspath(model))
        self.n_ctx = n_ctx
        self.n_threads = n_threads or _default_threads()
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(extra_args)
        self.max_tokens = max_tokens
        self.model_alias = self.model_path.stem
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- life cycle -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise LlamaCppServerError("the server has not been started")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_tail(self) -> str:
        return _tail(self._log)

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.model_alias,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            # Its default cuts a streaming completion short whenever another request
            # arrives (docs/design/measured-choices.md); queued requests wait instead.
            "--interrupt_requests", "False",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> LlamaCppServer:
        if self.running:
            return self
        if importlib.util.find_spec("llama_cpp") is None:
            raise LlamaCppServerError(
                f"llama-cpp-python is not installed in this environment; {_INSTALL_HINT}."
            )
        chosen_port = self.port
        if chosen_port is None:
            self.port = _free_port(self.host)
        self._log = tempfile.TemporaryFile(prefix="llamacpp-server-")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the server cleanly
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            if chosen_port is None:
                self.port = None
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/models"
        while True:
            code = self._process.poll()
            if code is not None:
                raise LlamaCppServerError(
                    f"llama.cpp server exited with status {code} while starting "
                    f"({self.model_path.name}). Last output:\n{self.log_tail}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise LlamaCppServerError(
                    f"llama.cpp server did not answer GET {url} within "
                    f"{self.startup_timeout:.0f}s. Last output:\n{self.log_tail}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leave a server behind
        try:
            if self._process is not None and self._process.poll() is None:
                self._process.kill()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.running else "stopped"
        return f"LlamaCppServer({self.model_path.name}, {state})"

    # -- clients --------------------------------------------------------------------

    def chat_model(self, **kwargs: Any) -> Any:
        """A ``ChatOpenAI`` bound to this server: streaming, temperature 0.

        Keyword arguments override the defaults (``max_tokens``, ``timeout``, ...). The
        client is :func:`legacy_max_tokens_chat_openai`'s, so ``max_tokens`` is obeyed.
        """
        settings: dict[str, Any] = {
            "model": self.model_alias,
            "base_url": self.base_url,
            "api_key": "none",
            "temperature": 0,
            "streaming": True,
            "max_tokens": self.max_tokens,
            "timeout": 900,
            "max_retries": 1,
            "token_count_url": f"http://{self.host}:{self.port}/extras/tokenize/count",
        }
        settings.update(kwargs)
        return legacy_max_tokens_chat_openai(**settings)


# ChatML, the chat template of the packaged models (Qwen2.5, SmolLM2): what the server
# puts around each message, so a prompt's count includes its template tokens.
_CHATML_MESSAGE = "<|im_start|>{role}\n{content}<|im_end|>\n"
_CHATML_REPLY = "<|im_start|>assistant\n"
_CHATML_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def chatml_prompt(messages: Sequence[Any]) -> str:
    """The messages as the server's ChatML template renders them (the reply's opening
    included): the text whose tokens the prompt costs."""
    from langchain_autodemo.messages import text_of

    rendered = "".join(
        _CHATML_MESSAGE.format(role=_CHATML_ROLES.get(m.type, m.type), content=text_of(m))
        for m in messages
    )
    return rendered + _CHATML_REPLY


class _StreamText:
    """What a stream said so far: its text, and whether any chunk reported usage."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.reported = False

    def note(self, chunk: Any) -> Any:
        self.reported = self.reported or reported_usage(chunk.message) is not None
        self.parts.append(chunk.text)
        return chunk

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _usage_chunk(prompt: int, completion: int) -> Any:
    from langchain_core.messages import AIMessageChunk
    from langchain_core.outputs import ChatGenerationChunk

    usage = {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage))  # type: ignore[arg-type]


@functools.cache
def _legacy_max_tokens_class() -> type:
    from langchain_openai import ChatOpenAI

    class ChatOpenAIWithMaxTokens(ChatOpenAI):
        """``ChatOpenAI`` that sends the completion limit as ``max_tokens``.

        Traced, named and serialized as the ``ChatOpenAI`` it is: the subclass only
        renames a request field, and its name would be an internal detail in traces.
        """

        token_count_url: str | None = None
        """A llama.cpp server's ``/extras/tokenize/count``: a stream that reports no usage
        (llama-cpp-python 0.3.36 sends none) ends with one counted by the model's own
        tokenizer, instead of the engine's characters/4 estimate."""

        @classmethod
        def lc_id(cls) -> list[str]:
            # the serialized id, whose last part tracers take as the run's name
            return ChatOpenAI.lc_id()

        def _counted_usage(self, url: str, messages: Any, text: str) -> Any:
            """A usage chunk counted by the server's tokenizer (the ChatML-rendered prompt
            and the completion), or ``None`` where counting fails: the engine's estimate
            then stands, flagged as one. One definition for both streams (the async one
            runs it on a thread: two short local requests after the stream ended)."""
            import httpx

            try:
                with httpx.Client(timeout=30) as client:
                    prompt, completion = (
                        client.post(url, json={"input": body, "model": self.model_name})
                        .raise_for_status()
                        .json()["count"]
                        for body in (chatml_prompt(messages), text)
                    )
                return _usage_chunk(int(prompt), int(completion))
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                return None

        def _stream(self, messages: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            seen = _StreamText()
            for chunk in super()._stream(messages, *args, **kwargs):
                yield seen.note(chunk)
            if self.token_count_url and not seen.reported:
                usage = self._counted_usage(self.token_count_url, messages, seen.text)
                if usage is not None:
                    yield usage

        async def _astream(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
            seen = _StreamText()
            async for chunk in super()._astream(messages, *args, **kwargs):
                yield seen.note(chunk)
            if self.token_count_url and not seen.reported:
                usage = await asyncio.to_thread(
                    self._counted_usage, self.token_count_url, messages, seen.text
                )
                if usage is not None:
                    yield usage

        def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
            return super().get_name(suffix, name=name or self.name or ChatOpenAI.__name__)

        def _get_request_payload(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            payload = super()._get_request_payload(*args, **kwargs)
            if "max_completion_tokens" in payload:
                payload["max_tokens"] = payload.pop("max_completion_tokens")
            return payload

    return ChatOpenAIWithMaxTokens


def legacy_max_tokens_chat_openai(**settings: Any) -> Any:
    """A ``ChatOpenAI`` for OpenAI-compatible servers that read only ``max_tokens``.

    langchain-openai 1.x sends the limit as ``max_completion_tokens`` (OpenAI's newer
    name); llama-cpp-python's server (0.3.36) ignores that field and generates until the
    model stops (docs/design/measured-choices.md). This client renames it back, so the
    limit holds and a cut completion reports ``finish_reason="length"``.
    """
    return _legacy_max_tokens_class()(**settings)


# -- in process -----------------------------------------------------------------------


def inprocess_chat_model(
    model: str | os.PathLike[str],
    *,
    n_ctx: int = 8192,
    n_threads: int | None = None,
    max_tokens: int = 2048,
    **kwargs: Any,
) -> Any:
    """langchain-community's ``ChatLlamaCpp`` on a GGUF file, inside this process.

    No server process and no port: the weights load into this process (``llamacpp-
    inprocess:PATH`` on the command line). The settings match :class:`LlamaCppServer`'s
    (temperature 0, streaming, the server's prompt batch of 512 tokens, RoPE from the model
    file, quiet), so both give the same completion for the same messages. The one
    ``llama_cpp.Llama`` is not thread-safe, so calls take turns on one worker thread:
    ``max_concurrency`` above 1 queues them, as the server does. Which to use when: see
    docs/getting-started/local-models.md, measured by ``benchmarks/bench_llamacpp.py``.
    langchain-community warns that it is being sunset; ``ChatLlamaCpp`` is its only use.

    Args:
        model: path of a ``.gguf`` file, or a key / file name for
            :func:`~langchain_autodemo.local_models.find_model`.
        kwargs: more ``ChatLlamaCpp`` fields (``n_gpu_layers``, ``model_kwargs``, ...).
    """
    path = find_model(os.fspath(model))
    if importlib.util.find_spec("llama_cpp") is None:
        raise ImportError(f"llama-cpp-python is not installed in this environment; {_INSTALL_HINT}")
    try:
        with warnings.catch_warnings():  # its sunset notice, said once in the docstring
            warnings.filterwarnings("ignore", "`langchain-community` is being sunset")
            from langchain_community.chat_models import ChatLlamaCpp
    except ImportError:
        raise ImportError(
            f"langchain-community is not installed in this environment; {_INSTALL_HINT}"
        ) from None
    settings: dict[str, Any] = {
        "model_path": str(path),
        "n_ctx": n_ctx,
        "n_threads": n_threads or _default_threads(),
        "n_batch": 512,  # ChatLlamaCpp's default of 8 makes prompt evaluation crawl
        # ChatLlamaCpp forces RoPE to 10000 / 1.0, whatever the GGUF says (SmolLM2: 100000),
        # which garbles the model's output; 0 means "as the model file says", like the server.
        "rope_freq_base": 0.0,
        "rope_freq_scale": 0.0,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "streaming": True,
        "verbose": False,
    }
    settings.update(kwargs)
    llm = ChatLlamaCpp(**settings)
    llm.client = _OneAtATime(llm.client)
    return llm


class _OneAtATime:
    """A ``llama_cpp.Llama`` driven by one worker thread: completions take turns.

    Every completion runs on the worker; a streamed one hands its chunks over through a
    queue. A lock held while the caller iterates would deadlock the next call whenever
    a stream is left unfinished (``it = iter(llm.stream(...)); next(it)``, then
    ``llm.invoke(...)`` waited forever); here the abandoned stream stops at its next
    chunk once closed, or runs out at ``max_tokens``, and the next call proceeds.
    """

    def __init__(self, llama: Any) -> None:
        self._llama = llama
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llama, name)

    def create_chat_completion(self, **kwargs: Any) -> Any:
        if not kwargs.get("stream"):
            return self._worker.submit(self._llama.create_chat_completion, **kwargs).result()
        return self._streamed(kwargs)

    def _streamed(self, kwargs: dict[str, Any]) -> Iterator[Any]:
        chunks: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        closed = threading.Event()

        def produce() -> None:
            try:
                for chunk in self._llama.create_chat_completion(**kwargs):
                    if closed.is_set():
                        break
                    chunks.put(("chunk", chunk))
                chunks.put(("end", None))
            except BaseException as exc:  # handed to the caller, raised there
                chunks.put(("error", exc))

        self._worker.submit(produce)
        try:
            while True:
                kind, value = chunks.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            closed.set()
