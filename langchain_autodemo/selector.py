"""Retrieval-based batch data selection (Auto-Demo, arXiv 2410.01724) on a real Chroma store.

:class:`SimilarityBatchSelector` puts similar inputs into the same model call so that the
model's restatements of its neighbours act as relevant in-batch demonstrations.

Groupings (``grouping=``):

* ``"similarity"`` (default): disjoint batches covering every input once, similar inputs
  together: ``ceil(n/N)`` calls, as many as plain batching. (``"partition"``, the name of
  its algorithm in :mod:`langchain_autodemo.grouping`, is accepted as a deprecated alias.)
* ``"neighbors"``: the paper's algorithm as written: each input is batched with its N-1
  most similar other inputs and only its own answer is kept: ``n`` calls, and
  :attr:`SimilarityBatchSelector.last_stats` says so (``calls``).
* ``"demo_pool"``: batches as in ``similarity``, and each batch starts with the
  ``demos_per_batch`` most similar *solved* examples from a user-given pool (e.g. a
  training set) retrieved from a Chroma collection: retrieval few-shot plus Auto-Demo.

With ``keep_order=True`` the batches are consecutive inputs in input order (plain
batching) and, with a pool, each still gets its nearest demonstrations. A pool can also
be an existing collection (``demo_collection``), filled by :meth:`write_demonstrations`:
``autodemo eval``'s ``+bootstrap`` methods keep the model's own solved answers there.

Design decisions (numbers from ``benchmarks/bench_selector.py``, 2-core machine):

* **Chroma is the persistent vector cache; grouping runs on a numpy matrix.** Every
  vector is stored under a content-hash id (sha256 of the embeddings' identity and the
  text), so a second run over the same inputs embeds nothing. Grouping itself does not
  query Chroma: one HNSW query per item or per batch (and ever larger ``k`` as items
  get assigned) is slower than O(n·d) numpy passes over the fetched matrix, and the
  partition quality is higher (see :mod:`langchain_autodemo.grouping`). Writing 100k
  new vectors into Chroma costs far more than grouping them (see the benchmark), which
  is why the input collection uses a cheaper HNSW build (``max_neighbors=8``,
  ``ef_construction=40``): it is never searched. The demonstration pool *is* searched
  (one nearest-neighbour query per batch centroid) and keeps Chroma's defaults.
* **Embedded Chroma by default.** Without ``client`` or ``persist_directory`` the
  selector uses the in-process ephemeral Chroma with a collection private to the
  selector (a unique name suffix, dropped when the selector is garbage collected):
  chromadb shares one ephemeral database per process, and two selectors with
  different embedding sizes must not collide there. With ``persist_directory`` or
  ``client`` (e.g. ``chromadb.HttpClient``) the collection is exactly
  ``collection_name``, shared across runs and processes.
* **Never Chroma's default embedding function** (it downloads an ONNX model): the
  collections are created with ``embedding_function=None`` and always receive vectors
  computed here; the default embeddings are the offline
  :class:`~langchain_autodemo.embeddings.WordLlamaEmbeddings`.

Example:
    >>> selector = SimilarityBatchSelector()
    >>> plans = selector.plan(["2+2?", "Capital of France?", "3+5?", "Capital of Spain?"], 2)
    >>> [plan.indices for plan in plans]
    [(0, 2), (1, 3)]
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from langchain_core.embeddings import Embeddings

from langchain_autodemo._validation import require_positive_int
from langchain_autodemo.grouping import neighbor_batches, partition_batches, unit_rows
from langchain_autodemo.planning import BatchSelector, Demonstration, PlannedBatch

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

__all__ = ["SimilarityBatchSelector", "SelectionStats", "Grouping"]

Grouping = Literal["similarity", "neighbors", "demo_pool", "partition"]
"""How the selector groups inputs into batches (see the module doc). Not to be confused
with the runnable's :class:`~langchain_autodemo.prompts.Mode`, how a batch is asked."""
_GROUPINGS: tuple[str, ...] = ("similarity", "neighbors", "demo_pool")

