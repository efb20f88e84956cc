"""Offline semantic embeddings for the similarity selector: WordLlama, no download.

``wordllama`` (MIT, numpy only, no torch) ships a 256-dimensional static-embedding
model inside its wheel. ``WordLlama.load()`` with its defaults still reaches for the
network: in wordllama 0.4 ``resolve_file`` looks for the tokenizer config under
``wordllama/tokenizer/`` (singular) while the wheel ships it under
``wordllama/tokenizers/``, so the lookup misses and falls through to a Hugging Face
download. :class:`WordLlamaEmbeddings` copies the two shipped files into a cache
folder with the sub-folder names the loader expects (``tokenizers/`` and
``weights/``) and loads with ``disable_download=True``: offline by construction, and a
missing file is a clear ``FileNotFoundError`` rather than a network call.

Example:
    >>> emb = WordLlamaEmbeddings()
    >>> vectors = emb.embed_documents(["How many eggs?", "How many apples?"])
    >>> len(vectors), len(vectors[0])
    (2, 256)
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from langchain_core.embeddings import Embeddings

from langchain_autodemo._validation import require_positive_int

if TYPE_CHECKING:
    from wordllama.inference import WordLlamaInference

__all__ = ["WordLlamaEmbeddings", "wordllama_cache_dir"]

_CONFIG = "l2_supercat"
_DIM = 256
_SHIPPED_FILES = (
    ("tokenizers", f"{_CONFIG}_tokenizer_config.json"),
    ("weights", f"{_CONFIG}_{_DIM}.safetensors"),
)

_model_lock = threading.Lock()
_model: WordLlamaInference | None = None


def wordllama_cache_dir() -> Path:
    """Where the shipped WordLlama files are copied: ``wordllama/`` in the package's
    per-user cache (:func:`~langchain_autodemo.local_models.cache_root`)."""
    from langchain_autodemo.local_models import cache_root

    return cache_root() / "wordllama"


def _import_wordllama() -> None:
    """Import wordllama without letting it reconfigure the host's logging.

    wordllama 0.4 calls ``logging.basicConfig(level=logging.INFO)`` at import, which turns
    on INFO logging of every library in the host program (a notebook then prints a line
    per HTTP request). ``basicConfig`` does nothing while the root logger has a handler,
    so one is held there during the import.
    """
    if "wordllama.inference" in sys.modules:
        return
    root = logging.getLogger()
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        import wordllama.inference  # noqa: F401 - imported for its side effects, contained
    finally:
        root.removeHandler(guard)


def _stage_shipped_files(cache_dir: Path) -> Path:
    """Copy the tokenizer config and weights out of the installed wheel (once).

    Copies go through a temporary file and an atomic rename so that two processes
    staging at once never see a half-written file.
    """
    _import_wordllama()
    import wordllama

    package_dir = Path(wordllama.__file__).parent
    for sub_dir, name in _SHIPPED_FILES:
        source = package_dir / sub_dir / name
        target = cache_dir / sub_dir / name
        if target.exists() and target.stat().st_size == source.stat().st_size:
            continue
        if not source.exists():
            raise FileNotFoundError(
                f"the installed wordllama package lacks {sub_dir}/{name}; "
                "reinstall wordllama>=0.4,<0.5"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.")
        os.close(fd)
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    return cache_dir


def _writable_cache_dir() -> Path:
    """The user cache folder, or a per-user temp folder where home is read-only."""
    preferred = wordllama_cache_dir()
    try:
        return _stage_shipped_files(preferred)
    except OSError:
        fallback = Path(tempfile.gettempdir()) / f"langchain_autodemo-{os.getuid()}" / "wordllama"
        return _stage_shipped_files(fallback)


def load_wordllama() -> WordLlamaInference:
    """The process-wide WordLlama model, loaded on first use (about 0.1 s)."""
    global _model
    with _model_lock:
        if _model is None:
            _import_wordllama()
            from wordllama import WordLlama

            _model = WordLlama.load(
                config=_CONFIG, dim=_DIM, cache_dir=_writable_cache_dir(), disable_download=True
            )
        return _model


class WordLlamaEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over the WordLlama model shipped in the ``wordllama`` wheel.

    Vectors are L2-normalised (cosine similarity is a dot product). An empty or
    blank text has no tokens and gets the zero vector (wordllama itself would return
    NaNs for it). The model loads lazily, once per process.

    Args:
        batch_size: texts per tokenizer/embedding chunk.

    Example:
        >>> emb = WordLlamaEmbeddings()
        >>> q = emb.embed_query("A robe takes 2 bolts of blue fiber")
        >>> round(sum(x * x for x in q), 3)
        1.0
    """

    model_name: str = f"wordllama-{_CONFIG}-{_DIM}"

    def __init__(self, batch_size: int = 512) -> None:
        self.batch_size = require_positive_int("batch_size", batch_size)

    def __repr__(self) -> str:
        return f"WordLlamaEmbeddings(batch_size={self.batch_size})"

    def embed_array(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` into a float32 ``(len(texts), 256)`` array of unit rows.

        The selector uses this fast path: 100k vectors as Python lists cost ~1 GB.
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, _DIM), dtype=np.float32)
        raw = load_wordllama().embed(texts, norm=False, batch_size=self.batch_size)
        vectors = np.asarray(raw, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # Zero rows (no tokens) stay zero instead of becoming NaN.
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        return vectors

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_array(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_array([text])[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
