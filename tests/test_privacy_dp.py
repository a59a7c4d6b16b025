"""Differential privacy of published popularity: the Laplace noise has the scale ε promises,
ε ≤ 0 is refused, one user's contribution is capped, and ``shelfwise export popularity``."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from shelfwise.cli.main import app as cli
from shelfwise.data.schemas import Event, EventType, Item
from shelfwise.exceptions import InvalidRequestError
from shelfwise.privacy.dp import capped_counts, laplace_mechanism, private_popularity
from shelfwise.storage import SqlStore

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("epsilon", "sensitivity"), [(0.5, 1.0), (1.0, 1.0), (2.0, 1.0),
                                                      (1.0, 3.0)])
def test_noise_scale_matches_epsilon(epsilon: float, sensitivity: float) -> None:
    """20,000 draws: std within 3% of sqrt(2)·b and mean |noise| within 3% of b, b = Δ/ε
    (the sampling error of either is under 1% at this size)."""
    zeros = np.zeros(20_000)
    noise = laplace_mechanism(zeros, epsilon, sensitivity=sensitivity, rng=7)
    b = sensitivity / epsilon
    assert noise.std() == pytest.approx(math.sqrt(2) * b, rel=0.03)
    assert np.abs(noise).mean() == pytest.approx(b, rel=0.03)
    assert abs(noise.mean()) < 0.05 * b  # unbiased


@pytest.mark.parametrize("epsilon", [0.0, -1.0, math.nan, math.inf])
def test_epsilon_must_be_positive_and_finite(epsilon: float) -> None:
    with pytest.raises(InvalidRequestError, match="epsilon"):
        laplace_mechanism([1.0, 2.0], epsilon)


def test_seed_and_generator() -> None:
    a = laplace_mechanism([5.0, 6.0], 1.0, rng=3)
    assert np.array_equal(a, laplace_mechanism([5.0, 6.0], 1.0, rng=3))
    gen = np.random.default_rng(3)
    assert np.array_equal(a, laplace_mechanism([5.0, 6.0], 1.0, rng=gen))
    assert not np.array_equal(a, laplace_mechanism([5.0, 6.0], 1.0, rng=4))
    with pytest.raises(InvalidRequestError, match="sensitivity"):
        laplace_mechanism([1.0], 1.0, sensitivity=0)


def test_each_user_counts_at_most_the_cap() -> None:
    rows = [("u1", "a", 1.0)] * 5 + [("u1", "b", 2.0), ("u1", "c", 3.0), ("u2", "a", 1.0)]
    ev = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    assert capped_counts(ev).to_dict() == {"a": 2.0, "b": 1.0, "c": 1.0}
    assert capped_counts(ev, per_user_cap=3).to_dict() == {"a": 4.0, "b": 1.0, "c": 1.0}
    # one item per user: u1's most recent (c), u2's only one (a)
    assert capped_counts(ev, max_items_per_user=1).to_dict() == {"a": 1.0, "c": 1.0}


def shop(store: SqlStore) -> None:
    store.upsert_items([Item(id=i, title=i) for i in ("a", "b", "quiet")])
    events = [Event(id=f"e{k}", type=EventType.CLICK, user_id=f"u{k % 4}",
                    item_id="a" if k % 3 else "b", timestamp=T0 + timedelta(seconds=k))
              for k in range(30)]
    events.append(Event(id="ghost", type=EventType.CLICK, user_id="u9", item_id="not-in-catalog",
                        timestamp=T0))
    store.add_events(events)


def test_private_popularity_lists_every_catalog_item(store: SqlStore) -> None:
    shop(store)
    exact = private_popularity(store, 1e9, rng=0)  # noise ~1e-9: the capped counts
    assert exact.to_dict("records") == [{"item_id": "a", "count": 4},
                                        {"item_id": "b", "count": 4},
                                        {"item_id": "quiet", "count": 0}]
    noisy = private_popularity(store, 0.1, rng=1)
    assert sorted(noisy["item_id"]) == ["a", "b", "quiet"]  # zero-count items too, no ghosts
    assert (noisy["count"] >= 0).all()


def test_export_popularity_cli(store: SqlStore, tmp_path: Path) -> None:
    shop(store)
    args = ["export", "popularity", "--store", store.url, "--seed", "5"]
    res = CliRunner().invoke(cli, [*args, "--epsilon", "1"], env={})
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == "item_id,count"
    assert len(res.stdout.splitlines()) == 4
    assert "epsilon 1, sensitivity 1" in res.stderr and "Laplace scale 1" in res.stderr
    out = tmp_path / "pop.csv"
    res = CliRunner().invoke(cli, [*args, "--epsilon", "0.5", "--max-items-per-user", "2",
                                   "--out", str(out)], env={})
    assert res.exit_code == 0, res.output
    assert "sensitivity 2 (the whole table" in res.stderr and "Laplace scale 4" in res.stderr
    assert pd.read_csv(out).shape == (3, 2)
    res = CliRunner().invoke(cli, [*args, "--epsilon", "0"], env={})
    assert res.exit_code == 2 and "epsilon = 0.0: must be a finite number > 0" in res.stderr
