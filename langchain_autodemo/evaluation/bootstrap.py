"""Self-generated solved demonstrations: the ``bootstrap`` pool of the ``+bootstrap`` methods.

The model answers a labelled training sample; the answers the task's checker accepts are
kept as *its own* solved demonstrations (its reasoning, then a final line in the
package's format, ``The answer is ...``) and stored in a Chroma collection with their
question embeddings. The ``+bootstrap`` methods retrieve the nearest ones at the start
of each batch through :class:`~langchain_autodemo.selector.SimilarityBatchSelector`'s
demonstration-pool path (``demo_collection``).

Why: retrieved *gold* demonstrations hurt on GSM8K with Qwen2.5-Coder-1.5B (36% against
42% without them, ``docs/results/gsm8k``): the model copied the terse style of the
training answers. Its own answers are in the style it writes best.

The pool lives in a persistent Chroma directory under a name derived from everything that
decides its content (the model, the task, the training sample, how it was asked, the
embedding model), so it is built once and every later run reuses it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_autodemo.engine import ItemResult
from langchain_autodemo.errors import AutoDemoModelCallError, ConfigurationError, EvaluationError
from langchain_autodemo.evaluation.datasets import Dataset, DatasetError
from langchain_autodemo.markers import FINAL_ANSWER_PREFIX, Markers
from langchain_autodemo.parser import CompletionScanner
from langchain_autodemo.prompts import Mode, render_completion
from langchain_autodemo.settings import Settings

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

__all__ = [
    "BootstrapPool",
    "BootstrapSettings",
    "bootstrap_pool",
    "default_store",
    "demonstration_answer",
    "model_key",
    "reads_back",
]

_PREFIX = "autodemo-bootstrap-"
# Part of every pool's key: raised when what a stored demonstration looks like changes, so
# that a pool built by an older version is built again, never reused. 2: the final line
# carries the checked value (format 1 could append a whole answer block to it).
_FORMAT = 2


def default_store() -> Path:
    """Bootstrap pools live in the package's per-user cache (``cache_root()/bootstrap``)."""
    from langchain_autodemo.local_models import cache_root

    return cache_root() / "bootstrap"


@dataclass(frozen=True, kw_only=True)
class BootstrapSettings(Settings):
    """How the pool is built: a settings record (``mode`` ``"auto_demo"`` packs
    ``batch_size`` training items per call, the model's own Auto-Demo answers, about half
    the calls' cost of ``"single"``, one call per item; reasoning always on: the pool's
    demonstrations are reasoned answers) and the pool's own fields.

    ``size`` training items are asked. ``store`` is the persistent Chroma directory.
    ``model`` names the model in the pool's key (default: derived from the chat model's
    class and model name); two different models must not share a key.
    """

    size: int = 64
    store: Path = field(default_factory=default_store)
    model: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size < 1:
            raise ConfigurationError("the bootstrap sample needs at least one training item")
        if self.mode is Mode.BATCH:
            raise ConfigurationError(
                f"bootstrap mode must be auto_demo or single, got {self.mode.value!r}"
            )
        if not self.reasoning:
            raise ConfigurationError("the bootstrap pool holds reasoned answers: reasoning=True")


@dataclass
class BootstrapPool:
    """A built (or reused) pool and what building it cost."""

    collection: Collection = field(repr=False)
    name: str
    store: str
    reused: bool
    attempted: int
    kept: int
    calls: int
    reasks: int
    input_tokens: int
    output_tokens: int
    estimated_tokens: bool
    build_time_s: float

    def summary(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "collection"}
        data["kept_share"] = self.kept / self.attempted if self.attempted else 0.0
        return data


def model_key(llm: Any) -> str:
    """The chat model's class and the model name it carries (``model_name``, ``model``)."""
    cls = type(llm)
    parts = [f"{cls.__module__}.{cls.__qualname__}"]
    for attribute in ("model_name", "model", "model_path", "answer", "temperature"):
        value = getattr(llm, attribute, None)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            parts.append(f"{attribute}={value}")
    return ";".join(parts)


def model_call_failures(results: Iterable[Any]) -> list[AutoDemoModelCallError]:
    """The results that are failed model calls (not format failures): what an evaluation
    must not pass off as a measurement (the harness's rule, here because the harness
    imports this module)."""
    return [r for r in results if isinstance(r, AutoDemoModelCallError)]


