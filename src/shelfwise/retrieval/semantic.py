"""Semantic generator: items and users meet in the text encoder's vector space."""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from shelfwise.data.interactions import History, Interactions
from shelfwise.exceptions import ConfigError
from shelfwise.retrieval.ann import VectorIndex
from shelfwise.retrieval.base import BaseGenerator, GeneratorConfig, Scores
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
        description="text encoder: e5, e5-fp32, use, minilm, or a directory written by "
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


class Semantic(TextItems, BaseGenerator):
    """Scores items by cosine between their text embedding and the user's profile vector.

    The profile is the recency-weighted mean of the history items' vectors. Every catalog item
    with text has a vector, so items nobody has touched yet — new arrivals — are recommendable;
    :meth:`add_items` embeds items posted after training.
    """

    name = "semantic"
    Config = SemanticConfig
    config: SemanticConfig

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._encoder: TextEncoder | None = None
        self._index: VectorIndex | None = None

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
        self.raw_vectors_ = raw
        self.vectors_ = self._centered(raw, data.item_text)
        self.encoder_id_ = self.encoder.id
        self._index = None

    def _centered(self, raw: NDArray[np.float32], texts: Sequence[str]) -> NDArray[np.float32]:
        if not self.config.center:
            return raw
        idx = [SCRIPTS.index(script_of(t)) for t in texts]
        out = raw - self.script_means_[idx]
        out[np.linalg.norm(raw, axis=1) == 0] = 0.0
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        centered: NDArray[np.float32] = np.divide(
            out, norm, out=np.zeros_like(out), where=norm > 0).astype(np.float32)
        return centered

    def add_items(self, texts: Sequence[str]) -> None:
        """Append vectors for new items (indices continue after the current ones)."""
        raw = self.embed(texts)
        new = self._centered(raw, texts)
        self.raw_vectors_ = np.vstack([self.raw_vectors_, raw])
        self.vectors_ = np.vstack([self.vectors_, new])
        self._n_items = self.vectors_.shape[0]
        if self._index is not None:
            self._index.add(new)

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

    def _score(self, histories: Sequence[History]) -> Scores:
        profiles = np.vstack([self.profile(h) for h in histories]) if histories else np.zeros(
            (0, self.vectors_.shape[1]), np.float32)
        scores: Scores = np.asarray(profiles @ self.vectors_.T, dtype=np.float32)
        return scores

    @property
    def index(self) -> VectorIndex:
        """ANN index over the item vectors (built on first use)."""
        if self._index is None:
            self._index = VectorIndex(self.vectors_.shape[1], n_hint=self.vectors_.shape[0])
            self._index.add(self.vectors_)
        return self._index

    def search_vectors(self, queries: NDArray[np.float32], k: int) -> tuple[
            NDArray[np.int64], NDArray[np.float32]]:
        return self.index.search(queries, k)

    def search_text(self, query: str, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Items closest to a free-text query (any language the encoder knows); the query is
        matched against the raw passage vectors, as the encoder was trained (asymmetric)."""
        q = self.encoder.encode_queries([query])[0]
        scores = self.raw_vectors_ @ q
        k = min(k, scores.shape[0])
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return top.astype(np.int64), scores[top].astype(np.float32)

    # ---- persistence ---------------------------------------------------------------------
    def _state(self) -> dict[str, NDArray[Any]]:
        return {"vectors": self.vectors_, "raw_vectors": self.raw_vectors_,
                "script_means": self.script_means_, "encoder_id": np.asarray(self.encoder_id_)}

    def _set_state(self, state: dict[str, NDArray[Any]]) -> None:
        self.vectors_ = state["vectors"].astype(np.float32)
        self.raw_vectors_ = state["raw_vectors"].astype(np.float32)
        self.script_means_ = state["script_means"].astype(np.float32)
        self.encoder_id_ = str(state["encoder_id"])

    def save(self, path: Path) -> None:
        from shelfwise.text.finetune import is_tuned_dir

        super().save(path)
        self.index.save(path / "index.faiss")
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
