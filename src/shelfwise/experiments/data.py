"""What an experiment's report is computed from: per-unit outcomes read from the event log.

A unit is in the experiment from its first request under it (the ``exposures`` table, one row
per unit: variant, first time); every list it was shown on a targeted surface during the
period counts. Per unit, over the experiment's period:

- ``impressions`` and ``clicks`` (clicks citing the request id *and* item of one of its
  impressions: the CTR's numerator);
- ``carted`` / ``purchased``: any cart add / purchase at or after the first exposure (user
  level, the shop's conversion, whatever list led there);
- ``revenue``: the sum of those purchases' ``value``;
- ``pre_revenue``: the same sum over ``cuped_days`` before the start (the CUPED covariate).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from shelfwise.data.schemas import EventType
from shelfwise.experiments.model import Experiment
from shelfwise.storage.base import Store


@dataclass
class VariantData:
    """One variant's units (aligned arrays, one entry per unit)."""

    name: str
    units: list[str]
    impressions: NDArray[np.int64]
    clicks: NDArray[np.int64]
    carted: NDArray[np.int64]
    purchased: NDArray[np.int64]
    revenue: NDArray[np.float64]
    pre_revenue: NDArray[np.float64]
    first_seen: NDArray[np.float64]
    impressions_by_look: NDArray[np.int64]
    """(looks, units): cumulative impressions up to each look (for sequential tests)."""
    clicks_by_look: NDArray[np.int64]

    @property
    def n(self) -> int:
        return len(self.units)


@dataclass
class ExperimentData:
    experiment: Experiment
    variants: dict[str, VariantData]
    start: datetime
    end: datetime
    looks: NDArray[np.float64]
    """Epoch seconds of the looks (evenly spaced over the period, the last at its end)."""


def collect(store: Store, exp: Experiment, now: datetime | None = None,
            looks: int = 20) -> ExperimentData:
    """Read the experiment's period from the store into per-variant, per-unit arrays, with
    cumulative impression and click counts at ``looks`` evenly spaced times."""
    if exp.started_at is None:
        raise ValueError(f"experiment {exp.id!r} was never started")
    start = exp.started_at
    end = exp.stopped_at or now or datetime.now(UTC)
    exposed = store.exposures(exp.id).drop_duplicates("unit").set_index("unit")
    shown = store.exposed_events(exp.id, [EventType.IMPRESSION], start, end,
                                 context_path=("surface",))
    shown = shown[shown["context"].isin(exp.surfaces)]
    counts = shown.groupby("user_id").size()
    units = exposed.assign(impressions=counts.reindex(exposed.index, fill_value=0))
    clicked = _clicked(store, exp.id, shown, start, end)
    units["clicks"] = clicked.groupby("user_id").size().reindex(units.index, fill_value=0)
    edges = np.linspace(start.timestamp(), end.timestamp(), looks + 1)[1:]
    shown_looks = _by_look(shown, units.index, edges)
    click_looks = _by_look(clicked, units.index, edges)
    outcomes = store.exposed_events(exp.id, [EventType.CART, EventType.PURCHASE], start, end)
    outcomes = outcomes[outcomes["timestamp"].to_numpy() >=
                        units["first_seen"].reindex(outcomes["user_id"]).to_numpy()]
    by_type = outcomes.groupby(["user_id", "type"]).size().unstack(fill_value=0)
    units["carted"] = (by_type.get(EventType.CART.value, pd.Series(dtype=np.int64))
                       .reindex(units.index, fill_value=0) > 0).astype(np.int64)
    units["purchased"] = (by_type.get(EventType.PURCHASE.value, pd.Series(dtype=np.int64))
                          .reindex(units.index, fill_value=0) > 0).astype(np.int64)
    units["revenue"] = _revenue(outcomes).reindex(units.index, fill_value=0.0)
    if exp.cuped_days > 0:
        pre = store.exposed_events(exp.id, [EventType.PURCHASE],
                                   start - timedelta(days=exp.cuped_days), start)
        units["pre_revenue"] = _revenue(pre).reindex(units.index, fill_value=0.0)
    else:
        units["pre_revenue"] = 0.0
    variants = {}
    for v in exp.variants:
        mask = (units["variant"] == v.name).to_numpy()
        part = units[mask]
        variants[v.name] = VariantData(
            v.name, [str(u) for u in part.index],
            part["impressions"].to_numpy(np.int64), part["clicks"].to_numpy(np.int64),
            part["carted"].to_numpy(np.int64), part["purchased"].to_numpy(np.int64),
            part["revenue"].to_numpy(np.float64), part["pre_revenue"].to_numpy(np.float64),
            part["first_seen"].to_numpy(np.float64), shown_looks[:, mask],
            click_looks[:, mask])
    return ExperimentData(exp, variants, start, end, edges)


def _clicked(store: Store, experiment_id: str, shown: pd.DataFrame, start: datetime,
             end: datetime) -> pd.DataFrame:
    """Clicked impressions (user, time of the first click): a click citing an impression's
    request id and item; several clicks on one shown item count once."""
    clicks = store.exposed_events(experiment_id, [EventType.CLICK], start, end)
    pairs = shown[["request_id", "item_id", "user_id"]].drop_duplicates(
        ["request_id", "item_id"])
    first = clicks.groupby(["request_id", "item_id"], as_index=False)["timestamp"].min()
    hit: pd.DataFrame = first.merge(pairs, on=["request_id", "item_id"], how="inner")
    return hit[["user_id", "timestamp"]]


def _by_look(rows: pd.DataFrame, units: pd.Index, edges: NDArray[np.float64]
             ) -> NDArray[np.int64]:
    """(looks, units) cumulative counts of ``rows`` (user_id, timestamp) up to each edge."""
    out = np.zeros((len(edges), len(units)), np.int64)
    if rows.empty:
        return out
    col = units.get_indexer(pd.Index(rows["user_id"]))
    look = np.minimum(np.searchsorted(edges, rows["timestamp"].to_numpy(np.float64)),
                      len(edges) - 1)
    keep = col >= 0
    np.add.at(out, (look[keep], col[keep]), 1)
    return np.cumsum(out, axis=0)


def _revenue(purchases: pd.DataFrame) -> pd.Series:
    bought = purchases[purchases["type"] == EventType.PURCHASE.value]
    return bought.assign(value=bought["value"].fillna(0.0).astype(float)).groupby(
        "user_id")["value"].sum()
