"""SimilarityBatchSelector: what each grouping promises, on embedded Chroma (no sockets)."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from langchain_autodemo.grouping import (
    exact_greedy_batches,
    mean_intra_batch_similarity,
    partition_batches,
    random_batches,
)
from langchain_autodemo.planning import BatchSelector, PlannedBatch
from langchain_autodemo.selector import SimilarityBatchSelector


def groups(selector, texts, batch_size):
    """The index groups of a selector's plan: which inputs share each call."""
    return [list(plan.indices) for plan in selector.plan(texts, batch_size)]


TOPICS = {
    "eggs": ["ducks lay eggs every day", "hens lay a dozen eggs", "she sells eggs at the market"],
    "cars": ["the car drives at 60 miles per hour", "a train and a car race", "the bus drives"],
    "money": ["he saves dollars each week", "she earns money per hour", "the bank pays interest"],
}


class CountingEmbeddings(Embeddings):
    """Wraps an embeddings object and counts the texts it is asked to embed."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner = inner
        self.embedded: list[str] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded.extend(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class TopicEmbeddings(Embeddings):
    """Texts of one topic share a direction: similarity is known in advance."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)

    @staticmethod
    def _vector(text: str) -> list[float]:
        rng = np.random.default_rng(zlib.crc32(text.encode()))
        vector = rng.normal(0, 0.05, 3)
        for axis, members in enumerate(TOPICS.values()):
            if text in members or text.startswith(list(TOPICS)[axis]):
                vector[axis] += 1.0
        return vector.tolist()


def fake_selector(**kwargs: object) -> SimilarityBatchSelector:
    return SimilarityBatchSelector(DeterministicFakeEmbedding(size=16), **kwargs)  # type: ignore[arg-type]


def flat(batches: list[list[int]]) -> list[int]:
    return sorted(i for b in batches for i in b)


# -- partition -------------------------------------------------------------------------


def test_selector_is_a_batch_planner() -> None:
    assert isinstance(fake_selector(), BatchSelector)


def test_partition_covers_every_input_exactly_once() -> None:
    texts = [f"question {i}" for i in range(37)]
    batches = groups(fake_selector(), texts, 8)
    assert flat(batches) == list(range(37))
    assert len(batches) == math.ceil(37 / 8)
    assert all(1 <= len(b) <= 8 for b in batches)


def test_partition_groups_inputs_of_the_same_topic() -> None:
    texts = [t for members in TOPICS.values() for t in members]
    order = [0, 3, 6, 1, 4, 7, 2, 5, 8]  # interleave the topics
    shuffled = [texts[i] for i in order]
    batches = groups(SimilarityBatchSelector(TopicEmbeddings()), shuffled, 3)
    topics = [{order[i] // 3 for i in batch} for batch in batches]
    assert all(len(t) == 1 for t in topics), batches


def test_partition_with_the_offline_default_embeddings_groups_by_meaning() -> None:
    texts = [
        "Ducks lay 16 eggs per day. How many eggs in a week?",
        "What is the capital city of France?",
        "A hen lays 3 eggs a day. How many eggs in 5 days?",
        "Which city is the capital of Germany?",
    ]
    assert groups(SimilarityBatchSelector(), texts, 2) == [[0, 2], [1, 3]]


def test_partition_plan_keeps_every_answer_and_has_no_demonstrations() -> None:
    plans = fake_selector().plan(["a", "b", "c"], 2)
    assert all(isinstance(p, PlannedBatch) for p in plans)
    assert all(p.keep is None and p.demonstrations == () for p in plans)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.text(max_size=12), max_size=60),
    batch_size=st.integers(min_value=1, max_value=17),
)
def test_partition_property_every_index_once_sizes_and_count(
    texts: list[str], batch_size: int
) -> None:
    batches = groups(PROPERTY_SELECTOR, texts, batch_size)
    assert flat(batches) == list(range(len(texts)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert len(batches) == math.ceil(len(texts) / batch_size)


PROPERTY_SELECTOR = fake_selector()


@given(
    rows=st.integers(min_value=0, max_value=300),
    batch_size=st.integers(min_value=1, max_value=40),
    seed=st.integers(min_value=0, max_value=2**16),
)
@settings(max_examples=40, deadline=None)
def test_partition_algorithm_property_on_random_vectors(
    rows: int, batch_size: int, seed: int
) -> None:
    vectors = np.random.default_rng(seed).standard_normal((rows, 8)).astype(np.float32)
    batches = partition_batches(vectors, batch_size)
    assert flat(batches) == list(range(rows))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert len(batches) == math.ceil(rows / batch_size)


def test_partition_is_at_least_nine_tenths_of_the_exact_greedy() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 32))
    vectors = centres[rng.integers(0, 20, 400)] + rng.normal(0, 0.7, (400, 32))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    exact = mean_intra_batch_similarity(vectors, exact_greedy_batches(vectors, 8))
    ours = mean_intra_batch_similarity(vectors, partition_batches(vectors, 8))
    chance = mean_intra_batch_similarity(vectors, random_batches(400, 8))
    assert ours >= 0.9 * exact > chance


