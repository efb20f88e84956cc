"""The spherical k-means of :mod:`langchain_autodemo.grouping` (Ray's dataset-wide grouping)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from langchain_autodemo import grouping
from langchain_autodemo.grouping import kmeans_centres, unit_rows


def test_centres_are_unit_norm_and_split_two_clear_topics() -> None:
    rng = np.random.default_rng(3)
    a = unit_rows(np.array([1.0, 0.0, 0.0]) + 0.05 * rng.standard_normal((20, 3)))
    b = unit_rows(np.array([0.0, 1.0, 0.0]) + 0.05 * rng.standard_normal((20, 3)))
    vectors = np.vstack([a, b]).astype(np.float32)
    centres = kmeans_centres(vectors, 2, seed=1)
    assert centres.shape == (2, 3)
    assert np.allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-5)
    labels = np.argmax(vectors @ centres.T, axis=1)
    assert len(set(labels[:20].tolist())) == 1 and len(set(labels[20:].tolist())) == 1
    assert labels[0] != labels[-1]


def test_k_is_clamped_to_the_rows_and_the_seed_decides() -> None:
    vectors = unit_rows(np.eye(3, dtype=np.float32))
    assert kmeans_centres(vectors, 10).shape == (3, 3)
    assert kmeans_centres(vectors, 0).shape == (1, 3)
    np.testing.assert_array_equal(
        kmeans_centres(vectors, 2, seed=4), kmeans_centres(vectors, 2, seed=4)
    )


def test_ray_data_still_exports_it() -> None:
    pytest.importorskip("ray")
    from langchain_autodemo import ray_data

    assert ray_data.kmeans_centres is kmeans_centres
    assert "kmeans_centres" in ray_data.__all__


def test_grouping_docstring_examples_run() -> None:
    assert doctest.testmod(grouping, optionflags=doctest.ELLIPSIS).failed == 0
