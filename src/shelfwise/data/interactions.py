"""The in-memory interaction log that every generator trains on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import NDArray

from shelfwise.columns import Columns
from shelfwise.data.ids import IdMap
from shelfwise.data.schemas import DEFAULT_TYPE_WEIGHTS
from shelfwise.exceptions import DataValidationError, FieldProblem

History = NDArray[np.int64]
"""A user's interacted item indices, oldest first."""


@dataclass
class Interactions:
    """User-item interactions with dense indices, sorted by (user, time, original order).

    ``has_time`` is False when timestamps only encode order (sequence datasets); time-aware models
    then ignore absolute gaps.
    """

    users: IdMap
    items: IdMap
    user_idx: NDArray[np.int64]
    item_idx: NDArray[np.int64]
    timestamp: NDArray[np.float64]
    weight: NDArray[np.float32]
    has_time: bool = True
    item_text: list[str] | None = field(default=None, repr=False)
    """Text of each item (by item index) for content models; None when the catalog has none."""
    _histories: list[History] | None = field(default=None, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def __len__(self) -> int:
        return int(self.user_idx.shape[0])

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        items: IdMap | None = None,
        users: IdMap | None = None,
        has_time: bool = True,
        type_weights: Mapping[str, float] | None = None,
        item_text: Mapping[str, str] | None = None,
    ) -> Interactions:
        """Build from a frame with ``user_id``, ``item_id`` and optionally ``timestamp``,
        ``weight`` or ``type`` columns. ``items`` may pre-seed the item index (whole catalog);
        ``item_text`` maps item ids to the text content models read."""
        missing = [c for c in (Columns.USER, Columns.ITEM) if c not in frame.columns]
        if missing:
            raise DataValidationError(
                "interactions frame",
                [FieldProblem(None, c, "column is missing") for c in missing],
            )
        users = users.copy() if users is not None else IdMap()
        items = items.copy() if items is not None else IdMap()
        u = users.add(frame[Columns.USER].astype(str).tolist())
        i = items.add(frame[Columns.ITEM].astype(str).tolist())
        n = len(frame)
        if Columns.TIME in frame.columns:
            ts = _to_seconds(frame[Columns.TIME])
        else:
            ts = np.arange(n, dtype=np.float64)
            has_time = False
        if Columns.WEIGHT in frame.columns:
            w = frame[Columns.WEIGHT].to_numpy(dtype=np.float32)
        elif Columns.TYPE in frame.columns:
            tw = dict(DEFAULT_TYPE_WEIGHTS if type_weights is None else type_weights)
            w = frame[Columns.TYPE].astype(str).map(tw).fillna(1.0).to_numpy(dtype=np.float32)
        else:
            w = np.ones(n, dtype=np.float32)
        order = np.lexsort((np.arange(n), ts, u))
        texts = None if item_text is None else [item_text.get(e, "") for e in items.ids]
        return cls(users, items, u[order], i[order], ts[order], w[order], has_time, texts)

    def histories(self) -> list[History]:
        """Item sequence of every user (index = user index), oldest first."""
        if self._histories is None:
            bounds = np.searchsorted(self.user_idx, np.arange(self.n_users + 1))
            self._histories = [
                self.item_idx[bounds[k] : bounds[k + 1]] for k in range(self.n_users)
            ]
        return self._histories

    def to_csr(self, *, binary: bool = False) -> sp.csr_matrix:
        """User x item matrix of summed weights (or 1/0 when ``binary``)."""
        data = np.ones(len(self), dtype=np.float32) if binary else self.weight
        m = sp.csr_matrix(
            (data, (self.user_idx, self.item_idx)), shape=(self.n_users, self.n_items)
        )
        m.sum_duplicates()
        if binary:
            m.data[:] = 1.0
        return m

    def select(self, mask: NDArray[np.bool_]) -> Interactions:
        """Rows where ``mask`` holds, keeping both id maps (indices stay valid)."""
        return Interactions(
            self.users,
            self.items,
            self.user_idx[mask],
            self.item_idx[mask],
            self.timestamp[mask],
            self.weight[mask],
            self.has_time,
            self.item_text,
        )

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                Columns.USER: self.users.externals(self.user_idx),
                Columns.ITEM: self.items.externals(self.item_idx),
                Columns.TIME: self.timestamp,
                Columns.WEIGHT: self.weight,
            }
        )


def _to_seconds(col: pd.Series) -> NDArray[np.float64]:
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64)
    parsed = pd.to_datetime(col, utc=True)
    epoch = pd.Timestamp(0, tz="UTC")
    return np.asarray((parsed - epoch).dt.total_seconds(), dtype=np.float64)
