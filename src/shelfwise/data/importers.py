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
from functools import partial
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import numpy as np
import pandas as pd
from pydantic import BaseModel, TypeAdapter, ValidationError
from rich.console import Console
from rich.progress import Progress

from shelfwise.columns import Columns
from shelfwise.data.readers import MAX_SHOWN, iter_table, read_table
from shelfwise.data.schemas import (
    EARLIEST,
    INTERACTION_TYPES,
    LATEST,
    Event,
    EventType,
    Item,
    Promotion,
    User,
)
from shelfwise.data.schemas import _utc as check_time
from shelfwise.exceptions import ConfigError, DataValidationError, FieldProblem
from shelfwise.privacy.pseudonym import valid_id
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
EVENT_CHUNK = 100_000  # rows per streamed chunk of an events file
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
_JSON = partial(json.dumps, allow_nan=False)


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
        parsed = parsed.where(parsed.notna() & (parsed >= EARLIEST) & (parsed <= LATEST))
        _put(out, text, parsed)
        outside = np.zeros(len(s), dtype=bool)
        for pos in np.flatnonzero(text)[parsed.isna().to_numpy(dtype=bool)]:
            try:  # beyond pandas' years, e.g. 9999-12-31, or outside the store's range
                when = datetime.fromisoformat(str(raw[pos]).strip())
            except ValueError:
                continue
            try:
                out[pos] = check_time(when)
            except ValueError:
                outside[pos] = True
        probs.add(outside, col, f"is outside the supported range {EARLIEST:%Y-%m-%d} to "
                  f"{LATEST:%Y-%m-%d} (UTC)", raw)
        bad = text & ~outside & np.array([v is None for v in out], dtype=bool)
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
                   progress: bool = True,
                   user_key: Callable[[str], str] | None = None) -> list[Record]:
    """Validate every row of ``frame`` into model objects, or raise :class:`DataValidationError`
    listing the problems. The frame's index gives the row numbers shown in errors.
    ``user_key`` maps each valid user id to the id to store (a keyed pseudonym)."""
    records, _ = _validate(kind, frame, source, mapping or {}, default_type, progress,
                           user_key=user_key)
    return records


def _validate(kind: str, frame: pd.DataFrame, source: str, mapping: Mapping[str, str],
              default_type: EventType | str | None, progress: bool, *,
              as_rows: bool = False, seen: dict[str, int] | None = None,
              user_key: Callable[[str], str] | None = None,
              ) -> tuple[list[Any], tuple[str, ...]]:
    """Records of ``frame`` (model objects), or with ``as_rows`` (events only) the store's
    event tuples built by :func:`_event_rows`; ``seen`` carries derived-id occurrences
    across the chunks of one file."""
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
    if user_key is not None and Columns.USER in values:  # before event ids are derived from it
        values[Columns.USER] = [user_key(u) if isinstance(u, str) and valid_id(u) else u
                                for u in values[Columns.USER]]  # bad ids stay, to be reported
    if kind in ("items", "users", "promotions"):
        _check_duplicates(values[_ID_COLUMN[kind]], rows, used[_ID_COLUMN[kind]], probs)
    if kind == "events":
        _prepare_events(values, used, default_type, probs, n, seen)
    if as_rows:
        records: list[Any] = _event_rows(values, used, probs, n)
    else:
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
                    default_type: EventType | None, probs: _Problems, n: int,
                    seen: dict[str, int] | None = None) -> None:
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
                                   values.get(Columns.TIME, [None] * n), query, seen)
        values[Columns.EVENT] = derived if ids is None else [
            d if i is None else i for i, d in zip(ids, derived, strict=True)
        ]


