"""Semantic generator: items and users meet in the text encoder's vector space."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from shelfwise.data.interactions import History, Interactions
from shelfwise.exceptions import ConfigError
from shelfwise.retrieval.ann import EXACT_THRESHOLD, VectorIndex, fill_value, spread_sample
from shelfwise.retrieval.base import (
    BaseGenerator,
    GeneratorConfig,
    Scores,
    SparseRow,
    best_unordered,
)
from shelfwise.retrieval.passages import PassageVectors, centre
from shelfwise.retrieval.pgvector import PgVectorIndex
from shelfwise.retrieval.text_items import TextItems
from shelfwise.text.base import TextEncoder

SCRIPTS = ("han", "other")
CENTER_SHRINK = 5.0
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def script_of(text: str) -> str:
    """Coarse script of a text: 'han' (Chinese characters) or 'other'."""
    return "han" if _HAN.search(text or "") else "other"


class SemanticConfig(GeneratorConfig):
    encoder: str = Field(
        default="e5",
        description="text encoder: e5, e5-fp32, e5-static (distilled from e5: fast, less "
        "accurate, for very large catalogs), use, minilm, or a directory written by "
        "`shelfwise finetune` (copied into the bundle)",
    )
    profile_decay: float = Field(
        default=0.8, gt=0, le=1, description="weight of a history item d steps back: decay**d"
    )
    max_history: int = Field(default=50, ge=1)
    batch_size: int = Field(default=64, ge=1)
    center: bool = Field(
        default=True,
        description="subtract each script's mean item vector (removes language identity, which "
        "otherwise dominates item-item similarity in mixed zh/en catalogs)",
    )
    exact_items: int = Field(
        default=EXACT_THRESHOLD, ge=0,
        description="catalogs up to this many items are scored against every item vector and "
        "indexed exactly; larger ones use an HNSW index and score each profile exactly only on "
        "its `ann_candidates` nearest items (the rest get a typical score), so a request costs "
        "the same at 100k items as at 10k")
    ann_candidates: int = Field(
        default=400, ge=10,
        description="items scored exactly per profile above `exact_items` (HNSW top list)")


class Semantic(TextItems, BaseGenerator):
    """Scores items by cosine between their text embedding and the user's profile vector.

    The profile is the recency-weighted mean of the history items' vectors. Every catalog item
    with text has a vector, so items nobody has touched yet — new arrivals — are recommendable;
    :meth:`add_items` embeds items posted after training.
    """

    name = "semantic"
    Config = SemanticConfig
    config: SemanticConfig
    mapped = ("vectors", "raw_vectors")  # raw_vectors: bundles before passage norms
    fill_sample = 2048
    """Items (evenly spaced) whose exact scores set a large catalog's row range and fill."""
    raw_vectors_: PassageVectors
    """The encoder's own passage vectors (what a query is matched against)."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._encoder: TextEncoder | None = None
        self._index: VectorIndex | PgVectorIndex | None = None
        self._index_lock = threading.Lock()  # builds the index once; guards the list memo
        self._sample: tuple[NDArray[np.int64], NDArray[np.float32]] | None = None
        self._recent: dict[bytes, tuple[int, NDArray[np.int64], NDArray[np.float32]]] = {}

    # ---- fitting and scoring -------------------------------------------------------------
    def _fit(self, data: Interactions) -> None:
        if data.item_text is None:
            raise ConfigError(
                "the semantic generator needs item text (titles); this catalog has none — "
                "import items with a title or drop 'semantic' from the generators"
            )
        raw = self.embed(data.item_text)
        scripts = np.asarray([script_of(t) for t in data.item_text])
        means = np.zeros((len(SCRIPTS), raw.shape[1]), dtype=np.float32)
        if self.config.center:
            for k, name in enumerate(SCRIPTS):
                rows = (scripts == name) & (np.linalg.norm(raw, axis=1) > 0)
                n = int(rows.sum())
                if n:  # shrunk toward 0 so a mean of a handful of items stays mostly off
                    means[k] = raw[rows].mean(axis=0) * (n / (n + CENTER_SHRINK))
        self.script_means_ = means
        self.vectors_, self.raw_vectors_ = self._centered(raw, data.item_text)
        self.encoder_id_ = self.encoder.id
        self._index = None
        self._sample = None
        self._recent = {}

    def _centered(self, raw: NDArray[np.float32], texts: Sequence[str]
                  ) -> tuple[NDArray[np.float32], PassageVectors]:
        """The rows' centred unit vectors and the raw passage vectors in terms of them."""
        if not self.config.center:
            return raw, PassageVectors(raw)
        codes = np.asarray([SCRIPTS.index(script_of(t)) for t in texts], dtype=np.int64)
        return centre(raw, codes, self.script_means_)

    def add_items(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> None:
        """Append vectors for new items (indices continue after the current ones); ``ids``
        name them for an index keyed by item id (pgvector)."""
        raw = self.embed(texts)
        new, passages = self._centered(raw, texts)
        old = self.raw_vectors_
        self.vectors_ = np.vstack([self.vectors_, new])
        if passages.norms is not None and passages.scripts is not None and isinstance(
                old, PassageVectors) and old.norms is not None and old.scripts is not None:
            self.raw_vectors_ = PassageVectors(
                self.vectors_, np.concatenate([old.norms, passages.norms]),
                np.concatenate([old.scripts, passages.scripts]), old.means)
        elif not self.config.center:
            self.raw_vectors_ = PassageVectors(self.vectors_)
        else:  # a bundle that saved its raw vectors
            self.raw_vectors_ = PassageVectors(np.vstack([np.asarray(old), raw]))
        self._n_items = self.vectors_.shape[0]
        if self._index is not None:  # searches wait while it grows (VectorIndex)
            self._index.add(new, ids)
        with self._index_lock:
            self._recent.clear()

    def profile(self, history: History) -> NDArray[np.float32]:
        """Recency-weighted, L2-normalised mean of the history's item vectors (zeros if none)."""
        h = np.asarray(history, dtype=np.int64)[-self.config.max_history :]
        h = h[(h >= 0) & (h < self.vectors_.shape[0])]
        if len(h) == 0:
            return np.zeros(self.vectors_.shape[1], dtype=np.float32)
        w = self.config.profile_decay ** np.arange(len(h) - 1, -1, -1, dtype=np.float32)
        p = (w[:, None] * self.vectors_[h]).sum(axis=0)
        norm = float(np.linalg.norm(p))
        out: NDArray[np.float32] = (p / norm if norm > 0 else p).astype(np.float32)
        return out

    @property
    def approximate(self) -> bool:
        """Whether scores are exact only on top lists (catalog above ``exact_items``)."""
        return bool(self.vectors_.shape[0] > self.config.exact_items)

    def _profiles(self, histories: Sequence[History]) -> NDArray[np.float32]:
        return np.vstack([self.profile(h) for h in histories]) if histories else np.zeros(
            (0, self.vectors_.shape[1]), np.float32)

    def _score(self, histories: Sequence[History]) -> Scores:
        if self.approximate and len(histories):
            return self._score_candidates(self._profiles(histories))
        return self.score_exact(histories)

    def score_exact(self, histories: Sequence[History]) -> Scores:
        """Every item's exact cosine whatever the catalog size (a full scan): for callers
        that read scores of arbitrary items, e.g. the two-stage pipeline's features and its
        cold-item candidates."""
        out: Scores = np.asarray(self._profiles(histories) @ self.vectors_.T, dtype=np.float32)
        return out

    def score_focused(self, histories: Sequence[History],
                      focus: Sequence[NDArray[np.int64]]) -> Scores:
        """:meth:`score`, and exact on each history's ``focus`` items too (a blend's other
        parts' best items: see :meth:`~shelfwise.retrieval.blend.Blend.score_parts`)."""
        if not self.approximate or not len(histories):
            return self.score(histories)
        profiles = self._profiles(histories)
        out = self._score_candidates(profiles)
        for row, items in enumerate(focus):
            items = items[(items >= 0) & (items < out.shape[1])]
            if len(items) and profiles[row].any():
                out[row, items] = self.vectors_[items] @ profiles[row]
        return out

    def _score_candidates(self, profiles: NDArray[np.float32]) -> Scores:
        """Large catalogs: exact cosines for each profile's ANN top list and a fixed sample of
        items; every other item gets the sample's median. A blend's per-row min-max then sees
        nearly the same range as with every cosine (the sample's minimum stands in for the
        catalog's), and the items that can reach the top of a list keep their exact score.
        Measured against exact scoring by ``benchmarks/bench_semantic_ann.py``."""
        n = self.vectors_.shape[0]
        sample, s_scores, idx, val, fill = self._candidates(profiles)
        ok = idx >= 0
        out = np.repeat(fill[:, None], n, axis=1)
        rows = np.arange(profiles.shape[0])[:, None]
        out[rows, sample[None, :]] = s_scores
        out[np.nonzero(ok)[0], idx[ok]] = val[ok]
        empty = ~profiles.any(axis=1)
        out[empty] = 0.0
        return out

    def sparse_row(self, history: History, focus: NDArray[np.int64] | None = None
                   ) -> SparseRow | None:
        """:meth:`score_focused` of one history as a :class:`SparseRow` (large catalogs
        only): the sample's and the top list's exact cosines, then the focus items', over
        the fill value."""
        if not self.approximate:
            return None
        n = self.vectors_.shape[0]
        profiles = self._profiles([history])
        if not profiles[0].any():
            return SparseRow(n, 0.0, np.zeros(0, np.int64), np.zeros(0, np.float32))
        sample, s_scores, idx, val, fill = self._candidates(profiles)
        ok = idx >= 0
        parts_idx = [sample, idx[ok]]
        parts_val = [s_scores[0], val[ok]]
        if focus is not None:
            items = focus[(focus >= 0) & (focus < n)]
            parts_idx.append(items)
            parts_val.append(self.vectors_[items] @ profiles[0])
        return SparseRow.of(n, float(fill[0]), np.concatenate(parts_idx),
                            np.concatenate(parts_val))

    def _candidates(self, profiles: NDArray[np.float32]) -> tuple[
            NDArray[np.int64], Scores, NDArray[np.int64], Scores, NDArray[np.float32]]:
        """Per profile: the fill sample's items and exact cosines, the ANN list (exactly
        rescored, -1 pads) and the value every other item gets."""
        sample, vecs = self._fill_sample()
        s_scores = profiles @ vecs.T
        idx, val = self.search_vectors(profiles, self.config.ann_candidates)
        fill = fill_value(s_scores, np.where(idx >= 0, val, np.inf))
        return sample, s_scores, idx, val, fill

    def _fill_sample(self) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The :attr:`fill_sample` items and their vectors (gathered once)."""
        n = self.vectors_.shape[0]
        if self._sample is None:
            idx = spread_sample(n, self.fill_sample)
            self._sample = idx, np.ascontiguousarray(self.vectors_[idx], dtype=np.float32)
        return self._sample

    @property
    def index(self) -> VectorIndex | PgVectorIndex:
        """ANN index over the item vectors (built on first use): exact up to
        ``config.exact_items`` items, HNSW above; or the pgvector table :meth:`use_index`
        gave it."""
        with self._index_lock:
            if self._index is None:
                self._index = self._faiss_index()
            return self._index

    def _faiss_index(self) -> VectorIndex:
        n = self.vectors_.shape[0]
        index = VectorIndex(self.vectors_.shape[1], exact=n <= self.config.exact_items,
                            quantized=True)
        index.add(self.vectors_)
        return index

    def use_index(self, index: PgVectorIndex) -> None:
        """Search ``index`` (over these rows, in this order) instead of the bundle's faiss
        index, which is let go."""
        with self._index_lock:
            self._index = index
            self._recent.clear()

    def search_vectors(self, queries: NDArray[np.float32], k: int) -> tuple[
            NDArray[np.int64], NDArray[np.float32]]:
        """Nearest items by cosine, best first (-1 pads); scores exact even when the index
        stores 8-bit vectors (its list is rescored with the item vectors)."""
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        key = q.tobytes() if q.shape[0] == 1 else None
        with self._index_lock:  # one request asks twice for the profile's list (scores and
            hit = self._recent.get(key) if key else None  # new arrivals): search it once
        if hit is not None and hit[0] >= k:
            return hit[1][:, :k].copy(), hit[2][:, :k].copy()
        idx, val = self._search(q, k)
        if key is not None:
            with self._index_lock:
                self._recent[key] = (k, idx, val)
                while len(self._recent) > 8:
                    self._recent.pop(next(iter(self._recent)))
        return idx.copy(), val.copy()

    def _search(self, q: NDArray[np.float32], k: int) -> tuple[
            NDArray[np.int64], NDArray[np.float32]]:
        index = self.index
        idx, val = index.search(q, k)  # concurrent searches run side by side
        if not index.quantized:
            return idx, val
        val = np.full(idx.shape, -np.inf, np.float32)
        for row in range(idx.shape[0]):  # row by row: a batch's gathered rows stay small
            ok = idx[row] >= 0
            val[row, ok] = self.vectors_[idx[row, ok]] @ q[row]
        order = np.argsort(-val, axis=1, kind="stable")
        idx, val = np.take_along_axis(idx, order, 1), np.take_along_axis(val, order, 1)
        idx[~np.isfinite(val)] = -1
        return idx, val

    def search_text(self, query: str, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Items closest to a free-text query (any language the encoder knows); the query is
        matched against the raw passage vectors, as the encoder was trained (asymmetric)."""
        q = self.encoder.encode_queries([query])[0]
        scores = self.raw_vectors_ @ q
        top = best_unordered(scores, k)
        top = top[np.argsort(-scores[top], kind="stable")]
        return top.astype(np.int64), scores[top].astype(np.float32)

    # ---- persistence ---------------------------------------------------------------------
    def _state(self) -> dict[str, NDArray[Any]]:
        out = {"vectors": self.vectors_, "script_means": self.script_means_,
               "encoder_id": np.asarray(self.encoder_id_)}
        raw = self.raw_vectors_
        if not isinstance(raw, PassageVectors) or (
                raw.norms is None and raw.centred is not self.vectors_):
            out["raw_vectors"] = np.asarray(raw, dtype=np.float32)
        elif raw.norms is not None and raw.scripts is not None and raw.means is not None:
            out |= {"passage_norms": raw.norms, "passage_scripts": raw.scripts,
                    "passage_means": raw.means}  # the raw vectors are these and the vectors
        return out

    def _set_state(self, state: dict[str, NDArray[Any]]) -> None:
        self.vectors_ = np.asarray(state["vectors"], dtype=np.float32)  # no copy of a mapping
        if "raw_vectors" in state:
            self.raw_vectors_ = PassageVectors(
                np.asarray(state["raw_vectors"], dtype=np.float32))
        elif "passage_norms" in state:
            self.raw_vectors_ = PassageVectors(
                self.vectors_, state["passage_norms"].astype(np.float32),
                state["passage_scripts"], state["passage_means"].astype(np.float32))
        else:  # not centred: the raw vectors are the vectors
            self.raw_vectors_ = PassageVectors(self.vectors_)
        self.script_means_ = state["script_means"].astype(np.float32)
        self.encoder_id_ = str(state["encoder_id"])
        self._sample = None
        self._recent = {}

    def save(self, path: Path) -> None:
        from shelfwise.text.base import is_tuned_dir

        super().save(path)
        index = self.index  # a bundle always carries its faiss index
        (index if isinstance(index, VectorIndex) else self._faiss_index()).save(
            path / "index.faiss")
        if is_tuned_dir(self.config.encoder):  # the bundle carries its tuned encoder
            shutil.copytree(self.config.encoder, path / "encoder", dirs_exist_ok=True)

    @classmethod
    def load(cls, path: Path) -> Semantic:
        obj = super().load(path)
        if (path / "index.faiss").is_file():
            obj._index = VectorIndex.load(path / "index.faiss")
        if (path / "encoder").is_dir():
            obj.config = obj.config.model_copy(update={"encoder": str(path / "encoder")})
        return obj
