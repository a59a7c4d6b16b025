"""Import items, users, events and promotions from CSV, Parquet or JSONL files into a store.

Every row is checked before anything is written: a vectorised pass per column gives precise
messages fast, then the pydantic models (the single source of truth) validate each record. One
bad row means nothing is written; the error names the file, the 1-based data row (header
excluded), the field and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import numpy as np
import pandas as pd
from pydantic import BaseModel, TypeAdapter, ValidationError
from rich.console import Console
from rich.progress import Progress

from shelfwise.columns import Columns
from shelfwise.data.readers import MAX_SHOWN, read_table
from shelfwise.data.schemas import INTERACTION_TYPES, Event, EventType, Item, Promotion, User
from shelfwise.exceptions import ConfigError, DataValidationError, FieldProblem
from shelfwise.storage.base import Store, WriteResult

__all__ = [
    "KINDS", "ImportResult", "Kind", "Record", "TimeKind", "derive_event_ids", "field_names",
    "import_file", "import_frame", "progress_bar", "read_table", "record_time_kind",
    "validate_frame", "write_records",
]

Kind = Literal["items", "users", "events", "promotions"]
TimeKind = Literal["real", "ordinal"]
Record = Item | User | Event | Promotion
KINDS: tuple[Kind, ...] = ("items", "users", "events", "promotions")
CHUNK = 20_000  # rows per validation / write step (one progress tick)
PROGRESS_MIN_ROWS = 20_000

_MODELS: dict[str, type[BaseModel]] = {
    "items": Item, "users": User, "events": Event, "promotions": Promotion}
_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "items": TypeAdapter(list[Item]), "users": TypeAdapter(list[User]),
    "events": TypeAdapter(list[Event]), "promotions": TypeAdapter(list[Promotion])}
_ID_COLUMN = {"items": Columns.ITEM, "users": Columns.USER, "events": Columns.EVENT,
              "promotions": Columns.PROMOTION}
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_MS_EPOCH = 1e11  # epoch values above this are milliseconds, not seconds


@dataclass(frozen=True)
class ImportResult:
    """What one import did. ``skipped`` counts events already stored (or repeated in the file)."""

    kind: str
    source: str
    rows_read: int
    written: int
    skipped: int
    seconds: float
    ignored_columns: tuple[str, ...] = ()

    def summary(self) -> str:
        line = (f"{self.kind}: {self.rows_read:,} rows read, {self.written:,} written, "
                f"{self.skipped:,} already stored, {self.seconds:.1f} s ({self.source})")
        if self.ignored_columns:
            line += f"; ignored columns: {', '.join(self.ignored_columns)}"
        return line


@dataclass(frozen=True)
class _Field:
    """One importable field: model attribute, value converter, and whether it may be empty."""

    attr: str
    conv: str  # text | number | integer | bool | time | list | json | choice
    required: bool
    nullable: bool
    default: Any = None


def _conv_of(annotation: Any) -> tuple[str, bool]:
    args = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()
    nullable = type(None) in args
    base = next((a for a in args if a is not type(None)), annotation)
    origin = get_origin(base) or base
    convs: dict[Any, str] = {
        EventType: "choice", str: "text", float: "number", int: "integer", bool: "bool",
        datetime: "time", list: "list", dict: "json",
    }
    return convs.get(origin, "text"), nullable


def _fields(kind: str) -> dict[str, _Field]:
    """Importable fields of ``kind`` keyed by column name, derived from the pydantic model."""
    out: dict[str, _Field] = {}
    for attr, info in _MODELS[kind].model_fields.items():
        conv, nullable = _conv_of(info.annotation)
        column = _ID_COLUMN[kind] if attr == "id" else attr
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        required = info.is_required() and not (kind == "events" and attr in ("id", "type"))
        out[column] = _Field(attr, conv, required, nullable, default)
    return out


def field_names(kind: Kind) -> list[str]:
    """Column names the importer understands for ``kind`` (what ``mapping`` keys may be)."""
    return list(_fields(_check_kind(kind)))


def _check_kind(kind: str) -> str:
    if kind not in _MODELS:
        raise ConfigError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    return kind


# ---- column checks --------------------------------------------------------------------------
class _Problems:
    """Collects problems, keeps the first rows of each for display and counts all of them."""

    def __init__(self, rows: np.ndarray[Any, Any]) -> None:
        self.rows = rows
        self.shown: list[FieldProblem] = []
        self.total = 0
        self.bad_rows = np.zeros(len(rows), dtype=bool)
        self.bad_cells: set[tuple[int, str]] = set()  # (position, column) already reported

    def add(self, mask: np.ndarray[Any, Any], column: str, message: str,
            values: Sequence[Any] | np.ndarray[Any, Any] | None = None) -> None:
        pos = np.flatnonzero(mask)
        if not len(pos):
            return
        self.total += len(pos)
        self.bad_rows[pos] = True
        self.bad_cells.update((int(p), column) for p in pos)
        for p in pos[:MAX_SHOWN]:
            value = None if values is None else values[int(p)]
            self.shown.append(FieldProblem(int(self.rows[p]), column, message, _shown(value)))

    def one(self, problem: FieldProblem) -> None:
        self.total += 1
        self.shown.append(problem)

    def raise_if_any(self, source: str) -> None:
        if self.total:
            ordered = sorted(self.shown, key=lambda p: (p.row is not None, p.row or 0))
            raise DataValidationError(source, ordered[:MAX_SHOWN], self.total)


def _shown(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.tolist() if isinstance(value, np.ndarray) else value


def _blank(s: pd.Series) -> np.ndarray[Any, Any]:
    """True where a cell is missing: null, NaN or only whitespace."""
    na = s.isna().to_numpy(dtype=bool)
    if s.dtype == object or pd.api.types.is_string_dtype(s):
        try:  # vectorised when the column holds only text
            text = s.str.strip().eq("").fillna(False).to_numpy(dtype=bool)
        except AttributeError:
            text = np.array([isinstance(v, str) and not v.strip() for v in s], dtype=bool)
        both: np.ndarray[Any, Any] = na | text
        return both
    return na


def _as_text(v: Any) -> str | None:
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, bool | np.bool_):
        return str(bool(v)).lower()
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    return None


def _convert(f: _Field, s: pd.Series, blank: np.ndarray[Any, Any], col: str,
             probs: _Problems) -> list[Any]:
    """Turn a raw column into Python values for the model; flag cells that cannot convert."""
    raw = s.to_numpy(dtype=object)
    ok = ~blank
    if f.conv == "text":
        vals = [None if b else _as_text(v) for v, b in zip(raw, blank, strict=True)]
        probs.add(ok & np.array([v is None for v in vals]), col, "expected text", raw)
        return vals
    if f.conv in ("number", "integer"):
        num = _to_float(s.where(ok))
        bad = ok & ~np.isfinite(num)
        probs.add(bad, col, "expected a number", raw)
        if f.conv == "integer":
            probs.add(ok & ~bad & (num != np.round(num)), col, "expected a whole number", raw)
            return [None if b else int(x) for x, b in zip(num, blank | bad, strict=True)]
        return [None if b else float(x) for x, b in zip(num, blank | bad, strict=True)]
    if f.conv == "bool":
        low = [str(v).strip().lower() for v in raw]
        flags = [True if t in _TRUE else False if t in _FALSE else None for t in low]
        probs.add(ok & np.array([v is None for v in flags]), col,
                  "expected true/false (also yes/no, 1/0)", raw)
        return flags
    if f.conv == "time":
        return _convert_time(s, blank, col, probs)
    if f.conv in ("json", "list"):  # JSON text, or already parsed (JSONL, Parquet)
        vals = [None if b else _loads(v) for v, b in zip(raw, blank, strict=True)]
        if f.conv == "json":
            probs.add(ok & np.array([not isinstance(v, dict) for v in vals]), col,
                      'expected a JSON object such as {"key": "value"}', raw)
        return [v.tolist() if isinstance(v, np.ndarray) else v for v in vals]
    # choice: event type
    choice = [None if b else str(v).strip().lower() for v, b in zip(raw, blank, strict=True)]
    allowed = {t.value for t in EventType}
    probs.add(ok & np.array([t not in allowed for t in choice]), col,
              f"expected one of {', '.join(sorted(allowed))}", raw)
    return choice


def _to_float(s: pd.Series) -> np.ndarray[Any, Any]:
    """Numbers (or numeric text) as floats; anything else becomes NaN."""
    try:
        return np.asarray(pd.to_numeric(s, errors="coerce"), dtype=np.float64)
    except (TypeError, ValueError):  # lists or dicts in the column
        return np.array([pd.to_numeric(v, errors="coerce") if isinstance(v, str | int | float)
                         else np.nan for v in s], dtype=np.float64)


def _convert_time(s: pd.Series, blank: np.ndarray[Any, Any], col: str,
                  probs: _Problems) -> list[Any]:
    """ISO 8601 strings (naive ones are UTC) or epoch seconds -> aware UTC datetimes."""
    out: list[Any] = [None] * len(s)
    if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(s):
        _put(out, np.ones(len(s), dtype=bool), pd.Series(pd.to_datetime(s, utc=True)))
        return out
    raw = s.to_numpy(dtype=object)
    num = _to_float(s.where(~blank))
    is_num = np.isfinite(num)
    finite = np.where(is_num, num, 0.0)
    huge = is_num & ((finite > _MS_EPOCH) | (finite < -6e10))  # not seconds in years 1..5138
    probs.add(huge, col, "expected epoch seconds (out of range: milliseconds?)", raw)
    use = is_num & ~huge
    if use.any():
        micros = np.round(num[use] * 1e6).astype(np.int64)
        _put(out, use, pd.Series(pd.to_datetime(micros, unit="us", utc=True)))
    text = ~blank & ~is_num
    if text.any():
        parsed = pd.Series(pd.to_datetime(s[text].astype(str).str.strip(), utc=True,
                                          format="ISO8601", errors="coerce"))
        _put(out, text, parsed)
        for pos in np.flatnonzero(text)[parsed.isna().to_numpy(dtype=bool)]:
            with suppress(ValueError):  # beyond pandas' years 1677-2262, e.g. 9999-12-31
                out[pos] = _utc(datetime.fromisoformat(str(raw[pos]).strip()))
        bad = text & np.array([v is None for v in out], dtype=bool)
        probs.add(bad, col, "expected an ISO 8601 time (2024-05-31T12:00:00Z) or epoch "
                  "seconds", raw)
    return out


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _put(out: list[Any], mask: np.ndarray[Any, Any], ts: pd.Series) -> None:
    """Write the non-missing times of ``ts`` (one per True in ``mask``) into ``out``."""
    present = ts.notna().to_numpy(dtype=bool)
    py = ts.dt.floor("us").dt.to_pydatetime()
    for pos, value, ok in zip(np.flatnonzero(mask), py, present, strict=True):
        if ok:
            out[pos] = value


def _loads(v: Any) -> Any:
    """Parse JSON text (lists may also be plain text such as "a|b"); other values pass."""
    if isinstance(v, str) and v.strip()[:1] in ("{", "["):
        with suppress(json.JSONDecodeError):
            return json.loads(v)
        return None if v.strip()[:1] == "{" else v
    return v


# ---- validation -------------------------------------------------------------------------------
def _resolve(kind: str, frame: pd.DataFrame, mapping: Mapping[str, str], source: str,
             default_type: str | None) -> tuple[dict[str, str], tuple[str, ...]]:
    """Which file column feeds each of our fields; unknown file columns are reported back."""
    fields = _fields(kind)
    unknown = [k for k in mapping if k not in fields]
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(map(repr, unknown))} in the mapping for "
                          f"{kind}; fields are: {', '.join(fields)}")
    columns = set(frame.columns)
    taken = set(mapping.values())  # a column mapped to one field is not matched by name too
    used: dict[str, str] = {}
    problems: list[FieldProblem] = []
    for ours, f in fields.items():
        theirs = mapping.get(ours)
        if theirs is not None and theirs not in columns:
            problems.append(FieldProblem(None, ours, f"mapped to column '{theirs}', which is not "
                                         f"in the file (columns: {', '.join(frame.columns)})"))
            continue
        if theirs is None:
            theirs = ours if ours in columns and ours not in taken else None
            if theirs is None and f.attr == "id" and "id" in columns and "id" not in taken:
                theirs = "id"  # accept a plain "id" column for the record id
        if theirs is not None:
            used[ours] = theirs
        elif f.required or (ours == Columns.TYPE and kind == "events" and default_type is None):
            hint = " or pass --default-type" if ours == Columns.TYPE else ""
            problems.append(FieldProblem(None, ours, f"column '{ours}' is missing — map it with "
                                         f"--map {ours}=<your column>{hint}"))
    if problems:
        raise DataValidationError(source, problems)
    ignored = tuple(c for c in frame.columns if c not in set(used.values()))
    return used, ignored


def validate_frame(kind: Kind, frame: pd.DataFrame, *, source: str = "<frame>",
                   mapping: Mapping[str, str] | None = None,
                   default_type: EventType | str | None = None,
                   progress: bool = True) -> list[Record]:
    """Validate every row of ``frame`` into model objects, or raise :class:`DataValidationError`
    listing the problems. The frame's index gives the row numbers shown in errors."""
    records, _ = _validate(kind, frame, source, mapping or {}, default_type, progress)
    return records