def derive_event_ids(users: Sequence[Any], items: Sequence[Any], types_: Sequence[Any],
                     times: Sequence[Any], queries: Sequence[Any],
                     seen: dict[str, int] | None = None) -> list[str]:
    """Deterministic event ids: sha1 of user|item|type|epoch-µs|query|occurrence, where
    occurrence counts earlier identical rows (also in earlier chunks, through ``seen``), so a
    re-imported file maps onto the same ids."""
    seen = {} if seen is None else seen
    out = []
    for u, i, t, tm, q in zip(users, items, types_, times, queries, strict=True):
        s = "" if tm is None else round(tm.timestamp() * 1_000_000)
        key = f"{_or_blank(u)}|{_or_blank(i)}|{_or_blank(t)}|{s}|{_or_blank(q)}"
        occ = seen.get(key, 0)
        seen[key] = occ + 1
        out.append(hashlib.sha1(f"{key}|{occ}".encode()).hexdigest())
    return out


def _or_blank(v: Any) -> Any:
    return "" if v is None else v


#: What :func:`_event_rows` checks besides the column conversions: the constraints of
#: :class:`Event`'s fields (a test compares both on generated rows).
_ID_FIELDS = (Columns.EVENT, Columns.USER, Columns.ITEM)
_CONTROL = r"[\x00-\x1f\x7f]"


def _event_rows(values: dict[str, list[Any]], used: Mapping[str, str], probs: _Problems,
                n: int) -> list[tuple[Any, ...]]:
    """Store tuples (``EVENT_ROW_COLUMNS`` order) for validated event columns, with the checks
    :class:`Event` would make done per column: the import fast path (no model per row)."""
    for col in _ID_FIELDS:
        vals = values.get(col)
        if vals is None:
            continue
        s = pd.Series(vals, dtype=object)
        present = s.notna().to_numpy(dtype=bool)
        text = s[present].astype(str)
        name = used.get(col, col)
        bad_len = np.zeros(n, dtype=bool)
        bad_len[present] = (text.str.len() > 256).to_numpy(dtype=bool)
        probs.add(bad_len, name, "is longer than 256 characters", vals)
        bad_chr = np.zeros(n, dtype=bool)
        bad_chr[present] = text.str.contains(_CONTROL, regex=True).to_numpy(dtype=bool)
        probs.add(bad_chr & ~bad_len, name, "contains a control character (tab, newline, "
                  "NUL…); ids are 1-256 printable characters", vals)
        empty = np.zeros(n, dtype=bool)
        empty[present] = (text.str.len() == 0).to_numpy(dtype=bool)
        probs.add(empty, name, "is empty", vals)
    _range(values, used, probs, Columns.POSITION, lambda x: x >= 0, "must be 0 or more")
    _range(values, used, probs, Columns.PROPENSITY, lambda x: (x > 0) & (x <= 1),
           "must be more than 0 and at most 1")
    times = values[Columns.TIME]
    stamps = np.array([np.nan if t is None else t.timestamp() for t in times], np.float64)
    lo, hi = EARLIEST.timestamp(), LATEST.timestamp()
    probs.add(np.isfinite(stamps) & ((stamps < lo) | (stamps > hi)),
              used.get(Columns.TIME, Columns.TIME),
              f"is outside the supported range {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} (UTC)",
              times)
    contexts = values.get(Columns.CONTEXT)
    if contexts is None:
        ctx_text = ["{}"] * n
    else:
        ctx_text = []
        bad_ctx = np.zeros(n, dtype=bool)
        for k, c in enumerate(contexts):
            try:
                ctx_text.append(_JSON(c if c is not None else {}))
            except ValueError:
                bad_ctx[k] = True
                ctx_text.append("{}")
        probs.add(bad_ctx, used.get(Columns.CONTEXT, Columns.CONTEXT),
                  "holds NaN or Infinity, which JSON cannot store")
    if probs.total:
        return []
    none = [None] * n
    return list(zip(values[Columns.EVENT], values[Columns.TYPE], values[Columns.USER],
                    values.get(Columns.ITEM, none), values.get(Columns.QUERY, none),
                    values.get(Columns.REQUEST, none), values.get(Columns.POSITION, none),
                    values.get(Columns.PROPENSITY, none), values.get(Columns.VALUE, none),
                    stamps.tolist(), ctx_text, strict=True))


