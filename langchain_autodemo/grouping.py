"""Similarity grouping over an embedding matrix: pure numpy, no I/O.

These are the algorithms behind :class:`~langchain_autodemo.selector.SimilarityBatchSelector`.
Rows of ``vectors`` are expected L2-normalised (a zero row, e.g. an empty text, is
allowed and is similar to nothing).

Why this algorithm: balanced recursive bisection followed by pairwise swap refinement
beats the exact O(n²) greedy grouping on mean intra-batch similarity and needs O(n·d)
memory; the alternatives and their figures are in docs/design/measured-choices.md
(``python -m benchmarks.bench_selector``).
"""

from __future__ import annotations

import math

import numpy as np

from langchain_autodemo._validation import require_positive_int

__all__ = [
    "partition_batches",
    "bisect_batches",
    "refine_batches",
    "neighbor_batches",
    "exact_greedy_batches",
    "random_batches",
    "mean_intra_batch_similarity",
    "unit_rows",
    "kmeans_centres",
]

_BISECT_ITERATIONS = 5
_POWER_ITERATIONS = 3
_REFINE_PASSES = 3
_REFINE_NEIGHBOURS = 8
_BLOCK = 2048


def partition_batches(
    vectors: np.ndarray,
    batch_size: int,
    *,
    refine_passes: int = _REFINE_PASSES,
    seed: int = 0,
) -> list[list[int]]:
    """Disjoint batches of similar rows covering every row once: ``ceil(n/N)`` batches.

    All batches have exactly ``batch_size`` rows except one (when ``n % N != 0``).
    Batches are returned sorted by their first row, rows sorted within a batch.

    Example:
        >>> v = np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1]], dtype=np.float32)
        >>> v /= np.linalg.norm(v, axis=1, keepdims=True)
        >>> partition_batches(v, 2)
        [[0, 2], [1, 3]]
    """
    _check_batch_size(batch_size)
    batches = bisect_batches(vectors, batch_size, seed=seed)
    batches = refine_batches(vectors, batches, passes=refine_passes)
    return _canonical(batches)