def _validate(kind: str, frame: pd.DataFrame, source: str, mapping: Mapping[str, str],
              default_type: EventType | str | None, progress: bool,
              ) -> tuple[list[Record], tuple[str, ...]]:
    kind = _check_kind(kind)
    if default_type is not None:
        try:
            default_type = EventType(str(default_type).strip().lower())
        except ValueError:
            allowed = ", ".join(t.value for t in EventType)
            raise ConfigError(f"unknown default type {default_type!r}; use one of {allowed}") \
                from None
    fields = _fields(kind)
    used, ignored = _resolve(kind, frame, mapping, source, default_type)
    n = len(frame)
    rows = _row_numbers(frame)
    probs = _Problems(rows)
    values: dict[str, list[Any]] = {}
    for ours, theirs in used.items():
        s = frame[theirs]
        blank = _blank(s)
        f = fields[ours]
        if f.required or (ours == Columns.TYPE and default_type is None):
            probs.add(blank, theirs, "is required but empty")
        values[ours] = _convert(f, s, blank, theirs, probs)
    if kind in ("items", "users", "promotions"):
        _check_duplicates(values[_ID_COLUMN[kind]], rows, used[_ID_COLUMN[kind]], probs)
    if kind == "events":
        _prepare_events(values, used, default_type, probs, n)
    records = _build(kind, fields, values, used, rows, probs, progress)
    probs.raise_if_any(source)
    return records, ignored


