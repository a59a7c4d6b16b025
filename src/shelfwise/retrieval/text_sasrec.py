"""TextSASRec: SASRec whose item vectors come from the language-model layer.

Each item's vector is its frozen text embedding (e5 by default) through a learned linear
projection, plus a learned ID vector scaled by a learned gate on how often the item was seen in
training (exactly zero for items never seen). The same vectors embed the input sequence and
score the output (tied), so an item known only by its title — a new arrival, or an item
:meth:`TextSASRec.add_items` appended after training — gets a meaningful score. The
transformer and training loop are :class:`~shelfwise.retrieval.sasrec.SASRec`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from shelfwise.data.interactions import Interactions
from shelfwise.exceptions import ConfigError, NotFittedError
from shelfwise.retrieval.sasrec import PARAM_PREFIX, SASRec, SASRecConfig
from shelfwise.retrieval.text_items import TextItems
from shelfwise.text.base import TextEncoder

if TYPE_CHECKING:
    import torch
    from torch import nn


class TextSASRecConfig(SASRecConfig):
    encoder: str = Field(
        default="e5",
        description="text encoder for item vectors: e5, e5-fp32, use, minilm (see "
        "shelfwise.text.factory), or a `shelfwise finetune` directory",
    )
    id_embedding: bool = Field(
        default=True,
        description="add a learned per-item ID vector, gated by the item's training count "
        "(zero for unseen items); False = items are pure projected text",
    )


class TextSASRec(TextItems, SASRec):
    """SASRec over text-derived item vectors; scores items that have text but no interactions.

    Needs ``Interactions.item_text``; items with empty text get a zero text vector (then only
    their ID vector, if seen, represents them).
    """

    name = "sasrec_text"
    Config = TextSASRecConfig
    config: TextSASRecConfig

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._encoder: TextEncoder | None = None

    def _standardise(self, raw: NDArray[np.float32]) -> torch.Tensor:
        """Per-dimension z-scores with the training catalog's mean/std (zero rows stay zero).

        e5 vectors of one catalog are close together (high mutual cosine); removing the
        shared part lets the projection start from the differences between items."""
        z = (raw - self.text_mean_) / self.text_std_
        z[~raw.any(axis=1)] = 0.0
        import torch

        return torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))

    def _build_items(self, data: Interactions) -> nn.Module:
        if data.item_text is None:
            raise ConfigError(
                f"{self.name!r} needs item text (titles) to build item vectors; this data has "
                "none — import items with a title, or use 'sasrec' (ID embeddings only)")
        raw = self.embed(data.item_text)
        has = raw.any(axis=1)
        if not has.any():
            raise ConfigError(f"{self.name!r}: every item text is empty; use 'sasrec' instead")
        self.text_mean_ = raw[has].mean(axis=0).astype(np.float32)
        self.text_std_ = (raw[has].std(axis=0) + 1e-6).astype(np.float32)
        self.encoder_id_ = self.encoder.id
        counts = np.bincount(data.item_idx, minlength=data.n_items).astype(np.float32)
        import torch

        from shelfwise.retrieval.sequence_nn import TextItems

        return TextItems(self._standardise(raw), torch.from_numpy(counts), self.config.hidden,
                         self.config.id_embedding)

    def _items_from_state(self, state: dict[str, NDArray[Any]]) -> nn.Module:
        import torch

        from shelfwise.retrieval.sequence_nn import TextItems

        feats = torch.from_numpy(np.array(state[PARAM_PREFIX + "items.features"]))
        counts = torch.from_numpy(np.array(state[PARAM_PREFIX + "items.counts"]))
        return TextItems(feats, counts, self.config.hidden, self.config.id_embedding)

    def add_items(self, texts: Sequence[str]) -> None:
        """Append items posted after training (indices continue after the current ones).

        Their vectors are their projected text; no retraining is needed to recommend them."""
        if self.module_ is None:
            raise NotFittedError("TextSASRec is not fitted; call fit() first")
        import torch

        from shelfwise.retrieval.sequence_nn import TextItems

        items = self.module_.items
        assert isinstance(items, TextItems)
        with torch.no_grad():
            items.append(self._standardise(self.embed(texts)))
        self.popularity_ = np.concatenate(
            [self.popularity_, np.zeros(len(texts), np.float32)])
        self._n_items = int(items.features.shape[0])

    def _state(self) -> dict[str, NDArray[Any]]:
        return {**super()._state(), "text_mean": self.text_mean_, "text_std": self.text_std_,
                "encoder_id": np.asarray(self.encoder_id_)}

    def _set_state(self, state: dict[str, NDArray[Any]]) -> None:
        super()._set_state(state)
        self.text_mean_ = state["text_mean"].astype(np.float32)
        self.text_std_ = state["text_std"].astype(np.float32)
        self.encoder_id_ = str(state["encoder_id"])
