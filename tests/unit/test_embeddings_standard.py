"""LangChain's standard unit tests for ``WordLlamaEmbeddings`` (langchain-tests)."""

from __future__ import annotations

from langchain_tests.unit_tests import EmbeddingsUnitTests

from langchain_autodemo.embeddings import WordLlamaEmbeddings


class TestWordLlamaEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[WordLlamaEmbeddings]:
        return WordLlamaEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"batch_size": 64}
