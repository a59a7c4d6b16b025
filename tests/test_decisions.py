"""The decision log shared by the promotion and exploration bandits."""

from __future__ import annotations

import numpy as np

from shelfwise.services.catalog import Catalog
from shelfwise.services.decisions import DecisionLog


def test_credit_by_key_or_by_request_and_unknown_is_false() -> None:
    log = DecisionLog()
    log.append([1.0, 0.0], 0, "r1", "a")
    log.append([1.0, 1.0], 1, "r1", "b")
    log.append([0.0, 1.0], 2, "r2", "a")
    assert log.credit("r1", "b") and not log.credit("r1", "zzz") and not log.credit("r9")
    x, arms, rewards = log.arrays()
    assert x.shape == (3, 2) and arms.tolist() == [0, 1, 2]
    assert rewards.tolist() == [0.0, 1.0, 0.0]
    assert log.credit("r2")  # a redemption without a key rewards every decision of it
    assert log.arrays()[2].tolist() == [0.0, 1.0, 1.0]


def test_only_the_newest_decisions_are_kept_and_old_keys_are_forgotten() -> None:
    log = DecisionLog(max_log=2)
    for k in range(5):
        log.append([float(k)], k, f"r{k}", "x")
    assert len(log) == 2 and log.arrays()[1].tolist() == [3, 4]
    assert not log.credit("r0", "x"), "a dropped decision is not credited"
    assert log.credit("r4", "x") and log.arrays()[2].tolist() == [0.0, 1.0]
    assert len(log._key) <= 4 and set(log._request) <= {"r2", "r3", "r4"}


def test_empty_log_arrays_have_fittable_shapes() -> None:
    x, arms, rewards = DecisionLog().arrays()
    assert x.shape[0] == 0 and arms.dtype == np.int64 and rewards.shape == (0,)


def test_catalog_reads_the_store_frame_and_follows_upserts(tmp_path: object) -> None:
    from datetime import UTC, datetime

    import pandas as pd

    from shelfwise.data.schemas import Item

    frame = pd.DataFrame([
        {"id": "a", "title": "Alpha", "description": "", "category": ["X"], "brand": None,
         "price": float("nan"), "tags": [], "language": None, "created_at": 1.7e9,
         "available": True, "attributes": {}},
        {"id": "b", "title": "", "description": "", "category": [], "brand": "B",
         "price": 3.0, "tags": [], "language": None, "created_at": None,
         "available": False, "attributes": {}}])
    cat = Catalog.from_frame(frame)
    a = cat.get("a")
    assert a is not None and a.created_at == datetime.fromtimestamp(1.7e9, tz=UTC)
    assert a.price is None and cat.title("a") == "Alpha" and cat.title("b") is None
    assert "b" in cat and len(cat) == 2 and cat.items(["b", "zz"]).keys() == {"b"}
    version = cat.version
    cat.upsert([Item(id="b", title="Beta"), Item(id="c", title="Gamma")])
    assert cat.title("b") == "Beta" and cat.titles(["c", "zz"]) == ["Gamma", None]
    assert cat.version == version + 1 and len(cat) == 3
