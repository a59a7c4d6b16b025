"""Generic import: known answers for CSV/JSONL/Parquet, precise errors, all-or-nothing, idempotence,
and the ``shelfwise import`` command."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from shelfwise.cli.import_cmd import register
from shelfwise.data.importers import MAX_SHOWN, import_file, import_frame, read_table
from shelfwise.data.schemas import EventType
from shelfwise.exceptions import ConfigError, DataValidationError
from shelfwise.storage import SqlStore, open_store


def write(path: Path, text: str) -> Path:
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ITEMS_CSV = """
item_id,title,price,category,tags,available,attributes,created_at
a1, Super Game ,19.99,Games > Consoles,new|hot,false,"{""color"": ""red""}",2024-05-31T12:00:00Z
a2,"Other, with comma",,Games/PC,,yes,,1717156800
"""


# ---- known answers ---------------------------------------------------------------------------
def test_items_csv_known_answer(store: SqlStore, tmp_path: Path) -> None:
    res = import_file(store, "items", write(tmp_path / "items.csv", ITEMS_CSV), progress=False)
    assert (res.rows_read, res.written, res.skipped) == (2, 2, 0)
    a1, a2 = store.get_item("a1"), store.get_item("a2")
    assert a1 is not None and a2 is not None
    assert a1.title == "Super Game" and a1.price == 19.99 and a1.available is False
    assert a1.category == ["Games", "Consoles"] and a1.tags == ["new", "hot"]
    assert a1.attributes == {"color": "red"}
    assert a1.created_at == a2.created_at == datetime(2024, 5, 31, 12, tzinfo=UTC)
    assert a2.title == "Other, with comma" and a2.price is None and a2.available is True
    assert a2.category == ["Games", "PC"] and a2.tags == [] and a2.attributes == {}


def test_events_jsonl_known_answer(store: SqlStore, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ev.jsonl", [
        {"user_id": 7, "item_id": "a1", "type": "purchase",
         "timestamp": "2024-01-01T10:00:00+02:00", "context": {"order": 3}, "value": 9.5},
        {"user_id": "7", "item_id": "a2", "type": "VIEW", "timestamp": 1704067200},
        {"user_id": "8", "type": "search", "query": "zelda", "timestamp": 1704067200.25},
    ])
    res = import_file(store, "events", path, progress=False)
    assert (res.rows_read, res.written) == (3, 3)
    view, buy = store.user_events("7")  # oldest first
    assert view.type is EventType.VIEW and view.item_id == "a2"
    assert view.timestamp == datetime(2024, 1, 1, tzinfo=UTC)
    assert buy.type is EventType.PURCHASE and buy.timestamp == datetime(2024, 1, 1, 8, tzinfo=UTC)
    assert buy.context == {"order": 3} and buy.value == 9.5
    (search,) = store.user_events("8")
    assert search.query == "zelda" and search.item_id is None
    assert search.timestamp == datetime(2024, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)
    assert store.get_meta("time_kind") == "real"


def test_parquet_users_and_events(store: SqlStore, tmp_path: Path) -> None:
    pd.DataFrame({"user_id": ["u1", "u2"], "attributes": ['{"segment": "vip"}', None]}
                 ).to_parquet(tmp_path / "users.parquet")
    ts = pd.to_datetime(["2024-03-01 09:00", "2024-03-02 09:00"]).tz_localize("UTC")
    pd.DataFrame({"user_id": ["u1", "u1"], "item_id": [10, 11], "timestamp": ts,
                  "position": [0, 3]}).to_parquet(tmp_path / "events.parquet")
    import_file(store, "users", tmp_path / "users.parquet", progress=False)
    res = import_file(store, "events", tmp_path / "events.parquet", default_type="click",
                      progress=False)
    assert res.written == 2
    user = store.get_user("u1")
    assert user is not None and user.attributes == {"segment": "vip"}
    events = store.user_events("u1")
    assert [e.item_id for e in events] == ["10", "11"]  # integer ids become strings
    assert [e.position for e in events] == [0, 3]
    assert {e.type for e in events} == {EventType.CLICK}
    assert events[0].timestamp == datetime(2024, 3, 1, 9, tzinfo=UTC)


def test_promotions_csv(store: SqlStore, tmp_path: Path) -> None:
    path = write(tmp_path / "promos.csv", """
