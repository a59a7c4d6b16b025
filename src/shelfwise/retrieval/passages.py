"""Raw passage vectors kept as the semantic generator's centred ones plus one norm per item.

The semantic generator scores items and profiles with centred unit vectors ``c`` (each script's
mean item vector removed), while search matches a query against the raw passage vector ``r``,
as e5 was trained (asymmetric). With ``m`` the item's script mean (a zero row for an item
without text) and ``n = |r - m|``, ``r = n * c + m``: one float and one byte per item stand in
for a second item-by-dimension matrix. At 100k items that is one 154 MB mapping instead of two,
and both were wholly resident after a few hundred requests (a spread sample of rows faults in
every page around it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray


class PassageVectors:
    """Read-only rows ``norms[i] * centred[i] + means[scripts[i]]`` (or ``centred`` itself when
    ``norms`` is None): slicing gives a view, integer indexing the rows, ``@`` a product with
    every row; ``np.asarray`` materialises the whole matrix."""

    def __init__(self, centred: NDArray[np.float32], norms: NDArray[np.float32] | None = None,
                 scripts: NDArray[np.integer[Any]] | None = None,
                 means: NDArray[np.float32] | None = None) -> None:
        self.centred = centred
        self.norms = norms
        self._shift: tuple[NDArray[np.integer[Any]], NDArray[np.float32]] | None = None
        if norms is not None or scripts is not None or means is not None:
            if norms is None or scripts is None or means is None:
                raise ValueError("give norms, scripts and means together, or none of them")
            if not len(norms) == len(scripts) == len(centred):
                raise ValueError(f"{len(norms)} norms and {len(scripts)} scripts for "
                                 f"{len(centred)} rows")
            self._shift = scripts, means

    @property
    def scripts(self) -> NDArray[np.integer[Any]] | None:
        """Each row's index into :attr:`means` (None when the rows are the centred ones)."""
        return None if self._shift is None else self._shift[0]

    @property
    def means(self) -> NDArray[np.float32] | None:
        return None if self._shift is None else self._shift[1]

    @classmethod
    def of(cls, vectors: NDArray[np.float32] | PassageVectors) -> PassageVectors:
        """``vectors`` as rows (a plain matrix is kept as it is)."""
        return vectors if isinstance(vectors, PassageVectors) else cls(vectors)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.centred.shape[0]), int(self.centred.shape[1])

    @property
    def dtype(self) -> np.dtype[np.float32]:
        return np.dtype(np.float32)

    def __len__(self) -> int:
        return int(self.centred.shape[0])

    @overload
    def __getitem__(self, key: slice) -> PassageVectors: ...
    @overload
    def __getitem__(self, key: int | np.integer[Any] | NDArray[np.integer[Any]]
                    | Sequence[int]) -> NDArray[np.float32]: ...

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            if key.step not in (None, 1):
                raise IndexError("passage vectors slice without a step")
            if self.norms is None or self._shift is None:
                return PassageVectors(self.centred[key])
            return PassageVectors(self.centred[key], self.norms[key], self._shift[0][key],
                                  self._shift[1])
        rows = np.asarray(self.centred[key], dtype=np.float32)
        if self.norms is None or self._shift is None:
            return rows
        scripts, means = self._shift
        norms = np.asarray(self.norms[key], dtype=np.float32)
        out: NDArray[np.float32] = norms[..., None] * rows + means[scripts[key]]
        return out.astype(np.float32, copy=False)

    def __matmul__(self, q: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """Every row's product with ``q`` (a vector, or a matrix with one column per query)
        in one pass over the centred matrix."""
        q = np.asarray(q, dtype=np.float32)
        prod = np.asarray(self.centred @ q, dtype=np.float32)
        if self.norms is None or self._shift is None:
            return prod
        scripts, means = self._shift
        shift = np.asarray(means @ q, dtype=np.float32)[scripts]
        norms = self.norms if q.ndim == 1 else self.norms[:, None]
        out: NDArray[np.float32] = (norms * prod + shift).astype(np.float32, copy=False)
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> NDArray[Any]:
        whole = self[np.arange(len(self))] if self.norms is not None else np.asarray(
            self.centred, dtype=np.float32)
        return whole if dtype is None else whole.astype(dtype, copy=False)


def centre(raw: NDArray[np.float32], scripts: NDArray[np.integer[Any]],
           means: NDArray[np.float32]) -> tuple[NDArray[np.float32], PassageVectors]:
    """Unit vectors of ``raw - means[scripts]`` (zero rows stay zero) and the
    :class:`PassageVectors` that give ``raw`` back from them. ``means`` gets a zero row
    appended for rows without text."""
    zero = ~raw.any(axis=1)
    out = raw - means[scripts]
    out[zero] = 0.0
    unit, norm = _unit_rows(out)
    codes = np.where(zero, len(means), scripts).astype(np.int8)
    extended = np.vstack([means, np.zeros((1, raw.shape[1]), np.float32)]).astype(np.float32)
    return unit, PassageVectors(unit, norm, codes, extended)


def centred(vectors: NDArray[np.float32], means: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows minus ``means`` (one row per vector, or one for all), L2-normalised (zero rows
    stay zero): how the semantic generator centres item vectors, for query vectors."""
    return _unit_rows(np.asarray(vectors, np.float32) - means)[0]


def _unit_rows(out: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Rows scaled to unit length (zero rows stay zero), and their former lengths."""
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    unit: NDArray[np.float32] = np.divide(
        out, norm, out=np.zeros_like(out), where=norm > 0).astype(np.float32)
    return unit, norm[:, 0].astype(np.float32)


Rows = NDArray[np.float32] | PassageVectors
"""Item vectors as a plain matrix or as :class:`PassageVectors`."""


def as_rows(vectors: Rows) -> Rows:
    """``vectors`` kept as they are when passage vectors, else as a float32 matrix (no copy of
    one)."""
    return vectors if isinstance(vectors, PassageVectors) else np.asarray(vectors, np.float32)
