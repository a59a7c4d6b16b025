"""Built-in dataset presets: public datasets under ``../shared/data`` and the shipped demo slice.

Each preset turns its files into frames with our column names (items, users, events) and says
whether event times are real dates or only encode order (``time_kind``). The frames then go
through the same validation as any user file, so a preset pointed at another path in the same
format is checked just as strictly.
"""

from __future__ import annotations

import csv
import html
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from shelfwise.columns import Columns
from shelfwise.data.importers import (
    ImportResult,
    Kind,
    TimeKind,
    read_table,
    record_time_kind,
    validate_frame,
    write_records,
)
from shelfwise.exceptions import ConfigError, DataValidationError, FieldProblem, NotFoundError
from shelfwise.storage.base import Store

__all__ = [
    "PRESETS", "PresetData", "PresetImportResult", "default_path", "import_preset",
    "load_preset", "ordinal_timestamps", "read_home_depot_judgements", "repo_dir",
    "shared_data_dir",
]

PresetName = Literal["amazon_games", "amazon_sequences", "instacart", "home_depot", "demo"]
PRESETS: tuple[PresetName, ...] = (
    "amazon_games", "amazon_sequences", "instacart", "home_depot", "demo")
#: Ordinal datasets get timestamps ORDINAL_BASE + k seconds (k = position in the user's history).
ORDINAL_BASE = pd.Timestamp("2000-01-01T00:00:00Z")
#: Instacart has only relative days; they are laid out from this (arbitrary) date.
INSTACART_BASE = pd.Timestamp("2017-01-01T00:00:00Z")
_DEFAULTS = {
    "amazon_games": "amazon_games", "amazon_sequences": "amazon_sequences/Beauty.txt",
    "instacart": "instacart", "home_depot": "home_depot",
}


@dataclass(frozen=True)
class PresetData:
    """A preset's frames (our column names; the index is the source file's data row)."""

    name: str
    path: Path
    time_kind: TimeKind
    items: pd.DataFrame
    users: pd.DataFrame | None = None
    events: pd.DataFrame | None = None
    sources: dict[str, str] = field(default_factory=dict)  # kind -> file, for error messages


@dataclass(frozen=True)
class PresetImportResult:
    """What importing a preset did, one :class:`ImportResult` per kind."""

    name: str
    time_kind: TimeKind
    parts: tuple[ImportResult, ...]
    seconds: float

    def written(self, kind: str) -> int:
        return sum(p.written for p in self.parts if p.kind == kind)

    def summary(self) -> str:
        parts = ", ".join(f"{p.written:,} {p.kind}" + (f" ({p.skipped:,} already stored)"
                                                       if p.skipped else "")
                          for p in self.parts)
        return (f"imported preset {self.name}: {parts}; time {self.time_kind}; "
                f"{self.seconds:.1f} s")


# ---- locations --------------------------------------------------------------------------------
def repo_dir() -> Path:
    """The source checkout this package runs from (``src/shelfwise/data`` -> repo root)."""
    return Path(__file__).resolve().parents[3]


def shared_data_dir() -> Path:
    """``$SHELFWISE_SHARED_DATA``, else ``<repo>/../shared/data``."""
    env = os.environ.get("SHELFWISE_SHARED_DATA")
    return Path(env).expanduser() if env else repo_dir().parent / "shared" / "data"


def default_path(name: str) -> Path:
    """Where preset ``name`` reads from when no path is given."""
    _check(name)
    if name == "demo":
        return repo_dir() / "data" / "demo"
    return shared_data_dir() / _DEFAULTS[name]


def _check(name: str) -> None:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")


def _need(path: Path, name: str) -> Path:
    if not path.exists():
        hint = "" if name == "demo" else (
            f"; set SHELFWISE_SHARED_DATA to the folder that holds {_DEFAULTS[name]} "
            "or pass another path")
        raise NotFoundError(f"preset {name}: {path} does not exist{hint}")
    return path


def _folder(path: Path, name: str) -> Path:
    path = _need(path, name)
    return path.parent if path.is_file() else path


# ---- shared helpers ---------------------------------------------------------------------------
def ordinal_timestamps(positions: Sequence[int] | np.ndarray[Any, Any]) -> pd.Series:
    """2000-01-01T00:00:00Z + k seconds: keeps each user's order when a dataset has no dates."""
    return pd.Series(ORDINAL_BASE + pd.to_timedelta(np.asarray(positions), unit="s"))