promotion_id,text,rules,start,end
p1,10% off games,"{""category"": ""Games""}",2024-01-01,2024-02-01
""")
    assert import_file(store, "promotions", path, progress=False).written == 1
    (promo,) = store.list_promotions()
    assert promo.rules == {"category": "Games"} and promo.end == datetime(2024, 2, 1, tzinfo=UTC)


def test_mapping_renames_columns(store: SqlStore, tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.csv", "sku,name,cost,item_id\nX1,Lamp,5,not-an-id\n")
    res = import_file(store, "items", path, mapping={"item_id": "sku", "title": "name",
                                                     "price": "cost"}, progress=False)
    item = store.get_item("X1")
    assert item is not None and item.title == "Lamp" and item.price == 5.0
    assert store.get_item("not-an-id") is None
    assert res.ignored_columns == ("item_id",)  # mapped away, so not read by name


def test_default_type_and_derived_ids_are_idempotent(store: SqlStore, tmp_path: Path) -> None:
    path = write(tmp_path / "clicks.csv", """
user_id,item_id,timestamp
u1,a,2024-01-01T00:00:00Z
u1,a,2024-01-01T00:00:00Z
u1,b,1704067260
""")
    first = import_file(store, "events", path, default_type="purchase", progress=False)
    assert (first.written, first.skipped) == (3, 0)  # identical rows are two events
    again = import_file(store, "events", path, default_type="purchase", progress=False)
    assert (again.written, again.skipped) == (0, 3)
    assert store.counts()["events"] == 3
    # the same event given as epoch seconds maps to the same derived id
    write(tmp_path / "same.csv", "user_id,item_id,timestamp,type\nu1,b,2024-01-01T00:01:00Z,"
                                 "purchase\n")
    assert import_file(store, "events", tmp_path / "same.csv", progress=False).written == 0


def test_explicit_event_ids_are_kept(store: SqlStore, tmp_path: Path) -> None:
    path = write(tmp_path / "ev.csv", "event_id,user_id,item_id,type,timestamp\n"
                                      "e1,u,a,cart,1\ne2,u,b,cart,2\n")
    import_file(store, "events", path, progress=False)
    assert store.existing_event_ids(["e1", "e2", "e3"]) == {"e1", "e2"}


# ---- errors ------------------------------------------------------------------------------------
def problems_of(exc: pytest.ExceptionInfo[DataValidationError]) -> str:
    return str(exc.value)


def test_missing_required_column_names_the_fix(store: SqlStore, tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "sku,title\nX1,Lamp\n")
    with pytest.raises(DataValidationError) as exc:
        import_file(store, "items", path, progress=False)
    msg = problems_of(exc)
    assert "items.csv" in msg and "column 'item_id' is missing" in msg
    assert "--map item_id=<your column>" in msg and exc.value.total == 1


def test_missing_type_column_without_default(store: SqlStore, tmp_path: Path) -> None:
    path = write(tmp_path / "ev.csv", "user_id,item_id,timestamp\nu,a,1\n")
    with pytest.raises(DataValidationError, match=r"column 'type' is missing.*--default-type"):
        import_file(store, "events", path, progress=False)


def test_mapped_column_absent(store: SqlStore, tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,title\nX1,Lamp\n")
    with pytest.raises(DataValidationError, match="mapped to column 'name', which is not"):
        import_file(store, "items", path, mapping={"title": "name"}, progress=False)
    with pytest.raises(ConfigError, match="unknown field"):
        import_file(store, "items", path, mapping={"colour": "title"}, progress=False)


def test_bad_value_names_row_field_and_expectation(store: SqlStore, tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", """
item_id,title,price
a1,ok,1
a2,ok,2
a3,bad,cheap
a4,negative,-3
""")
    with pytest.raises(DataValidationError) as exc:
        import_file(store, "items", path, progress=False)
    rows = [(p.row, p.field) for p in exc.value.problems]
    assert rows == [(3, "price"), (4, "price")]
    msg = problems_of(exc)
    assert re.search(r"items\.csv, row 3, field 'price': expected a number \(got 'cheap'\)", msg)
    assert "row 4, field 'price'" in msg and "greater than or equal to 0" in msg


def test_bad_timestamps_and_types(store: SqlStore, tmp_path: Path) -> None:
    path = write(tmp_path / "ev.csv", """
