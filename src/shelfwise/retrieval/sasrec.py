"""SASRec: next-item prediction with a causal self-attention transformer (Kang & McAuley 2018).

Trained with full softmax cross-entropy over *all* items at every position of each user's
sequence (the "SASRec+CE" recipe of Klenitskiy & Vasilev, RecSys 2023, which beats the original
one-negative BCE loss), input and output item embeddings tied. The transformer
(:class:`~shelfwise.retrieval.sequence_nn.SequenceModel`, torch imported only when needed) is
shared with :class:`~shelfwise.retrieval.text_sasrec.TextSASRec`, which only swaps the module
that produces the item matrix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from shelfwise.data.interactions import History, Interactions
from shelfwise.exceptions import ConfigError
from shelfwise.retrieval.base import BaseGenerator, GeneratorConfig, Scores, top_k
from shelfwise.retrieval.ease import popularity_prior
from shelfwise.text.base import torch_threads

if TYPE_CHECKING:
    import torch
    from torch import nn

    from shelfwise.retrieval.sequence_nn import SequenceModel

EpochCallback = Callable[[int, "SASRec"], bool | None]
"""Called after each epoch with (epoch number from 1, the model in eval mode); True stops."""

PARAM_PREFIX = "param."


class SASRecConfig(GeneratorConfig):
    max_len: int = Field(default=50, ge=1, le=1024, description="last items of a history used")
    hidden: int = Field(default=64, ge=2, description="embedding and transformer width")
    layers: int = Field(default=2, ge=1, le=12)
    heads: int = Field(default=2, ge=1, description="attention heads; must divide hidden")
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    lr: float = Field(default=1e-3, gt=0.0, description="Adam learning rate")
    weight_decay: float = Field(default=0.0, ge=0.0, description="Adam L2 penalty")
    batch_size: int = Field(default=128, ge=1, description="users per step")
    epochs: int = Field(default=10, ge=1, description="passes over the training sequences")
    patience: int | None = Field(
        default=None,
        ge=1,
        description="early stopping: hold out each user's last training item, stop after this "
        "many epochs without a better holdout NDCG@10 and keep the best epoch (None = off)",
    )
    seed: int = Field(default=0, description="seeds init, shuffling and dropout")
    threads: int = Field(default=1, ge=1, description="torch intra-op threads for fit/score")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> Self:
        if self.hidden % self.heads:
            raise ValueError(
                f"heads={self.heads} must divide hidden={self.hidden}; pick e.g. heads=1 or 2"
            )
        return self


# ---- the generator ----------------------------------------------------------------------------
class SASRec(BaseGenerator):
    """Self-attentive sequential recommender scoring all items from a history's last items.

    ``score`` feeds the last ``max_len`` known items of each history (indices the model was not
    trained on are skipped) and returns the logits of the last position over all items. An
    empty history gets the training popularity instead (the model has nothing to attend to).
    """

    name = "sasrec"
    Config = SASRecConfig
    config: SASRecConfig

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.module_: SequenceModel | None = None
        self.history_: list[dict[str, float]] = []
        self._on_epoch: EpochCallback | None = None

    # ---- hooks the text variant overrides ----------------------------------------------------
    def _build_items(self, data: Interactions) -> nn.Module:
        from shelfwise.retrieval.sequence_nn import IdItems

        return IdItems(data.n_items, self.config.hidden)

    def _items_from_state(self, state: dict[str, NDArray[Any]]) -> nn.Module:
        from shelfwise.retrieval.sequence_nn import IdItems

        n, hidden = state[PARAM_PREFIX + "items.weight"].shape
        return IdItems(int(n), int(hidden))

    def _new_module(self, items: nn.Module) -> SequenceModel:
        from shelfwise.retrieval.sequence_nn import SequenceModel

        c = self.config
        return SequenceModel(items, c.max_len, c.hidden, c.layers, c.heads, c.dropout)

    # ---- fitting -----------------------------------------------------------------------------
    def fit(self, data: Interactions, *, on_epoch: EpochCallback | None = None) -> Self:
        """Train on every user's sequence; ``on_epoch`` may watch (and stop) training, e.g.
        to pick the epoch count on a validation split."""
        self._on_epoch = on_epoch
        try:
            return super().fit(data)
        finally:
            self._on_epoch = None

    def _fit(self, data: Interactions) -> None:
        c = self.config
        seqs = [h for h in data.histories() if len(h) >= 2]
        holdout: list[tuple[NDArray[np.int64], int]] = []
        if c.patience is not None:
            keep = [h for h in seqs if len(h) >= 3]
            if not keep:
                raise ConfigError(
                    f"{self.name}: patience needs users with >= 3 training items to hold out "
                    "the last one; none have — set patience=None")
            holdout = [(h[:-1], int(h[-1])) for h in keep]
            seqs = [h[:-1] if len(h) >= 3 else h for h in seqs]
        if not seqs:
            raise ConfigError(
                f"cannot fit {self.name!r}: no user has 2 or more interactions, so there is "
                "no next item to learn")
        self.popularity_ = popularity_prior(data)
        self._n_items = data.n_items
        import torch

        with torch_threads(c.threads):
            torch.manual_seed(c.seed)
            self.module_ = self._new_module(self._build_items(data))
            self._train(seqs, holdout)

    def _train(self, seqs: list[NDArray[np.int64]],
               holdout: list[tuple[NDArray[np.int64], int]]) -> None:
        import torch
        from torch import nn

        from shelfwise.retrieval.sequence_nn import pad_left

        c = self.config
        module = self.module_
        assert module is not None
        params = [p for p in module.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        gen = torch.Generator().manual_seed(c.seed)
        windows = [s[-(c.max_len + 1) :] for s in seqs]  # inputs s[:-1], targets s[1:]
        best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        self.history_ = []
        for epoch in range(1, c.epochs + 1):
            start = time.perf_counter()
            module.train()
            order = torch.randperm(len(windows), generator=gen).tolist()
            total, count = 0.0, 0
            for lo in range(0, len(order), c.batch_size):
                batch = [windows[k] for k in order[lo : lo + c.batch_size]]
                length = max(len(w) for w in batch) - 1
                inputs = pad_left([w[:-1] for w in batch], length)
                targets = pad_left([w[1:] for w in batch], length) - 1  # -1 = no target
                table = module.item_matrix()
                hidden = module.encode(inputs, table)
                valid = targets >= 0
                logits = hidden[valid] @ table.T
                loss = nn.functional.cross_entropy(logits, targets[valid])
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                n = int(valid.sum())
                total += float(loss.detach()) * n
                count += n
            module.eval()
            row = {"epoch": float(epoch), "loss": total / max(count, 1),
                   "seconds": time.perf_counter() - start}
            stop = False
            if holdout:
                ndcg = self._holdout_ndcg(holdout)
                row["holdout_ndcg10"] = ndcg
                if best is None or ndcg > best[0]:
                    best = (ndcg, epoch, {k: v.clone() for k, v in module.state_dict().items()})
                elif c.patience is not None and epoch - best[1] >= c.patience:
                    stop = True
            self.history_.append(row)
            if self._on_epoch is not None and self._on_epoch(epoch, self):
                stop = True
            if stop:
                break
        if best is not None:
            module.load_state_dict(best[2])
            self.best_epoch_ = best[1]
        module.eval()

    def _holdout_ndcg(self, holdout: list[tuple[NDArray[np.int64], int]]) -> float:
        """NDCG@10 of each held-out last training item, seen items excluded, full ranking."""
        from shelfwise.evaluation.metrics import NDCG

        histories = [h for h, _ in holdout]
        reco = np.vstack([
            top_k(self._score(histories[lo : lo + 1024]), 10,
                  exclude=histories[lo : lo + 1024])[0]
            for lo in range(0, len(histories), 1024)])
        return NDCG(10).calc(reco, [np.array([t], np.int64) for _, t in holdout])

    # ---- scoring -----------------------------------------------------------------------------
    def _score(self, histories: Sequence[History]) -> Scores:
        import torch

        from shelfwise.retrieval.sequence_nn import pad_left

        module = self.module_
        assert module is not None
        n = self.n_items_
        cut = []
        for h in histories:
            h = np.asarray(h, dtype=np.int64)
            cut.append(h[(h >= 0) & (h < n)][-self.config.max_len :])
        out = np.empty((len(histories), n), dtype=np.float32)
        empty = np.array([len(h) == 0 for h in cut], dtype=bool)
        out[empty] = self.popularity_
        rows = np.flatnonzero(~empty)
        if len(rows) == 0:
            return out
        with torch_threads(self.config.threads), torch.inference_mode():
            module.eval()
            table = module.item_matrix()
            for lo in range(0, len(rows), 512):
                part = rows[lo : lo + 512]
                length = max(len(cut[r]) for r in part)
                hidden = module.encode(pad_left([cut[r] for r in part], length), table)
                out[part] = (hidden[:, -1] @ table.T).numpy()
        return out

    # ---- persistence -------------------------------------------------------------------------
    def _state(self) -> dict[str, NDArray[Any]]:
        assert self.module_ is not None
        state = {PARAM_PREFIX + k: v.detach().cpu().numpy()
                 for k, v in self.module_.state_dict().items()}
        return {**state, "popularity": self.popularity_}

    def _set_state(self, state: dict[str, NDArray[Any]]) -> None:
        import torch

        params = {k[len(PARAM_PREFIX) :]: torch.from_numpy(np.array(v))
                  for k, v in state.items() if k.startswith(PARAM_PREFIX)}
        module = self._new_module(self._items_from_state(state))
        module.load_state_dict(params)
        module.eval()
        self.module_ = module
        self.popularity_ = state["popularity"].astype(np.float32)
