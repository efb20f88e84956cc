"""WordLlamaEmbeddings: real semantic vectors from the wheel, never a download."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from langchain_autodemo import embeddings as module
from langchain_autodemo.embeddings import WordLlamaEmbeddings, load_wordllama


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))


def test_vectors_are_256_dimensional_unit_vectors() -> None:
    vectors = WordLlamaEmbeddings().embed_documents(["How many eggs?", "Capital of France?"])
    assert [len(v) for v in vectors] == [256, 256]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_similar_meanings_are_closer_than_unrelated_ones() -> None:
    emb = WordLlamaEmbeddings()
    eggs = emb.embed_query("A duck lays 16 eggs per day")
    hens = emb.embed_query("Each hen lays 3 eggs every morning")
    paris = emb.embed_query("What is the capital city of France?")
    assert cosine(eggs, hens) > cosine(eggs, paris) + 0.1


def test_blank_text_gets_the_zero_vector_not_nans() -> None:
    vectors = np.asarray(WordLlamaEmbeddings().embed_documents(["", "   ", "x"]))
    assert not np.isnan(vectors).any()
    assert np.count_nonzero(vectors[0]) == 0


def test_query_and_document_embeddings_agree() -> None:
    emb = WordLlamaEmbeddings()
    assert np.allclose(emb.embed_query("seven apples"), emb.embed_documents(["seven apples"])[0])


def test_embedding_is_independent_of_the_other_texts_in_the_call() -> None:
    emb = WordLlamaEmbeddings(batch_size=2)
    alone = emb.embed_array(["short"])
    padded = emb.embed_array(["a much longer sentence with many more tokens", "short"])
    assert np.allclose(alone[0], padded[1], atol=1e-6)


def test_embed_array_of_nothing_is_an_empty_matrix() -> None:
    assert WordLlamaEmbeddings().embed_array([]).shape == (0, 256)


async def test_async_embeddings_match_sync() -> None:
    emb = WordLlamaEmbeddings()
    assert await emb.aembed_documents(["ten"]) == emb.embed_documents(["ten"])
    assert await emb.aembed_query("ten") == emb.embed_query("ten")


def test_the_model_loads_once_per_process() -> None:
    assert load_wordllama() is load_wordllama()


def test_loading_stages_the_shipped_files_and_never_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sockets are disabled in unit tests: a download attempt would fail here."""
    monkeypatch.setenv("AUTODEMO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(module, "_model", None)
    model = load_wordllama()
    assert (tmp_path / "wordllama/tokenizers/l2_supercat_tokenizer_config.json").is_file()
    assert (tmp_path / "wordllama/weights/l2_supercat_256.safetensors").is_file()
    assert model.embed(["hello"]).shape == (1, 256)


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        WordLlamaEmbeddings(batch_size=0)


def test_embedding_leaves_the_hosts_logging_alone() -> None:
    # wordllama calls logging.basicConfig(level=INFO) at import; in a fresh process (this
    # one has imported it already) the root logger must stay as the host left it.
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from langchain_autodemo.embeddings import WordLlamaEmbeddings\n"
        "WordLlamaEmbeddings().embed_documents(['a robe takes 2 bolts'])\n"
        "root = logging.getLogger()\n"
        "print(root.level, len(root.handlers))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.split() == [str(logging.WARNING), "0"]