def _row_numbers(frame: pd.DataFrame) -> np.ndarray[Any, Any]:
    if pd.api.types.is_integer_dtype(frame.index):
        return frame.index.to_numpy(dtype=np.int64)
    return np.arange(1, len(frame) + 1, dtype=np.int64)


def _check_duplicates(ids: list[Any], rows: np.ndarray[Any, Any], col: str,
                      probs: _Problems) -> None:
    s = pd.Series(ids, dtype=object)
    dup = s.duplicated(keep="first").to_numpy(dtype=bool) & s.notna().to_numpy(dtype=bool)
    if not dup.any():
        return
    first: dict[Any, int] = {}
    for value, row in zip(ids, rows, strict=True):
        if value is not None:
            first.setdefault(value, int(row))
    for p in np.flatnonzero(dup):
        probs.one(FieldProblem(int(rows[p]), col,
                               f"duplicate id, first seen on row {first[ids[p]]}", ids[p]))


def _prepare_events(values: dict[str, list[Any]], used: Mapping[str, str],
                    default_type: EventType | None, probs: _Problems, n: int) -> None:
    """Fill default types, check per-type targets and derive missing event ids."""
    types_ = values.get(Columns.TYPE, [None] * n)
    if default_type is not None:
        types_ = [default_type.value if t is None else t for t in types_]
    values[Columns.TYPE] = types_
    needs_item = np.array([t in INTERACTION_TYPES for t in types_], dtype=bool)
    items = values.get(Columns.ITEM)
    if items is None and needs_item.any():
        probs.one(FieldProblem(None, Columns.ITEM, f"column '{Columns.ITEM}' is missing — map "
                               f"it with --map {Columns.ITEM}=<your column> (view, click, cart "
                               "and purchase events need an item)"))
    elif items is not None:
        col = used[Columns.ITEM]
        probs.add(needs_item & np.array([i is None for i in items]), col,
                  "is required for view, click, cart and purchase events")
    query = values.get(Columns.QUERY, [None] * n)
    probs.add(np.array([t == "search" and not q for t, q in zip(types_, query, strict=True)]),
              used.get(Columns.QUERY, Columns.QUERY), "is required for search events")
    ids = values.get(Columns.EVENT)
    if ids is None or any(i is None for i in ids):
        derived = derive_event_ids(values.get(Columns.USER, [None] * n),
                                   values.get(Columns.ITEM, [None] * n), types_,
                                   values.get(Columns.TIME, [None] * n), query)
        values[Columns.EVENT] = derived if ids is None else [
            d if i is None else i for i, d in zip(ids, derived, strict=True)
        ]