# -- bad input -------------------------------------------------------------------------


def test_empty_input_gives_no_batches() -> None:
    selector = fake_selector()
    assert groups(selector, [], 4) == []
    assert selector.plan([], 4) == []


def test_fewer_inputs_than_the_batch_size_make_one_batch() -> None:
    assert groups(fake_selector(), ["x", "y", "z"], 8) == [[0, 1, 2]]


def test_duplicate_texts_each_appear_exactly_once() -> None:
    texts = ["same", "other", "same", "same", "third"]
    batches = groups(fake_selector(), texts, 2)
    assert flat(batches) == list(range(5))


def test_empty_strings_are_grouped_but_never_embedded() -> None:
    counting = CountingEmbeddings(DeterministicFakeEmbedding(size=8))
    batches = groups(SimilarityBatchSelector(counting), ["", "a", "  ", "b", ""], 2)
    assert flat(batches) == list(range(5))
    assert sorted(counting.embedded) == ["a", "b"]


def test_only_blank_inputs_still_get_batches() -> None:
    assert flat(groups(fake_selector(), ["", " ", ""], 2)) == [0, 1, 2]


@pytest.mark.parametrize("batch_size", [0, -3])
def test_batch_size_below_one_is_an_error(batch_size: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        groups(fake_selector(), ["a"], batch_size)


def test_unknown_grouping_is_an_error() -> None:
    with pytest.raises(ValueError, match="grouping"):
        fake_selector(grouping="clusters")


def test_demo_pool_grouping_without_a_pool_is_an_error() -> None:
    with pytest.raises(ValueError, match="demo_pool"):
        fake_selector(grouping="demo_pool")


def test_a_persisted_collection_with_another_dimension_is_a_clear_error(tmp_path: Path) -> None:
    groups(
        SimilarityBatchSelector(
            DeterministicFakeEmbedding(size=8), persist_directory=tmp_path, collection_name="vecs"
        ),
        ["a", "b"],
        2,
    )
    other = SimilarityBatchSelector(
        DeterministicFakeEmbedding(size=12), persist_directory=tmp_path, collection_name="vecs"
    )
    with pytest.raises(ValueError, match=r"'vecs'.*8-dimensional.*12-dimensional") as info:
        groups(other, ["c", "d"], 2)
    error = info.value  # no chromadb stack trace chained to it
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


# -- content-hash cache ----------------------------------------------------------------


def test_a_second_run_over_the_same_inputs_embeds_nothing() -> None:
    counting = CountingEmbeddings(DeterministicFakeEmbedding(size=8))
    selector = SimilarityBatchSelector(counting)
    texts = [f"q{i}" for i in range(10)]
    first = groups(selector, texts, 4)
    assert len(counting.embedded) == 10
    groups(selector, [*reversed(texts), "new"], 4)
    assert counting.embedded[10:] == ["new"]
    assert selector.last_stats.cached == 10 and selector.last_stats.embedded == 1
    assert groups(selector, texts, 4) == first


def test_the_cache_persists_across_selectors_and_processes(tmp_path: Path) -> None:
    texts = ["alpha", "beta", "gamma"]
    first = CountingEmbeddings(DeterministicFakeEmbedding(size=8))
    groups(SimilarityBatchSelector(first, persist_directory=tmp_path), texts, 2)
    second = CountingEmbeddings(DeterministicFakeEmbedding(size=8))
    groups(SimilarityBatchSelector(second, persist_directory=tmp_path), texts, 2)
    assert len(first.embedded) == 3 and second.embedded == []


def test_vectors_are_stored_under_content_hash_ids(tmp_path: Path) -> None:
    selector = fake_selector(persist_directory=tmp_path)
    groups(selector, ["one", "two"], 2)
    ids = selector.collection.get()["ids"]
    assert len(ids) == 2 and all(len(i) == 64 for i in ids)
    assert selector._content_id("one") in ids


def test_duplicates_are_embedded_once() -> None:
    counting = CountingEmbeddings(DeterministicFakeEmbedding(size=8))
    groups(SimilarityBatchSelector(counting), ["x", "x", "y", "x"], 2)
    assert sorted(counting.embedded) == ["x", "y"]


# -- neighbors -------------------------------------------------------------------------


def test_neighbors_grouping_makes_one_batch_per_input_keeping_only_the_target() -> None:
    texts = [t for members in TOPICS.values() for t in members]
    selector = SimilarityBatchSelector(TopicEmbeddings(), grouping="neighbors")
    plans = selector.plan(texts, 3)
    assert len(plans) == len(texts) == selector.last_stats.calls
    for target, plan in enumerate(plans):
        assert plan.indices[0] == target and plan.keep == frozenset({target})
        assert {i // 3 for i in plan.indices} == {target // 3}  # same-topic neighbours


def test_neighbors_grouping_does_not_pad_a_batch_with_copies_of_the_target() -> None:
    texts = ["eggs one", "eggs one", "cars two", "money three"]
    plans = SimilarityBatchSelector(TopicEmbeddings(), grouping="neighbors").plan(texts, 3)
    assert 1 not in plans[0].indices and 0 not in plans[1].indices


def test_neighbors_grouping_with_a_single_input() -> None:
    plans = fake_selector(grouping="neighbors").plan(["only"], 4)
    assert plans == [PlannedBatch((0,), frozenset({0}))]


# -- demo pool -------------------------------------------------------------------------


POOL = [
    ("eggs: a duck lays 2 eggs", "2"),
    ("eggs: a hen lays 3 eggs", "3"),
    ("cars: a car drives 40 miles", "40"),
    ("money: he saves 5 dollars", "5"),
    ("money: she earns 9 dollars", "9"),
]


def test_demo_pool_batches_get_the_most_similar_solved_examples() -> None:
    texts = ["eggs: how many eggs?", "money: how many dollars?"]
    selector = SimilarityBatchSelector(
        TopicEmbeddings(), grouping="demo_pool", demo_pool=POOL, demos_per_batch=2
    )
    plans = selector.plan(texts, 1)
    assert [p.indices for p in plans] == [(0,), (1,)]
    assert {q for q, _ in plans[0].demonstrations} == {POOL[0][0], POOL[1][0]}
    assert {q for q, _ in plans[1].demonstrations} == {POOL[3][0], POOL[4][0]}
    assert all(p.keep is None for p in plans)


def test_demo_pool_never_shows_a_batch_its_own_question() -> None:
    texts = [POOL[0][0], "eggs: another"]
    selector = SimilarityBatchSelector(
        TopicEmbeddings(), grouping="demo_pool", demo_pool=POOL, demos_per_batch=3
    )
    (plan,) = selector.plan(texts, 2)
    questions = [q for q, _ in plan.demonstrations]
    assert POOL[0][0] not in questions and len(questions) == 3


def test_demo_pool_deduplicates_questions_and_caps_the_count() -> None:
    pool = [*POOL, POOL[0], (POOL[0][0], "other answer")]
    selector = SimilarityBatchSelector(
        TopicEmbeddings(), grouping="demo_pool", demo_pool=pool, demos_per_batch=10
    )
    (plan,) = selector.plan(["eggs: how many?"], 4)
    questions = [q for q, _ in plan.demonstrations]
    assert len(questions) == len(set(questions)) == len(POOL)


def test_demo_pool_orders_the_most_similar_example_last() -> None:
    selector = SimilarityBatchSelector(
        TopicEmbeddings(), grouping="demo_pool", demo_pool=POOL, demos_per_batch=3
    )
    (plan,) = selector.plan(["cars: how far?"], 1)
    assert plan.demonstrations[-1] == POOL[2]


def test_demo_pool_is_stored_in_chroma_and_reused(tmp_path: Path) -> None:
    counting = CountingEmbeddings(TopicEmbeddings())
    kwargs = {"grouping": "demo_pool", "demo_pool": POOL, "persist_directory": tmp_path}
    SimilarityBatchSelector(counting, **kwargs).plan(["eggs?"], 1)  # type: ignore[arg-type]
    assert len(counting.embedded) == len(POOL) + 1
    again = CountingEmbeddings(TopicEmbeddings())
    SimilarityBatchSelector(again, **kwargs).plan(["eggs?"], 1)  # type: ignore[arg-type]
    assert again.embedded == []


def _pool_collection(tmp_path: Path, name: str = "a-given-pool") -> object:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(str(tmp_path), settings=Settings(anonymized_telemetry=False))
    return client.create_collection(name, embedding_function=None)


def test_demonstrations_come_from_a_given_collection(tmp_path: Path) -> None:
    collection = _pool_collection(tmp_path)
    writer = SimilarityBatchSelector(TopicEmbeddings())
    stored = writer.write_demonstrations(
        collection, [*POOL, ("  ", "blank"), POOL[0]], [{"n": i} for i in range(len(POOL) + 2)]
    )
    assert stored == collection.count() == len(POOL)  # type: ignore[attr-defined]
    found = collection.get(include=["documents", "metadatas"])  # type: ignore[attr-defined]
    assert dict(
        zip(found["documents"], (m["answer"] for m in found["metadatas"]), strict=True)
    ) == (dict(POOL))
    selector = SimilarityBatchSelector(
        TopicEmbeddings(),
        demo_collection=collection,
        demos_per_batch=2,  # type: ignore[arg-type]
    )
    (plan,) = selector.plan(["money: how many dollars?"], 4)
    assert {q for q, _ in plan.demonstrations} == {POOL[3][0], POOL[4][0]}


def test_keep_order_batches_consecutive_inputs_and_still_retrieves_demos() -> None:
    texts = ["eggs: one", "money: two", "eggs: three", "money: four"]
    selector = SimilarityBatchSelector(
        TopicEmbeddings(), demo_pool=POOL, demos_per_batch=1, keep_order=True
    )
    plans = selector.plan(texts, 2)
    assert [p.indices for p in plans] == [(0, 1), (2, 3)]
    assert all(len(p.demonstrations) == 1 for p in plans)
    grouped = SimilarityBatchSelector(TopicEmbeddings()).plan(texts, 2)
    assert sorted(p.indices for p in grouped) == [(0, 2), (1, 3)]


def test_an_empty_given_collection_gives_no_demonstrations(tmp_path: Path) -> None:
    selector = SimilarityBatchSelector(
        TopicEmbeddings(),
        demo_collection=_pool_collection(tmp_path),  # type: ignore[arg-type]
    )
    assert [p.demonstrations for p in selector.plan(["eggs?", "cars?"], 1)] == [(), ()]


def test_pool_arguments_that_do_not_go_together_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        SimilarityBatchSelector(
            TopicEmbeddings(),
            demo_pool=POOL,
            demo_collection=_pool_collection(tmp_path),  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="keep_order"):
        SimilarityBatchSelector(TopicEmbeddings(), grouping="neighbors", keep_order=True)


# -- async -----------------------------------------------------------------------------


async def test_aplan_matches_plan() -> None:
    texts = [f"question number {i}" for i in range(25)]
    selector = fake_selector()
    planned = await selector.aplan(texts, 4)
    assert [list(plan.indices) for plan in planned] == groups(selector, texts, 4)


async def test_aplan_uses_the_async_embedding_path() -> None:
    class AsyncOnly(DeterministicFakeEmbedding):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise AssertionError("the async path must not call embed_documents")

        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            return [self._get_embedding(seed=self._get_seed(t)) for t in texts]

    plans = await SimilarityBatchSelector(AsyncOnly(size=8)).aplan(["a", "b", "c"], 2)
    assert sorted(i for p in plans for i in p.indices) == [0, 1, 2]
