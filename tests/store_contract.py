"""The contract every :class:`~shelfwise.storage.Store` backend must pass.

Subclass :class:`StoreContract` in a ``test_*.py`` file and give it a ``make_store`` fixture:
a factory whose every call returns a fresh, empty store (and closes what it made at teardown).
Durability reopens a store with :meth:`StoreContract.reopen` (``open_store(store.url)`` unless
the backend overrides it). See ``tests/test_store_contract.py`` for SQLite; a PostgreSQL class
only needs a factory that creates a new database per call.

Every test asserts concrete values (known answers), so a backend that orders, counts or
converts differently fails here and not in a recommender test far away.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from shelfwise.data.schemas import INTERACTION_TYPES, Event, EventType, Item, Promotion, User
from shelfwise.exceptions import StoreError
from shelfwise.storage import ApiKey, SqlStore, Store, WriteResult, open_store
from shelfwise.storage import sql as sql_store
from shelfwise.storage.base import user_hash

StoreFactory = Callable[[], Store]

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
CST = timezone(timedelta(hours=8))
CLICK, VIEW, PURCHASE = EventType.CLICK, EventType.VIEW, EventType.PURCHASE


class Boom(Exception):
    """Raised inside transactions to force a rollback."""


def ev(eid: str, user: str = "u1", item: str | None = "i1", t: float = 0.0,
       type: EventType = CLICK, **kw: Any) -> Event:
    """An event ``t`` seconds after :data:`T0`."""
    return Event(id=eid, type=type, user_id=user, item_id=item,
                 timestamp=T0 + timedelta(seconds=t), **kw)


def full_item(item_id: str = "i1") -> Item:
    """An item with every field set, Chinese text and nested JSON attributes."""
    return Item(
        id=item_id, title="无线蓝牙耳机 Pro 🎧", description="降噪\n续航 30 小时 — “quoted”",
        category=["电子产品", "音频", "耳机"], brand="声宝", price=199.5,
        tags=["降噪", "bluetooth"], language="zh",
        created_at=datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=CST), available=False,
        attributes={"颜色": "黑", "sizes": [1, 2.5], "dims": {"w": 1.5, "ok": True},
                    "none": None},
    )


def ids(events: list[Event]) -> list[str]:
    return [e.id for e in events]


def rows_naming(store: Store, text: str) -> dict[str, int]:
    """Rows of EVERY table in the database (reflected, so a table added later counts too) with
    ``text`` in any column, per table."""
    assert isinstance(store, SqlStore)
    found = sa.MetaData()
    found.reflect(store.engine)
    assert set(sql_store.metadata.tables) <= set(found.tables)
    out = {}
    with store.engine.connect() as conn:
        for table in found.sorted_tables:
            n = sum(any(text in str(v) for v in row) for row in conn.execute(sa.select(table)))
            if n:
                out[table.name] = n
    return out


class StoreContract:
    """Known-answer tests over every method of the :class:`Store` protocol."""

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        raise NotImplementedError("a backend's test class provides make_store")

    @pytest.fixture
    def store(self, make_store: StoreFactory) -> Store:
        return make_store()

    @pytest.fixture
    def reopened(self) -> Iterator[list[Store]]:
        """Stores opened by :meth:`reopen`, closed at teardown."""
        opened: list[Store] = []
        yield opened
        for s in opened:
            s.close()

    @pytest.fixture
    def local_zone_ahead_of_utc(self) -> Iterator[None]:
        """Run with the process's local zone at UTC+8, so local-time conversions show."""
        old = os.environ.get("TZ")
        os.environ["TZ"] = "Asia/Shanghai"
        time.tzset()
        yield
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()

    def reopen(self, store: Store, opened: list[Store]) -> Store:
        """A second handle on the same storage (override if a URL is not enough)."""
        again = open_store(store.url)
        opened.append(again)
        return again

    # ---- items ------------------------------------------------------------------------
    def test_empty_store(self, store: Store) -> None:
        assert store.counts() == {"items": 0, "users": 0, "events": 0, "promotions": 0}
        assert store.get_item("i1") is None
        assert store.get_items([]) == {}
        assert store.get_user("u1") is None
        assert store.user_events("u1") == []
        assert list(store.iter_events()) == []
        assert store.list_promotions() == []
        assert store.existing_event_ids([]) == set()
        assert store.events_for_requests([]) == []
        assert store.upsert_items([]) == WriteResult(0, 0)
        assert store.add_events([]) == WriteResult(0, 0)

    def test_item_round_trips_every_field(self, store: Store) -> None:
        item = full_item()
        assert store.upsert_items([item]) == WriteResult(1, 0)
        got = store.get_item("i1")
        assert got == item
        assert got is not None and got.title == "无线蓝牙耳机 Pro 🎧"
        assert got.category == ["电子产品", "音频", "耳机"]
        assert got.attributes == {"颜色": "黑", "sizes": [1, 2.5], "dims": {"w": 1.5, "ok": True},
                                  "none": None}
        # 03:04:05.123456 at UTC+8 is 19:04:05.123456 the day before, returned in UTC.
        assert got.created_at == datetime(2024, 1, 1, 19, 4, 5, 123456, tzinfo=UTC)
        assert got.created_at is not None and got.created_at.utcoffset() == timedelta(0)
        assert got.available is False

    def test_item_defaults_round_trip(self, store: Store) -> None:
        store.upsert_items([Item(id="bare"), Item(id="free", price=0.0)])
        bare = store.get_item("bare")
        assert bare == Item(id="bare")
        assert bare is not None and bare.price is None and bare.created_at is None
        assert bare.brand is None and bare.category == [] and bare.available is True
        free = store.get_item("free")
        assert free is not None and free.price == 0.0

    def test_upsert_items_replaces_whole_item(self, store: Store) -> None:
        store.upsert_items([full_item()])
        new = Item(id="i1", title="Earbuds", tags=["x"], price=None)
        assert store.upsert_items([new]) == WriteResult(1, 0)
        assert store.get_item("i1") == new  # price, brand, attributes… not kept from before
        assert store.counts()["items"] == 1

    def test_upsert_items_counts(self, store: Store) -> None:
        assert store.upsert_items([Item(id=f"i{k}") for k in range(3)]) == WriteResult(3, 0)
        assert store.upsert_items([Item(id="i0"), Item(id="i9")]) == WriteResult(2, 0)
        assert store.counts()["items"] == 4

    def test_same_item_twice_in_one_batch_last_wins(self, store: Store) -> None:
        # Current behaviour: both rows count as written; the later one is stored.
        res = store.upsert_items([Item(id="i1", title="first"), Item(id="i1", title="second")])
        assert res == WriteResult(2, 0)
        got = store.get_item("i1")
        assert got is not None and got.title == "second"
        assert store.counts()["items"] == 1

    def test_items_frame_keeps_first_insertion_order(
        self, store: Store, reopened: list[Store]
    ) -> None:
        # Training numbers items in this order, so an update must not move an item (PostgreSQL
        # writes an updated row elsewhere in the table; a scan without ORDER BY shows that).
        store.upsert_items([Item(id="b"), Item(id="c"), Item(id="a")])
        store.upsert_items([Item(id="c", title="updated"), Item(id="0")])
        store.upsert_items([Item(id="z"), Item(id="a", price=1.0), Item(id="z", title="last")])
        order = ["b", "c", "a", "0", "z"]
        assert store.items_frame()["id"].tolist() == order
        # Many pages of rows, half of them rewritten in reverse: still first-insertion order.
        many = [f"m{k:03d}" for k in range(300)]
        store.upsert_items([Item(id=i, description="x" * 500) for i in many])
        store.upsert_items([Item(id=i, description="y" * 600) for i in reversed(many[::2])])
        assert store.items_frame()["id"].tolist() == order + many
        assert self.reopen(store, reopened).items_frame()["id"].tolist() == order + many

    def test_item_change_numbers_every_write(self, store: Store, reopened: list[Store]) -> None:
        """What a serving process polls to apply catalog writes another process made."""
        assert store.item_change() == 0 and store.items_changed_after(0) == []
        store.upsert_items([Item(id="b"), Item(id="a")])
        first = store.item_change()
        assert [i for i, _ in store.items_changed_after(0)] == ["b", "a"]
        store.upsert_items([Item(id="a", title="changed", available=False)])
        assert store.item_change() > first, "an update is a write too"
        store.upsert_items([Item(id="c"), Item(id="b", price=2.0)])
        after = store.items_changed_after(first)
        assert [i for i, _ in after] == ["a", "c", "b"]
        assert after[-1][1] == store.item_change()
        assert [c for _, c in after] == sorted(c for _, c in after)
        assert store.items_frame()["id"].tolist() == ["b", "a", "c"], "first-insertion order"
        assert self.reopen(store, reopened).item_change() == after[-1][1]

    def test_get_items_skips_missing_and_reads_past_900(self, store: Store) -> None:
        store.upsert_items([Item(id=f"i{k:04d}", title=f"t{k}") for k in range(1000)])
        wanted = [f"i{k:04d}" for k in range(1000)] + ["nope", "i0005", "gone"]
        got = store.get_items(wanted)
        assert set(got) == {f"i{k:04d}" for k in range(1000)}
        assert got["i0999"].title == "t999" and got["i0000"].title == "t0"
        assert store.get_items(["nope"]) == {}
        assert store.get_item("nope") is None

    # ---- users and promotions ---------------------------------------------------------
    def test_user_round_trip_and_replace(self, store: Store) -> None:
        user = User(id="用户1", attributes={"segment": "vip", "城市": "上海", "age": 31,
                                            "tags": ["a", None]},
                    created_at=datetime(2024, 2, 1, 8, 30, tzinfo=CST))
        assert store.upsert_users([user, User(id="u2")]) == WriteResult(2, 0)
        got = store.get_user("用户1")
        assert got == user
        assert got is not None and got.created_at == datetime(2024, 2, 1, 0, 30, tzinfo=UTC)
        assert got.created_at is not None and got.created_at.utcoffset() == timedelta(0)
        assert store.get_user("u2") == User(id="u2")
        store.upsert_users([User(id="用户1", attributes={"segment": "new"})])
        assert store.get_user("用户1") == User(id="用户1", attributes={"segment": "new"})
        assert store.get_user("u3") is None
        assert store.counts()["users"] == 2

    def test_promotions_round_trip_and_replace(self, store: Store) -> None:
        p1 = Promotion(id="p1", text="满100减20", rules={"min_history": 2, "segments": ["vip"]},
                       start=datetime(2024, 5, 1, 8, tzinfo=CST),
                       end=datetime(2024, 6, 1, tzinfo=UTC))
        p2 = Promotion(id="p2", text="Free shipping")
        assert store.upsert_promotions([p1, p2]) == WriteResult(2, 0)
        got = {p.id: p for p in store.list_promotions()}
        assert got == {"p1": p1, "p2": p2}
        assert got["p1"].start == datetime(2024, 5, 1, 0, tzinfo=UTC)
        assert got["p1"].start is not None and got["p1"].start.utcoffset() == timedelta(0)
        assert got["p2"].start is None and got["p2"].end is None
        p1b = Promotion(id="p1", text="满200减50")
        assert store.upsert_promotions([p1b]) == WriteResult(1, 0)
        assert sorted(store.list_promotions(), key=lambda p: p.id) == [p1b, p2]
        assert store.counts()["promotions"] == 2

    def test_list_promotions_keeps_first_insertion_order(self, store: Store) -> None:
        store.upsert_promotions([Promotion(id=p, text=p) for p in ("p2", "p9", "p1")])
        store.upsert_promotions([Promotion(id="p9", text="new"), Promotion(id="p0", text="t")])
        assert [p.id for p in store.list_promotions()] == ["p2", "p9", "p1", "p0"]

    def test_naive_datetimes_are_utc_whatever_the_local_zone(
        self, store: Store, local_zone_ahead_of_utc: None
    ) -> None:
        noon = datetime(2024, 1, 1, 12)
        store.upsert_users([User(id="u1", created_at=noon)])
        store.upsert_promotions([Promotion(id="p1", text="t", start=noon)])
        store.upsert_items([Item(id="i1", created_at=noon)])
        utc_noon = noon.replace(tzinfo=UTC)
        user = store.get_user("u1")
        assert user is not None and user.created_at == utc_noon
        assert store.list_promotions()[0].start == utc_noon
        item = store.get_item("i1")
        assert item is not None and item.created_at == utc_noon

    # ---- events: writes ----------------------------------------------------------------
    def test_event_round_trips_every_field(self, store: Store) -> None:
        full = ev("e1", t=0.654321, type=PURCHASE, query="蓝牙耳机", request_id="r1",
                  position=0, propensity=0.25, value=19.9,
                  context={"page": "首页", "slots": [1, 2], "nested": {"a": None}})
        search = Event(id="e2", type=EventType.SEARCH, user_id="u1", query="耳机",
                       timestamp=T0 + timedelta(seconds=1))
        assert store.add_events([full, search]) == WriteResult(2, 0)
        got = store.user_events("u1")
        assert got == [full, search]
        assert got[0].timestamp == datetime(2024, 3, 1, 8, 0, 0, 654321, tzinfo=UTC)
        assert got[0].timestamp.utcoffset() == timedelta(0)
        assert got[1].item_id is None and got[1].request_id is None and got[1].context == {}

    def test_add_events_counts_and_is_idempotent_across_batches(self, store: Store) -> None:
        batch = [ev(f"e{k}", t=k) for k in range(3)]
        assert store.add_events(batch) == WriteResult(3, 0)
        assert store.add_events([*batch, ev("e3", t=3)]) == WriteResult(1, 3)
        assert store.add_events(batch) == WriteResult(0, 3)
        assert store.counts()["events"] == 4
        # A redelivered id with another payload is skipped: the stored event is unchanged.
        assert store.add_events([ev("e0", item="other", t=99)]) == WriteResult(0, 1)
        first = store.user_events("u1")[0]
        assert (first.id, first.item_id, first.timestamp) == ("e0", "i1", T0)

    def test_same_event_id_twice_in_one_batch_first_wins(self, store: Store) -> None:
        # Current behaviour: the first of two same-id events is stored, the second is skipped.
        res = store.add_events([ev("e1", item="a"), ev("e1", item="b"), ev("e2", item="c")])
        assert res == WriteResult(2, 1)
        assert [(e.id, e.item_id) for e in store.user_events("u1")] == [("e1", "a"), ("e2", "c")]

    def test_concurrent_redelivery_from_several_handles_stores_each_event_once(
        self, store: Store, reopened: list[Store]
    ) -> None:
        # A client retries while its first delivery is still being written (other connections).
        handles = [store, *(self.reopen(store, reopened) for _ in range(3))]
        batch = [ev(f"e{k:03d}", t=k) for k in range(200)]
        start = threading.Barrier(len(handles))

        def deliver(handle: Store) -> WriteResult:
            start.wait(timeout=30)
            return handle.add_events(batch)

        with ThreadPoolExecutor(len(handles)) as pool:
            results = list(pool.map(deliver, handles))
        assert sum(r.written for r in results) == 200
        assert all(r.written + r.skipped == 200 for r in results)
        assert ids([e for b in store.iter_events() for e in b]) == ids(batch)

    def test_concurrent_batches_on_one_handle_each_get_their_own_counts(
        self, store: Store
    ) -> None:
        # Batches posted at once by a server's threads share commits (group commit), yet each
        # caller learns what its own batch wrote, and a shared id is written once.
        store.add_events([ev("old", t=0)])
        batches = [[ev(f"b{b}-{k}", user=f"v{b}", t=k) for k in range(50)] + [ev("shared"),
                   ev("old", t=0)] for b in range(12)]
        start = threading.Barrier(len(batches))

        def deliver(batch: list[Event]) -> WriteResult:
            start.wait(timeout=30)
            return store.add_events(batch)

        with ThreadPoolExecutor(len(batches)) as pool:
            results = list(pool.map(deliver, batches))
        assert all(r.written + r.skipped == 52 for r in results)
        assert sorted(r.written for r in results) == [50] * 11 + [51]
        assert store.counts()["events"] == 1 + 12 * 50 + 1
        for b in range(12):
            assert [e.id for e in store.user_events(f"v{b}")] == [f"b{b}-{k}" for k in range(50)]

    def test_a_refused_batch_among_concurrent_ones_fails_alone(self, store: Store) -> None:
        bad = [ev("bad1"), ev("bad2", type=EventType.SEARCH, item=None, query="x\x00y")]
        good = [[ev(f"g{b}-{k}", user=f"u{b}", t=k) for k in range(20)] for b in range(6)]
        start = threading.Barrier(len(good) + 1)

        def deliver(batch: list[Event]) -> WriteResult | Exception:
            start.wait(timeout=30)
            try:
                return store.add_events(batch)
            except StoreError as exc:
                return exc

        with ThreadPoolExecutor(len(good) + 1) as pool:
            results = list(pool.map(deliver, [bad, *good]))
        assert isinstance(results[0], StoreError) and "bad2" in str(results[0])
        assert results[1:] == [WriteResult(20, 0)] * 6
        assert store.existing_event_ids(["bad1", "bad2"]) == set()
        assert store.counts()["events"] == 120

    def test_existing_event_ids_past_900(self, store: Store) -> None:
        store.add_events([ev(f"e{k:04d}", t=k) for k in range(1000)])
        asked = [f"e{k:04d}" for k in range(1000)] + [f"x{k}" for k in range(50)]
        assert store.existing_event_ids(asked) == {f"e{k:04d}" for k in range(1000)}
        assert store.existing_event_ids(["x1", "e0007", "e0007"]) == {"e0007"}
        assert store.existing_event_ids([]) == set()

    # ---- events: reads -----------------------------------------------------------------
    def test_user_events_oldest_first_with_filter_and_limit(self, store: Store) -> None:
        # Arrival order differs from time order; u2's events never leak into u1's.
        store.add_events([
            ev("late", t=30, type=PURCHASE), ev("early", t=10), ev("other", user="u2", t=20),
            ev("mid", t=20, type=VIEW), ev("first", t=0, type=VIEW),
        ])
        assert ids(store.user_events("u1")) == ["first", "early", "mid", "late"]
        assert ids(store.user_events("u1", limit=2)) == ["mid", "late"]
        assert ids(store.user_events("u1", limit=10)) == ["first", "early", "mid", "late"]
        assert ids(store.user_events("u1", types=[VIEW])) == ["first", "mid"]
        assert ids(store.user_events("u1", types=[VIEW, PURCHASE], limit=2)) == ["mid", "late"]
        assert ids(store.user_events("u1", types=[EventType.CART])) == []
        assert ids(store.user_events("u2")) == ["other"]
        assert store.user_events("nobody") == []

    def test_interaction_items_match_user_events(self, store: Store) -> None:
        """The feed's history read: interactions only (not impressions or searches), oldest
        first, ties in arrival order, the last ``limit``."""
        store.add_events([
            ev("a", t=5, item="i1"), ev("imp", t=6, item="i9", type=EventType.IMPRESSION),
            ev("b", t=5, item="i2", type=PURCHASE), ev("c", t=1, item="i3", type=VIEW),
            ev("s", t=7, item=None, type=EventType.SEARCH, query="tea"),
            ev("d", t=9, item="i4", type=EventType.CART), ev("x", user="u2", t=3, item="i5"),
        ])
        inter = sorted(INTERACTION_TYPES)
        want = [e.item_id for e in store.user_events("u1", types=inter)]
        assert want == ["i3", "i1", "i2", "i4"]
        assert store.interaction_items("u1") == want
        assert store.interaction_items("u1", limit=2) == ["i2", "i4"]
        assert store.interaction_items("nobody") == []

    def test_search_queries_are_the_last_ones_oldest_first(self, store: Store) -> None:
        store.add_events([
            ev("s1", t=1, item=None, type=EventType.SEARCH, query="green tea"),
            ev("v", t=2, item="i1", type=VIEW),
            ev("s3", t=9, item=None, type=EventType.SEARCH, query="teapot 陶瓷"),
            ev("s2", t=5, item=None, type=EventType.SEARCH, query="matcha"),
            ev("o", user="u2", t=3, item=None, type=EventType.SEARCH, query="coffee"),
        ])
        assert store.search_queries("u1") == ["green tea", "matcha", "teapot 陶瓷"]
        assert store.search_queries("u1", limit=2) == ["matcha", "teapot 陶瓷"]
        assert store.search_queries("u2") == ["coffee"]
        assert store.search_queries("nobody") == []

    def test_attribute_popularity_counts_distinct_users_per_value(self, store: Store) -> None:
        """Known answers: values spelled alike on every backend (numbers, booleans), users
        counted once per item however often they interacted, impressions and searches and
        users without the attribute left out, ``since`` honoured."""
        store.upsert_users([
            User(id="f1", attributes={"gender": "f", "age": 30, "vip": True}),
            User(id="f2", attributes={"gender": "f", "age": 30.0, "vip": False}),
            User(id="m1", attributes={"gender": "m", "age": 41.5, "tags": ["x"]}),
            User(id="n1", attributes={"gender": None, "tags": ["x"]}),
            User(id="q1", attributes={}),
        ])
        store.add_events([
            ev("1", user="f1", item="i1"), ev("2", user="f1", item="i1", t=1, type=PURCHASE),
            ev("3", user="f2", item="i1", t=2, type=VIEW), ev("4", user="f2", item="i2", t=3),
            ev("5", user="m1", item="i2", t=4), ev("6", user="n1", item="i3", t=5),
            ev("7", user="q1", item="i3", t=6), ev("8", user="nobody", item="i3", t=7),
            ev("9", user="m1", item="i9", t=8, type=EventType.IMPRESSION),
            ev("10", user="f1", item=None, t=9, type=EventType.SEARCH, query="tea"),
            ev("11", user="m1", item="i3", t=100),
        ])
        got = store.attribute_popularity("gender")
        assert got.key == "gender" and got.users == {"f": 2, "m": 1}
        assert got.items == [("f", "i1", 2), ("f", "i2", 1), ("m", "i2", 1), ("m", "i3", 1)]
        age = store.attribute_popularity("age")
        assert age.users == {"30": 2, "41.5": 1}
        assert ("30", "i1", 2) in age.items
        assert store.attribute_popularity("vip").users == {"1": 1, "0": 1}
        assert store.attribute_popularity("tags").users == {}, "lists condition nothing"
        assert store.attribute_popularity("missing").users == {}
        recent = store.attribute_popularity("gender", since=T0 + timedelta(seconds=4))
        assert recent.users == {"m": 1} and recent.items == [("m", "i2", 1), ("m", "i3", 1)]
        sample = store.sample_user_attributes()
        assert len(sample) == 4 and {"gender": "m", "age": 41.5, "tags": ["x"]} in sample
        assert len(store.sample_user_attributes(limit=2)) == 2

    def test_user_events_equal_timestamps_keep_arrival_order(self, store: Store) -> None:
        store.add_events([ev("c", t=5), ev("a", t=5), ev("b", t=5), ev("z", t=1)])
        store.add_events([ev("y", t=5)])
        assert ids(store.user_events("u1")) == ["z", "c", "a", "b", "y"]
        # The most recent 2 of a tie are the last to arrive.
        assert ids(store.user_events("u1", limit=2)) == ["b", "y"]

    def test_iter_events_arrival_order_in_batches(self, store: Store) -> None:
        store.add_events([ev(f"e{k}", user=f"u{k % 2}", t=100 - k) for k in range(5)])
        store.add_events([ev("e5", t=0), ev("e6", t=500)])
        batches = list(store.iter_events(batch_size=3))
        assert [len(b) for b in batches] == [3, 3, 1]
        assert [e.id for b in batches for e in b] == [f"e{k}" for k in range(7)]
        assert [ids(b) for b in store.iter_events()] == [[f"e{k}" for k in range(7)]]
        assert batches[0][1] == ev("e1", user="u1", t=99)

    def test_daily_event_counts_are_incremental_by_arrival(self, store: Store) -> None:
        day0 = int(T0.timestamp() // 86400)
        frame, last = store.daily_event_counts()
        assert frame.empty and last == 0
        store.add_events([ev("a", t=0), ev("b", t=60, type=VIEW), ev("c", t=86400),
                          ev("d", item="i2", t=86401)])
        frame, last = store.daily_event_counts()
        got = {(int(r.day), r.type, int(r.n)) for r in frame.itertuples()}
        assert got == {(day0, "click", 1), (day0, "view", 1), (day0 + 1, "click", 2)}
        store.add_events([ev("e", t=2 * 86400)])
        more, last2 = store.daily_event_counts(after_seq=last)
        assert [(int(r.day), int(r.n)) for r in more.itertuples()] == [(day0 + 2, 1)]
        assert store.daily_event_counts(after_seq=last2)[0].empty
        one, _ = store.daily_event_counts(item_id="i2")
        assert [(int(r.day), r.type, int(r.n)) for r in one.itertuples()] == [
            (day0 + 1, "click", 1)]

    def test_user_first_days_and_item_created_days(self, store: Store) -> None:
        day0 = int(T0.timestamp() // 86400)
        store.add_events([ev("a", user="u1", t=0), ev("b", user="u2", t=86400),
                          ev("c", user="u1", t=2 * 86400), ev("d", user="u3", t=86400 + 5)])
        assert store.user_first_days().to_dict() == {day0: 1, day0 + 1: 2}
        store.upsert_items([full_item("i1"), full_item("i2"),
                            Item(id="i3", title="no date")])
        created = int(full_item().created_at.timestamp() // 86400)  # type: ignore[union-attr]
        assert store.item_created_days().to_dict() == {created: 2}

    def test_events_of_type_in_arrival_order(self, store: Store) -> None:
        store.add_events([ev("v1", t=9, type=VIEW), ev("c1", t=5), ev("v2", t=1, type=VIEW),
                          ev("c2", user="u2", t=0)])
        assert ids(store.events_of_type(VIEW)) == ["v1", "v2"]
        assert ids(store.events_of_type(CLICK)) == ["c1", "c2"]
        assert store.events_of_type(PURCHASE) == []

    def test_events_for_requests_order_filter_and_empty_ids(self, store: Store) -> None:
        store.add_events([
            ev("imp", type=EventType.IMPRESSION, request_id="rB", t=1),
            ev("click", request_id="rA", t=0),
            ev("buy", type=PURCHASE, request_id="rB", t=2),
            ev("blank", request_id="", t=3),
            ev("none", t=4),
            ev("else", request_id="rC", t=5),
        ])
        assert ids(store.events_for_requests(["rB", "rA"])) == ["imp", "click", "buy"]
        assert ids(store.events_for_requests(["rA", "rB"], types=[CLICK, PURCHASE])) == [
            "click", "buy"]
        assert ids(store.events_for_requests(["rB"], types=[VIEW])) == []
        # Empty and None ids are ignored: they must not match events without a request.
        no_ids: list[Any] = ["", None]
        assert store.events_for_requests(no_ids) == []
        assert ids(store.events_for_requests(["rC", "", "rC", "missing"])) == ["else"]

    def test_events_for_requests_past_500_ids_in_arrival_order(self, store: Store) -> None:
        # Arrival runs against the ids' sort order, so per-chunk reads must be merged by arrival.
        rids = [f"r{k:03d}" for k in range(600)]
        store.add_events([ev(f"e{k:03d}", request_id=r, t=k)
                          for k, r in enumerate(reversed(rids))])
        got = store.events_for_requests([*rids, "r999"])
        assert ids(got) == [f"e{k:03d}" for k in range(600)]
        assert got[0].request_id == "r599" and got[-1].request_id == "r000"

    def test_events_frame(self, store: Store) -> None:
        store.add_events([
            ev("e0", user="u2", item="b", t=20, type=VIEW),
            ev("e1", item="a", t=10.5),
            Event(id="e2", type=EventType.SEARCH, user_id="u1", query="q",
                  timestamp=T0 + timedelta(seconds=5)),
        ])
        frame = store.events_frame()
        assert list(frame.columns) == ["user_id", "item_id", "type", "timestamp"]
        assert frame["user_id"].tolist() == ["u2", "u1", "u1"]
        assert frame["item_id"].tolist()[:2] == ["b", "a"] and pd.isna(frame["item_id"][2])
        assert frame["type"].tolist() == ["view", "click", "search"]
        base = T0.timestamp()
        assert frame["timestamp"].tolist() == [base + 20, base + 10.5, base + 5]
        assert frame["timestamp"].dtype == "float64"
        only = store.events_frame(types=[CLICK, VIEW])
        assert only[["user_id", "item_id"]].values.tolist() == [["u2", "b"], ["u1", "a"]]
        assert len(store.events_frame(types=[PURCHASE])) == 0

    def test_events_frame_of_empty_store_has_the_columns(self, store: Store) -> None:
        frame = store.events_frame()
        assert list(frame.columns) == ["user_id", "item_id", "type", "timestamp"]
        assert len(frame) == 0

    # ---- frames, meta, counts ----------------------------------------------------------
    def test_items_frame(self, store: Store) -> None:
        empty = store.items_frame()
        assert "id" in empty.columns and len(empty) == 0
        store.upsert_items([full_item("i1"), Item(id="i2", title="Mug", price=None)])
        frame = store.items_frame().sort_values("id").reset_index(drop=True)
        assert set(frame.columns) == set(Item.model_fields)
        assert frame["id"].tolist() == ["i1", "i2"]
        assert frame["title"].tolist() == ["无线蓝牙耳机 Pro 🎧", "Mug"]
        assert frame["category"].tolist() == [["电子产品", "音频", "耳机"], []]
        assert frame["tags"][0] == ["降噪", "bluetooth"]
        assert frame["price"][0] == 199.5 and pd.isna(frame["price"][1])
        assert bool(frame["available"][0]) is False and bool(frame["available"][1]) is True
        assert frame["created_at"][0] == datetime(2024, 1, 1, 19, 4, 5, 123456,
                                                  tzinfo=UTC).timestamp()
        assert pd.isna(frame["created_at"][1])
        assert frame["attributes"][0]["dims"] == {"w": 1.5, "ok": True}

    def test_counts(self, store: Store) -> None:
        store.upsert_items([Item(id="a"), Item(id="b")])
        store.upsert_users([User(id="u")])
        store.add_events([ev("e1"), ev("e2"), ev("e3")])
        store.upsert_promotions([Promotion(id="p", text="t")])
        assert store.counts() == {"items": 2, "users": 1, "events": 3, "promotions": 1}

    def test_meta_get_set_overwrite(self, store: Store) -> None:
        assert store.get_meta("time_kind") is None
        store.set_meta("time_kind", "ordinal")
        store.set_meta("模型", "e5 — 小")
        assert store.get_meta("time_kind") == "ordinal"
        store.set_meta("time_kind", "real")
        assert store.get_meta("time_kind") == "real"
        assert store.get_meta("模型") == "e5 — 小"
        assert store.get_meta("TIME_KIND") is None

    # ---- what SQL backends differ in ---------------------------------------------------
    def test_ids_keys_and_requests_are_case_sensitive(self, store: Store) -> None:
        store.upsert_items([Item(id="A", title="upper"), Item(id="a", title="lower")])
        store.add_events([ev("E1", user="U", request_id="R"), ev("e1", user="u")])
        assert store.counts()["items"] == 2 and store.counts()["events"] == 2
        assert {k: v.title for k, v in store.get_items(["a", "A"]).items()} == {
            "a": "lower", "A": "upper"}
        assert ids(store.user_events("U")) == ["E1"] and ids(store.user_events("u")) == ["e1"]
        assert store.existing_event_ids(["E1", "e2", "E2"]) == {"E1"}
        assert store.events_for_requests(["r"]) == []

    def test_free_text_has_no_length_limit_and_ids_take_256(self, store: Store) -> None:
        # Ids are capped at 256 characters by the schemas; no other text is capped anywhere.
        long_id, text = "长" * 256, "文" * 20_000
        item = Item(id=long_id, title=text, brand=text, language="x-" + "a" * 60)
        store.upsert_items([item])
        event = ev(long_id, user=long_id, item=long_id, request_id="r" * 1000, query=text)
        assert store.add_events([event]) == WriteResult(1, 0)
        store.set_meta("k" * 500, text)
        assert store.get_item(long_id) == item
        assert store.user_events(long_id) == [event]
        assert ids(store.events_for_requests(["r" * 1000])) == [long_id]
        assert store.get_meta("k" * 500) == text

    def test_nul_characters_in_text_are_refused_whole(self, store: Store) -> None:
        # PostgreSQL text cannot hold U+0000, so no backend stores it (inside JSON it is an
        # escape, and round-trips).
        with pytest.raises(StoreError, match=r"i1.*title.*NUL"):
            store.upsert_items([Item(id="ok"), Item(id="i1", title="a\x00b")])
        with pytest.raises(StoreError, match=r"e2.*query.*NUL"):
            store.add_events([ev("e1"), ev("e2", query="\x00")])
        with pytest.raises(StoreError, match="NUL"):
            store.set_meta("k", "\x00")
        assert store.counts() == {"items": 0, "users": 0, "events": 0, "promotions": 0}
        item = Item(id="j", attributes={"k": "a\x00b"})
        store.upsert_items([item])
        assert store.get_item("j") == item

    def test_nan_and_infinity_in_json_are_refused_whole(self, store: Store) -> None:
        # JSON has no NaN or Infinity (PostgreSQL refuses them; the schemas already refuse
        # them in number fields): refused, naming the row.
        with pytest.raises(StoreError, match=r"i1.*NaN"):
            store.upsert_items([Item(id="i1", attributes={"w": [1.0, float("nan")]})])
        with pytest.raises(StoreError, match=r"e1.*NaN"):
            store.add_events([ev("e1", context={"x": float("inf")})])
        assert store.counts() == {"items": 0, "users": 0, "events": 0, "promotions": 0}

    # ---- transactions ------------------------------------------------------------------
    def test_transaction_commits_all_writes_together(
        self, store: Store, reopened: list[Store]
    ) -> None:
        other = self.reopen(store, reopened)
        with store.transaction():
            store.upsert_items([Item(id="i1")])
            store.upsert_users([User(id="u1")])
            store.add_events([ev("e1"), ev("e2", t=1)])
            store.upsert_promotions([Promotion(id="p1", text="t")])
            store.set_meta("k", "v")
            # The block reads its own writes; another handle sees none of them yet.
            assert store.counts() == {"items": 1, "users": 1, "events": 2, "promotions": 1}
            assert ids(store.user_events("u1")) == ["e1", "e2"]
            assert other.counts() == {"items": 0, "users": 0, "events": 0, "promotions": 0}
            assert other.get_meta("k") is None
        assert other.counts() == {"items": 1, "users": 1, "events": 2, "promotions": 1}
        assert other.get_meta("k") == "v"

    def test_error_in_transaction_rolls_back_every_write(self, store: Store) -> None:
        store.upsert_items([Item(id="kept", title="old")])
        store.add_events([ev("e0")])
        store.set_meta("k", "old")
        with pytest.raises(Boom), store.transaction():
            store.upsert_items([Item(id="kept", title="new"), Item(id="i1")])
            store.upsert_users([User(id="u1")])
            assert store.add_events([ev("e1", t=1), ev("e0")]) == WriteResult(1, 1)
            store.upsert_promotions([Promotion(id="p1", text="t")])
            store.set_meta("k", "new")
            raise Boom
        assert store.counts() == {"items": 1, "users": 0, "events": 1, "promotions": 0}
        kept = store.get_item("kept")
        assert kept is not None and kept.title == "old"
        assert store.get_item("i1") is None
        assert store.existing_event_ids(["e0", "e1"]) == {"e0"}
        assert store.get_meta("k") == "old"
        # Rolled-back ids are not remembered: redelivery writes them, and the store works on.
        assert store.add_events([ev("e1", t=1)]) == WriteResult(1, 0)
        assert ids(store.user_events("u1")) == ["e0", "e1"]

    def test_nested_transaction_joins_the_outer(
        self, store: Store, reopened: list[Store]
    ) -> None:
        other = self.reopen(store, reopened)
        with pytest.raises(Boom), store.transaction():
            store.upsert_items([Item(id="outer")])
            with store.transaction():
                store.upsert_items([Item(id="inner")])
                store.add_events([ev("e1")])
            # Leaving the inner block committed nothing.
            assert other.counts()["items"] == 0 and other.existing_event_ids(["e1"]) == set()
            raise Boom
        assert store.counts() == {"items": 0, "users": 0, "events": 0, "promotions": 0}
        with store.transaction():
            with store.transaction():
                store.upsert_items([Item(id="inner")])
            store.upsert_items([Item(id="outer")])
        assert set(other.get_items(["inner", "outer"])) == {"inner", "outer"}

    def test_error_in_nested_block_rolls_back_the_outer(self, store: Store) -> None:
        with pytest.raises(Boom), store.transaction():
            store.upsert_items([Item(id="outer")])
            with store.transaction():
                store.add_events([ev("e1")])
                raise Boom
        assert store.counts()["items"] == 0 and store.counts()["events"] == 0

    # ---- API keys ----------------------------------------------------------------------
    KEY_A = ApiKey(id="k1", name="店铺 storefront", scope="read", key_hash="a" * 64, hint="Ab_9",
                   created_at=T0)
    KEY_B = ApiKey(id="k2", name="", scope="admin", key_hash="b" * 64, hint="z-zz",
                   created_at=T0 + timedelta(seconds=1))

    def test_api_keys_found_by_hash_listed_in_creation_order_and_revoked(
        self, store: Store
    ) -> None:
        a, b = self.KEY_A, self.KEY_B
        assert store.list_api_keys() == [] and store.api_key(a.key_hash) is None
        store.add_api_key(b)
        store.add_api_key(a)
        assert store.api_key(a.key_hash) == a and store.api_key("A" * 64) is None
        assert store.list_api_keys() == [a, b]
        before = datetime.now(UTC) - timedelta(milliseconds=1)
        revoked = store.revoke_api_key("k1")
        assert revoked is not None and revoked.revoked_at is not None
        assert before <= revoked.revoked_at <= datetime.now(UTC) + timedelta(milliseconds=1)
        assert revoked == replace(a, revoked_at=revoked.revoked_at)
        assert store.revoke_api_key("k1") is None, "a revoked key stays revoked"
        assert store.revoke_api_key("nope") is None
        assert store.list_api_keys() == [b]
        assert store.list_api_keys(revoked=True) == [revoked, b]
        assert store.api_key(a.key_hash) == revoked, "found, and marked revoked"
        assert store.counts() == {"items": 0, "users": 0, "events": 0, "promotions": 0}

    def test_api_key_id_or_hash_stored_twice_is_refused(self, store: Store) -> None:
        store.add_api_key(self.KEY_A)
        with pytest.raises(StoreError, match="'k1'"):
            store.add_api_key(replace(self.KEY_A, key_hash="c" * 64))
        with pytest.raises(StoreError, match="'k9'"):
            store.add_api_key(replace(self.KEY_A, id="k9"))
        assert store.list_api_keys() == [self.KEY_A]

    def test_api_keys_are_shared_by_handles_and_survive_reopen(
        self, store: Store, reopened: list[Store]
    ) -> None:
        store.add_api_key(self.KEY_A)
        other = self.reopen(store, reopened)  # another worker on the same database
        assert other.api_key(self.KEY_A.key_hash) == self.KEY_A
        assert other.revoke_api_key("k1") is not None
        assert store.list_api_keys() == []
        store.close()
        assert self.reopen(store, reopened).list_api_keys(revoked=True)[0].revoked_at

    # ---- forgetting a user, retention ----------------------------------------------------
    def naming(self, store: Store, text: str) -> dict[str, int]:
        """:func:`rows_naming`; override for a backend that is not SQL."""
        return rows_naming(store, text)

    def test_forget_user_deletes_every_row_naming_them(self, store: Store) -> None:
        gone, kept = "forget-me-7", "keep-me-8"
        store.upsert_users([User(id=gone, attributes={"城市": "北京"}), User(id=kept)])
        store.add_events([
            ev("g1", gone, t=1, type=VIEW), ev("g2", gone, t=2, request_id="r1"),
            ev("g3", gone, t=3, type=PURCHASE),
            ev("g4", gone, None, t=4, type=EventType.SEARCH, query="耳机", request_id="r1"),
            ev("g5", gone, t=5, type=EventType.IMPRESSION, request_id="r1", position=0),
            ev("g6", gone, None, t=6, type=EventType.PROMOTION_SHOWN, request_id="r2",
               context={"promotion_id": "p1", "x": [1.0]}),
            ev("k1", kept, t=1), ev("k2", kept, t=7, type=EventType.IMPRESSION)])
        store.add_exposures([("exp1", gone, "B", T0), ("exp1", kept, "A", T0)])
        assert self.naming(store, gone) == {"events": 6, "users": 1, "exposures": 1}
        before = datetime.now(UTC)
        done = store.forget_user(gone)
        assert done.rows == {"events": 6, "users": 1, "exposures": 1}
        assert list(store.exposures("exp1")["unit"]) == [kept]
        assert done.events == {"click": 1, "impression": 1, "promotion_shown": 1,
                               "purchase": 1, "search": 1, "view": 1}
        assert self.naming(store, gone) == {}
        assert store.get_user(gone) is None and store.user_events(gone) == []
        assert store.counts() == {"items": 0, "users": 1, "events": 2, "promotions": 0}
        assert ids(store.user_events(kept)) == ["k1", "k2"] and store.get_user(kept)
        [tomb] = store.tombstones()
        assert tomb.user_hash == user_hash(gone) and tomb.seq >= 1
        assert before <= tomb.forgotten_at <= datetime.now(UTC)
        assert store.forget_user("never-seen").rows == {"events": 0, "users": 0,
                                                        "exposures": 0}
        assert [t.user_hash for t in store.tombstones(tomb.seq)] == [user_hash("never-seen")]
        # a queued exposure dated before the erasure is refused, a later visit kept
        late = [("exp1", gone, "B", before - timedelta(seconds=1)),
                ("exp2", gone, "A", datetime.now(UTC) + timedelta(seconds=5))]
        assert store.add_exposures(late) == 1, "a queued exposure from before is refused"
        assert list(store.exposures("exp1")["unit"]) == [kept]

    def test_forgotten_users_events_from_before_are_refused_later_ones_kept(
        self, store: Store, reopened: list[Store]
    ) -> None:
        store.add_events([ev("g1", "gone")])
        store.forget_user("gone")
        other = self.reopen(store, reopened)  # another worker's queue, a late redelivery
        later = Event(id="g3", type=CLICK, user_id="gone", item_id="i1",
                      timestamp=datetime.now(UTC) + timedelta(minutes=1))
        assert other.add_events([ev("g1", "gone"), ev("g2", "gone", t=5), later,
                                 ev("k1", "kept")]) == WriteResult(2, 2)
        assert ids(store.user_events("gone")) == ["g3"] and ids(store.user_events("kept"))
        first = store.tombstones()[0].seq
        store.forget_user("gone")  # again: a newer tombstone replaces the first
        assert [t.seq > first for t in store.tombstones()] == [True]
        assert store.user_events("gone") == []

    def test_forget_user_rolls_back_with_its_transaction(self, store: Store) -> None:
        store.upsert_users([User(id="gone")])
        store.add_events([ev("g1", "gone")])
        with pytest.raises(Boom), store.transaction():
            store.forget_user("gone")
            raise Boom
        assert ids(store.user_events("gone")) == ["g1"] and store.get_user("gone")
        assert store.tombstones() == []

    def test_forget_racing_writers_leaves_nothing_stamped_before_it(
        self, store: Store, reopened: list[Store]
    ) -> None:
        handles = [self.reopen(store, reopened) for _ in range(3)]
        stop = threading.Event()

        def write(k: int, handle: Store) -> int:
            n = 0
            while not stop.is_set() or n < 5:
                handle.add_events([ev(f"w{k}-{n}", "gone", t=n)])  # all before the erasure
                n += 1
            return n

        with ThreadPoolExecutor(len(handles)) as pool:
            futures = [pool.submit(write, k, h) for k, h in enumerate(handles)]
            time.sleep(0.2)
            store.forget_user("gone")
            time.sleep(0.2)
            stop.set()
            assert all(f.result() >= 5 for f in futures)
        assert store.user_events("gone") == []

    def test_drop_events_before_deletes_old_events_and_tombstones(self, store: Store) -> None:
        store.add_events([ev("old", t=0), ev("edge", t=10), ev("new", "u2", t=20)])
        store.forget_user("u9")
        assert store.drop_events_before(T0 + timedelta(seconds=10)) == 1
        assert [e.id for b in store.iter_events() for e in b] == ["edge", "new"]
        assert len(store.tombstones()) == 1, "a tombstone newer than the cutoff stays"
        assert store.drop_events_before(datetime.now(UTC) + timedelta(seconds=1)) == 2
        assert store.counts()["events"] == 0 and store.tombstones() == []
        assert store.drop_events_before(T0) == 0

    # ---- durability --------------------------------------------------------------------
    # ---- experiments ---------------------------------------------------------------------
    def test_experiments_round_trip_by_id(self, store: Store) -> None:
        assert store.get_experiment("e1") is None and store.list_experiments() == []
        doc = {"id": "e1", "variants": [{"name": "A", "share": 0.5}], "note": "测试",
               "nested": {"x": [1, 2.5, None]}}
        store.put_experiment("e1", doc)
        store.put_experiment("a0", {"id": "a0"})
        assert store.get_experiment("e1") == doc
        store.put_experiment("e1", {**doc, "status": "running"})
        assert store.get_experiment("e1") == {**doc, "status": "running"}
        assert [d["id"] for d in store.list_experiments()] == ["a0", "e1"]

    def test_events_window_filters_by_type_time_and_context_path(self, store: Store) -> None:
        store.add_events([
            ev("e1", t=0, type=EventType.IMPRESSION, request_id="r1",
               context={"experiments": {"x": "B"}}),
            ev("e2", t=10, type=EventType.IMPRESSION, request_id="r1",
               context={"experiments": {"y": "A"}}),
            ev("e3", t=20, type=CLICK, request_id="r1", value=2.5),
            ev("e4", t=30, type=EventType.IMPRESSION, context={"experiments": {"x": "A"}}),
            ev("e5", t=-5, type=EventType.IMPRESSION, context={"experiments": {"x": "A"}})])
        t0, t1 = T0, T0 + timedelta(seconds=30)
        frame = store.events_window([EventType.IMPRESSION, CLICK], t0, t1)
        assert list(frame["type"]) == ["impression", "impression", "click"]
        assert frame["context"].iloc[0] == {"experiments": {"x": "B"}}
        assert frame["value"].iloc[2] == 2.5 and frame["request_id"].iloc[0] == "r1"
        assert frame["timestamp"].iloc[1] == pytest.approx(T0.timestamp() + 10)
        x = store.events_window([EventType.IMPRESSION], t0, None,
                                context_path=("experiments", "x"))
        assert list(x["context"]) == ["B", "A"] and list(x["user_id"]) == ["u1", "u1"]

    def test_data_survives_close_and_reopen(self, store: Store, reopened: list[Store]) -> None:
        item, user = full_item(), User(id="u1", attributes={"城市": "北京"})
        promo = Promotion(id="p1", text="八折", rules={"segments": ["vip"]})
        events = [ev("e1", t=2, request_id="r1", context={"a": [1]}), ev("e2", t=1, type=VIEW)]
        store.upsert_items([item])
        store.upsert_users([user])
        store.upsert_promotions([promo])
        store.add_events(events)
        with store.transaction():
            store.set_meta("time_kind", "ordinal")
            store.add_events([ev("e3", t=3)])
        store.close()
        again = self.reopen(store, reopened)
        assert again.counts() == {"items": 1, "users": 1, "events": 3, "promotions": 1}
        assert again.get_item("i1") == item
        assert again.get_user("u1") == user
        assert again.list_promotions() == [promo]
        assert [e for b in again.iter_events() for e in b] == [*events, ev("e3", t=3)]
        assert again.get_meta("time_kind") == "ordinal"
        assert again.add_events(events) == WriteResult(0, 2)

    def test_close_twice_is_harmless(self, store: Store, reopened: list[Store]) -> None:
        store.upsert_items([Item(id="i1")])
        store.close()
        store.close()
        assert self.reopen(store, reopened).get_item("i1") == Item(id="i1")