# The input collection is a cache that is never searched: a cheaper HNSW build
# (docs/design/measured-choices.md).
_CACHE_HNSW = {"space": "cosine", "max_neighbors": 8, "ef_construction": 40}
_POOL_HNSW = {"space": "cosine"}
_QUERY_CHUNK = 256

_ephemeral_lock = threading.Lock()
_ephemeral_client: ClientAPI | None = None


@dataclass
class SelectionStats:
    """What the last :meth:`SimilarityBatchSelector.plan` call did and cost.

    ``calls`` is the number of batches (model calls) planned: ``n`` with the ``neighbors``
    grouping. Times are wall-clock seconds: ``embed_seconds`` only the embedding model,
    ``store_seconds`` Chroma reads and writes, ``group_seconds`` the grouping itself,
    ``retrieve_seconds`` the demonstration-pool queries.
    """

    items: int = 0
    unique_texts: int = 0
    embedded: int = 0
    cached: int = 0
    calls: int = 0
    embed_seconds: float = 0.0
    store_seconds: float = 0.0
    group_seconds: float = 0.0
    retrieve_seconds: float = 0.0


@dataclass
class _Lookup:
    """Distinct texts of a call and which of them still need embedding."""

    unique: list[str]  # distinct texts, first-occurrence order
    inverse: np.ndarray  # position -> row of ``unique``
    cached_rows: np.ndarray  # rows of ``unique`` found in Chroma ...
    cached_vectors: np.ndarray | None  # ... and their vectors (same order)
    missing: list[int]  # rows of ``unique`` (non-blank) with no cached vector