def derive_event_ids(users: Sequence[Any], items: Sequence[Any], types_: Sequence[Any],
                     times: Sequence[Any], queries: Sequence[Any]) -> list[str]:
    """Deterministic event ids: sha1 of user|item|type|epoch-µs|query|occurrence, where
    occurrence counts earlier identical rows, so a re-imported file maps onto the same ids."""
    micros = [None if t is None else round(t.timestamp() * 1_000_000) for t in times]
    key = pd.DataFrame({"u": users, "i": items, "t": types_, "s": micros, "q": queries},
                       dtype=object).fillna("")
    occ = key.groupby(["u", "i", "t", "s", "q"], sort=False, dropna=False).cumcount()
    return [
        hashlib.sha1(f"{u}|{i}|{t}|{s}|{q}|{o}".encode()).hexdigest()
        for u, i, t, s, q, o in zip(key["u"], key["i"], key["t"], key["s"], key["q"], occ,
                                    strict=True)
    ]


def _build(kind: str, fields: Mapping[str, _Field], values: dict[str, list[Any]],
           used: Mapping[str, str], rows: np.ndarray[Any, Any], probs: _Problems,
           progress: bool) -> list[Record]:
    """Validate row dicts with pydantic (chunked, with progress) unless checks already failed."""
    n = len(rows)
    names: list[str] = []
    cols: list[list[Any]] = []
    for ours, vals in values.items():
        f = fields[ours]
        if not f.nullable and f.default is not None:
            vals = [f.default if v is None else v for v in vals]
        names.append(f.attr)
        cols.append(vals)
    adapter = _ADAPTERS[kind]
    display = {fields[o].attr: used.get(o, o) for o in values}
    records: list[Record] = []
    with progress_bar(progress and n >= PROGRESS_MIN_ROWS) as bar:
        task = bar.add_task(f"validating {kind}", total=n)
        for start in range(0, n, CHUNK):
            chunk = [dict(zip(names, vals, strict=True))
                     for vals in zip(*(c[start:start + CHUNK] for c in cols), strict=True)]
            try:
                records.extend(adapter.validate_python(chunk))
            except ValidationError as exc:
                for err in exc.errors(include_url=False):
                    pos = start + int(err["loc"][0])
                    attr = str(err["loc"][1]) if len(err["loc"]) > 1 else "(row)"
                    col = display.get(attr, attr)
                    if (pos, col) in probs.bad_cells or (col == "(row)" and probs.bad_rows[pos]):
                        continue  # already reported by the column checks
                    msg = str(err["msg"]).removeprefix("Value error, ")
                    value = _shown(err.get("input")) if col != "(row)" else None
                    probs.one(FieldProblem(int(rows[pos]), col, msg, value))
            bar.advance(task, min(CHUNK, n - start))
    return records


