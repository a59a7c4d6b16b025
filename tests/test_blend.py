"""The one blend: its validation NDCG shortcut agrees with the metric code."""

from __future__ import annotations

import numpy as np
import pytest

from shelfwise.evaluation.metrics import NDCG
from shelfwise.retrieval.base import top_k
from shelfwise.retrieval.blend import _ndcg, grid_weights, normalise_rows


def test_single_target_shortcut_equals_top_k_ndcg_without_ties() -> None:
    rng = np.random.default_rng(3)
    scores = {"a": rng.random((200, 300)).astype(np.float32),
              "b": rng.random((200, 300)).astype(np.float32)}
    histories = [rng.choice(300, size=k % 5, replace=False) for k in range(200)]
    targets = [np.array([int(rng.integers(300))]) for _ in range(200)]
    w = {"a": 1.0, "b": 0.5}
    total = scores["a"] + 0.5 * scores["b"]
    reco, _ = top_k(total, 10, exclude=histories)
    assert _ndcg(scores, w, histories, targets) == pytest.approx(
        NDCG(10).calc(reco, targets), abs=1e-9)


def test_ties_count_at_their_expected_rank_and_a_seen_target_scores_zero() -> None:
    flat = {"a": np.zeros((2, 20), np.float32)}
    # all 20 items tie: the target is equally likely at ranks 0..19
    want = sum(1 / np.log2(p + 2) for p in range(10)) / 20
    assert _ndcg(flat, {"a": 1.0}, [np.empty(0, np.int64)] * 2,
                 [np.array([3]), np.array([4])]) == pytest.approx(want)
    assert _ndcg(flat, {"a": 1.0}, [np.array([3]), np.array([3])],
                 [np.array([3]), np.array([3])]) == 0.0


def test_grid_picks_the_weights_that_put_the_target_first() -> None:
    good = np.zeros((5, 6), np.float32)
    good[:, 2] = 1.0
    noise = np.random.default_rng(0).random((5, 6)).astype(np.float32)
    weights, value = grid_weights({"noise": noise, "good": good}, [np.empty(0, np.int64)] * 5,
                                  [np.array([2])] * 5)
    assert weights["good"] == 1.0 and weights["noise"] < 1.0 and value == pytest.approx(1.0)


def test_chunked_grid_equals_the_whole_matrix_grid() -> None:
    """Tuning in chunks of users (bounded memory at 100k items) picks the same weights with
    the same NDCG as tuning on the whole users x items matrix."""
    from shelfwise.retrieval.blend import grid_weights_chunked

    rng = np.random.default_rng(5)
    n_users, n_items = 230, 80
    target = rng.integers(n_items, size=n_users)
    scores = {"a": rng.random((n_users, n_items)).astype(np.float32),
              "b": rng.random((n_users, n_items)).astype(np.float32),
              "c": rng.random((n_users, n_items)).astype(np.float32)}
    scores["b"][np.arange(n_users)[: n_users // 2], target[: n_users // 2]] += 0.7
    histories = [rng.choice(n_items, size=k % 4, replace=False) for k in range(n_users)]
    targets = [np.array([int(t)]) for t in target]
    whole = grid_weights(scores, histories, targets)
    rows = {id(h): k for k, h in enumerate(histories)}

    def score(part: list[np.ndarray]) -> dict[str, np.ndarray]:
        ks = [rows[id(h)] for h in part]
        return {a: s[ks] for a, s in scores.items()}

    weights, value = grid_weights_chunked(score, histories, targets, rows_per_chunk=50)
    assert weights == whole[0] and weights["b"] == 1.0
    assert value == pytest.approx(whole[1], abs=1e-9)


def test_normalise_rows_known_answers() -> None:
    """Min-max per row in float32; non-finite entries count as 0; a constant row is all 0;
    the input is left alone."""
    x = np.array([[1.0, 3.0, 2.0, np.nan],
                  [np.inf, -np.inf, 4.0, 2.0],
                  [5.0, 5.0, 5.0, 5.0],
                  [np.nan, np.nan, np.nan, np.nan]])
    before = x.copy()
    got = normalise_rows(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([[1 / 3, 1.0, 2 / 3, 0.0],
                                                 [0.0, 0.0, 1.0, 0.5],
                                                 [0.0] * 4, [0.0] * 4], np.float32))
    np.testing.assert_array_equal(x, before)
    f32 = np.array([[2.0, 4.0]], np.float32)
    assert normalise_rows(f32) is not f32 and f32[0, 0] == 2.0


def test_each_item_is_labelled_with_the_part_that_gave_it_most() -> None:
    """A part scored first (the non-focused ones go before a focused one, whatever their
    place in the config) labels the items it leads: the label is its index, not 0."""
    from types import SimpleNamespace

    from shelfwise.retrieval.blend import Blend

    class Part(SimpleNamespace):
        n_items_ = 4

    rows = {"semantic": np.array([[1.0, 0.0, 0.0, 0.5]], np.float32),
            "cooc": np.array([[0.0, 1.0, 0.0, 0.2]], np.float32),
            "pop": np.array([[0.0, 0.0, 1.0, 0.1]], np.float32)}
    blend = Blend([("semantic", Part(approximate=True), 1.0),  # type: ignore[list-item]
                   ("cooc", Part(approximate=False), 1.0),
                   ("pop", Part(approximate=False), 1.0)])
    _, label = blend.score_parts([np.array([0])], lambda name, *_: rows[name])
    assert label[0].tolist() == [0, 1, 2, 0]


def test_a_focused_part_is_asked_for_the_blends_best_focus_items() -> None:
    """The semantic part (large catalog) also scores exactly the other parts' best
    ``Blend.focus`` items: those and no others."""
    from types import SimpleNamespace

    from shelfwise.retrieval.blend import FOCUS, Blend

    class Part(SimpleNamespace):
        n_items_ = 50

    other = np.arange(50, dtype=np.float32)[None, :]  # item 49 best, 0 worst
    asked: list[np.ndarray] = []

    def score(name: str, gen: object, histories: object, focus: object) -> np.ndarray:
        if name == "semantic":
            assert isinstance(focus, list)
            asked.append(np.sort(focus[0]))
            return np.zeros((1, 50), np.float32)
        return other

    blend = Blend([("semantic", Part(approximate=True), 1.0),  # type: ignore[list-item]
                   ("cooc", Part(approximate=False), 1.0)])
    assert blend.focus == FOCUS
    blend.focus = 5
    blend.score_parts([np.array([0])], score)
    assert asked[0].tolist() == [45, 46, 47, 48, 49]
