"""LangChain's standard integration tests for ``WordLlamaEmbeddings`` (langchain-tests):
the real model shipped in the wordllama wheel, sync and async."""

from __future__ import annotations

from langchain_tests.integration_tests import EmbeddingsIntegrationTests

from langchain_autodemo.embeddings import WordLlamaEmbeddings


class TestWordLlamaEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[WordLlamaEmbeddings]:
        return WordLlamaEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {}
