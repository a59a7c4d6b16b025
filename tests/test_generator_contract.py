"""Contract every candidate generator must honour (run over all registered generators)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shelfwise.data.interactions import Interactions
from shelfwise.exceptions import ConfigError, NotFittedError
from shelfwise.retrieval import GENERATORS, CandidateGenerator, make_generator, recommend
from shelfwise.retrieval.registry import load_generator

NAMES = sorted(GENERATORS)


@pytest.fixture(params=NAMES)
def generator(request: pytest.FixtureRequest) -> CandidateGenerator:
    return make_generator(request.param)


def test_is_a_candidate_generator(
    generator: CandidateGenerator, two_groups: Interactions
) -> None:
    assert isinstance(generator.fit(two_groups), CandidateGenerator)


def test_unfitted_use_raises(generator: CandidateGenerator) -> None:
    with pytest.raises(NotFittedError):
        generator.score([np.array([0])])


def test_unknown_param_is_a_config_error() -> None:
    for name in NAMES:
        with pytest.raises(ConfigError, match=name):
            make_generator(name, no_such_param=1)


def test_scores_shape_dtype_and_determinism(
    generator: CandidateGenerator, two_groups: Interactions
) -> None:
    generator.fit(two_groups)
    hist = [np.array([0, 1]), np.array([], dtype=np.int64), np.array([4])]
    s1 = generator.score(hist)
    s2 = generator.score(hist)
    assert s1.shape == (3, two_groups.n_items)
    assert s1.dtype == np.float32
    assert not np.isnan(s1).any()
    np.testing.assert_array_equal(s1, s2)


def test_empty_history_gets_a_full_list(
    generator: CandidateGenerator, two_groups: Interactions
) -> None:
    generator.fit(two_groups)
    idx, _ = recommend(generator, [np.array([], dtype=np.int64)], 5)
    assert (idx[0] >= 0).sum() == 5


def test_exclude_seen(generator: CandidateGenerator, two_groups: Interactions) -> None:
    generator.fit(two_groups)
    hist = np.array([two_groups.items.index("a1"), two_groups.items.index("a2")])
    idx, _ = recommend(generator, [hist], two_groups.n_items, exclude_seen=True)
    assert not set(idx[0].tolist()) & set(hist.tolist())
    idx, _ = recommend(generator, [hist], two_groups.n_items, exclude_seen=False)
    assert set(hist.tolist()) <= set(idx[0].tolist())


def test_save_load_round_trip(
    generator: CandidateGenerator, two_groups: Interactions, tmp_path: Path
) -> None:
    generator.fit(two_groups)
    generator.save(tmp_path / "g")
    loaded = load_generator(tmp_path / "g")
    hist = [np.array([0, 2]), np.array([5])]
    np.testing.assert_allclose(loaded.score(hist), generator.score(hist), rtol=1e-6)
    assert loaded.to_config() == generator.to_config()