def _range(values: dict[str, list[Any]], used: Mapping[str, str], probs: _Problems, col: str,
           ok: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]], message: str) -> None:
    vals = values.get(col)
    if vals is None:
        return
    x = np.array([np.nan if v is None else v for v in vals], np.float64)
    with np.errstate(invalid="ignore"):
        probs.add(np.isfinite(x) & ~ok(x), used.get(col, col), message, vals)


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
                 time_kind: TimeKind | None = None, progress: bool = True,
                 user_key: Callable[[str], str] | None = None) -> ImportResult:
    """Validate all of ``frame`` then write it in one transaction (nothing on any error).

    Importing events records ``time_kind`` in the store meta (``"real"`` when not given and
    none is recorded yet)."""
    t0 = time.perf_counter()
    records, ignored = _validate(kind, frame, source, mapping or {}, default_type, progress,
                                 user_key=user_key)
    with store.transaction(bulk=True):
        res = write_records(store, kind, records, progress=progress)
        if kind == "events":
            record_time_kind(store, time_kind)
    return ImportResult(kind, source, len(frame), res.written, res.skipped,
                        time.perf_counter() - t0, ignored)


def import_file(store: Store, kind: Kind, path: str | Path, *,
                mapping: Mapping[str, str] | None = None,
                default_type: EventType | str | None = None,
                time_kind: TimeKind | None = None, progress: bool = True,
                user_key: Callable[[str], str] | None = None) -> ImportResult:
    """Import one CSV/TSV, Parquet or JSONL file of ``kind``; ``mapping`` is
    ``{our_field: their_column}``. See :func:`import_frame`; events stream through
    :func:`import_events_file`."""
    if kind == "events":
        return import_events_file(store, path, mapping=mapping, default_type=default_type,
                                  time_kind=time_kind, progress=progress, user_key=user_key)
    t0 = time.perf_counter()
    frame = read_table(path)
    res = import_frame(store, kind, frame, source=str(path), mapping=mapping,
                       default_type=default_type, time_kind=time_kind, progress=progress,
                       user_key=user_key)
    return ImportResult(res.kind, res.source, res.rows_read, res.written, res.skipped,
                        time.perf_counter() - t0, res.ignored_columns)


def import_events_file(store: Store, path: str | Path, *,
                       mapping: Mapping[str, str] | None = None,
                       default_type: EventType | str | None = None,
                       time_kind: TimeKind | None = None, progress: bool = True,
                       chunk_rows: int = EVENT_CHUNK,
                       user_key: Callable[[str], str] | None = None) -> ImportResult:
    """Events in chunks of ``chunk_rows``, each checked per column and written as tuples,
    all in one transaction: memory follows the chunk, not the file. A problem in any chunk
    stops the writing, the rest is still checked, and the error lists every problem found;
    nothing is stored. Ids are derived as by :func:`derive_event_ids` across the whole file."""
    t0 = time.perf_counter()
    source = str(path)
    shown: list[FieldProblem] = []
    total = read = written = skipped = 0
    ignored: tuple[str, ...] = ()
    seen: dict[str, int] = {}
    with store.transaction(bulk=True), progress_bar(progress) as bar:
        task = bar.add_task("importing events", total=None)
        for frame in iter_table(path, chunk_rows):
            read += len(frame)
            try:
                rows, ignored = _validate("events", frame, source, mapping or {}, default_type,
                                          False, as_rows=True, seen=seen, user_key=user_key)
            except DataValidationError as exc:
                if any(p.row is None for p in exc.problems):
                    raise  # a file-level problem (a missing column): the same in every chunk
                shown += exc.problems[: MAX_SHOWN - len(shown)]
                total += exc.total
                continue
            if not total:
                res = store.add_event_rows(rows)
                written += res.written
                skipped += res.skipped
            bar.advance(task, len(frame))
        if total:
            raise DataValidationError(source, shown, total)
        record_time_kind(store, time_kind)
    return ImportResult("events", source, read, written, skipped, time.perf_counter() - t0,
                        ignored)