def demonstration_answer(raw_answer: str, answer: str) -> str:
    """The model's answer block with its final line in the package's format.

    The final line (the one stating ``answer``, usually the last) is rewritten as
    ``The answer is <answer>.``; a block that states no final line gets one appended.

    Example:
        >>> demonstration_answer("3 + 4 = 7.\\n**Final answer:** $7$", "7")
        '3 + 4 = 7.\\nThe answer is 7.'
    """
    lines = [line.rstrip() for line in raw_answer.strip().splitlines()]
    final = f"{FINAL_ANSWER_PREFIX} {answer.strip().rstrip('.')}."
    if lines and answer.strip() and answer.strip() in lines[-1]:
        lines[-1] = final
    else:
        lines.append(final)
    return "\n".join(lines)


def _sample(dataset: Dataset, size: int) -> list[tuple[str, str]]:
    """The first ``size`` (question, gold answer) pairs of the training pool that are
    not themselves test questions."""
    tests = {example.text.strip() for example in dataset.examples}
    sample: list[tuple[str, str]] = []
    seen: set[str] = set()
    for question, gold in dataset.demo_pool() if dataset.demo_pool else []:
        key = question.strip()
        if key and key not in tests and key not in seen:
            seen.add(key)
            sample.append((question, gold))
            if len(sample) == size:
                break
    if not sample:
        raise DatasetError(
            f"dataset {dataset.name!r} has no training records to bootstrap from (with a "
            "dataset file, the records past --limit are the training sample)"
        )
    return sample


def _pool_name(
    dataset: Dataset, settings: BootstrapSettings, model: str, embedding_key: str,
    sample: list[tuple[str, str]],
) -> str:  # fmt: skip
    identity = {
        "format": _FORMAT,
        "model": model,
        "task": [dataset.task.kind, dataset.task.instructions, list(dataset.task.labels)],
        "mode": settings.mode.value,
        "batch_size": settings.batch_size if settings.mode is not Mode.SINGLE else 1,
        "embeddings": embedding_key,
        "sample": sample,
    }
    digest = hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode()).hexdigest()
    return f"{_PREFIX}{dataset.name[:40]}-{digest[:16]}".replace(" ", "_")


def bootstrap_pool(
    llm: Any,
    dataset: Dataset,
    settings: BootstrapSettings | None = None,
    *,
    embeddings: Any = None,
    max_concurrency: int = 1,
    on_start: Callable[[int], None] | None = None,
    on_item: Callable[[], None] | None = None,
) -> BootstrapPool:
    """The pool of ``llm``'s own checked answers on ``dataset``'s training sample.

    Reused when a complete pool with the same key is in ``settings.store``; otherwise the
    model answers the sample (``on_start(n)`` and ``on_item()`` report progress), the
    answers the task's checker accepts are stored, and the pool is marked complete last,
    so an interrupted build is redone, never half used.
    """
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    from langchain_autodemo.selector import SimilarityBatchSelector

    settings = settings or BootstrapSettings()
    started = time.perf_counter()
    sample = _sample(dataset, settings.size)
    settings.store.mkdir(parents=True, exist_ok=True)
    client = chromadb.PersistentClient(
        path=str(settings.store), settings=ChromaSettings(anonymized_telemetry=False)
    )
    writer = SimilarityBatchSelector(embeddings)  # embeds the questions, writes the pool
    model = settings.model or model_key(llm)
    name = _pool_name(dataset, settings, model, writer.embedding_key, sample)
    existing = {str(getattr(c, "name", c)) for c in client.list_collections()}
    if name in existing:
        collection = client.get_collection(name, embedding_function=None)
        metadata = dict(collection.metadata or {})
        if metadata.get("complete"):
            return _pool_from(collection, settings, metadata, reused=True)
        client.delete_collection(name)  # an interrupted build
    collection = client.create_collection(
        name,
        embedding_function=None,  # never Chroma's downloading default
        configuration={"hnsw": {"space": "cosine"}},  # type: ignore[arg-type]
        metadata={"autodemo": "bootstrap pool", "complete": False},
    )
    kept, usage = _answer_and_check(
        llm, dataset, sample, settings, max_concurrency, on_start, on_item
    )
    writer.write_demonstrations(collection, [(q, a) for q, a, _ in kept],
                                [{"gold": g} for _, _, g in kept])  # fmt: skip
    metadata = {
        "autodemo": "bootstrap pool",
        "model": model[:500],
        "attempted": len(sample),
        "kept": collection.count(),
        "calls": usage.calls,
        "reasks": usage.reasks,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "estimated_tokens": bool(usage.estimated_tokens),
        "build_time_s": round(time.perf_counter() - started, 3),
        "complete": True,  # written last: only a finished build is ever reused
    }
    collection.modify(metadata=metadata)
    return _pool_from(collection, settings, metadata, reused=False)


