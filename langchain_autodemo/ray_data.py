"""Auto-Demo jobs on Ray Data: one runner per worker, similarity grouping across the whole
dataset, a shared rate limit, and exactly-once, resumable output (extra ``ray``).

An edge module: nothing in the package imports it, and ``ray`` is imported here only.

The pieces:

* :class:`AutoDemoProcessor`: the callable class for ``ds.map_batches``. Each worker
  opens the model of a :class:`RayJobConfig` once and holds one
  :class:`~langchain_autodemo.AutoDemoBatchRunnable`; every input row gives exactly one
  output row (:data:`OUTPUT_COLUMNS`), in order, a per-item error being a row (its
  ``error_kind`` and ``error_message``), never a failed task. Failed model calls are
  retried inside the worker with the runner's own backoff (``Retry-After`` included).
* :func:`group_by_similarity`: embeds every row in parallel (``map_batches`` with the
  package's offline :class:`~langchain_autodemo.embeddings.WordLlamaEmbeddings`), fits
  k-means centres on a sample (:func:`~langchain_autodemo.grouping.kmeans_centres`),
  assigns each row to its nearest centre, and packs
  each centre's rows with the selector's own partition
  (:func:`~langchain_autodemo.grouping.partition_batches`) in ``map_groups``; the packs
  then reach the runner whole (:func:`answer_dataset`). :func:`intra_batch_cosine` and
  :func:`selector_cosine` measure the grouping against
  :class:`~langchain_autodemo.SimilarityBatchSelector` on the same inputs.
* :class:`RateLimiter`: a Ray actor, a token bucket of requests and tokens per minute
  that every worker asks before each model call (a LangChain callback, so it sees every
  call, re-asks included); a provider's ``Retry-After`` pauses every worker.
* :func:`run_job`: read what the output folder already holds, answer only the other ids
  (an anti-join by id), write with Ray Data's writers (Parquet, or JSON lines), and
  commit exactly once (see :func:`commit_output`).

Exactly once, and why this way: Ray retries a task whose worker died, and a retried
write task writes its block again; a retried map task may also hand a block on twice.
The writers put the files of a run in a staging folder (``_staging-RUN/``); when the
run ends, or when the next run starts after a crash, every *readable* staged file is
moved into the output folder (a file torn by a killed writer is dropped: its ids are
simply answered again) and the output is de-duplicated by id, keeping one row per id
(an answer before an error). File names alone cannot promise this (a retried upstream
task produces a new block with a new name), so the final de-duplication by id is the
guarantee; the staging makes a crash cost at most the blocks being written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import ray
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.grouping import kmeans_centres
from langchain_autodemo.settings import Settings, TunedConfig
from langchain_autodemo.usage import reported_usage

__all__ = [
    "OUTPUT_COLUMNS",
    "AutoDemoProcessor",
    "JobResult",
    "OutputFileError",
    "RateLimiter",
    "RayJobConfig",
    "answer_dataset",
    "commit_output",
    "done_ids",
    "group_by_similarity",
    "intra_batch_cosine",
    "kmeans_centres",
    "read_output",
    "run_job",
    "selector_cosine",
    "without_done",
]

logger = logging.getLogger(__name__)

OUTPUT_COLUMNS = (
    "answer",
    "error_kind",
    "error_message",
    "input_tokens",
    "output_tokens",
    "attempts",
    "confidence",
    "escalated",
)
"""The columns every output row has after its id column. ``answer`` is text (a
non-text answer, e.g. a parsed object, as JSON) or null; ``error_kind`` is the
exception's class name and ``error_message`` why (both null for an answer); the token
columns are the item's share of its call's usage; ``confidence`` the answer's (null
without log-probabilities) and ``escalated`` whether it came from an escalation."""

GROUP_COLUMN = "_autodemo_group"
PACK_COLUMN = "_autodemo_pack"
SIMILARITY_COLUMN = "_autodemo_pack_similarity"
EMBEDDING_COLUMN = "_autodemo_embedding"
_STAGING = "_staging-"


@dataclass(frozen=True, kw_only=True)
class RayJobConfig(Settings):
    """What each worker builds its runner from: plain, picklable values — the settings
    record (:class:`~langchain_autodemo.settings.Settings`) and the job's own fields.

    ``model`` is a model spec as :mod:`langchain_autodemo.models` reads it (``fake:``,
    ``openai-compatible:URL#MODEL``, ``openai:MODEL``, ...); ``config`` a tuned
    configuration file (``autodemo tune``) whose settings replace the record's (its
    similarity grouping is done across the dataset by :func:`group_by_similarity`, not
    per worker).
    """

    instructions: str | None = "Answer each question accurately."
    """The record's, with the job's default (a worker always says what the task is)."""
    model: str | None = None
    id_column: str = "id"
    input_column: str = "question"
    tuned_config: str | None = None
    """A ``tuned.json`` whose settings replace the record's (was ``config``)."""
    config: InitVar[str | None] = None
    """Deprecated spelling of ``tuned_config`` (``config.config`` read as two things)."""
    max_tokens: int | None = None
    max_concurrency: int = 4
    """Model calls in flight at once inside one worker."""
    max_attempts: int = 3
    retry_initial_delay: float = 1.0
    retry_max_delay: float = 30.0
    runner_options: Mapping[str, Any] = field(default_factory=dict)
    """Further keyword arguments of :class:`~langchain_autodemo.AutoDemoBatchRunnable`."""
    carry_columns: tuple[str, ...] = ()
    """Text columns copied from each input row to its output row, after the id (``autodemo
    run --engine ray`` carries each row's input record, so that the output folder alone
    says which record every answer is for)."""

    def __post_init__(self, config: str | None = None) -> None:  # type: ignore[override]
        super().__post_init__()
        if config is not None:
            warnings.warn(
                "RayJobConfig(config=...) is deprecated: use tuned_config=",
                DeprecationWarning,
                stacklevel=3,
            )
            object.__setattr__(self, "tuned_config", config)


