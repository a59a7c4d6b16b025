"""Array helpers of the serving path agree with NumPy's reference functions."""

from __future__ import annotations

import numpy as np

from shelfwise.retrieval.base import sorted_unique, unique_first


def test_unique_helpers_match_numpy() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        a = rng.integers(0, 20, int(rng.integers(0, 40))).astype(np.int64)
        values, first = np.unique(a, return_index=True)
        got_values, got_first = unique_first(a)
        np.testing.assert_array_equal(got_values, values)
        np.testing.assert_array_equal(got_first, first)
        np.testing.assert_array_equal(sorted_unique(a), values)