def bisect_batches(vectors: np.ndarray, batch_size: int, *, seed: int = 0) -> list[list[int]]:
    """Balanced recursive 2-means bisection down to batches of ``batch_size`` rows.

    Each node of ``m`` rows (``k = ceil(m/N)`` batches) is split into ``k//2 * N`` and
    the rest, so every batch but the last is full. The split starts along the node's
    principal direction (a few power iterations) and then alternates "centroids of the
    two halves" and "re-split by the difference of the centroids" (balanced 2-means).
    Cost: O(n·d) per tree level, log2(n/N) levels.
    """
    _check_batch_size(batch_size)
    rng = np.random.default_rng(seed)
    vectors = np.asarray(vectors, dtype=np.float32)
    batches: list[list[int]] = []
    stack = [np.arange(len(vectors))]
    while stack:
        rows = stack.pop()
        batch_count = math.ceil(len(rows) / batch_size)
        if batch_count <= 1:
            if len(rows):
                batches.append(rows.tolist())
            continue
        left_size = (batch_count // 2) * batch_size
        order = _balanced_split_order(vectors[rows], left_size, rng)
        # Right first so that the left half is popped (and emitted) first.
        stack.append(rows[order[left_size:]])
        stack.append(rows[order[:left_size]])
    return batches


def _balanced_split_order(
    block: np.ndarray, left_size: int, rng: np.random.Generator
) -> np.ndarray:
    """An ordering of ``block``'s rows whose first ``left_size`` form one cluster."""
    centred = block - block.mean(axis=0)
    direction = rng.standard_normal(block.shape[1], dtype=np.float32)
    for _ in range(_POWER_ITERATIONS):
        direction = centred.T @ (centred @ direction)
        direction /= np.linalg.norm(direction) + 1e-12
    order = np.argsort(centred @ direction, kind="stable")
    for _ in range(_BISECT_ITERATIONS):
        left, right = order[:left_size], order[left_size:]
        axis = block[right].mean(axis=0) - block[left].mean(axis=0)
        new_order = np.argsort(block @ axis, kind="stable")
        converged = np.array_equal(np.sort(new_order[:left_size]), np.sort(left))
        order = new_order
        if converged:
            break
    return order


def refine_batches(
    vectors: np.ndarray,
    batches: list[list[int]],
    *,
    passes: int = _REFINE_PASSES,
    neighbours: int = _REFINE_NEIGHBOURS,
) -> list[list[int]]:
    """Improve a partition by swapping rows between neighbouring batches.

    The objective is the mean over batches of the mean pairwise similarity inside a
    batch, ``f_A = (|S_A|² - Σ|x|²) / (m_A(m_A-1))`` with ``S_A`` the sum of A's rows.
    Swapping ``x ∈ A`` with ``y ∈ B`` changes it by
    ``2 w_A (S_A - x)·(y - x) + 2 w_B (S_B - y)·(x - y)`` (``w = 1/(m(m-1))``), so all
    |A|×|B| candidate swaps of a pair are scored with a few small matrix products and
    the best one is applied while it gains. Each pass visits every batch and its
    ``neighbours`` nearest batches (by centroid). Batch sizes never change.
    """
    if len(batches) < 2 or passes < 1:
        return [list(b) for b in batches]
    vectors = np.asarray(vectors, dtype=np.float32)
    squared_norms = np.einsum("ij,ij->i", vectors, vectors)
    members = [np.asarray(b, dtype=np.int64) for b in batches]
    for _ in range(passes):
        sums = np.stack([vectors[m].sum(axis=0) for m in members])
        partners = _nearest_rows(unit_rows(sums), min(neighbours, len(members) - 1))
        swaps = 0
        for a, row in enumerate(partners):
            for b in row:
                swaps += _swap_pair(vectors, squared_norms, members, sums, a, int(b))
        if swaps == 0:
            break
    return [m.tolist() for m in members]


def _swap_pair(
    vectors: np.ndarray,
    squared_norms: np.ndarray,
    members: list[np.ndarray],
    sums: np.ndarray,
    a: int,
    b: int,
) -> int:
    """Apply improving swaps between batches ``a`` and ``b`` in place; return how many."""
    rows_a, rows_b = members[a].copy(), members[b].copy()
    xa, xb = vectors[rows_a], vectors[rows_b]
    sum_a, sum_b = sums[a].copy(), sums[b].copy()
    wa, wb = _pair_weight(len(rows_a)), _pair_weight(len(rows_b))
    swaps = 0
    for _ in range(len(rows_a) * len(rows_b)):  # bound; in practice a handful
        cross = xa @ xb.T
        gain = 2 * wa * (
            (xb @ sum_a)[None, :] - (xa @ sum_a)[:, None] - cross + squared_norms[rows_a][:, None]
        ) + 2 * wb * (
            (xa @ sum_b)[:, None] - (xb @ sum_b)[None, :] - cross + squared_norms[rows_b][None, :]
        )
        i, j = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if gain[i, j] <= 1e-7:  # float32 noise must not cause endless swapping
            break
        x, y = xa[i].copy(), xb[j].copy()
        sum_a += y - x
        sum_b += x - y
        xa[i], xb[j] = y, x
        rows_a[i], rows_b[j] = rows_b[j], rows_a[i]
        swaps += 1
    if swaps:
        members[a], members[b] = rows_a, rows_b
        sums[a], sums[b] = sum_a, sum_b
    return swaps


def _pair_weight(size: int) -> float:
    return 1.0 / (size * (size - 1)) if size > 1 else 0.0


def neighbor_batches(vectors: np.ndarray, batch_size: int) -> list[list[int]]:
    """The paper's selection: for each row, itself followed by its N-1 most similar rows.

    Exact (blockwise matrix products, O(n²·d) time, O(block·n) memory); ties are broken
    by row order, so the result is deterministic. Returns ``n`` batches, target first.

    Example:
        >>> v = np.eye(3, dtype=np.float32) + 0.1
        >>> neighbor_batches(v / np.linalg.norm(v, axis=1, keepdims=True), 2)
        [[0, 1], [1, 0], [2, 0]]
    """
    _check_batch_size(batch_size)
    vectors = np.asarray(vectors, dtype=np.float32)
    k = min(batch_size - 1, len(vectors) - 1)
    if k <= 0:
        return [[i] for i in range(len(vectors))]
    nearest = _nearest_rows(vectors, k)
    return [[i, *row.tolist()] for i, row in enumerate(nearest)]


def _nearest_rows(vectors: np.ndarray, k: int) -> np.ndarray:
    """For each row, the ``k`` most similar other rows, most similar first."""
    n = len(vectors)
    result = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _BLOCK):
        sims = vectors[start : start + _BLOCK] @ vectors.T
        block_rows = np.arange(sims.shape[0])
        sims[block_rows, block_rows + start] = -np.inf  # never your own neighbour
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        # Sort by similarity, then by row index: deterministic under ties.
        order = np.lexsort((top, -top_sims), axis=1)
        result[start : start + _BLOCK] = np.take_along_axis(top, order, axis=1)[:, :k]
    return result