def _deprecated_config(self: RayJobConfig) -> str | None:
    warnings.warn(
        "RayJobConfig.config is deprecated: use tuned_config", DeprecationWarning, stacklevel=2
    )
    return self.tuned_config


# Reading the old name gives the tuned config, with a warning (the InitVar alone would
# leave its class default, None, readable: a silent wrong answer).
RayJobConfig.config = property(_deprecated_config)  # type: ignore[attr-defined]


# -- the processor -----------------------------------------------------------------------


class AutoDemoProcessor:
    """``ds.map_batches(AutoDemoProcessor, fn_constructor_kwargs={"config": ...},
    concurrency=K, batch_format="pandas")``: one runner per worker, one output row per
    input row (the id column and :data:`OUTPUT_COLUMNS`), in input order.

    Works with ``batch_format="pandas"`` and ``"numpy"`` (the output is an Arrow table
    either way). Rows of one similarity pack (:func:`group_by_similarity`) are asked
    together.

    Args:
        config: a :class:`RayJobConfig` (or its fields as a dict).
        rate_limiter: a :class:`RateLimiter` actor handle asked before each model call.
        usage: a :class:`_UsageCollector` actor handle (from :func:`run_job`) told the
            calls and tokens of each batch, for the job's summary.
    """

    def __init__(
        self,
        config: RayJobConfig | Mapping[str, Any],
        rate_limiter: Any = None,
        usage: Any = None,
    ) -> None:
        if not isinstance(config, RayJobConfig):
            config = RayJobConfig(**config)
        self.config = config
        self._stack = ExitStack()
        self.runner, self.description = _open_runner(config, self._stack)
        self._callbacks: list[BaseCallbackHandler] = []
        if rate_limiter is not None:
            self._callbacks.append(_RateLimitedCalls(rate_limiter, config.max_tokens))
        self._usage = usage

    def __del__(self) -> None:  # a llama.cpp server started for this worker stops
        with suppress(Exception):  # never raise from a finaliser
            self._stack.close()

    def __call__(self, batch: Any) -> Any:
        frame = pd.DataFrame(dict(batch)) if isinstance(batch, Mapping) else batch
        return self.answer(frame)

    def answer(self, frame: pd.DataFrame) -> pa.Table:
        """The output rows of ``frame``'s rows (same order, same length), as an Arrow
        table with a fixed schema (an all-error batch keeps its text columns text)."""
        from langchain_autodemo.usage import track_usage

        config = self.config
        ids = frame[config.id_column].tolist()
        texts = [_text(value) for value in frame[config.input_column].tolist()]
        order = _pack_order(frame)
        asked = [texts[i] for i in order]
        results: list[Any]
        with track_usage() as usage:
            try:
                answered = self.runner.batch(
                    asked,
                    {"max_concurrency": config.max_concurrency, "callbacks": self._callbacks},
                    return_exceptions=True,
                )
            except Exception as exc:  # noqa: BLE001 - a failed batch is error rows, not a failed task
                answered = [exc] * len(asked)
        results = [None] * len(texts)
        for position, index in enumerate(order):
            results[index] = answered[position]
        if self._usage is not None:
            ray.get(self._usage.add.remote(usage.as_dict(), len(texts)))
        rows = [_output_row(result) for result in results]
        columns = {config.id_column: pa.array([_plain(i) for i in ids])}
        for name in config.carry_columns:
            columns[name] = pa.array([_utf8(v) for v in frame[name].tolist()], type=pa.string())
        for name, kind in _OUTPUT_TYPES.items():
            columns[name] = pa.array([row[name] for row in rows], type=kind)
        return pa.table(columns)