def _sequences_to_events(users: list[str], seqs: list[list[str]], rows: list[int],
                         event_type: str = "purchase") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events (ordinal time) and users from ordered per-user item lists."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.arange(int(lengths.sum())) - starts
    index = np.repeat(np.asarray(rows, dtype=np.int64), lengths)
    events = pd.DataFrame({
        Columns.USER: np.repeat(np.asarray(users, dtype=object), lengths),
        Columns.ITEM: [i for s in seqs for i in s],
        Columns.TYPE: event_type,
        Columns.TIME: ordinal_timestamps(positions).array,
    }, index=index)
    return events, _users_of(events)


def _users_of(events: pd.DataFrame) -> pd.DataFrame:
    first = events.drop_duplicates(Columns.USER)
    return pd.DataFrame({Columns.USER: first[Columns.USER].to_numpy()}, index=first.index)


def _columns(frame: pd.DataFrame, needed: Sequence[str], source: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataValidationError(source, [FieldProblem(None, c, f"column '{c}' is missing")
                                           for c in missing])


def _numbers(frame: pd.DataFrame, cols: Sequence[str], source: str,
             optional: Sequence[str] = ()) -> pd.DataFrame:
    """Coerce ``cols`` to numbers; any unparsable (or, unless optional, empty) cell is an error."""
    out = frame.copy()
    problems: list[FieldProblem] = []
    total = 0
    for c in cols:
        raw = frame[c]
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna() & (raw.notna() & (raw.astype(str).str.strip() != "")
                            if c in optional else True)
        total += int(bad.sum())
        problems += [FieldProblem(int(r), c, "expected a number", raw[r])
                     for r in bad[bad].index[:20]]
        out[c] = num
    if total:
        raise DataValidationError(source, sorted(problems, key=lambda p: p.row or 0)[:20], total)
    return out


def _read_tsv(path: Path) -> pd.DataFrame:
    """A RecBole-style tab-separated file with a ``name:type`` header line, cells as text."""
    frame = pd.read_csv(_need(path, "amazon_games"), sep="\t", dtype=str, header=0,
                        quoting=csv.QUOTE_NONE, keep_default_na=False).astype(object)
    frame.index = pd.RangeIndex(1, len(frame) + 1)
    return frame


# ---- the presets ------------------------------------------------------------------------------
def _amazon_sequences(path: Path) -> PresetData:
    """``user item item ...`` per line (oldest first); attribute ids from the json beside it."""
    if _need(path, "amazon_sequences").is_dir():
        raise ConfigError(f"preset amazon_sequences expects a <name>.txt file, got folder {path}"
                          f" (it holds: {', '.join(p.name for p in path.glob('*.txt'))})")
    users: list[str] = []
    seqs: list[list[str]] = []
    rows: list[int] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            parts = line.split()
            if parts:
                users.append(parts[0])
                seqs.append(parts[1:])
                rows.append(n)
    events, users_frame = _sequences_to_events(users, seqs, rows)
    item_ids = list(dict.fromkeys(events[Columns.ITEM]))
    attrs_path = path.with_name(f"{path.stem}_item2attributes.json")
    items = pd.DataFrame({Columns.ITEM: item_ids})
    if attrs_path.is_file():
        attrs: dict[str, list[int]] = json.loads(attrs_path.read_text(encoding="utf-8"))
        seen = set(item_ids)
        item_ids += [i for i in attrs if i not in seen]
        items = pd.DataFrame({Columns.ITEM: item_ids, Columns.ATTRIBUTES: [
            {"attribute_ids": attrs[i]} if i in attrs else {} for i in item_ids]})
    items.index = pd.RangeIndex(1, len(items) + 1)
    return PresetData("amazon_sequences", path, "ordinal", items, users_frame, events,
                      {"items": f"{path} (item ids)", "users": str(path), "events": str(path)})


def _amazon_games(path: Path) -> PresetData:
    """``*.item`` (id, title) and ``*.test.inter`` (user, history, target) with header lines."""
    folder = _folder(path, "amazon_games")
    item_file = _one(folder, "*.item")
    inter_file = _one(folder, "*.test.inter")
    raw = _read_tsv(item_file)
    if raw.shape[1] < 2:
        raise DataValidationError(str(item_file), [FieldProblem(None, "title", "expected two "
                                                                "tab-separated columns")])
    titles = [html.unescape(str(t)).replace("\xa0", " ") for t in raw.iloc[:, 1]]
    items = pd.DataFrame({Columns.ITEM: raw.iloc[:, 0], Columns.TITLE: titles}, index=raw.index)
    inter = _read_tsv(inter_file)
    if inter.shape[1] < 3:
        raise DataValidationError(str(inter_file), [FieldProblem(None, "target", "expected "
                                  "three tab-separated columns: user, history, target")])
    seqs = [f"{h} {t}".split() for h, t in zip(inter.iloc[:, 1], inter.iloc[:, 2], strict=True)]
    events, users = _sequences_to_events([str(u) for u in inter.iloc[:, 0]], seqs,
                                         list(inter.index))
    return PresetData("amazon_games", folder, "ordinal", items, users, events,
                      {"items": str(item_file), "users": str(inter_file),
                       "events": str(inter_file)})


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise NotFoundError(f"expected exactly one {pattern} file in {folder}, found "
                            f"{len(found)}")
    return found[0]


def _instacart(path: Path) -> PresetData:
    """Catalog with [department, aisle] categories; basket lines laid out in real relative time:
    cumulative days between orders, plus the order hour, plus one second per cart position."""
    folder = _folder(path, "instacart")
    products = read_table(_need(folder / "products.csv", "instacart"))
    aisles = read_table(_need(folder / "aisles.csv", "instacart"))
    departments = read_table(_need(folder / "departments.csv", "instacart"))
    for frame, cols, src in ((products, ["product_id", "product_name", "aisle_id",
                                         "department_id"], "products.csv"),
                             (aisles, ["aisle_id", "aisle"], "aisles.csv"),
                             (departments, ["department_id", "department"], "departments.csv")):
        _columns(frame, cols, str(folder / src))
    aisle = dict(zip(aisles["aisle_id"], aisles["aisle"], strict=True))
    dept = dict(zip(departments["department_id"], departments["department"], strict=True))
    category = [[c for c in (dept.get(d), aisle.get(a)) if c]
                for d, a in zip(products["department_id"], products["aisle_id"], strict=True)]
    items = pd.DataFrame({Columns.ITEM: products["product_id"],
                          Columns.TITLE: products["product_name"],
                          Columns.CATEGORY: category}, index=products.index)
    src = str(folder / "order_products_sample.csv")
    lines = read_table(_need(folder / "order_products_sample.csv", "instacart"))
    nums = ["order_number", "order_hour_of_day", "days_since_prior_order", "add_to_cart_order"]
    _columns(lines, ["order_id", "user_id", "product_id", *nums], src)
    op = _numbers(lines, nums, src, optional=["days_since_prior_order"])
    op = op.sort_values(["user_id", "order_number", "add_to_cart_order"], kind="stable")
    orders = op.drop_duplicates("order_id")
    by_user = orders["user_id"]
    days = orders["days_since_prior_order"].fillna(0).groupby(by_user).cumsum()
    start = days * 86_400 + orders["order_hour_of_day"] * 3_600
    # keep orders strictly in order_number order, at least an hour apart
    k = orders.groupby("user_id").cumcount() * 3_600
    start = (start - k).groupby(by_user).cummax() + k
    seconds = op["order_id"].map(pd.Series(start.to_numpy(), index=orders["order_id"]))
    seconds = seconds + op["add_to_cart_order"]
    stamps = INSTACART_BASE + pd.to_timedelta(seconds.to_numpy(dtype=np.float64), unit="s")
    reordered = op["reordered"] if "reordered" in op else pd.Series(None, index=op.index)
    context = [{"order_id": o, "order_number": int(n), "add_to_cart_order": int(a)}
               | ({"reordered": r.strip() == "1"} if isinstance(r, str) and r.strip() else {})
               for o, n, a, r in zip(op["order_id"], op["order_number"],
                                     op["add_to_cart_order"], reordered, strict=True)]
    events = pd.DataFrame({
        Columns.USER: op["user_id"], Columns.ITEM: op["product_id"], Columns.TYPE: "purchase",
        Columns.TIME: pd.Series(stamps, index=op.index), Columns.CONTEXT: context,
    }, index=op.index)
    return PresetData("instacart", folder, "real", items, _users_of(events), events,
                      {"items": str(folder / "products.csv"), "users": src, "events": src})


def read_home_depot_judgements(path: str | Path | None = None) -> pd.DataFrame:
    """Graded search judgements: ``query``, ``item_id``, ``title``, ``relevance`` (1..3) and
    the Kaggle row ``id``, one row per judged (query, product) pair, file order."""
    p = Path(path) if path is not None else default_path("home_depot")
    p = _need(p, "home_depot")
    p = p / "judgements.csv" if p.is_dir() else p
    raw = read_table(_need(p, "home_depot"))
    _columns(raw, ["id", "product_uid", "product_title", "search_term", "relevance"], str(p))
    rel = _numbers(raw, ["relevance"], str(p))["relevance"]
    return pd.DataFrame({"id": raw["id"], Columns.QUERY: raw["search_term"],
                         Columns.ITEM: raw["product_uid"], Columns.TITLE: raw["product_title"],
                         "relevance": rel.astype(np.float64)}, index=raw.index)


def _home_depot(path: Path) -> PresetData:
    """Items = distinct judged products (first title seen); judgements are labels, not events."""
    judged = read_home_depot_judgements(path)
    items = judged.drop_duplicates(Columns.ITEM)[[Columns.ITEM, Columns.TITLE]]
    p = _need(path, "home_depot")
    return PresetData("home_depot", p, "real", items,
                      sources={"items": str(p / "judgements.csv" if p.is_dir() else p)})


def _demo(path: Path) -> PresetData:
    """The shipped slice: ``items.csv`` (item_id, title), ``events.csv`` (user_id, item_id,
    timestamp, type); plain files any generic import reads too."""
    folder = _folder(path, "demo")
    items = read_table(_need(folder / "items.csv", "demo"))
    events = read_table(_need(folder / "events.csv", "demo"))
    _columns(events, [Columns.USER], str(folder / "events.csv"))
    return PresetData("demo", folder, "ordinal", items, _users_of(events), events,
                      {"items": str(folder / "items.csv"), "users": str(folder / "events.csv"),
                       "events": str(folder / "events.csv")})


_LOADERS = {"amazon_games": _amazon_games, "amazon_sequences": _amazon_sequences,
            "instacart": _instacart, "home_depot": _home_depot, "demo": _demo}


def load_preset(name: str, path: str | Path | None = None) -> PresetData:
    """Read preset ``name`` from ``path`` (default: :func:`default_path`) into frames."""
    _check(name)
    return _LOADERS[name](Path(path).expanduser() if path is not None else default_path(name))


def import_preset(store: Store, name: str, path: str | Path | None = None, *,
                  progress: bool = True,
                  user_key: Callable[[str], str] | None = None) -> PresetImportResult:
    """Validate a preset's items, users and events, then write them all in one transaction and
    record its ``time_kind`` (when it has events). Re-importing stores each event once.
    ``user_key`` maps user ids to the ids to store (keyed pseudonyms)."""
    t0 = time.perf_counter()
    data = load_preset(name, path)
    frames: list[tuple[Kind, pd.DataFrame]] = [("items", data.items)]
    frames += [("users", data.users)] if data.users is not None else []
    frames += [("events", data.events)] if data.events is not None else []
    validated = []
    for kind, frame in frames:
        t = time.perf_counter()
        records = validate_frame(kind, frame, source=data.sources.get(kind, str(data.path)),
                                 progress=progress, user_key=user_key)
        validated.append((kind, frame, records, time.perf_counter() - t))
    parts: list[ImportResult] = []
    with store.transaction():
        for kind, frame, records, took in validated:
            t = time.perf_counter()
            res = write_records(store, kind, records, progress=progress)
            parts.append(ImportResult(kind, data.sources.get(kind, str(data.path)), len(frame),
                                      res.written, res.skipped, took + time.perf_counter() - t))
        if data.events is not None:
            record_time_kind(store, data.time_kind)
    return PresetImportResult(name, data.time_kind, tuple(parts), time.perf_counter() - t0)
