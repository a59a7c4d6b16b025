"""Checks of the peer-table plumbing: the split, the metric helper, native implicit ranking.

Real-data checks skip when ``../shared/data`` is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from benchmarks.common import SHARED_DATA
from benchmarks.peers import runners, splits

BEAUTY = SHARED_DATA / "amazon_sequences" / "Beauty.txt"


def test_metrics_of_counts_hits_and_the_cold_slice() -> None:
    reco = np.array([[5, 1, 2, 3, 4, 6, 7, 8, 9, 10], [0, 1, 2, 3, 4, 6, 7, 8, 9, 10],
                     [1, 2, 3, 4, 6, 7, 8, 9, 10, 11]])
    out = runners.metrics_of(reco, np.array([5, 4, 0]), np.array([True, False, True]))
    assert out["HR@10"] == pytest.approx(2 / 3)
    assert out["NDCG@10"] == pytest.approx((1.0 + 1 / np.log2(6)) / 3)
    assert out["cold HR@10"] == pytest.approx(0.5)
    assert out["cold n"] == 2


def test_native_implicit_recommend_never_returns_a_seen_item() -> None:
    from implicit.als import AlternatingLeastSquares

    rng = np.random.default_rng(0)
    seqs = [rng.choice(40, size=8, replace=False).astype(np.int64) for _ in range(30)]
    split = splits.PeerSplit("toy", Path("."), "", 40, [str(i) for i in range(40)],
                             [str(u) for u in range(30)], np.concatenate(seqs),
                             np.arange(0, 241, 8), np.full(30, -1), np.arange(30),
                             np.zeros(30, np.int64))
    x = runners._csr(split, seqs)
    model = AlternatingLeastSquares(factors=4, iterations=3, random_state=0, num_threads=1,
                                    use_gpu=False)
    model.fit(x, show_progress=False)
    reco = runners._implicit_reco(model, x, np.arange(30))
    assert reco.shape == (30, 10)
    for u, row in enumerate(reco):
        assert not set(row.tolist()) & set(seqs[u].tolist())


@pytest.mark.skipif(not BEAUTY.exists(), reason="shared data absent")
def test_beauty_split_is_leave_last_out_of_the_raw_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splits, "WORK", tmp_path)
    split = splits.PeerSplit.load("beauty")
    raw = [line.split()[1:] for line in BEAUTY.read_text().splitlines()]
    assert split.n_items == len({i for s in raw for i in s})
    assert len(split.test_users) == len(raw)
    ids = split.item_ids
    for u in (0, 1, len(raw) - 1):
        assert [ids[i] for i in split.train_seqs[u]] == raw[u][:-1]
        assert [ids[i] for i in split.valid_seqs[u]] == raw[u][:-2]
        assert ids[split.valid_targets[u]] == raw[u][-2]
        assert ids[split.test_targets[u]] == raw[u][-1]
    users, hist, targets = split.eval_set("test")
    assert all(np.array_equal(h, split.train_seqs[u]) for u, h in zip(users, hist, strict=True))
    assert split.sha256 == splits.split_hash(tmp_path / "beauty" / "split.npz")
    train = split.interactions(split.train_seqs)
    assert len(train) == sum(len(s) - 1 for s in raw)
    counts = np.bincount(split.train_items, minlength=split.n_items)
    assert (counts[targets[split.cold_mask()]] < splits.COLD_BELOW).all()
    assert (counts[targets[~split.cold_mask()]] >= splits.COLD_BELOW).all()