user_id,item_id,type,timestamp
u,a,purchase,yesterday
u,a,like,2024-01-01
u,a,view,1717156800000
u,,cart,2024-01-01
,b,view,2024-01-01
""")
    with pytest.raises(DataValidationError) as exc:
        import_file(store, "events", path, progress=False)
    found = {(p.row, p.field): p.message for p in exc.value.problems}
    assert "ISO 8601" in found[(1, "timestamp")]
    assert "expected one of" in found[(2, "type")]
    assert "milliseconds" in found[(3, "timestamp")]
    assert "required for view, click, cart and purchase" in found[(4, "item_id")]
    assert "required" in found[(5, "user_id")]
    assert exc.value.total == 5


def test_duplicate_ids_name_both_rows(store: SqlStore, tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,title\nA,x\nB,y\nC,z\nB,again\n")
    with pytest.raises(DataValidationError) as exc:
        import_file(store, "items", path, progress=False)
    (problem,) = exc.value.problems
    assert (problem.row, problem.field) == (4, "item_id")
    assert "duplicate id, first seen on row 2" in problems_of(exc)


def test_failed_import_leaves_store_unchanged(store: SqlStore, tmp_path: Path) -> None:
    import_file(store, "items", write(tmp_path / "items.csv", ITEMS_CSV), progress=False)
    before = store.counts()
    n = 30_000  # more than one validation/write chunk; the only bad row is the last one
    frame = pd.DataFrame({"user_id": [f"u{k % 97}" for k in range(n)],
                          "item_id": [f"i{k % 301}" for k in range(n)],
                          "type": "view", "timestamp": [str(1_700_000_000 + k) for k in range(n)]})
    frame.loc[n - 1, "timestamp"] = "not a time"
    frame.to_csv(tmp_path / "events.csv", index=False)
    with pytest.raises(DataValidationError) as exc:
        import_file(store, "events", tmp_path / "events.csv", progress=False)
    assert exc.value.problems[0].row == n and exc.value.total == 1
    assert store.counts() == before
    assert store.get_meta("time_kind") is None


def test_problem_list_is_capped_but_all_counted(store: SqlStore, tmp_path: Path) -> None:
    rows = "".join(f"i{k},x,abc\n" for k in range(50))
    path = write(tmp_path / "items.csv", "item_id,title,price\n" + rows)
    with pytest.raises(DataValidationError) as exc:
        import_file(store, "items", path, progress=False)
    assert exc.value.total == 50 and len(exc.value.problems) == MAX_SHOWN
    assert f"and {50 - MAX_SHOWN} more problem(s)" in problems_of(exc)


def test_unreadable_files(store: SqlStore, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.csv, \.tsv, \.parquet"):
        import_file(store, "items", write(tmp_path / "items.xlsx", "x"), progress=False)
    bad = write(tmp_path / "ev.jsonl", '{"user_id": "u"}\nnot json\n[1, 2]\n')
    with pytest.raises(DataValidationError) as exc:
        read_table(bad)
    assert [p.row for p in exc.value.problems] == [2, 3]
    ragged = write(tmp_path / "r.csv", "item_id,title\na,b,c,d\n")
    with pytest.raises(DataValidationError, match=r"r\.csv, row 1.*expected 2 fields"):
        read_table(ragged)


def test_import_frame_uses_index_as_row_numbers(store: SqlStore) -> None:
    frame = pd.DataFrame({"item_id": ["a", "b"], "price": ["1", "x"]}, index=[10, 20])
    with pytest.raises(DataValidationError, match="<frame>, row 20, field 'price'"):
        import_frame(store, "items", frame, progress=False)


# ---- CLI ---------------------------------------------------------------------------------------
@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test app holding only the import command."""

    register(app)
    return app


