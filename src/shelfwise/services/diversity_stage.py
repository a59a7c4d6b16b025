"""The ``diversity`` stage: re-ranks the top of a feed, search or similar-items list.

The knob is the request's ``diversity`` (None = ``[serve.diversity].default``). Before the
candidates stage runs, :meth:`Diversity.prepare` asks it for a pool of ``pool`` items instead
of ``n`` when there is something to do (knob > 0 or a cap); at knob 0 without caps nothing
changes, so the list is exactly the model's. Item vectors are the semantic generator's
(centred) vectors where the bundle has them, else the catalog's categories as one-hot rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
from numpy.typing import NDArray

from shelfwise.ranking.diversity import DiversityConfig, diversify

if TYPE_CHECKING:
    from shelfwise.services.engine import Engine
    from shelfwise.services.stages import Slate


class Diversity:
    """Diversity re-ranking (MMR, greedy DPP or calibration; category/brand caps)."""

    name: ClassVar[str] = "diversity"

    def __init__(self, engine: Engine) -> None:
        self.config: DiversityConfig = engine.settings.diversity
        self.rec = engine.recommender

    def _active(self, slate: Slate) -> bool:
        c = self.config
        return bool(slate.diversity) or c.max_per_category is not None \
            or c.max_per_brand is not None

    def prepare(self, slate: Slate) -> None:
        """Resolve the knob and widen the candidate pool (runs before any stage)."""
        if slate.diversity is None:
            slate.diversity = self.config.default
        if self._active(slate):
            slate.pool = max(self.config.pool, slate.n)

    def __call__(self, slate: Slate) -> None:
        if not self._active(slate) or not slate.items:
            return
        k = max(0, slate.n - slate.explore_slots)
        pool = slate.items[: max(self.config.pool, k)]
        ids = [c.item_id for c in pool]
        labels = _Labels()
        got = [self.rec.catalog.labels(i) for i in ids]
        cats = np.asarray([labels.of(tuple(g[0])) if g and g[0] else -1 for g in got],
                          np.int64)
        brands = _Labels()
        brand = np.asarray([brands.of(g[1]) if g and g[1] else -1 for g in got], np.int64)
        history = None
        if self.config.method == "calibrated" and slate.surface in ("feed", "search"):
            h = slate.history if len(slate.history) or slate.user_id is None \
                else self.rec.history(slate.user_id)
            hist_items = [self.rec.catalog.get(e) for e in self.rec.items.externals(h[-50:])]
            history = np.asarray([labels.of(tuple(it.category)) for it in hist_items
                                  if it is not None and it.category], np.int64)
        order = diversify(
            self.config.method, np.asarray([c.score for c in pool]), float(slate.diversity or 0),
            k, vectors=self._vectors(ids), categories=cats if (cats >= 0).any() else None,
            history_categories=history, brands=brand, max_per_category=self.config.max_per_category,
            max_per_brand=self.config.max_per_brand,
            smoothing=self.config.calibration_smoothing)
        slate.items = [pool[int(i)] for i in order]

    def _vectors(self, ids: list[str]) -> NDArray[np.float32] | None:
        sem = self.rec.semantic
        if sem is None:
            return None
        vec = sem.vectors_
        idx = self.rec.items.indices(ids)
        ok = (idx >= 0) & (idx < vec.shape[0])
        out = np.zeros((len(ids), vec.shape[1]), np.float32)
        out[ok] = vec[idx[ok]]
        return out


class _Labels:
    """Small integer labels for the categories (or brands) met in one request."""

    def __init__(self) -> None:
        self.ids: dict[object, int] = {}

    def of(self, key: object) -> int:
        return self.ids.setdefault(key, len(self.ids))
