"""Known-answer tests for the top-k metrics and the sampled-candidate helpers."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest

from shelfwise.evaluation import (
    ILD,
    MRR,
    NDCG,
    CategoryCoverage,
    CategoryILD,
    Coverage,
    HitRate,
    ItemContext,
    Miscalibration,
    Novelty,
    Precision,
    Recall,
    candidate_lists,
    parse_metric,
    rank_candidates,
    relevance,
    sample_negatives,
)
from shelfwise.exceptions import ConfigError

ALL_PER_USER = (HitRate, Recall, Precision, MRR, NDCG)


def one(metric: object, reco: list[list[int]], targets: list[list[int]]) -> float:
    return float(metric.calc(np.array(reco), targets))  # type: ignore[attr-defined]


# --- single target at rank 3 --------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (HitRate(3), 1.0),
        (Recall(3), 1.0),
        (Precision(3), 1 / 3),
        (MRR(3), 1 / 3),
        (NDCG(3), 1 / math.log2(4)),
        # cut off before the target
        (HitRate(2), 0.0),
        (Recall(2), 0.0),
        (Precision(2), 0.0),
        (MRR(2), 0.0),
        (NDCG(2), 0.0),
    ],
)
def test_target_at_rank_three(metric: object, expected: float) -> None:
    assert one(metric, [[5, 7, 9, 11]], [[9]]) == pytest.approx(expected)


def test_several_targets() -> None:
    reco, targets = [[1, 2, 3, 4]], [[2, 4, 8]]  # hits at ranks 2 and 4, three targets
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # min(k=4, 3 targets) = 3 ideal hits
    assert one(HitRate(4), reco, targets) == 1.0
    assert one(Recall(4), reco, targets) == pytest.approx(2 / 3)
    assert one(Precision(4), reco, targets) == pytest.approx(2 / 4)
    assert one(MRR(4), reco, targets) == pytest.approx(1 / 2)
    assert one(NDCG(4), reco, targets) == pytest.approx(dcg / idcg)


def test_ndcg_ideal_is_capped_at_k() -> None:
    # five targets, k=2, both slots hit: ideal DCG uses min(k, 5) = 2 positions -> NDCG 1
    assert one(NDCG(2), [[1, 2, 99]], [[1, 2, 3, 4, 5]]) == pytest.approx(1.0)
    assert one(Recall(2), [[1, 2, 99]], [[1, 2, 3, 4, 5]]) == pytest.approx(2 / 5)


def test_mean_over_users() -> None:
    reco = [[0, 1], [2, 3], [4, 5]]
    targets = [[0], [3], [9]]  # rank 1, rank 2, miss
    assert one(HitRate(2), reco, targets) == pytest.approx(2 / 3)
    assert one(MRR(2), reco, targets) == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert one(NDCG(2), reco, targets) == pytest.approx((1 + 1 / math.log2(3)) / 3)
    per_user = MRR(2).calc_per_user(np.array(reco), targets)
    np.testing.assert_allclose(per_user, [1.0, 0.5, 0.0])


def test_padding_is_never_a_hit() -> None:
    reco = [[-1, -1, -1], [3, -1, -1]]
    targets = [[0], [3]]
    for cls in ALL_PER_USER:
        assert cls(3).calc_per_user(np.array(reco), targets)[0] == 0.0
    assert one(Precision(3), reco, targets) == pytest.approx((0 + 1 / 3) / 2)
    # a -1 target is ignored, not matched against padding
    assert np.isnan(HitRate(3).calc_per_user(np.array([[-1, 3, -1]]), [[-1]])[0])


def test_users_without_targets_are_nan_and_skipped() -> None:
    reco = np.array([[1, 2], [1, 2]])
    targets = [np.array([1]), np.array([], dtype=np.int64)]
    for cls in ALL_PER_USER:
        per_user = cls(2).calc_per_user(reco, targets)
        assert np.isnan(per_user[1])
        assert cls(2).calc(reco, targets) == pytest.approx(per_user[0])
    assert math.isnan(HitRate(2).calc(reco[1:], targets[1:]))


def test_duplicates_count_once() -> None:
    # duplicated target: one relevant item; repeated recommendation: credited once, first rank
    assert one(Recall(3), [[3, 3, 4]], [[3, 3]]) == 1.0
    assert one(Precision(3), [[3, 3, 4]], [[3]]) == pytest.approx(1 / 3)
    assert one(NDCG(3), [[3, 3, 4]], [[3]]) == pytest.approx(1.0)
    assert one(Recall(3), [[5, 3, 3]], [[3, 7]]) == pytest.approx(1 / 2)


def test_relevance_matrix() -> None:
    hits, n_rel = relevance(np.array([[4, 2, 9], [1, -1, -1]]), [[9, 2], [7]], 3)
    np.testing.assert_array_equal(hits, [[False, True, True], [False, False, False]])
    np.testing.assert_array_equal(n_rel, [2, 1])


def test_coverage() -> None:
    reco = np.array([[0, 1, -1], [1, 2, -1]])
    assert Coverage(2).calc(reco, [], n_items=10) == pytest.approx(3 / 10)
    assert Coverage(1).calc(reco, [], n_items=10) == pytest.approx(2 / 10)
    assert Coverage(3).calc(reco, [], n_items=4) == pytest.approx(3 / 4)  # padding not an item
    with pytest.raises(ConfigError, match="n_items"):
        Coverage(2).calc(reco, [])


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="fewer than k"):
        HitRate(5).calc(np.array([[1, 2]]), [[1]])
    with pytest.raises(ValueError, match="rows"):
        HitRate(1).calc(np.array([[1], [2]]), [[1]])
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ConfigError):
            NDCG(bad)  # type: ignore[arg-type]
    # more columns than k are fine: only the first k count
    assert one(HitRate(1), [[1, 2, 3]], [[3]]) == 0.0


def test_metric_objects() -> None:
    m = NDCG(10)
    assert m.name == "NDCG@10" and m.k == 10
    assert HitRate(5).name == "HR@5" and Coverage(20).name == "Coverage@20"
    assert NDCG(10) == m and hash(NDCG(10)) == hash(m)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.k = 5  # type: ignore[misc]
    assert parse_metric("ndcg@10") == NDCG(10)
    assert parse_metric(" HR @ 5 ") == HitRate(5)
    assert parse_metric("HitRate@3") == HitRate(3)
    assert parse_metric("coverage@20") == Coverage(20)
    for bad in ("NDCG", "foo@10", "NDCG@x", "NDCG@0"):
        with pytest.raises(ConfigError):
            parse_metric(bad)


def _naive(reco: np.ndarray, targets: list[np.ndarray], k: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {n: [] for n in ("HR", "Recall", "Precision", "MRR", "NDCG")}
    for row, tgt in zip(reco, targets, strict=True):
        rel = {int(t) for t in tgt if t >= 0}
        seen: set[int] = set()
        hits = []
        for item in row[:k]:
            hits.append(int(item) in rel and int(item) not in seen)
            seen.add(int(item))
        n_hit = sum(hits)
        out["HR"].append(float(n_hit > 0))
        out["Recall"].append(n_hit / len(rel))
        out["Precision"].append(n_hit / k)
        out["MRR"].append(next((1 / (j + 1) for j, h in enumerate(hits) if h), 0.0))
        dcg = sum(1 / math.log2(j + 2) for j, h in enumerate(hits) if h)
        out["NDCG"].append(dcg / sum(1 / math.log2(j + 2) for j in range(min(k, len(rel)))))
    return out


def test_matches_naive_loop_on_random_lists() -> None:
    rng = np.random.default_rng(7)
    n, width, n_items = 300, 12, 40
    reco = rng.integers(0, n_items, size=(n, width))  # with repeats on purpose
    reco[rng.random((n, width)) < 0.1] = -1
    targets = [rng.integers(0, n_items, size=rng.integers(1, 6)) for _ in range(n)]
    for k in (1, 5, 12):
        naive = _naive(reco, targets, k)
        for cls in ALL_PER_USER:
            got = cls(k).calc_per_user(reco, targets)
            np.testing.assert_allclose(got, naive[cls.label], err_msg=f"{cls.label}@{k}")


def test_vectorised_speed() -> None:
    rng = np.random.default_rng(0)
    n, n_items = 22_363, 12_101
    reco = np.argsort(rng.random((n, 64)), axis=1)[:, :10] * 150
    targets = [np.array([t]) for t in rng.integers(0, n_items, n)]
    for cls in ALL_PER_USER:
        cls(10).calc(reco, targets)  # warm up
    start = time.perf_counter()
    for cls in ALL_PER_USER:
        cls(10).calc(reco, targets)
    assert time.perf_counter() - start < 1.0  # ~10 ms each on the 2-core dev box


# --- sampled candidates (LLMRank protocol) ------------------------------------------------


def test_rank_candidates() -> None:
    scores = np.array([[0.1, 0.9, 0.5, -np.inf, 0.7]])
    candidates = np.array([[3, 0, 2, -1, 1]])
    reco = rank_candidates(scores, candidates, 6)
    # -inf kept after finite scores, padding last, short pools padded to k
    np.testing.assert_array_equal(reco, [[1, 2, 0, 3, -1, -1]])
    np.testing.assert_array_equal(rank_candidates(scores, candidates, 2), [[1, 2]])
    # ties keep pool order
    flat = np.zeros((1, 5), np.float32)
    np.testing.assert_array_equal(rank_candidates(flat, np.array([[4, 2, 3]]), 3), [[4, 2, 3]])


def test_sample_negatives_excludes_and_is_distinct() -> None:
    exclude = [np.array([0, 1, 2]), np.array([5]), np.array([], dtype=np.int64)]
    neg = sample_negatives(50, exclude, 20, seed=3)
    assert neg.shape == (3, 20)
    for row, ex in zip(neg, exclude, strict=True):
        assert len(set(row.tolist())) == 20
        assert not set(row.tolist()) & set(ex.tolist())
        assert row.min() >= 0 and row.max() < 50
    np.testing.assert_array_equal(neg, sample_negatives(50, exclude, 20, seed=3))
    assert not np.array_equal(neg, sample_negatives(50, exclude, 20, seed=4))


def test_sample_negatives_when_few_items_are_left() -> None:
    neg = sample_negatives(6, [np.array([0, 1, 2, 3])], 3, seed=0)
    assert sorted(neg[0].tolist()) == [-1, 4, 5]


def test_candidate_lists() -> None:
    pools = candidate_lists([np.array([7]), np.array([1, 2])], [np.array([3, 7, 4]), [5]])
    assert pools.shape == (2, 3)
    assert sorted(pools[0].tolist()) == [3, 4, 7]  # target once, the negative 7 dropped
    assert sorted(pools[1].tolist()) == [1, 2, 5]


# ---- beyond-accuracy metrics (known answers) ---------------------------------------------------
def _ctx() -> ItemContext:
    # items 0,1 point the same way, 2 is orthogonal, 3 opposite to 0; categories a a b b
    vec = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    return ItemContext(vectors=vec, categories=np.array([0, 0, 1, 1]),
                       popularity=np.array([4, 2, 1, 1]), histories=[np.array([0, 1]),
                                                                     np.array([2])])


def test_ild_is_one_minus_mean_pairwise_cosine() -> None:
    ctx = _ctx()
    ild = ILD(3)
    per = ild.calc_per_user(np.array([[0, 1, 2], [0, 3, -1]]), ctx)
    # pairs of (0,1,2): cos 1, 0, 0 -> mean 1/3; (0,3): cos -1 -> 1 - (-1) = 2
    assert per == pytest.approx([1 - 1 / 3, 2.0])
    assert ild.calc(np.array([[0, 1, 2], [0, 3, -1]]), [[], []], context=ctx) \
        == pytest.approx((2 / 3 + 2) / 2)
    assert math.isnan(ild.calc(np.array([[0, 1, 2]]), [[]], context=ItemContext()))
    assert math.isnan(ild.calc_per_user(np.array([[0, -1, -1]]), ctx)[0])  # one item: no pair


def test_category_ild_coverage_novelty_and_miscalibration() -> None:
    ctx = _ctx()
    reco = np.array([[0, 1, 2], [2, 3, -1]])
    # (0,1,2): categories a a b: 1 same pair of 3 -> 2/3; (2,3): b b -> 0
    assert CategoryILD(3).calc_per_user(reco, ctx) == pytest.approx([2 / 3, 0.0])
    assert CategoryCoverage(3).calc(np.array([[0, 1, -1]]), [[]], context=ctx) == 0.5
    assert CategoryCoverage(3).calc(reco, [[], []], context=ctx) == 1.0
    info = -np.log2(np.array([4, 2, 1, 1]) / 8)  # 1, 2, 3, 3 bits
    assert Novelty(3).calc_per_user(reco, ctx) == pytest.approx(
        [(info[0] + info[1] + info[2]) / 3, 3.0])
    # user 0: history all a, list 2/3 a 1/3 b -> KL(p || 0.99 q + 0.01 p) = log(1 / (0.99*2/3+0.01))
    mis = Miscalibration(3).calc_per_user(reco, ctx)
    assert mis[0] == pytest.approx(math.log(1 / (0.99 * 2 / 3 + 0.01)))
    assert mis[1] == pytest.approx(0.0)  # history all b, list all b
    assert isinstance(parse_metric("catild@5"), CategoryILD)
    assert isinstance(parse_metric("Novelty@10"), Novelty)
    assert isinstance(parse_metric("ILD@10"), ILD)


def test_evaluate_fills_the_context_for_beyond_accuracy_metrics() -> None:
    import pandas as pd

    from shelfwise.data.interactions import Interactions
    from shelfwise.evaluation import LeaveLastOut, evaluate
    from shelfwise.retrieval import Popularity

    frame = pd.DataFrame({"user_id": ["u1"] * 3 + ["u2"] * 3 + ["u3"] * 2,
                          "item_id": ["a", "b", "c", "a", "c", "d", "b", "d"],
                          "timestamp": np.arange(8.0)})
    data = Interactions.from_frame(frame)
    cats = np.array([0, 1, 0, 1])
    rec = evaluate({"pop": Popularity()}, data, LeaveLastOut(),
                   [Novelty(2), CategoryILD(2), Miscalibration(2), ILD(2)], dataset="toy",
                   context=ItemContext(categories=cats))
    values = dict(zip(rec["metric"], rec["value"], strict=True))
    assert values["Novelty@2"] > 0 and 0 <= values["CatILD@2"] <= 1
    assert values["Miscalibration@2"] >= 0
    assert math.isnan(values["ILD@2"])  # popularity has no item vectors