def test_cli_imports_file_with_mapping(cli: typer.Typer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    path = write(tmp_path / "clicks.csv", "customer,sku,when\nc1,s1,2024-01-01T00:00:00Z\n")
    result = CliRunner().invoke(cli, [
        "import", "--store", url, "--kind", "events", str(path), "--map", "user_id=customer",
        "--map", "item_id=sku", "--map", "timestamp=when", "--default-type", "click",
        "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "1 written" in result.stdout and len(result.stdout.strip().splitlines()) == 1
    assert open_store(url).counts()["events"] == 1


def test_cli_validation_error_exits_2(cli: typer.Typer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    path = write(tmp_path / "items.csv", "item_id,price\na,1\nb,lots\n")
    result = CliRunner().invoke(cli, ["import", "--store", url, str(path)])
    assert result.exit_code == 2
    assert "row 2, field 'price': expected a number" in result.stderr
    assert open_store(url).counts()["items"] == 0


def test_cli_rejects_mixed_or_missing_arguments(cli: typer.Typer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    assert runner.invoke(cli, ["import", "--store", url]).exit_code == 2
    assert runner.invoke(cli, ["import", "--store", url, "--preset", "demo", "x.csv"]
                         ).exit_code == 2
    assert runner.invoke(cli, ["import", "--store", url, "--kind", "items", "x.csv",
                               "--map", "nonsense"]).exit_code == 2


# ---- the events fast path agrees with the Event model -----------------------------------------
BAD_EVENT_CELLS: list[tuple[str, object]] = [
    ("event_id", "x" * 257), ("event_id", "a\tb"), ("user_id", "u\x00"),
    ("user_id", "u" * 300), ("item_id", "i\n2"), ("position", "-1"), ("position", "1.5"),
    ("propensity", "0"), ("propensity", "1.5"), ("value", "1e999"), ("value", "nan"),
    ("timestamp", "0001-01-01T00:00:00+01:00"), ("timestamp", "1800-01-01T00:00:00Z"),
    ("timestamp", "9999-12-31T23:59:59-01:00"), ("type", "wishlist"), ("item_id", ""),
    ("context", "[1, 2]"), ("query", ""),
]


def test_event_fast_path_flags_what_the_model_flags(tmp_path: Path) -> None:
    """Each row breaks one constraint of ``Event``; the per-column fast path (used by
    ``import_file``) must refuse exactly the rows the model path (``validate_frame``) refuses,
    and store the good rows as the model would."""
    from shelfwise.data.importers import validate_frame

    good = {"event_id": "", "type": "view", "user_id": "u1", "item_id": "i1",
            "timestamp": "2024-01-02T03:04:05Z", "position": "2", "propensity": "0.5",
            "value": "3.5", "context": '{"page": "home"}', "query": ""}
    rows = []
    for k, (col, bad) in enumerate(BAD_EVENT_CELLS):
        row = {**good, "event_id": f"e{k}", col: bad}
        if col == "query":
            row["type"] = "search"
        rows.append(row)
    frame = pd.DataFrame(rows, dtype=object)
    model_bad: set[int] = set()
    for k in range(len(frame)):  # one row at a time: the model path's verdict per row
        try:
            validate_frame("events", frame.iloc[[k]], progress=False)
        except DataValidationError:
            model_bad.add(k + 1)
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataValidationError) as info:
        import_file(open_store(f"sqlite:///{tmp_path / 'a.db'}"), "events",
                    tmp_path / "bad.csv", progress=False)
    fast_bad = {p.row for p in info.value.problems}
    assert model_bad == set(range(1, len(rows) + 1))  # every case really is bad
    assert fast_bad == model_bad
    # the model takes NaN inside a JSON object (the store would refuse it at write time);
    # the fast path names the row up front
    nan = pd.DataFrame([{**good, "event_id": "n1", "context": '{"a": NaN}'}])
    nan.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(DataValidationError, match=r"row 1.*context.*NaN"):
        import_file(open_store(f"sqlite:///{tmp_path / 'n.db'}"), "events",
                    tmp_path / "nan.csv", progress=False)

    ok = pd.DataFrame([{**good, "event_id": f"g{k}", "position": str(k)} for k in range(3)])
    ok.to_csv(tmp_path / "ok.csv", index=False)
    fast, slow = (open_store(f"sqlite:///{tmp_path / n}") for n in ("f.db", "s.db"))
    import_file(fast, "events", tmp_path / "ok.csv", progress=False)
    with slow.transaction():
        slow.add_events(validate_frame("events", ok.set_axis(range(1, 4)), progress=False))
    assert fast.user_events("u1") == slow.user_events("u1")


def test_streamed_events_import_is_all_or_nothing_across_chunks(
        store: SqlStore, tmp_path: Path) -> None:
    """A bad row in the last chunk leaves nothing written from the earlier chunks; derived ids
    count identical rows across chunks, so a chunked import equals a whole-file one."""
    from shelfwise.data.importers import import_events_file

    lines = ["user_id,item_id,type,timestamp"] + ["u1,i1,view,2024-01-01T00:00:00Z"] * 5
    path = write(tmp_path / "ev.csv", "\n".join([*lines, "u2,i2,view,yesterday"]) + "\n")
    with pytest.raises(DataValidationError) as info:
        import_events_file(store, path, progress=False, chunk_rows=2)
    assert [p.row for p in info.value.problems] == [6]
    assert store.counts()["events"] == 0
    path = write(tmp_path / "ev.csv", "\n".join(lines) + "\n")
    chunked = import_events_file(store, path, progress=False, chunk_rows=2)
    assert (chunked.rows_read, chunked.written) == (5, 5)
    whole = import_events_file(store, path, progress=False)
    assert (whole.written, whole.skipped) == (0, 5)  # same derived ids


def test_imports_write_with_a_large_sqlite_page_cache_then_restore_it(
        store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An import's transaction gets a page cache of BULK_CACHE_KIB (random inserts into the
    per-user indexes stay in memory); the pooled connection has its own size back after."""
    from shelfwise.storage.sql import BULK_CACHE_KIB

    def cache_size() -> int:
        with store._conn() as conn:
            return int(conn.exec_driver_sql("PRAGMA cache_size").scalar_one())

    seen: list[int] = []
    add = store.add_event_rows
    monkeypatch.setattr(store, "add_event_rows", lambda rows: (seen.append(cache_size()),
                                                               add(rows))[1])
    before = cache_size()
    path = write_jsonl(tmp_path / "ev.jsonl", [
        {"user_id": "u", "item_id": "a1", "type": "view", "timestamp": 1704067200}])
    assert import_file(store, "events", path, progress=False).written == 1
    assert seen == [-BULK_CACHE_KIB] and before != -BULK_CACHE_KIB
    assert cache_size() == before
    with store.transaction():  # a plain transaction keeps the connection's size
        assert cache_size() == before


def test_the_cli_starts_without_scipy_stats() -> None:
    """Every command pays for what the CLI imports at start (an import of 1M events takes
    ~18 s, the start ~2 s): scipy.stats (~0.4 s) loads only for an experiment report."""
    import subprocess
    import sys

    code = ("import sys; import shelfwise.cli.main, shelfwise.cli.import_cmd, "
            "shelfwise.data.importers; print('scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