# ---- writing ----------------------------------------------------------------------------------
@contextmanager
def progress_bar(enabled: bool) -> Iterator[Progress]:
    """A rich progress bar on stderr, silent unless ``enabled`` and stderr is a terminal."""
    console = Console(file=sys.stderr)
    with Progress(console=console, disable=not (enabled and console.is_terminal),
                  transient=True) as bar:
        yield bar


def write_records(store: Store, kind: Kind, records: Sequence[Record], *,
                  progress: bool = True) -> WriteResult:
    """Write validated records in chunks (call inside ``store.transaction()`` for
    all-or-nothing). Events already stored are skipped; other kinds are upserted."""
    writers: dict[str, Callable[[Any], WriteResult]] = {
        "items": store.upsert_items, "users": store.upsert_users,
        "events": store.add_events, "promotions": store.upsert_promotions,
    }
    write = writers[_check_kind(kind)]
    written = skipped = 0
    with progress_bar(progress and len(records) >= PROGRESS_MIN_ROWS) as bar:
        task = bar.add_task(f"writing {kind}", total=len(records))
        for start in range(0, len(records), CHUNK):
            res = write(records[start:start + CHUNK])
            written += res.written
            skipped += res.skipped
            bar.advance(task, min(CHUNK, len(records) - start))
    return WriteResult(written, skipped)