class SimilarityBatchSelector(BatchSelector):
    """Groups similar inputs into batches, backed by a Chroma collection of vectors.

    Args:
        embeddings: any LangChain ``Embeddings``; ``None`` uses the offline
            :class:`~langchain_autodemo.embeddings.WordLlamaEmbeddings`.
        client: a ``chromadb`` client (``chromadb.HttpClient(...)`` for a Chroma
            server, ``chromadb.PersistentClient(...)``); default: embedded Chroma.
        collection_name: the vector-cache collection (3-512 characters from
            ``[a-zA-Z0-9._-]``); the demonstration pool lives in
            ``{collection_name}-pool-{hash}``.
        persist_directory: embedded Chroma persisted here (ignored with ``client``).
        grouping: ``"similarity"``, ``"neighbors"`` or ``"demo_pool"`` (see the module doc).
        demo_pool: solved ``(question, answer)`` pairs; required by ``"demo_pool"``,
            and when given with another grouping its batches get demonstrations too.
        demos_per_batch: demonstrations per batch.
        demo_collection: an existing Chroma collection of solved demonstrations to search
            instead of one built from ``demo_pool`` (fill it with
            :meth:`write_demonstrations`, using embeddings of the same model).
        keep_order: batch consecutive inputs in input order instead of grouping similar
            ones (``partition`` and ``demo_pool`` groupings); demonstrations are still
            retrieved per batch.
        embedding_key: identity of the embedding model in the content-hash ids;
            default: the embeddings' class and model name. Change it when the same
            class produces different vectors (another model or version).
        refine_passes: swap-refinement passes of the partition (0: bisection only).
        seed: seed of the (deterministic) partition.

    Example:
        >>> pool = [("What is 2+3?", "5"), ("Capital of Italy?", "Rome")]
        >>> selector = SimilarityBatchSelector(grouping="demo_pool", demo_pool=pool,
        ...                                    demos_per_batch=1)
        >>> [b.demonstrations for b in selector.plan(["What is 4+4?"], 8)]
        [(('What is 2+3?', '5'),)]
    """

    def __init__(
        self,
        embeddings: Embeddings | None = None,
        *,
        client: ClientAPI | None = None,
        collection_name: str = "autodemo_inputs",
        persist_directory: str | Path | None = None,
        grouping: Grouping = "similarity",
        demo_pool: Iterable[Demonstration] | None = None,
        demos_per_batch: int = 4,
        embedding_key: str | None = None,
        refine_passes: int = 3,
        seed: int = 0,
        demo_collection: Collection | None = None,
        keep_order: bool = False,
    ) -> None:
        if grouping == "partition":
            warnings.warn(
                "grouping='partition' is deprecated: use grouping='similarity'",
                DeprecationWarning,
                stacklevel=2,
            )
            grouping = "similarity"
        if grouping not in _GROUPINGS:
            raise ValueError(f"grouping must be one of {_GROUPINGS}, got {grouping!r}")
        if grouping == "demo_pool" and demo_pool is None and demo_collection is None:
            raise ValueError("grouping='demo_pool' needs demo_pool=[(question, answer), ...]")
        if demo_pool is not None and demo_collection is not None:
            raise ValueError("give demo_pool or demo_collection, not both")
        if keep_order and grouping == "neighbors":
            raise ValueError("keep_order does not apply to grouping='neighbors'")
        if demos_per_batch < 0:
            raise ValueError("demos_per_batch must be >= 0")
        if embeddings is None:
            from langchain_autodemo.embeddings import WordLlamaEmbeddings

            embeddings = WordLlamaEmbeddings()
        self.embeddings = embeddings
        self.grouping: Grouping = grouping
        self.demo_pool: tuple[Demonstration, ...] | None = (
            None if demo_pool is None else _clean_pool(demo_pool)
        )
        self.demos_per_batch = demos_per_batch
        self.embedding_key = embedding_key or _default_embedding_key(embeddings)
        self.refine_passes = refine_passes
        self.seed = seed
        self.keep_order = keep_order
        self.last_stats = SelectionStats()
        self._client, private = _resolve_client(client, persist_directory)
        # A private ephemeral collection must not collide with other selectors'.
        self.collection_name = (
            f"{collection_name}-{uuid.uuid4().hex[:8]}" if private else collection_name
        )
        self._collection: Collection | None = None
        self._pool_collection: Collection | None = demo_collection
        self._max_batch: int | None = None
        if private:
            weakref.finalize(self, _drop_collections, self._client, self.collection_name)

    # -- public API ----------------------------------------------------------------

    def plan(self, texts: Sequence[str], batch_size: int) -> list[PlannedBatch]:
        """The batches for ``texts`` (see the module doc for each grouping), with ``keep``
        (neighbors grouping) and ``demonstrations`` (with a pool) filled in.

        Example:
            >>> SimilarityBatchSelector().plan([], 4)
            []
        """
        texts = _check_inputs(texts, batch_size)
        self.last_stats = stats = SelectionStats(items=len(texts))
        if not texts:
            return []
        lookup, vectors = self._vectors(texts, stats)
        return self._plan_from_vectors(texts, lookup, vectors, batch_size, stats)

    async def aplan(self, texts: Sequence[str], batch_size: int) -> list[PlannedBatch]:
        texts = _check_inputs(texts, batch_size)
        self.last_stats = stats = SelectionStats(items=len(texts))
        if not texts:
            return []
        lookup = await asyncio.to_thread(self._lookup, texts, stats)
        new_vectors = await self._aembed(lookup, stats)
        vectors = await asyncio.to_thread(self._store_and_assemble, lookup, new_vectors, stats)
        return await asyncio.to_thread(
            self._plan_from_vectors, texts, lookup, vectors, batch_size, stats
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm vectors of ``texts`` (rows in order) through the Chroma cache.

        Blank texts get zero rows and are never sent to the embedding model.
        """
        texts = list(texts)
        stats = SelectionStats(items=len(texts))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        lookup, unique_vectors = self._vectors(texts, stats)
        return unique_vectors[lookup.inverse]

    @property
    def collection(self) -> Collection:
        """The Chroma collection holding the cached input vectors."""
        if self._collection is None:
            self._collection = self._client.get_or_create_collection(
                self.collection_name,
                embedding_function=None,  # never Chroma's downloading default
                configuration={"hnsw": _CACHE_HNSW},  # type: ignore[arg-type]
                metadata={"autodemo": "vector cache"},
            )
        return self._collection

    # -- vectors: cache lookup, embedding, storage -----------------------------------

    def _content_id(self, text: str) -> str:
        return hashlib.sha256(f"{self.embedding_key}\x1f{text}".encode()).hexdigest()

    def _chunk(self) -> int:
        if self._max_batch is None:
            self._max_batch = max(1, min(self._client.get_max_batch_size(), 5000))
        return self._max_batch

    def _lookup(self, texts: Sequence[str], stats: SelectionStats) -> _Lookup:
        """Deduplicate ``texts`` and fetch the vectors Chroma already has."""
        started = time.perf_counter()
        rows: dict[str, int] = {}
        inverse = np.fromiter((rows.setdefault(t, len(rows)) for t in texts), np.int64, len(texts))
        unique = list(rows)
        wanted = {self._content_id(t): row for row, t in enumerate(unique) if t.strip()}
        ids = list(wanted)
        cached_rows: list[int] = []
        cached_chunks: list[np.ndarray] = []
        for start in range(0, len(ids), self._chunk()):
            found = self.collection.get(
                ids=ids[start : start + self._chunk()], include=["embeddings"]
            )
            if found["ids"]:
                cached_rows.extend(wanted[found_id] for found_id in found["ids"])
                cached_chunks.append(np.asarray(found["embeddings"], dtype=np.float32))
        cached = set(cached_rows)
        missing = [row for row in wanted.values() if row not in cached]
        stats.unique_texts, stats.cached = len(unique), len(cached_rows)
        stats.store_seconds += time.perf_counter() - started
        cached_vectors = np.concatenate(cached_chunks) if cached_chunks else None
        return _Lookup(unique, inverse, np.asarray(cached_rows, np.int64), cached_vectors, missing)

    def _vectors(self, texts: Sequence[str], stats: SelectionStats) -> tuple[_Lookup, np.ndarray]:
        """Cache lookup, embedding of what is missing, storage: one vector per unique text."""
        lookup = self._lookup(texts, stats)
        return lookup, self._store_and_assemble(lookup, self._embed(lookup, stats), stats)

    def _embed(self, lookup: _Lookup, stats: SelectionStats) -> np.ndarray:
        texts, started = [lookup.unique[row] for row in lookup.missing], time.perf_counter()
        if not texts:
            vectors: Any = None
        elif hasattr(self.embeddings, "embed_array"):  # WordLlama: skip Python lists
            vectors = self.embeddings.embed_array(texts)
        else:
            vectors = self.embeddings.embed_documents(texts)
        return _embedded(vectors, texts, started, stats)

    async def _aembed(self, lookup: _Lookup, stats: SelectionStats) -> np.ndarray:
        texts, started = [lookup.unique[row] for row in lookup.missing], time.perf_counter()
        if not texts:
            vectors: Any = None
        elif hasattr(self.embeddings, "embed_array"):
            vectors = await asyncio.to_thread(self.embeddings.embed_array, texts)
        else:
            vectors = await self.embeddings.aembed_documents(texts)
        return _embedded(vectors, texts, started, stats)

    def _store_and_assemble(
        self, lookup: _Lookup, new_vectors: np.ndarray, stats: SelectionStats
    ) -> np.ndarray:
        """Write new vectors to Chroma; return unit rows for every distinct text."""
        started = time.perf_counter()
        if lookup.missing:
            self._check_dimension(new_vectors.shape[1], lookup)
            self._upsert(
                [self._content_id(lookup.unique[row]) for row in lookup.missing], new_vectors
            )
        stats.store_seconds += time.perf_counter() - started
        dim = _first_dim(lookup.cached_vectors, new_vectors)
        unique_vectors = np.zeros((len(lookup.unique), dim), dtype=np.float32)
        if lookup.cached_vectors is not None:
            unique_vectors[lookup.cached_rows] = lookup.cached_vectors
        if lookup.missing:
            unique_vectors[lookup.missing] = new_vectors
        return unit_rows(unique_vectors)

    def _check_dimension(self, new_dim: int, lookup: _Lookup) -> None:
        """Refuse to mix vector sizes in one collection, with a message that says so."""
        if lookup.cached_vectors is not None:
            stored_dim = lookup.cached_vectors.shape[1]
        else:
            sample = self.collection.get(limit=1, include=["embeddings"])["embeddings"]
            stored_dim = len(sample[0]) if sample is not None and len(sample) else new_dim
        if stored_dim != new_dim:
            raise _dimension_error(self.collection_name, stored_dim, new_dim)

    def _upsert(self, ids: list[str], vectors: np.ndarray) -> None:
        from chromadb.errors import InvalidArgumentError

        for start in range(0, len(ids), self._chunk()):
            stop = start + self._chunk()
            try:
                self.collection.upsert(ids=ids[start:stop], embeddings=vectors[start:stop])
            except InvalidArgumentError as error:
                stored = _parse_dimension_error(str(error))
                if stored is None:
                    raise
                raise _dimension_error(self.collection_name, stored, vectors.shape[1]) from None

    # -- grouping and demonstrations -------------------------------------------------

    def _plan_from_vectors(
        self,
        texts: list[str],
        lookup: _Lookup,
        unique_vectors: np.ndarray,
        batch_size: int,
        stats: SelectionStats,
    ) -> list[PlannedBatch]:
        started = time.perf_counter()
        if self.grouping == "neighbors":
            batches = _neighbor_positions(lookup, unique_vectors, batch_size)
        elif self.keep_order:
            batches = [
                list(range(start, min(start + batch_size, len(texts))))
                for start in range(0, len(texts), batch_size)
            ]
        else:
            batches = partition_batches(
                unique_vectors[lookup.inverse],
                batch_size,
                refine_passes=self.refine_passes,
                seed=self.seed,
            )
        stats.group_seconds = time.perf_counter() - started
        stats.calls = len(batches)
        demos = self._demonstrations(texts, batches, unique_vectors[lookup.inverse], stats)
        keep_target = self.grouping == "neighbors"
        return [
            PlannedBatch(tuple(b), frozenset({b[0]}) if keep_target else None, d)
            for b, d in zip(batches, demos, strict=True)
        ]

    def _demonstrations(
        self,
        texts: list[str],
        batches: list[list[int]],
        vectors: np.ndarray,
        stats: SelectionStats,
    ) -> list[tuple[Demonstration, ...]]:
        """For each batch, the pool examples nearest to its centroid, most similar last.

        Most similar last: it then sits right before the batch's own inputs. Examples
        whose question equals one of the batch's inputs are skipped (no answer leaks),
        and so are batches whose inputs are all blank (their centroid is zero).
        """
        has_pool = bool(self.demo_pool) or self._pool_collection is not None
        if not has_pool or self.demos_per_batch == 0:
            return [()] * len(batches)
        started = time.perf_counter()
        pool = self._pool()
        if pool.count() == 0:  # e.g. a bootstrap pool where no answer passed the checker
            return [()] * len(batches)
        centroids = np.stack([vectors[b].mean(axis=0) for b in batches])
        has_direction = np.linalg.norm(centroids, axis=1) > 1e-6
        result: list[tuple[Demonstration, ...]] = [()] * len(batches)
        asked = [i for i in range(len(batches)) if has_direction[i]]
        longest = max(len(b) for b in batches)
        n_results = min(pool.count(), self.demos_per_batch + longest)
        for start in range(0, len(asked), _QUERY_CHUNK):
            chunk = asked[start : start + _QUERY_CHUNK]
            found = pool.query(
                query_embeddings=unit_rows(centroids[chunk]),
                n_results=n_results,
                include=["documents", "metadatas"],
            )
            documents, metadata_lists = found["documents"] or [], found["metadatas"] or []
            for i, questions, metadatas in zip(chunk, documents, metadata_lists, strict=True):
                own = {texts[j].strip() for j in batches[i]}
                picked = [
                    (q, str(m["answer"]))
                    for q, m in zip(questions, metadatas, strict=True)
                    if q.strip() not in own
                ][: self.demos_per_batch]
                result[i] = tuple(reversed(picked))
        stats.retrieve_seconds = time.perf_counter() - started
        return result

    def _pool(self) -> Collection:
        """The demonstration pool's Chroma collection, filled on first use.

        Its name carries a hash of the pool and the embedding identity, so another pool
        (or another model) never reads stale examples, and a persisted pool is reused.
        """
        if self._pool_collection is not None:
            return self._pool_collection
        assert self.demo_pool is not None
        digest = hashlib.sha256(self.embedding_key.encode())
        for question, answer in self.demo_pool:
            digest.update(f"{question}\x1f{answer}\x1e".encode())
        collection = self._client.get_or_create_collection(
            f"{self.collection_name}-pool-{digest.hexdigest()[:16]}",
            embedding_function=None,
            configuration={"hnsw": _POOL_HNSW},  # type: ignore[arg-type]
            metadata={"autodemo": "demonstration pool"},
        )
        if collection.count() != len(self.demo_pool):
            self.write_demonstrations(collection, self.demo_pool)
        self._pool_collection = collection
        return collection

    def write_demonstrations(
        self,
        collection: Collection,
        demonstrations: Iterable[Demonstration],
        metadatas: Sequence[dict[str, str | int | float | bool]] | None = None,
    ) -> int:
        """Store solved ``(question, answer)`` pairs in ``collection`` as a searchable pool.

        The layout the selector searches: the question is the document, the answer is
        metadata ``answer``, the vector is this selector's embedding of the question
        (through its cache). ``metadatas`` adds fields per pair. Returns how many pairs
        were stored (blank questions are dropped, one answer per question).
        """
        pairs = list(demonstrations)
        extra = list(metadatas) if metadatas is not None else [{}] * len(pairs)
        if len(extra) != len(pairs):
            raise ValueError("metadatas must have one entry per demonstration")
        rows: dict[str, int] = {}
        for row, (question, _) in enumerate(pairs):
            if str(question).strip():
                rows.setdefault(str(question), row)
        questions = list(rows)
        if not questions:
            return 0
        vectors = self.embed(questions)
        ids = [self._content_id(q) for q in questions]
        chosen = [rows[q] for q in questions]
        for start in range(0, len(ids), self._chunk()):
            stop = start + self._chunk()
            collection.upsert(
                ids=ids[start:stop],
                embeddings=vectors[start:stop],
                documents=questions[start:stop],
                metadatas=[
                    {**extra[row], "answer": str(pairs[row][1])} for row in chosen[start:stop]
                ],
            )
        return len(questions)


# -- helpers ---------------------------------------------------------------------------


def _check_inputs(texts: Sequence[str], batch_size: int) -> list[str]:
    require_positive_int("batch_size", batch_size)
    texts = list(texts)
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"input {position} is {type(text).__name__}, not str")
    return texts


def _neighbor_positions(
    lookup: _Lookup, unique_vectors: np.ndarray, batch_size: int
) -> list[list[int]]:
    """Per position: itself and the N-1 nearest *other texts* (a duplicate of the
    target teaches nothing), each represented by its first position."""
    first_position = np.full(len(lookup.unique), -1, dtype=np.int64)
    for position in range(len(lookup.inverse) - 1, -1, -1):
        first_position[lookup.inverse[position]] = position
    unique_batches = neighbor_batches(unique_vectors, batch_size)
    return [
        [position, *first_position[unique_batches[row][1:]].tolist()]
        for position, row in enumerate(lookup.inverse.tolist())
    ]


def _clean_pool(pool: Iterable[Demonstration]) -> tuple[Demonstration, ...]:
    """Pool pairs as strings, blank questions dropped, one answer per question."""
    seen: dict[str, str] = {}
    for pair in pool:
        question, answer = pair
        if str(question).strip():
            seen.setdefault(str(question), str(answer))
    return tuple(seen.items())


def _default_embedding_key(embeddings: Embeddings) -> str:
    """``module.Class`` plus the model name and size attributes the object has."""
    cls = type(embeddings)
    parts = [f"{cls.__module__}.{cls.__qualname__}"]
    for attribute in ("model", "model_name", "model_id", "deployment", "dimensions", "size"):
        value = getattr(embeddings, attribute, None)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            parts.append(f"{attribute}={value}")
    return ";".join(parts)


def _resolve_client(
    client: ClientAPI | None, persist_directory: str | Path | None
) -> tuple[ClientAPI, bool]:
    """The Chroma client to use, and whether its collections are private to us."""
    if client is not None:
        return client, False
    import chromadb
    from chromadb.config import Settings

    if persist_directory is not None:
        settings = Settings(anonymized_telemetry=False)
        return chromadb.PersistentClient(path=str(persist_directory), settings=settings), False
    global _ephemeral_client
    with _ephemeral_lock:
        if _ephemeral_client is None:
            try:
                _ephemeral_client = chromadb.EphemeralClient(
                    settings=Settings(anonymized_telemetry=False)
                )
            except ValueError:
                # chromadb allows one ephemeral system per process, and somebody else
                # created it with other settings: share theirs.
                _ephemeral_client = chromadb.EphemeralClient()
        return _ephemeral_client, True


def _drop_collections(client: ClientAPI, name: str) -> None:
    """Free a private ephemeral collection (and its pools) when the selector dies."""
    try:
        for collection in client.list_collections():
            collection_name = getattr(collection, "name", collection)
            if collection_name == name or str(collection_name).startswith(f"{name}-pool-"):
                client.delete_collection(str(collection_name))
    except Exception:  # noqa: BLE001 - best effort at interpreter shutdown
        pass


def _embedded(vectors: Any, texts: list[str], started: float, stats: SelectionStats) -> np.ndarray:
    stats.embed_seconds += time.perf_counter() - started
    stats.embedded = len(texts)
    if vectors is None:
        return np.zeros((0, 0), dtype=np.float32)
    return _as_matrix(vectors, len(texts))


def _as_matrix(vectors: Any, expected_rows: int) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    if expected_rows == 0:
        return matrix.reshape(0, matrix.shape[1] if matrix.ndim == 2 else 0)
    if matrix.ndim != 2 or matrix.shape[0] != expected_rows:
        raise ValueError(f"the embeddings returned shape {matrix.shape} for {expected_rows} texts")
    return matrix


def _first_dim(cached: np.ndarray | None, new_vectors: np.ndarray) -> int:
    if new_vectors.shape[0]:
        return int(new_vectors.shape[1])
    if cached is not None:
        return int(cached.shape[1])
    return 1  # only blank texts: one zero column keeps the matrix well-formed


def _dimension_error(collection: str, stored: int, new: int) -> ValueError:
    return ValueError(
        f"Chroma collection {collection!r} stores {stored}-dimensional vectors, but the "
        f"embeddings produce {new}-dimensional ones; use another collection_name (or "
        "persist_directory) for this embedding model, or delete the collection"
    )


def _parse_dimension_error(message: str) -> int | None:
    """The stored dimension from chromadb's 'expecting embedding with dimension of D'."""
    marker = "dimension of "
    if marker not in message:
        return None
    digits = message.split(marker, 1)[1].split(",", 1)[0].strip()
    return int(digits) if digits.isdigit() else None
