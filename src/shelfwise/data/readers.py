"""Read tabular files (CSV, TSV, Parquet, JSONL) with 1-based data-row indices for errors."""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shelfwise.exceptions import ConfigError, DataValidationError, FieldProblem, NotFoundError

SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".ndjson")
MAX_SHOWN = 20  # problems listed in an error message (all are counted)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV/TSV, Parquet or JSONL file; the index is the 1-based data row (header
    excluded; the line number for JSONL). CSV cells stay strings so checks see the raw text."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    source = str(path)
    if suffix not in SUFFIXES:
        raise ConfigError(f"cannot read {path.name}: use a .csv, .tsv, .parquet, .jsonl or "
                          ".ndjson file")
    sep = "\t" if suffix == ".tsv" else ","
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        else:
            with warnings.catch_warnings():  # a row longer than the header: error, not index
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                                    index_col=False, encoding="utf-8-sig").astype(object)
    except (ValueError, UnicodeDecodeError, OSError, pd.errors.ParserWarning) as exc:
        problems = _ragged_rows(path, sep) if suffix in (".csv", ".tsv") else []
        raise DataValidationError(source, problems[:MAX_SHOWN] or [
            FieldProblem(None, "(file)", _first_line(exc))], len(problems) or 1) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    frame.index = pd.RangeIndex(1, len(frame) + 1)
    return frame


def iter_table(path: str | Path, rows: int) -> Iterator[pd.DataFrame]:
    """:func:`read_table` in frames of at most ``rows`` rows with the same row numbering; CSV
    and TSV are streamed, so memory follows ``rows`` rather than the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv") or not path.is_file():
        frame = read_table(path)
        for start in range(0, len(frame), rows):
            yield frame.iloc[start : start + rows]
        return
    sep = "\t" if suffix == ".tsv" else ","
    start = 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            reader = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                                 index_col=False, encoding="utf-8-sig", chunksize=rows)
            with reader:
                for chunk in reader:
                    frame = chunk.astype(object)
                    frame.columns = [str(c).strip() for c in frame.columns]
                    frame.index = pd.RangeIndex(start, start + len(frame))
                    start += len(frame)
                    yield frame
    except (ValueError, UnicodeDecodeError, OSError, pd.errors.ParserWarning) as exc:
        problems = _ragged_rows(path, sep)
        raise DataValidationError(str(path), problems[:MAX_SHOWN] or [
            FieldProblem(None, "(file)", _first_line(exc))], len(problems) or 1) from exc


def _ragged_rows(path: Path, sep: str) -> list[FieldProblem]:
    """Data rows with more fields than the header (pandas would misread them)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter=sep)
            width = len(next(reader, []))
            return [FieldProblem(n, "(row)", f"expected {width} fields like the header, found "
                                 f"{len(r)}") for n, r in enumerate(reader, start=1)
                    if len(r) > width]
    except (UnicodeDecodeError, csv.Error):
        return []


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_jsonl(path: Path) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    problems: list[FieldProblem] = []
    with path.open(encoding="utf-8-sig") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(FieldProblem(n, "(line)", f"not valid JSON: {exc.msg}"))
                continue
            if not isinstance(obj, dict):
                problems.append(FieldProblem(n, "(line)", "expected a JSON object per line"))
                continue
            records.append(obj)
            rows.append(n)
    if problems:
        raise DataValidationError(str(path), problems[:MAX_SHOWN], len(problems))
    frame = pd.DataFrame(records, dtype=object)  # object: ints stay exact when keys vary
    frame.index = pd.Index(rows, dtype=np.int64)
    return frame