def record_time_kind(store: Store, time_kind: TimeKind | None) -> None:
    """Remember whether event times are real dates or only encode order ("ordinal")."""
    if time_kind is not None:
        if time_kind not in ("real", "ordinal"):
            raise ConfigError(f"time kind must be 'real' or 'ordinal', not {time_kind!r}")
        store.set_meta("time_kind", time_kind)
    elif store.get_meta("time_kind") is None:
        store.set_meta("time_kind", "real")


def import_frame(store: Store, kind: Kind, frame: pd.DataFrame, *, source: str = "<frame>",
                 mapping: Mapping[str, str] | None = None,
                 default_type: EventType | str | None = None,
                 time_kind: TimeKind | None = None, progress: bool = True) -> ImportResult:
    """Validate all of ``frame`` then write it in one transaction (nothing on any error).

    Importing events records ``time_kind`` in the store meta (``"real"`` when not given and
    none is recorded yet)."""
    t0 = time.perf_counter()
    records, ignored = _validate(kind, frame, source, mapping or {}, default_type, progress)
    with store.transaction():
        res = write_records(store, kind, records, progress=progress)
        if kind == "events":
            record_time_kind(store, time_kind)
    return ImportResult(kind, source, len(frame), res.written, res.skipped,
                        time.perf_counter() - t0, ignored)


def import_file(store: Store, kind: Kind, path: str | Path, *,
                mapping: Mapping[str, str] | None = None,
                default_type: EventType | str | None = None,
                time_kind: TimeKind | None = None, progress: bool = True) -> ImportResult:
    """Import one CSV/TSV, Parquet or JSONL file of ``kind``; ``mapping`` is
    ``{our_field: their_column}``. See :func:`import_frame`."""
    t0 = time.perf_counter()
    frame = read_table(path)
    res = import_frame(store, kind, frame, source=str(path), mapping=mapping,
                       default_type=default_type, time_kind=time_kind, progress=progress)
    return ImportResult(res.kind, res.source, res.rows_read, res.written, res.skipped,
                        time.perf_counter() - t0, res.ignored_columns)

