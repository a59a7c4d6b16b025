"""Flat, append-only columns for the search index, saved as ``.npy`` files and loaded
memory-mapped.

A column loaded from a bundle keeps its arrays read-only (``np.load(mmap_mode="r")``: pages
are read on first use and shared by every process that maps the same file) and appends
items to a small private tail, so posted items never copy or write the shared part.

State is a nested dict of NumPy arrays and JSON values; :func:`save_state` writes each array
of at least ``MMAP_BYTES`` as its own ``.npy`` (memory-mappable) and everything else into one
``state.json`` + ``small.npz``; :func:`load_state` reads it back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shelfwise.text.bm25 import put_growing

MMAP_BYTES = 1 << 16
"""Arrays at least this large are stored as their own ``.npy`` and memory-mapped."""

State = dict[str, Any]


class TextColumn(Sequence[str]):
    """Strings by position: a UTF-8 blob with offsets (the frozen part) and a list of the
    strings appended since."""

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self._blob: NDArray[np.uint8] = np.zeros(0, np.uint8)
        self._offsets: NDArray[np.int64] = np.zeros(1, np.int64)
        self._tail: list[str] = []
        self.extend(texts)

    def __len__(self) -> int:
        return len(self._offsets) - 1 + len(self._tail)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        base = len(self._offsets) - 1
        if i < 0:
            i += len(self)
        if i >= base:
            return self._tail[i - base]
        a, z = self._offsets[i], self._offsets[i + 1]
        return self._blob[a:z].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def extend(self, texts: Iterable[str]) -> None:
        self._tail.extend(texts)

    def state(self) -> State:
        """Everything as one blob and offsets (the tail folded in)."""
        if not self._tail:
            return {"blob": self._blob, "offsets": self._offsets}
        encoded = [t.encode("utf-8") for t in self._tail]
        tail_len = np.fromiter((len(e) for e in encoded), np.int64, len(encoded))
        offsets = np.concatenate([self._offsets, self._offsets[-1] + np.cumsum(tail_len)])
        blob = np.concatenate([self._blob, np.frombuffer(b"".join(encoded), np.uint8)])
        return {"blob": blob, "offsets": offsets}

    @classmethod
    def from_state(cls, state: State) -> TextColumn:
        col = cls()
        col._blob, col._offsets = state["blob"], state["offsets"]
        _check(len(col._offsets) >= 1 and int(col._offsets[-1]) == len(col._blob),
               "text offsets do not match the text blob")
        return col


class Ragged:
    """One integer array per position (e.g. a title's token ids): CSR offsets and values for
    the frozen part, growable buffers for the rows appended since."""

    def __init__(self, dtype: type[np.integer[Any]] = np.int32) -> None:
        self._offsets: NDArray[np.int64] = np.zeros(1, np.int64)
        self._values: NDArray[Any] = np.zeros(0, dtype)
        self._tail_offsets: NDArray[np.int64] = np.zeros(1, np.int64)
        self._tail_values: NDArray[Any] = np.zeros(0, dtype)
        self._n_tail = 0

    def __len__(self) -> int:
        return len(self._offsets) - 1 + self._n_tail

    def append_rows(self, rows: Sequence[Sequence[int]]) -> None:
        if not rows:
            return
        lens = np.fromiter((len(r) for r in rows), np.int64, len(rows))
        flat = np.fromiter((v for r in rows for v in r), self._values.dtype, int(lens.sum()))
        if len(self) == 0:  # nothing frozen yet: the rows become the frozen part
            self._offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
            self._values = flat
            return
        end = int(self._tail_offsets[self._n_tail])
        self._tail_values = put_growing(self._tail_values, end, flat)
        self._tail_offsets = put_growing(self._tail_offsets, self._n_tail + 1,
                                         end + np.cumsum(lens))
        self._n_tail += len(rows)

    def lengths(self, idx: NDArray[np.int64]) -> NDArray[np.int64]:
        base = len(self._offsets) - 1
        out = np.empty(len(idx), np.int64)
        low = idx < base
        b, t = idx[low], idx[~low] - base
        out[low] = self._offsets[b + 1] - self._offsets[b]
        out[~low] = self._tail_offsets[t + 1] - self._tail_offsets[t]
        return out

    def gather(self, idx: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[Any]]:
        """(row number within ``idx``, value) for every value of the rows ``idx``."""
        base = len(self._offsets) - 1
        low = idx < base
        rows, vals = [], []
        for mask, offsets, values, shift in ((low, self._offsets, self._values, 0),
                                             (~low, self._tail_offsets, self._tail_values,
                                              base)):
            which = np.flatnonzero(mask)
            if len(which) == 0:
                continue
            k = idx[which] - shift
            start, lens = offsets[k], offsets[k + 1] - offsets[k]
            total = int(lens.sum())
            shifts = np.repeat(start - np.cumsum(lens) + lens, lens)
            vals.append(values[np.arange(total) + shifts])
            rows.append(np.repeat(which, lens))
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, self._values.dtype)
        return np.concatenate(rows).astype(np.int64), np.concatenate(vals)

    def state(self) -> State:
        if not self._n_tail:
            return {"offsets": self._offsets, "values": self._values}
        n = self._n_tail
        tail = self._tail_offsets[1:n + 1] + self._offsets[-1]
        return {"offsets": np.concatenate([self._offsets, tail]),
                "values": np.concatenate([self._values,
                                          self._tail_values[:int(self._tail_offsets[n])]])}

    @classmethod
    def from_state(cls, state: State) -> Ragged:
        col = cls(state["values"].dtype.type)
        col._offsets, col._values = state["offsets"], state["values"]
        _check(len(col._offsets) >= 1 and int(col._offsets[-1]) == len(col._values),
               "row offsets do not match the values")
        return col


class Codes:
    """A string per position stored as a small integer code (0 = the empty string)."""

    def __init__(self) -> None:
        self.names: list[str] = [""]
        self._ids: dict[str, int] = {"": 0}
        self._codes: NDArray[np.int32] = np.zeros(0, np.int32)
        self.n = 0

    def extend(self, values: Sequence[str]) -> None:
        ids, names = self._ids, self.names
        codes = np.fromiter((ids.setdefault(v, len(ids)) for v in values), np.int32, len(values))
        if len(ids) > len(names):
            names.extend(list(ids)[len(names):])
        self._codes = put_growing(self._codes, self.n, codes)
        self.n += len(values)

    @property
    def codes(self) -> NDArray[np.int32]:
        return self._codes[:self.n]

    def state(self) -> State:
        return {"names": list(self.names), "codes": self.codes}

    @classmethod
    def from_state(cls, state: State) -> Codes:
        col = cls()
        col.names = list(state["names"])
        col._ids = {name: i for i, name in enumerate(col.names)}
        col._codes = state["codes"]
        col.n = len(col._codes)
        _check(col.names[:1] == [""] and (col.n == 0 or int(col._codes.max()) < len(col.names)),
               "codes out of range")
        return col


class DamagedStateError(ValueError):
    """Saved search-index state that does not hold together."""


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise DamagedStateError(what)


# ---- saving and loading ----------------------------------------------------------------------
def save_state(path: Path, state: State) -> int:
    """Write ``state`` under the directory ``path``; returns the bytes written."""
    path.mkdir(parents=True, exist_ok=True)
    small: dict[str, Any] = {}
    big = 0

    def walk(node: Any, key: str) -> Any:
        nonlocal big
        if isinstance(node, dict):
            return {k: walk(v, f"{key}.{k}" if key else k) for k, v in node.items()}
        if isinstance(node, np.ndarray):
            if node.nbytes >= MMAP_BYTES:
                np.save(path / f"{key}.npy", np.ascontiguousarray(node))
                big += node.nbytes
                return {"__npy__": key}
            small[key] = np.asarray(node)
            return {"__npz__": key}
        return node

    doc = walk(state, "")
    np.savez(path / "small.npz", **small)
    (path / "state.json").write_text(json.dumps(doc, ensure_ascii=False))
    return big + sum(int(a.nbytes) for a in small.values())


def load_state(path: Path) -> State:
    """The state under ``path``, large arrays memory-mapped read-only."""
    doc = json.loads((path / "state.json").read_text())
    with np.load(path / "small.npz", allow_pickle=False) as z:
        small = {k: z[k] for k in z.files}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "__npy__" in node:
                mapped = np.load(path / f"{node['__npy__']}.npy", mmap_mode="r",
                                 allow_pickle=False)
                return mapped.view(np.ndarray)  # plain arrays over the mapping
            if "__npz__" in node:
                return small[node["__npz__"]]
            return {k: walk(v) for k, v in node.items()}
        return node

    state: State = walk(doc)
    return state


def release_pages(array: NDArray[Any]) -> bool:
    """Drop this process's pages of the file mapping under ``array`` (read once, e.g. an
    index deserialised into its own memory): they stay in the page cache and count in RSS
    only if read again. False when ``array`` is not memory-mapped."""
    import mmap

    node: Any = array
    while node is not None:
        mapping = node if isinstance(node, mmap.mmap) else getattr(node, "_mmap", None)
        if isinstance(mapping, mmap.mmap):
            mapping.madvise(mmap.MADV_DONTNEED)
            return True
        node = getattr(node, "base", None)
    return False