def exact_greedy_batches(vectors: np.ndarray, batch_size: int) -> list[list[int]]:
    """The O(n²) reference: repeatedly batch the unassigned row whose N-1 nearest
    unassigned rows are closest (largest similarity sum) with those rows.

    Needs the full n×n similarity matrix: use it on samples (a few thousand rows).
    """
    _check_batch_size(batch_size)
    vectors = np.asarray(vectors, dtype=np.float32)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    free = np.arange(len(vectors))
    batches: list[list[int]] = []
    k = batch_size - 1
    while len(free):
        if len(free) <= batch_size:
            batches.append(free.tolist())
            break
        sub = sims[np.ix_(free, free)]
        scores = np.partition(sub, -k, axis=1)[:, -k:].sum(axis=1) if k else np.zeros(len(free))
        seed = int(np.argmax(scores))
        chosen = np.concatenate([[seed], np.argpartition(sub[seed], -k)[-k:] if k else []])
        chosen = chosen.astype(np.int64)
        batches.append(free[chosen].tolist())
        keep = np.ones(len(free), dtype=bool)
        keep[chosen] = False
        free = free[keep]
    return batches


def random_batches(n: int, batch_size: int, *, seed: int = 0) -> list[list[int]]:
    """A random partition into ``ceil(n/N)`` batches: the similarity baseline."""
    _check_batch_size(batch_size)
    order = np.random.default_rng(seed).permutation(n)
    return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]


def mean_intra_batch_similarity(vectors: np.ndarray, batches: list[list[int]]) -> float:
    """Mean over batches (of two or more rows) of the mean pairwise cosine similarity.

    Example:
        >>> v = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
        >>> mean_intra_batch_similarity(v, [[0, 1], [2, 3]])
        1.0
        >>> mean_intra_batch_similarity(v, [[0, 2], [1, 3]])
        0.0
    """
    values = []
    for batch in batches:
        if len(batch) < 2:
            continue
        rows = np.asarray(vectors[list(batch)], dtype=np.float64)
        total = rows.sum(axis=0)
        pair_sum = float(total @ total) - float(np.einsum("ij,ij->", rows, rows))
        values.append(pair_sum / (len(batch) * (len(batch) - 1)))
    return float(np.mean(values)) if values else 0.0


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length; a zero row stays zero (similar to nothing)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def kmeans_centres(
    vectors: np.ndarray, k: int, *, iterations: int = 10, seed: int = 0
) -> np.ndarray:
    """``k`` unit-norm centres of unit-norm ``vectors`` (spherical k-means, k-means++
    seeding), numpy only: how :func:`langchain_autodemo.ray_data.group_by_similarity`
    splits a whole dataset before packing each centre's rows with :func:`partition_batches`.

    Example:
        >>> v = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
        >>> centres = kmeans_centres(unit_rows(v), 2)
        >>> a, b, c, d = np.argmax(unit_rows(v) @ centres.T, axis=1)
        >>> bool(a == b != c == d)
        True
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    centres = [vectors[rng.integers(n)]]
    distance = 1.0 - vectors @ centres[0]
    for _ in range(1, k):
        weights = np.clip(distance, 0, None) ** 2
        total = float(weights.sum())
        pick = rng.integers(n) if total <= 0 else rng.choice(n, p=weights / total)
        centres.append(vectors[pick])
        distance = np.minimum(distance, 1.0 - vectors @ vectors[pick])
    matrix = np.stack(centres)
    for _ in range(iterations):
        labels = np.argmax(vectors @ matrix.T, axis=1)
        for c in range(k):
            members = vectors[labels == c]
            if len(members):
                mean = members.sum(axis=0)
                norm = float(np.linalg.norm(mean))
                if norm > 0:
                    matrix[c] = mean / norm
    return matrix


def _canonical(batches: list[list[int]]) -> list[list[int]]:
    """Rows sorted within a batch, batches sorted by first row: stable output."""
    return sorted((sorted(b) for b in batches if b), key=lambda b: b[0])


def _check_batch_size(batch_size: int) -> None:
    require_positive_int("batch_size", batch_size)
