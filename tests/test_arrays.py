"""Array helpers of the serving path agree with NumPy's reference functions."""

from __future__ import annotations

import numpy as np

from shelfwise.retrieval.base import LONG_ROW, best_unordered, sorted_unique, top_k, unique_first


def test_unique_helpers_match_numpy() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        a = rng.integers(0, 20, int(rng.integers(0, 40))).astype(np.int64)
        values, first = np.unique(a, return_index=True)
        got_values, got_first = unique_first(a)
        np.testing.assert_array_equal(got_values, values)
        np.testing.assert_array_equal(got_first, first)
        np.testing.assert_array_equal(sorted_unique(a), values)


def test_best_unordered_keeps_the_k_largest_of_long_rows() -> None:
    rng = np.random.default_rng(2)
    for trial in range(120):
        n = int(rng.integers(LONG_ROW + 1, 120_000))
        k = int(rng.integers(1, 1500))
        row = rng.standard_normal(n).astype(np.float32)
        if trial % 3 == 1:
            row = np.round(row, 1)  # many ties at the boundary
        elif trial % 3 == 2:
            row[rng.random(n) < 0.95] = -np.inf  # most items excluded
        got = best_unordered(row, k)
        assert len(got) == k and len(np.unique(got)) == k
        np.testing.assert_array_equal(np.sort(row[got]),
                                      np.sort(row[np.argpartition(-row, k - 1)[:k]]))


def test_best_unordered_when_the_sample_threshold_keeps_too_few() -> None:
    row = np.zeros(50_000, np.float32)
    step = 50_000 // 2048
    row[::step] = np.arange(len(row[::step])) + 10.0  # the sample holds every large value
    got = best_unordered(row, 40)  # its threshold keeps ~8: the full partition answers
    np.testing.assert_array_equal(np.sort(got), np.sort(np.argsort(-row)[:40]))


def test_top_k_of_one_long_row_matches_sorting() -> None:
    rng = np.random.default_rng(3)
    row = rng.standard_normal((1, 60_000)).astype(np.float32)
    idx, val = top_k(row, 25, exclude=[np.array([int(np.argmax(row))])])
    ref = np.argsort(-row[0], kind="stable")[1:26]
    np.testing.assert_array_equal(idx[0], ref)
    np.testing.assert_array_equal(val[0], row[0, ref])
