"""Baseline quality on real data: Amazon Beauty (S3-Rec processing) against published numbers.

Protocol (S3-Rec, CIKM 2020): leave-last-out per user, full ranking over all 12,101 items, items
of the fed history excluded. Published PopRec HR@10 = 0.0152.

Measured (2-core dev box, ~1.5 s per evaluate call):
  popularity counted on            HR@10    NDCG@10
  train = s[:-2] (validation)      0.0114   0.0054
  train = s[:-1]                   0.0136   0.0061
  all interactions (incl. test)    0.0152   0.0068   <- reproduces PopRec exactly
  cooccurrence, train = s[:-1]     0.0792   0.0496
  cooccurrence, train = s[:-2]     0.0699   0.0436
So the paper's PopRec counted popularity over the whole dataset, test items included.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shelfwise.data.interactions import Interactions
from shelfwise.evaluation import NDCG, HitRate, LeaveLastOut, Split, evaluate
from shelfwise.retrieval import Cooccurrence, Popularity

BEAUTY = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon_sequences" / "Beauty.txt"
POPREC_HR10 = 0.0152
METRICS = [HitRate(10), NDCG(10)]


@pytest.fixture(scope="module")
def beauty() -> Interactions:
    if not BEAUTY.is_file():
        pytest.skip(f"real data not available: {BEAUTY} is missing (see ../shared/data/README.md)")
    users: list[str] = []
    items: list[str] = []
    with BEAUTY.open() as f:
        for line in f:  # "user item item ...", oldest first
            user, *seq = line.split()
            users += [user] * len(seq)
            items += seq
    return Interactions.from_frame(
        pd.DataFrame({"user_id": users, "item_id": items}), has_time=False
    )


def value(records: pd.DataFrame, model: str, metric: str) -> float:
    row = records[(records["model"] == model) & (records["metric"] == metric)]
    return float(row["value"].iloc[0])


def test_beauty_shape(beauty: Interactions) -> None:
    assert (beauty.n_users, beauty.n_items, len(beauty)) == (22_363, 12_101, 198_502)


def test_beauty_baselines(beauty: Interactions) -> None:
    models = {"popularity": Popularity(), "cooccurrence": Cooccurrence()}
    r = evaluate(models, beauty, LeaveLastOut(), METRICS, dataset="Beauty")
    assert (r["n_users"] == 22_363).all()
    pop = value(r, "popularity", "HR@10")
    assert abs(pop - POPREC_HR10) / POPREC_HR10 < 0.15, pop  # 0.0136
    assert value(r, "cooccurrence", "HR@10") > 0.06  # 0.0792
    assert value(r, "cooccurrence", "NDCG@10") > 0.04  # 0.0496


def test_poprec_counts_all_interactions(beauty: Interactions) -> None:
    """Which counts reproduce the paper's PopRec: popularity fitted on the whole log."""
    test = LeaveLastOut().split(beauty).test
    leaky = Split("leave-last-out", beauty, test)  # train on everything, test items included
    r = evaluate({"popularity": Popularity()}, beauty, leaky, METRICS, dataset="Beauty")
    assert value(r, "popularity", "HR@10") == pytest.approx(POPREC_HR10, abs=2e-4)  # 0.01516
