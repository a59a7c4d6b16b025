"""Dataset presets: known answers on tiny files in each format, the shipped demo slice, and the
real Beauty sequences from ../shared/data (skipped when absent)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shelfwise.data.importers import read_table
from shelfwise.data.presets import (
    ORDINAL_BASE,
    default_path,
    import_preset,
    load_preset,
    read_home_depot_judgements,
    repo_dir,
    shared_data_dir,
)
from shelfwise.exceptions import ConfigError, DataValidationError, NotFoundError
from shelfwise.storage import SqlStore
from tests.conftest import require_shared

BASE = ORDINAL_BASE.to_pydatetime()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


def history(store: SqlStore, user: str) -> list[str | None]:
    return [e.item_id for e in store.user_events(user)]


def test_locations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SHELFWISE_SHARED_DATA", raising=False)
    assert shared_data_dir() == repo_dir().parent / "shared" / "data"
    monkeypatch.setenv("SHELFWISE_SHARED_DATA", str(tmp_path))
    assert default_path("instacart") == tmp_path / "instacart"
    assert default_path("amazon_sequences") == tmp_path / "amazon_sequences" / "Beauty.txt"
    assert default_path("demo") == repo_dir() / "data" / "demo"
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("movielens")
    with pytest.raises(NotFoundError, match="SHELFWISE_SHARED_DATA"):
        load_preset("amazon_games")


def test_amazon_sequences_format(store: SqlStore, tmp_path: Path) -> None:
    path = write(tmp_path / "Toys.txt", "u1 3 1 2\nu2 2 5\n")
    write(tmp_path / "Toys_item2attributes.json", '{"1": [7, 8], "9": [1]}')
    res = import_preset(store, "amazon_sequences", path, progress=False)
    assert store.counts() == {"items": 5, "users": 2, "events": 5, "promotions": 0}
    assert res.time_kind == "ordinal" and store.get_meta("time_kind") == "ordinal"
    assert history(store, "u1") == ["3", "1", "2"]
    assert [e.timestamp for e in store.user_events("u2")] == [BASE, BASE + timedelta(seconds=1)]
    one, nine = store.get_item("1"), store.get_item("9")
    assert one is not None and one.attributes == {"attribute_ids": [7, 8]}
    assert nine is not None  # listed only in the attribute file
    with pytest.raises(ConfigError, match=r"Toys\.txt"):
        load_preset("amazon_sequences", tmp_path)


def test_amazon_games_format(store: SqlStore, tmp_path: Path) -> None:
    write(tmp_path / "Games.item", 'item_id:token\ttitle:token_seq\n'
          '0\tFire Emblem &amp; Friends\n1\tIvan "Ironman" Stewart\'s\n2\tPad&nbsp;Pro\n')
    write(tmp_path / "Games.test.inter", "user_id:token\titem_id_list:token_seq\titem_id:token\n"
          "7\t2 0\t1\n8\t1\t0\n")
    import_preset(store, "amazon_games", tmp_path, progress=False)
    assert store.counts() == {"items": 3, "users": 2, "events": 5, "promotions": 0}
    assert history(store, "7") == ["2", "0", "1"]  # history then target
    titles = {i: store.get_item(i).title for i in "012"}  # type: ignore[union-attr]
    assert titles == {"0": "Fire Emblem & Friends", "1": 'Ivan "Ironman" Stewart\'s',
                      "2": "Pad Pro"}


def test_instacart_format(store: SqlStore, tmp_path: Path) -> None:
    write(tmp_path / "products.csv", "product_id,product_name,aisle_id,department_id\n"
          '1,"Milk, whole",10,20\n2,Bread,11,20\n3,Soap,12,21\n')
    write(tmp_path / "aisles.csv", "aisle_id,aisle\n10,milk\n11,bread\n12,soap\n")
    write(tmp_path / "departments.csv", "department_id,department\n20,dairy bakery\n21,home\n")
    header = ("order_id,user_id,order_number,order_dow,order_hour_of_day,days_since_prior_order,"
              "product_id,add_to_cart_order,reordered\n")
    write(tmp_path / "order_products_sample.csv", header +
          "100,5,1,0,15,,2,2,0\n100,5,1,0,15,,1,1,0\n"   # first order, cart order 1 then 2
          "101,5,2,3,8,2.0,1,1,1\n"                       # two days later, 08:00
          "102,5,3,3,6,0.0,3,1,0\n")                      # same day but earlier hour
    import_preset(store, "instacart", tmp_path, progress=False)
    assert store.get_meta("time_kind") == "real"
    milk = store.get_item("1")
    assert milk is not None and milk.title == "Milk, whole"
    assert milk.category == ["dairy bakery", "milk"]
    events = store.user_events("5")
    assert [e.item_id for e in events] == ["1", "2", "1", "3"]
    day0 = datetime(2017, 1, 1, tzinfo=UTC)
    assert [e.timestamp for e in events[:3]] == [
        day0 + timedelta(hours=15, seconds=1), day0 + timedelta(hours=15, seconds=2),
        day0 + timedelta(days=2, hours=8, seconds=1)]
    assert events[3].timestamp > events[2].timestamp  # order kept although its hour is earlier
    assert events[2].context == {"order_id": "101", "order_number": 2, "add_to_cart_order": 1,
                                 "reordered": True}


def test_instacart_bad_numbers_are_reported(tmp_path: Path) -> None:
    for name, text in (("products.csv", "product_id,product_name,aisle_id,department_id\n"),
                       ("aisles.csv", "aisle_id,aisle\n"),
                       ("departments.csv", "department_id,department\n")):
        write(tmp_path / name, text)
    write(tmp_path / "order_products_sample.csv",
          "order_id,user_id,order_number,order_hour_of_day,days_since_prior_order,product_id,"
          "add_to_cart_order\n1,5,1,noon,,2,1\n")
    with pytest.raises(DataValidationError, match="row 1, field 'order_hour_of_day'"):
        load_preset("instacart", tmp_path)


def test_home_depot_format(store: SqlStore, tmp_path: Path) -> None:
    write(tmp_path / "judgements.csv", "id,product_uid,product_title,search_term,relevance\n"
          "2,100001,Angle Bracket,angle bracket,3.0\n3,100001,Angle Bracket,l bracket,2.5\n"
          "9,100002,Deck Paint,deck over,2.33\n")
    judged = read_home_depot_judgements(tmp_path)
    assert list(judged.columns) == ["id", "query", "item_id", "title", "relevance"]
    assert judged["relevance"].tolist() == [3.0, 2.5, 2.33]
    res = import_preset(store, "home_depot", tmp_path, progress=False)
    assert store.counts()["items"] == 2 and store.counts()["events"] == 0
    assert res.written("items") == 2 and store.get_meta("time_kind") is None


def test_demo_preset_imports_and_is_idempotent(store: SqlStore) -> None:
    folder = default_path("demo")
    n_items = len(read_table(folder / "items.csv"))
    events = read_table(folder / "events.csv")
    t0 = time.perf_counter()
    first = import_preset(store, "demo", progress=False)
    took = time.perf_counter() - t0
    counts = store.counts()
    assert counts["items"] == n_items and counts["events"] == len(events)
    assert counts["users"] == events["user_id"].nunique() == 3000
    assert first.time_kind == "ordinal" and store.get_meta("time_kind") == "ordinal"
    again = import_preset(store, "demo", progress=False)
    assert again.written("events") == 0 and store.counts() == counts
    assert took < 30, f"demo import took {took:.1f} s"
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 10_000_000


def test_beauty_sequences_real_counts(store: SqlStore) -> None:
    beauty = require_shared("amazon_sequences", "Beauty.txt")
    t0 = time.perf_counter()
    res = import_preset(store, "amazon_sequences", beauty, progress=False)
    took = time.perf_counter() - t0
    assert store.counts() == {"items": 12_101, "users": 22_363, "events": 198_502,
                              "promotions": 0}
    assert res.written("events") == 198_502 and store.get_meta("time_kind") == "ordinal"
    assert history(store, "1") == ["1", "2", "3", "4", "5"]  # first line: "1 1 2 3 4 5"
    assert took < 60, f"Beauty import took {took:.1f} s"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["amazon_games", "instacart", "home_depot"])
def test_real_presets_import(store: SqlStore, name: str) -> None:
    require_shared(name)
    expected = {"amazon_games": (16_859, 40_418), "instacart": (49_688, 593),
                "home_depot": (45_818, 0)}[name]
    import_preset(store, name, progress=False)
    counts = store.counts()
    assert (counts["items"], counts["users"]) == expected
