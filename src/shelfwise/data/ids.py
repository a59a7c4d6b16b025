"""Mapping between external string ids and dense internal integer indices."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from shelfwise.exceptions import NotFoundError


class IdMap:
    """Append-only bijection external id <-> index 0..n-1 (indices never change once given)."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ext: list[str] = []
        self._idx: dict[str, int] = {}
        self.add(ids)

    def __len__(self) -> int:
        return len(self._ext)

    def __contains__(self, ext: object) -> bool:
        return ext in self._idx

    def add(self, ids: Iterable[str]) -> NDArray[np.int64]:
        """Index every id (new ones appended) and return their indices."""
        out = []
        for ext in ids:
            idx = self._idx.get(ext)
            if idx is None:
                idx = len(self._ext)
                self._idx[ext] = idx
                self._ext.append(ext)
            out.append(idx)
        return np.asarray(out, dtype=np.int64)

    def index(self, ext: str) -> int:
        try:
            return self._idx[ext]
        except KeyError:
            raise NotFoundError(f"unknown id {ext!r}") from None

    def get(self, ext: str) -> int | None:
        return self._idx.get(ext)

    def indices(self, ids: Iterable[str], *, missing: int = -1) -> NDArray[np.int64]:
        """Indices of ``ids``; unknown ids become ``missing``."""
        return np.asarray([self._idx.get(e, missing) for e in ids], dtype=np.int64)

    def external(self, idx: int) -> str:
        return self._ext[idx]

    def externals(self, idx: Sequence[int] | NDArray[np.int64]) -> list[str]:
        ext = self._ext
        return [ext[int(i)] for i in idx]

    @property
    def ids(self) -> list[str]:
        return list(self._ext)

    def copy(self) -> IdMap:
        return IdMap(self._ext)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self._ext, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> IdMap:
        return cls(json.loads(path.read_text()))
