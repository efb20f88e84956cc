"""Evaluation methods: how inputs are asked (``mode``), grouped (``grouping``) and shown
demonstrations (``bootstrap``).

A method name is ``MODE``, ``MODE+GROUPING``, ``MODE+bootstrap`` or
``MODE+GROUPING+bootstrap``. The modes are :class:`~langchain_autodemo.prompts.Mode`'s:

- ``single``: one call per question (the baseline; batch size does not apply),
- ``batch``: many questions per call, answers only (Cheng et al. 2023),
- ``auto_demo``: many per call, each question restated before its answer.

The groupings name a :class:`~langchain_autodemo.selector.SimilarityBatchSelector`
``grouping`` (:data:`GROUPINGS`):

- ``+similarity``: similar questions share a call (the selector's ``partition``),
- ``+neighbors``: each call is built around nearest neighbours,
- ``+demo_pool``: each call starts with solved demonstrations retrieved from a pool
  disjoint from the test items (GSM8K: ``gsm8k_train.jsonl``),

and ``+bootstrap`` gives each call the model's *own* solved answers to training
questions, retrieved from a pool the model filled first and the task's checker filtered
(:mod:`langchain_autodemo.evaluation.bootstrap`). Alone its batches keep input order;
with ``+similarity`` (or ``+neighbors``) similar questions share a call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_autodemo.errors import ConfigurationError
from langchain_autodemo.planning import Demonstration
from langchain_autodemo.prompts import Mode

__all__ = [
    "DEFAULT_METHODS",
    "BOOTSTRAP",
    "GROUPINGS",
    "MODES",
    "Method",
    "MethodError",
    "parse_batch_sizes",
    "parse_method",
    "parse_methods",
]

MODES = tuple(mode.value for mode in Mode)
#: Method suffix -> the selector's ``grouping``.
GROUPINGS = {"similarity": "similarity", "neighbors": "neighbors", "demo_pool": "demo_pool"}
BOOTSTRAP = "bootstrap"
DEFAULT_METHODS = "single,batch,auto_demo,auto_demo+similarity,auto_demo+demo_pool"


class MethodError(ConfigurationError):
    """An unknown or invalid method name (message is for the user)."""


@dataclass(frozen=True)
class Method:
    mode: Mode
    grouping: str | None = None
    """A key of :data:`GROUPINGS`, or ``None``: inputs in order."""
    bootstrap: bool = False
    """Demonstrations from the model's own checked answers (the bootstrap pool)."""

    @property
    def name(self) -> str:
        parts = [self.mode.value, *([self.grouping] if self.grouping else [])]
        return "+".join(parts + ([BOOTSTRAP] if self.bootstrap else []))

    @property
    def batched(self) -> bool:
        return self.mode is not Mode.SINGLE

    def sizes(self, batch_sizes: Sequence[int]) -> list[int]:
        """The batch sizes this method runs at: ``single`` once, at 1."""
        return list(batch_sizes) if self.batched else [1]

    @property
    def needs_pool(self) -> bool:
        return self.grouping == "demo_pool"

    def selector(
        self,
        demo_pool: Sequence[Demonstration] | None = None,
        *,
        embeddings: Any = None,
        demos_per_batch: int = 4,
        demo_collection: Any = None,
    ) -> Any:
        """The ``SimilarityBatchSelector`` this method uses, or ``None``.

        ``demo_collection`` is the bootstrap pool's Chroma collection (``+bootstrap``).
        """
        if self.grouping is None and not self.bootstrap:
            return None
        from langchain_autodemo.selector import SimilarityBatchSelector

        grouping = GROUPINGS[self.grouping] if self.grouping else "similarity"
        kwargs: dict[str, Any] = {"embeddings": embeddings, "grouping": grouping}
        if self.needs_pool:
            kwargs.update(demo_pool=list(demo_pool or []), demos_per_batch=demos_per_batch)
        if self.bootstrap:
            if demo_collection is None:
                raise MethodError(f"{self.name} needs the bootstrap pool (demo_collection)")
            kwargs.update(
                demo_collection=demo_collection,
                demos_per_batch=demos_per_batch,
                keep_order=self.grouping is None,
            )
        return SimilarityBatchSelector(**kwargs)


def parse_method(name: str) -> Method:
    """``"auto_demo+similarity+bootstrap"`` -> ``Method(Mode.AUTO_DEMO, "similarity", True)``."""
    head, *parts = [part.strip() for part in name.strip().lower().split("+")]
    if head not in MODES:
        raise MethodError(f"unknown method {name!r}: the mode must be one of {', '.join(MODES)}")
    mode = Mode(head)
    if not parts:
        return Method(mode)
    if mode is Mode.SINGLE:
        raise MethodError(f"{name!r}: single answers one question per call, nothing to group")
    unknown = [p for p in parts if p not in GROUPINGS and p != BOOTSTRAP]
    if unknown:
        raise MethodError(
            f"unknown grouping {unknown[0]!r} in {name!r}: use "
            f"+{', +'.join(GROUPINGS)} and/or +{BOOTSTRAP} after the mode"
        )
    groupings = [p for p in parts if p in GROUPINGS]
    bootstrap = BOOTSTRAP in parts
    if len(groupings) > 1 or parts.count(BOOTSTRAP) > 1:
        raise MethodError(f"{name!r}: one grouping and at most one +{BOOTSTRAP}")
    if bootstrap and groupings == ["demo_pool"]:
        raise MethodError(f"{name!r}: +demo_pool and +bootstrap are two demonstration pools")
    return Method(mode, groupings[0] if groupings else None, bootstrap)


def parse_methods(text: str) -> list[Method]:
    """``"single,auto_demo+similarity"`` -> methods, without duplicates, in order."""
    methods: list[Method] = []
    for part in text.split(","):
        if part.strip():
            method = parse_method(part)
            if method not in methods:
                methods.append(method)
    if not methods:
        raise MethodError("no methods given")
    return methods


def parse_batch_sizes(text: str) -> list[int]:
    sizes: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise MethodError(f"batch sizes must be positive integers, got {part!r}")
        if int(part) not in sizes:
            sizes.append(int(part))
    if not sizes:
        raise MethodError("no batch sizes given")
    return sizes
