"""Known-answer tests for the collaborative-filtering generators: EASE, ALS, BPR, item-kNN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shelfwise.data.interactions import Interactions
from shelfwise.exceptions import ConfigError, NotFittedError
from shelfwise.retrieval import BaseGenerator, recommend
from shelfwise.retrieval.ease import EASE, history_matrix
from shelfwise.retrieval.implicit_models import ALS, BPR
from shelfwise.retrieval.itemknn import ItemKNN

CF: list[type[BaseGenerator]] = [EASE, ALS, BPR, ItemKNN]
SMALL: dict[str, dict[str, Any]] = {  # fast settings for the synthetic data
    "ease": {"l2": 1.0},
    "als": {"factors": 4, "iterations": 10, "regularization": 1.0},
    "bpr": {"factors": 8, "iterations": 100, "learning_rate": 0.01},
    "itemknn": {"neighbors": 20},
}


def make(cls: type[BaseGenerator], **extra: object) -> BaseGenerator:
    return cls(**{**SMALL[cls.name], **extra})


@pytest.fixture(scope="module")
def groups() -> Interactions:
    """Two disjoint shops-within-a-shop: 40 users take 5 of items A0..A9, 40 take 5 of B0..B9."""
    rng = np.random.default_rng(7)
    rows = []
    for u in range(80):
        group = "A" if u < 40 else "B"
        for it in rng.choice(10, size=5, replace=False):
            rows.append((f"u{u}", f"{group}{it}"))
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))


@pytest.mark.parametrize("cls", CF, ids=lambda c: c.name)
def test_history_from_a_group_ranks_its_items_first(
    cls: type[BaseGenerator], groups: Interactions
) -> None:
    gen = make(cls).fit(groups)
    items = groups.items
    for g in "AB":
        hist = items.indices([f"{g}1", f"{g}2"])
        idx, _ = recommend(gen, [hist], 5)
        assert {e[0] for e in items.externals(idx[0])} == {g}, cls.name


@pytest.mark.parametrize("cls", CF, ids=lambda c: c.name)
def test_save_load_gives_identical_scores(
    cls: type[BaseGenerator], groups: Interactions, tmp_path: Path
) -> None:
    gen = make(cls, history_decay=0.8).fit(groups)
    gen.save(tmp_path / cls.name)
    loaded = cls.load(tmp_path / cls.name)
    hist = [np.array([0, 3, 1]), np.array([], np.int64), np.array([12])]
    np.testing.assert_array_equal(loaded.score(hist), gen.score(hist))
    assert loaded.to_config() == gen.to_config()
    assert not any(p.suffix == ".pkl" for p in (tmp_path / cls.name).iterdir())


@pytest.mark.parametrize("cls", CF, ids=lambda c: c.name)
def test_unfitted_use_raises(cls: type[BaseGenerator]) -> None:
    with pytest.raises(NotFittedError):
        make(cls).score([np.array([0])])
    if isinstance(gen := make(cls), ALS | BPR):
        with pytest.raises(NotFittedError):
            gen.user_factors([np.array([0])])


@pytest.mark.parametrize("cls", CF, ids=lambda c: c.name)
def test_contract_shape_dtype_empty_and_unknown_items(
    cls: type[BaseGenerator], groups: Interactions
) -> None:
    gen = make(cls).fit(groups)
    n = groups.n_items
    hist = [np.array([0, 1]), np.array([], np.int64), np.array([n + 5, 2]), np.array([n + 5])]
    scores = gen.score(hist)
    assert scores.shape == (4, n) and scores.dtype == np.float32
    assert np.isfinite(scores).all()
    # An item the model never saw is ignored, not an error.
    np.testing.assert_allclose(scores[2], gen.score([np.array([2])])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scores[3], scores[1])
    assert gen.score([]).shape == (0, n)


@pytest.mark.parametrize("cls", [EASE, ALS, BPR], ids=lambda c: c.name)
def test_empty_history_falls_back_to_popularity(
    cls: type[BaseGenerator], two_groups: Interactions
) -> None:
    gen = make(cls).fit(two_groups)
    idx, _ = recommend(gen, [np.array([], np.int64)], 2)
    assert set(two_groups.items.externals(idx[0])) == {"a1", "b1"}  # 7 users each


@pytest.mark.parametrize("cls", [ALS, BPR], ids=lambda c: c.name)
def test_same_seed_same_model(cls: type[BaseGenerator], groups: Interactions) -> None:
    hist = [np.array([0, 5])]
    a = make(cls, seed=3).fit(groups).score(hist)
    b = make(cls, seed=3).fit(groups).score(hist)
    np.testing.assert_array_equal(a, b)


def test_ease_matches_the_closed_form(groups: Interactions) -> None:
    lam = 3.0
    x = groups.to_csr(binary=True).toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    gen = EASE(l2=lam).fit(groups)
    np.testing.assert_allclose(gen.weights_, b, rtol=1e-4, atol=1e-6)
    hist = np.array([4, 1])
    expected = b[1] + b[4]  # binary history row @ B
    np.testing.assert_allclose(gen.score([hist])[0], expected, rtol=1e-4, atol=1e-6)


def test_ease_refuses_too_many_items(groups: Interactions) -> None:
    with pytest.raises(ConfigError, match=r"GB.*max_items=10"):
        EASE(max_items=10).fit(groups)


def test_history_matrix_weights_the_latest_occurrence() -> None:
    h = history_matrix([np.array([2, 0, 2, 1, 9])], 3, decay=0.5)
    row = h.toarray()[0]
    # 9 (unknown) is skipped but still the newest step: 1 is 1 step back, 2 two, 0 three.
    np.testing.assert_allclose(row, [0.125, 0.5, 0.25])
    binary = history_matrix([np.array([2, 2, 0])], 3).toarray()[0]
    np.testing.assert_array_equal(binary, [1.0, 0.0, 1.0])
    assert history_matrix([np.array([0, 1, 2])], 3, max_history=1).toarray()[0].tolist() == [
        0.0,
        0.0,
        1.0,
    ]


def test_als_fold_in_is_the_implicit_least_squares_solve(groups: Interactions) -> None:
    """u = (YᵀY + Y_hᵀ(C-1)Y_h + λI)⁻¹ Y_hᵀ C 1 with c = α for history items (Hu et al.)."""
    gen = ALS(factors=6, iterations=5, regularization=0.5, alpha=4.0).fit(groups)
    y = gen.item_factors_.astype(np.float64)
    hist = np.array([3, 7, 3])
    yh = y[np.unique(hist)]
    a = y.T @ y + (4.0 - 1.0) * yh.T @ yh + 0.5 * np.eye(6)
    u = np.linalg.solve(a, 4.0 * yh.sum(axis=0))
    np.testing.assert_allclose(gen.user_factors([hist])[0], u, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(gen.score([hist])[0], y @ u, rtol=1e-3, atol=1e-5)


def test_bpr_keeps_the_item_bias_column(groups: Interactions) -> None:
    gen = BPR(**{**SMALL["bpr"], "factors": 4}).fit(groups)
    assert gen.item_factors_.shape == (groups.n_items, 5)


def test_itemknn_cosine_and_pruning() -> None:
    # x taken by u1,u2; y by u2,u3; z by u2 only. cos(x,y) = 1/2, cos(x,z) = 1/sqrt(2).
    frame = pd.DataFrame(
        {"user_id": ["u1", "u2", "u2", "u3", "u2"], "item_id": ["x", "x", "y", "y", "z"]}
    )
    data = Interactions.from_frame(frame)
    x, y, z = data.items.indices(["x", "y", "z"])
    full = ItemKNN(neighbors=5, popularity_tiebreak=False).fit(data).similarity_.toarray()
    assert full[x, y] == pytest.approx(0.5) and full[x, z] == pytest.approx(2**-0.5)
    assert np.diag(full).max() == 0.0
    pruned = ItemKNN(neighbors=1, popularity_tiebreak=False).fit(data).similarity_
    assert pruned[x].nnz == 1 and pruned[x, z] == pytest.approx(2**-0.5)
    shrunk = ItemKNN(shrink=2.0, popularity_tiebreak=False).fit(data).similarity_
    assert shrunk[x, y] == pytest.approx(1 / (2 + 2))


def test_recency_decay_favours_the_latest_group(groups: Interactions) -> None:
    """With a strong decay, a history ending in group B must lead with B items."""
    items = groups.items
    hist = items.indices(["A1", "A2", "A3", "B1"])
    for cls in CF:
        gen = make(cls, history_decay=0.2).fit(groups)
        idx, _ = recommend(gen, [hist], 1)
        assert items.externals(idx[0])[0].startswith("B"), cls.name


@pytest.mark.parametrize("cls", CF, ids=lambda c: c.name)
def test_bad_config_is_a_config_error(cls: type[BaseGenerator]) -> None:
    with pytest.raises(ConfigError):
        cls(history_decay=0.0)
