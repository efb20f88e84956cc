"""Evaluation methods: how inputs are packed (``mode``) and grouped (``selection``).

A method name is ``MODE`` or ``MODE+SELECTION``:

- ``single``: one call per question (the baseline; batch size does not apply),
- ``batch``: many questions per call, answers only (Cheng et al. 2023),
- ``auto_demo``: many per call, each question restated before its answer,
- ``+similarity``: similar questions share a call (``SimilarityBatchSelector`` partition),
- ``+neighbors``: each call is built around nearest neighbours,
- ``+demo_pool``: each call starts with solved demonstrations retrieved from a pool
  disjoint from the test items (GSM8K: ``gsm8k_train.jsonl``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_autodemo.errors import ConfigurationError

__all__ = [
    "DEFAULT_METHODS",
    "MODES",
    "SELECTIONS",
    "Method",
    "MethodError",
    "parse_batch_sizes",
    "parse_method",
    "parse_methods",
]

MODES = ("single", "batch", "auto_demo")
SELECTIONS = {"similarity": "partition", "neighbors": "neighbors", "demo_pool": "demo_pool"}
DEFAULT_METHODS = "single,batch,auto_demo,auto_demo+similarity,auto_demo+demo_pool"


class MethodError(ConfigurationError):
    """An unknown or invalid method name (message is for the user)."""


@dataclass(frozen=True)
class Method:
    mode: str
    selection: str | None = None

    @property
    def name(self) -> str:
        return self.mode if self.selection is None else f"{self.mode}+{self.selection}"

    @property
    def batched(self) -> bool:
        return self.mode != "single"

    @property
    def needs_pool(self) -> bool:
        return self.selection == "demo_pool"

    def selector(
        self,
        demo_pool: Sequence[tuple[str, str]] | None = None,
        *,
        embeddings: Any = None,
        demos_per_batch: int = 4,
    ) -> Any:
        """The ``SimilarityBatchSelector`` this method uses, or ``None``."""
        if self.selection is None:
            return None
        from langchain_autodemo.selector import SimilarityBatchSelector

        kwargs: dict[str, Any] = {"embeddings": embeddings, "mode": SELECTIONS[self.selection]}
        if self.needs_pool:
            kwargs.update(demo_pool=list(demo_pool or []), demos_per_batch=demos_per_batch)
        return SimilarityBatchSelector(**kwargs)


def parse_method(name: str) -> Method:
    mode, _, selection = name.strip().lower().partition("+")
    if mode not in MODES:
        raise MethodError(f"unknown method {name!r}: the mode must be one of {', '.join(MODES)}")
    if not selection:
        return Method(mode)
    if selection not in SELECTIONS:
        raise MethodError(
            f"unknown selection in {name!r}: use +{', +'.join(SELECTIONS)} after the mode"
        )
    if mode == "single":
        raise MethodError(f"{name!r}: single answers one question per call, nothing to select")
    return Method(mode, selection)


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