def _answer_and_check(
    llm: Any,
    dataset: Dataset,
    sample: list[tuple[str, str]],
    settings: BootstrapSettings,
    max_concurrency: int,
    on_start: Callable[[int], None] | None,
    on_item: Callable[[], None] | None,
) -> tuple[list[tuple[str, str, str]], Any]:
    """(question, demonstration answer, gold) for each answer the checker accepts."""
    from langchain_autodemo.runnable import AutoDemoBatchRunnable
    from langchain_autodemo.usage import track_usage

    record = settings.settings.replace(instructions=dataset.task.instructions)
    runner = AutoDemoBatchRunnable.from_settings(llm, record, include_details=True)
    if on_start is not None:
        on_start(len(sample))
    results: dict[int, Any] = {}
    with track_usage() as usage:
        for index, result in runner.batch_as_completed(
            [q for q, _ in sample], {"max_concurrency": max_concurrency}, return_exceptions=True
        ):
            results[index] = result
            if on_item is not None:
                on_item()
    failed = model_call_failures(results.values())
    if failed:
        # A pool missing the items whose calls failed would be reused as if complete.
        raise EvaluationError(
            f"bootstrap pool: {len(failed)} of {len(sample)} training items lost to failed "
            f"model calls ({failed[-1]}); nothing was kept, the next run builds the pool again"
        )
    kept = []
    for index, (question, gold) in enumerate(sample):
        result = results.get(index)
        if not isinstance(result, ItemResult) or not result.raw_answer:
            continue
        score = dataset.task.score(str(result.answer), gold)
        if not score.correct:
            continue
        # An answer block without a final line has the whole block as its answer: the
        # final line must carry the value the checker read (docs/design/measured-choices.md).
        value = str(result.answer) if dataset.task.kind == "text" else score.extracted
        demonstration = demonstration_answer(result.raw_answer, value or str(result.answer))
        if reads_back(demonstration, dataset, gold):
            kept.append((question, demonstration, gold))
    return kept, usage


def reads_back(demonstration: str, dataset: Dataset, gold: str) -> bool:
    """Whether the package's own parser reads ``demonstration`` as one whole answer block
    closed by its final line, with a value the task's checker accepts for ``gold``.

    A demonstration is copied by the model, format included, so only one that the
    parser would accept from the model is shown to it.
    """
    markers = Markers()  # the pool's calls and the +bootstrap prompts use the defaults
    scanner = CompletionScanner(markers, reasoning=True)
    shown = render_completion([("question", demonstration)], markers, restate=True)
    items = scanner.feed(shown + "\n") + scanner.finish()
    if len(items) != 1 or items[0].closed_by != "final_answer":
        return False
    item = items[0]
    return (item.answer or "").strip() == demonstration.strip() and dataset.task.score(
        item.final_answer, gold
    ).correct


def _pool_from(
    collection: Collection, settings: BootstrapSettings, metadata: dict[str, Any], *, reused: bool
) -> BootstrapPool:
    return BootstrapPool(
        collection=collection,
        name=collection.name,
        store=str(settings.store),
        reused=reused,
        attempted=int(metadata.get("attempted", 0)),
        kept=int(metadata.get("kept", collection.count())),
        calls=int(metadata.get("calls", 0)),
        reasks=int(metadata.get("reasks", metadata.get("retries", 0))),
        input_tokens=int(metadata.get("input_tokens", 0)),
        output_tokens=int(metadata.get("output_tokens", 0)),
        estimated_tokens=bool(metadata.get("estimated_tokens", False)),
        build_time_s=float(metadata.get("build_time_s", 0.0)),
    )