_OUTPUT_TYPES = {
    "answer": pa.string(),
    "error_kind": pa.string(),
    "error_message": pa.string(),
    "input_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "attempts": pa.int64(),
    "confidence": pa.float64(),
    "escalated": pa.bool_(),
}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _open_runner(config: RayJobConfig, stack: ExitStack) -> tuple[Any, str]:
    """The worker's runner, from the model spec and (optionally) a tuned config file."""
    from langchain_autodemo.models import open_model
    from langchain_autodemo.runnable import AutoDemoBatchRunnable

    opened = stack.enter_context(open_model(config.model, max_tokens=config.max_tokens))
    common: dict[str, Any] = {
        "include_details": True,
        "max_attempts": config.max_attempts,
        "retry_initial_delay": config.retry_initial_delay,
        "retry_max_delay": config.retry_max_delay,
        **dict(config.runner_options),
    }
    # The grouping is done across the dataset (group_by_similarity): no selector here.
    tuned = config.tuned_config
    settings = TunedConfig.read(tuned) if tuned is not None else config
    runner = AutoDemoBatchRunnable.from_settings(opened.llm, settings, selector=None, **common)
    return runner, opened.description


def _text(value: Any) -> Any:
    """What the model is asked about a row: its text, or other JSON values as JSON (a
    missing value stays ``None``, which the runner returns as an input error)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return json.dumps(value, ensure_ascii=False)


def _pack_order(frame: pd.DataFrame) -> list[int]:
    """Positions of ``frame``'s rows in the order they are asked: the rows of each
    similarity pack together (full packs first, so that the runner's consecutive
    batches are the packs), else as given."""
    if PACK_COLUMN not in frame.columns or GROUP_COLUMN not in frame.columns:
        return list(range(len(frame)))
    keys = list(zip(frame[GROUP_COLUMN].tolist(), frame[PACK_COLUMN].tolist(), strict=True))
    sizes: dict[Any, int] = {}
    for key in keys:
        sizes[key] = sizes.get(key, 0) + 1
    biggest = max(sizes.values())
    return sorted(range(len(keys)), key=lambda i: (sizes[keys[i]] < biggest, keys[i], i))


def _utf8(text: str | None) -> str | None:
    """``text`` as Arrow can hold it (valid UTF-8): a lone surrogate (no Unicode
    character, which a model's answer may still hold) becomes its ``\\uXXXX`` text rather
    than failing the whole write."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _output_row(result: Any) -> dict[str, Any]:
    if isinstance(result, BaseException):
        return {
            "answer": None,
            "error_kind": type(result).__name__,
            "error_message": _utf8(_reason(result)),
            "input_tokens": 0,
            "output_tokens": 0,
            "attempts": int(getattr(result, "attempts", 0) or 0),
            "confidence": None,
            "escalated": False,
        }
    answer = getattr(result, "answer", result)
    return {
        "answer": _utf8(answer if isinstance(answer, str) else _json_text(answer)),
        "error_kind": None,
        "error_message": None,
        "input_tokens": int(getattr(result, "input_tokens", 0)),
        "output_tokens": int(getattr(result, "output_tokens", 0)),
        "attempts": int(getattr(result, "attempts", 1)),
        "confidence": getattr(result, "confidence", None),
        "escalated": bool(getattr(result, "escalated", False)),
    }


def _reason(error: BaseException) -> str:
    """Why an item failed, without the runner's ``item K`` (K is its place in one batch,
    meaningless in the output: the row's id names it)."""
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and hasattr(error, "index"):
        attempts = getattr(error, "attempts", None)
        return reason + (f" (after {attempts} attempt(s))" if attempts else "")
    return str(error) or type(error).__name__


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return str(value)


# -- the shared rate limit ---------------------------------------------------------------


@ray.remote(num_cpus=0)
class RateLimiter:
    """A token bucket of requests and tokens per minute shared by every worker.

    ``acquire(tokens)`` returns 0 once a request may go (both buckets paid), else the
    seconds to wait before asking again; ``settle`` corrects the token bucket by what
    the call really used; ``pause(seconds)`` (a provider's ``Retry-After``) holds every
    grant until then. Each bucket holds ``burst_seconds`` worth of its rate.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        burst_seconds: float = 1.0,
    ) -> None:
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.request_capacity = max(1.0, (self.rpm or 0) / 60 * burst_seconds)
        self.token_capacity = max(1.0, (self.tpm or 0) / 60 * burst_seconds)
        self.requests = self.request_capacity
        self.tokens = self.token_capacity
        self.updated = time.monotonic()
        self.paused_until = 0.0
        self.granted: list[float] = []

    def _refill(self, now: float) -> None:
        elapsed = now - self.updated
        self.updated = now
        if self.rpm:
            self.requests = min(self.request_capacity, self.requests + elapsed * self.rpm / 60)
        if self.tpm:
            self.tokens = min(self.token_capacity, self.tokens + elapsed * self.tpm / 60)

    def acquire(self, tokens: int = 0) -> float:
        now = time.monotonic()
        self._refill(now)
        if now < self.paused_until:
            return self.paused_until - now
        waits = [0.0]
        if self.rpm and self.requests < 1:
            waits.append((1 - self.requests) * 60 / self.rpm)
        need = min(float(tokens), self.token_capacity)
        if self.tpm and self.tokens < need:
            waits.append((need - self.tokens) * 60 / self.tpm)
        wait = max(waits)
        if wait > 0:
            return wait
        if self.rpm:
            self.requests -= 1
        if self.tpm:
            self.tokens -= need
        self.granted.append(time.time())
        del self.granted[:-100_000]
        return 0.0

    def settle(self, estimated: int, used: int) -> None:
        """A call estimated at ``estimated`` tokens used ``used``: pay (or get back) the
        difference (the bucket may go into debt, delaying the next grants)."""
        if self.tpm:
            self.tokens = min(self.token_capacity, self.tokens - (used - estimated))

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    def grants(self) -> list[float]:
        """Wall-clock times (``time.time()``) of the latest grants."""
        return list(self.granted)


class _RateLimitedCalls(BaseCallbackHandler):
    """Asks the :class:`RateLimiter` before each model call (blocking that call's thread),
    settles the token estimate when it ends, and shares a ``Retry-After``."""

    def __init__(self, limiter: Any, max_tokens: int | None) -> None:
        self.limiter = limiter
        self.max_tokens = max_tokens
        self._estimates: dict[Any, int] = {}
        self._lock = threading.Lock()

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: Any,
        **kwargs: Any,
    ) -> None:
        from langchain_autodemo.planning import estimate_message_tokens

        prompt = sum(estimate_message_tokens(batch) for batch in messages)
        estimate = prompt + (self.max_tokens or prompt // 2)
        with self._lock:
            self._estimates[run_id] = estimate
        while True:
            wait = ray.get(self.limiter.acquire.remote(estimate))
            if wait <= 0:
                return
            time.sleep(min(wait, 5.0))

    def on_llm_end(self, response: LLMResult, *, run_id: Any, **kwargs: Any) -> None:
        with self._lock:
            estimate = self._estimates.pop(run_id, None)
        generations = [g for gs in response.generations for g in gs]
        message = getattr(generations[0], "message", None) if generations else None
        usage = reported_usage(message)
        if estimate is not None and usage is not None:
            used = usage.input_tokens + usage.output_tokens
            self.limiter.settle.remote(estimate, used)

    def on_llm_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        import random

        from langchain_autodemo.planning import retry_delay

        with self._lock:
            self._estimates.pop(run_id, None)
        # With no backoff of its own, retry_delay is the provider's Retry-After or 0.
        asked = retry_delay(error, 1, initial=0.0, maximum=300.0, rng=random.Random(0))
        if asked > 0:
            self.limiter.pause.remote(asked)


@ray.remote(num_cpus=0)
class _UsageCollector:
    """The calls and tokens of every worker's batches, for the job's summary."""

    def __init__(self) -> None:
        from langchain_autodemo.usage import UsageStats

        self.stats = UsageStats()
        self.rows = 0

    def add(self, usage: Mapping[str, Any], rows: int) -> None:
        for name, value in usage.items():
            if hasattr(self.stats, name):
                current = getattr(self.stats, name)
                setattr(
                    self.stats,
                    name,
                    (current or value) if isinstance(value, bool) else current + value,
                )
        self.rows += rows

    def totals(self) -> dict[str, Any]:
        return {**self.stats.as_dict(), "rows": self.rows}


# -- similarity grouping across the dataset ---------------------------------------------


def _embed(batch: dict[str, np.ndarray], input_column: str) -> dict[str, np.ndarray]:
    """``map_batches`` step: adds the unit-norm embedding of each row's text (the
    package's offline WordLlama model, loaded once per worker process)."""
    from langchain_autodemo.embeddings import WordLlamaEmbeddings
    from langchain_autodemo.grouping import unit_rows

    texts = [_text(v) or "" for v in batch[input_column].tolist()]
    vectors = np.asarray(WordLlamaEmbeddings().embed_array(texts), dtype=np.float32)
    return {**batch, EMBEDDING_COLUMN: unit_rows(vectors)}


def _assign(batch: dict[str, np.ndarray], centres: np.ndarray) -> dict[str, np.ndarray]:
    """``map_batches`` step: each row's nearest centre."""
    vectors = np.asarray(batch[EMBEDDING_COLUMN], dtype=np.float32)
    return {**batch, GROUP_COLUMN: np.argmax(vectors @ centres.T, axis=1)}


def _pack_group(batch: dict[str, np.ndarray], batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """``map_groups`` step: the rows of one centre split into packs of similar rows (the
    selector's partition), each row tagged with its pack and the pack's similarity."""
    from langchain_autodemo.grouping import mean_intra_batch_similarity, partition_batches

    vectors = np.asarray(batch[EMBEDDING_COLUMN], dtype=np.float32)
    n = len(vectors)
    packs = np.zeros(n, dtype=np.int64)
    similarity = np.zeros(n, dtype=np.float64)
    if n:
        batches = partition_batches(vectors, batch_size, seed=seed)
        for number, rows in enumerate(batches):
            packs[rows] = number
            similarity[rows] = (
                mean_intra_batch_similarity(vectors, [rows]) if len(rows) > 1 else np.nan
            )
    out = {name: value for name, value in batch.items() if name != EMBEDDING_COLUMN}
    return {**out, PACK_COLUMN: packs, SIMILARITY_COLUMN: similarity}


def group_by_similarity(
    ds: Any,
    *,
    input_column: str = "question",
    batch_size: int = 8,
    clusters: int | None = None,
    sample_size: int = 20_000,
    seed: int = 0,
) -> Any:
    """``ds`` with every row tagged by its similarity pack (``_autodemo_group``,
    ``_autodemo_pack``, ``_autodemo_pack_similarity``): embed in parallel, k-means
    centres fitted on a sample, nearest centre per row, and the selector's partition
    inside each centre's group (``groupby(...).map_groups``). Pass the result to
    :func:`answer_dataset` (or ``map_batches(AutoDemoProcessor, ...)`` after
    :func:`answer_dataset`'s regrouping) so that each pack is one model call.

    ``clusters`` defaults to about one centre per 2,000 rows (a group is packed in one
    task, with O(n·d) memory), at least 1.
    """
    embedded = ds.map_batches(
        _embed, fn_kwargs={"input_column": input_column}, batch_format="numpy", batch_size=4096
    ).materialize()
    rows = embedded.count()
    k = clusters or max(1, rows // 2000)
    fraction = min(1.0, sample_size / max(rows, 1))
    sample = embedded.random_sample(fraction, seed=seed) if fraction < 1 else embedded
    sampled = [
        np.asarray(batch[EMBEDDING_COLUMN], dtype=np.float32)
        for batch in sample.select_columns([EMBEDDING_COLUMN]).iter_batches(batch_format="numpy")
    ]
    vectors = np.concatenate(sampled) if sampled else np.zeros((0, 1), dtype=np.float32)
    if len(vectors) == 0:
        vectors = np.asarray(embedded.take(1)[0][EMBEDDING_COLUMN], dtype=np.float32)[None]
    centres = kmeans_centres(vectors, k, seed=seed)
    assigned = embedded.map_batches(_assign, fn_kwargs={"centres": centres}, batch_format="numpy")
    return assigned.groupby(GROUP_COLUMN).map_groups(
        _pack_group, fn_kwargs={"batch_size": batch_size, "seed": seed}, batch_format="numpy"
    )


def intra_batch_cosine(packed: Any) -> float:
    """Mean over packs (of two or more rows) of their mean pairwise cosine similarity,
    the measure :func:`~langchain_autodemo.grouping.mean_intra_batch_similarity` gives
    the single-machine selector."""
    frame = packed.select_columns([GROUP_COLUMN, PACK_COLUMN, SIMILARITY_COLUMN]).to_pandas()
    per_pack = frame.groupby([GROUP_COLUMN, PACK_COLUMN])[SIMILARITY_COLUMN].first()
    # Arrow-backed columns keep NaN (a one-row pack) as a value, not as a missing one.
    values = per_pack.to_numpy(dtype=np.float64, na_value=np.nan)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else 0.0


def selector_cosine(texts: Sequence[str], batch_size: int) -> float:
    """The same measure for :class:`~langchain_autodemo.SimilarityBatchSelector`'s
    partition of ``texts`` (one machine, the package's offline embeddings)."""
    from langchain_autodemo.embeddings import WordLlamaEmbeddings
    from langchain_autodemo.grouping import mean_intra_batch_similarity
    from langchain_autodemo.selector import SimilarityBatchSelector

    selector = SimilarityBatchSelector(embeddings=WordLlamaEmbeddings())
    batches = [list(b.indices) for b in selector.plan(list(texts), batch_size)]
    return mean_intra_batch_similarity(selector.embed(list(texts)), batches)


# -- answering a dataset -----------------------------------------------------------------


def answer_dataset(
    ds: Any,
    config: RayJobConfig,
    *,
    workers: int = 1,
    rows_per_task: int = 256,
    rate_limiter: Any = None,
    usage: Any = None,
    batch_format: str = "pandas",
    num_cpus: float = 1.0,
) -> Any:
    """``ds``'s rows answered: the id column and :data:`OUTPUT_COLUMNS`, one row per row.

    A dataset from :func:`group_by_similarity` goes one block (whole groups) per worker
    batch, so that no pack is split; otherwise rows go in ``rows_per_task`` batches.
    ``num_cpus`` is what each worker reserves (less than 1 for remote models: the
    worker mostly waits).
    """
    grouped = PACK_COLUMN in ds.schema().names
    return ds.map_batches(
        AutoDemoProcessor,
        fn_constructor_kwargs={"config": config, "rate_limiter": rate_limiter, "usage": usage},
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=num_cpus,
        # A packed dataset's blocks are whole groups (map_groups' output): one batch per
        # block keeps every pack in one worker batch.
        batch_size=None if grouped else rows_per_task,
        batch_format=batch_format,
    )


def _is_jsonl(output: Path) -> bool:
    return output.suffix.lower() in (".jsonl", ".json", ".ndjson")


def _data_files(folder: Path, jsonl: bool) -> list[Path]:
    if not folder.is_dir():
        return []
    suffixes = (".json", ".jsonl") if jsonl else (".parquet",)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in suffixes)


class OutputFileError(ConfigurationError):
    """A committed file of an output folder cannot be read (the message names it)."""


def _read_file(path: Path, jsonl: bool, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A written file's rows; ``columns`` (those it has) only, for Parquet.

    A committed file is complete (torn ones never leave staging), so one that cannot be
    read was damaged or put there by hand: that is for its owner to decide, and the
    error names it (:class:`OutputFileError`) rather than guessing its rows away.
    """
    try:
        if jsonl:
            return pd.read_json(path, lines=True, dtype=False)
        if columns is None:
            return pd.read_parquet(path)
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        return pd.read_parquet(path, columns=[c for c in columns if c in names])
    except Exception as exc:  # noqa: BLE001 - pandas and Arrow raise many kinds
        raise OutputFileError(
            f"{path}: cannot read this output file ({type(exc).__name__}: {exc}); move it "
            "away to answer its rows again"
        ) from None


def commit_output(output: str | Path, id_column: str = "id") -> int:
    """Make ``output`` hold each id once: move every readable staged file of earlier runs
    in (a torn one, from a killed writer, is deleted: its ids are asked again), then
    keep one row per id (an answer before an error; else the first file's). Returns the
    rows dropped as duplicates."""
    output = Path(output)
    jsonl = _is_jsonl(output)
    for staging in sorted(output.glob(_STAGING + "*")):
        for path in _data_files(staging, jsonl):
            try:
                if jsonl:
                    _read_file(path, jsonl)
                else:  # a torn Parquet file has no footer
                    import pyarrow.parquet as pq

                    pq.read_metadata(path)
            except Exception:  # noqa: BLE001 - torn: its rows are answered again
                logger.warning("dropping torn output file %s", path)
                continue
            os.replace(path, output / path.name)
        shutil.rmtree(staging, ignore_errors=True)
    files = _data_files(output, jsonl)
    frames = [(path, _read_file(path, jsonl, [id_column, "error_kind"])) for path in files]
    seen: dict[Any, tuple[int, bool]] = {}  # id -> (file number, is an answer)
    for number, (_, frame) in enumerate(frames):
        if id_column not in frame.columns:
            continue
        answers = frame["error_kind"].isna() if "error_kind" in frame.columns else None
        for position, key in enumerate(frame[id_column].tolist()):
            is_answer = bool(answers.iloc[position]) if answers is not None else True
            kept = seen.get(key)
            if kept is None or (is_answer and not kept[1]):
                seen[key] = (number, is_answer)
    dropped = 0
    for number, (path, frame) in enumerate(frames):
        if id_column not in frame.columns:
            continue
        keep = []
        claimed: set[Any] = set()
        for key in frame[id_column].tolist():
            mine = seen.get(key, (None,))[0] == number and key not in claimed
            keep.append(mine)
            if mine:
                claimed.add(key)
        if all(keep):
            continue
        dropped += len(keep) - sum(keep)
        kept_frame = _read_file(path, jsonl)[keep]  # every column of the rows kept
        if kept_frame.empty:
            path.unlink()
        elif jsonl:
            kept_frame.to_json(path.with_suffix(".tmp"), orient="records", lines=True)
            os.replace(path.with_suffix(".tmp"), path)
        else:
            kept_frame.to_parquet(path.with_suffix(".tmp"), index=False)
            os.replace(path.with_suffix(".tmp"), path)
    return dropped


def read_output(output: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Every row the output folder holds (committed files only), as one frame;
    ``columns`` only, where given (Parquet reads nothing else)."""
    output = Path(output)
    jsonl = _is_jsonl(output)
    frames = [_read_file(path, jsonl, columns) for path in _data_files(output, jsonl)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def done_ids(
    output: str | Path, id_column: str = "id", *, answered_only: bool = False
) -> list[Any]:
    """The ids the output folder already holds (after :func:`commit_output`); with
    ``answered_only``, those of answers (not errors)."""
    frame = read_output(output, [id_column, "error_kind"])
    if id_column not in frame.columns:
        return []
    if answered_only and "error_kind" in frame.columns:
        frame = frame[frame["error_kind"].isna()]
    return frame[id_column].tolist()


def _drop_done(frame: pd.DataFrame, done: list[Any], id_column: str) -> pd.DataFrame:
    """``map_batches`` step: drops the rows whose id is already written."""
    (ids,) = done  # an object ref in a list: Ray hands it over unresolved
    return frame[~frame[id_column].isin(ray.get(ids))]


def without_done(ds: Any, ids: Iterable[Any], id_column: str = "id") -> Any:
    """``ds`` less the rows whose id is in ``ids`` (an anti-join by id)."""
    ids = list(ids)
    if not ids:
        return ds
    return ds.map_batches(
        _drop_done,
        fn_kwargs={"done": [ray.put(pd.Index(ids))], "id_column": id_column},
        batch_format="pandas",
    )


@dataclass
class JobResult:
    """What :func:`run_job` did."""

    total: int
    already_done: int
    written: int
    failed: int
    duplicates_dropped: int
    errors: int
    """Error rows in the whole output (earlier runs' included)."""
    usage: dict[str, Any]
    wall_time_s: float
    intra_batch_cosine: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_job(
    ds: Any,
    output: str | Path,
    config: RayJobConfig,
    *,
    workers: int = 1,
    group: bool = False,
    clusters: int | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    rows_per_task: int = 256,
    num_cpus: float = 1.0,
    retry_errors: bool = False,
) -> JobResult:
    """Answer ``ds`` into the folder ``output`` (Parquet files, or JSON lines files when
    its name ends in ``.jsonl``), resumably and exactly once: ids already in the output
    are skipped, and the output holds each id once when this returns (see the module
    doc). ``group`` packs similar rows together across the whole dataset;
    ``retry_errors`` asks the ids written as errors again (an answer then replaces the
    error row)."""
    started = time.perf_counter()
    output = Path(output)
    jsonl = _is_jsonl(output)
    output.mkdir(parents=True, exist_ok=True)
    id_column = config.id_column
    commit_output(output, id_column)  # a crashed run's staged files first
    done = done_ids(output, id_column, answered_only=retry_errors)
    retried = len(done_ids(output, id_column)) - len(done)  # error rows asked again
    total = ds.count()
    columns = [id_column, config.input_column, *config.carry_columns]
    todo = without_done(ds.select_columns(columns), done, id_column)
    limiter = None
    if requests_per_minute or tokens_per_minute:
        limiter = RateLimiter.remote(requests_per_minute, tokens_per_minute)  # type: ignore[attr-defined]
    usage = _UsageCollector.remote()  # type: ignore[attr-defined]
    cosine = None
    if group:
        todo = group_by_similarity(
            todo,
            input_column=config.input_column,
            batch_size=_batch_size(config),
            clusters=clusters,
        ).materialize()
        cosine = intra_batch_cosine(todo)
    answered = answer_dataset(
        todo, config, workers=workers, rows_per_task=rows_per_task,
        rate_limiter=limiter, usage=usage, num_cpus=num_cpus,
    )  # fmt: skip
    # The writes fuse into the workers' step only when they ask the same CPUs: a
    # separate write task could wait forever for a CPU the workers hold.
    same_cpus = {"num_cpus": num_cpus}
    staging = output / f"{_STAGING}{uuid.uuid4().hex[:12]}"
    if jsonl:
        answered.write_json(str(staging), ray_remote_args=same_cpus)
    else:
        answered.write_parquet(str(staging), ray_remote_args=same_cpus)
    totals = ray.get(usage.totals.remote())
    before = len(done)
    dropped = commit_output(output, id_column)
    dropped -= min(dropped, retried)  # a retried error row replaced is no duplicate
    frame = read_output(output, [id_column, "error_kind"])
    after = len(frame)
    failed_now = 0
    if after and "error_kind" in frame.columns:
        ids_before = set(done)
        mask = ~frame[id_column].isin(ids_before)
        failed_now = int(frame.loc[mask, "error_kind"].notna().sum())
    return JobResult(
        total=total,
        already_done=before,
        written=after - before,
        failed=failed_now,
        duplicates_dropped=dropped,
        errors=int(frame["error_kind"].notna().sum()) if "error_kind" in frame.columns else 0,
        usage=totals,
        wall_time_s=time.perf_counter() - started,
        intra_batch_cosine=cosine,
    )


def _batch_size(config: RayJobConfig) -> int:
    if config.tuned_config is not None:
        return TunedConfig.read(config.tuned_config).batch_size
    return config.batch_size
