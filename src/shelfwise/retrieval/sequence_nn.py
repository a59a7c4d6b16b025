"""Torch modules of the sequential generators: one causal transformer, two item tables.

Kept apart from :mod:`shelfwise.retrieval.sasrec` so that importing the generator registry does
not import torch (seconds at CLI start-up); the generators import this module when they fit or
load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn


class _Block(nn.Module):
    """Pre-norm transformer block: causal self-attention then a point-wise feed-forward."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.Dropout(dropout),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = x + self.drop(a)
        out: torch.Tensor = x + self.ff(self.ln2(x))
        return out


class SequenceModel(nn.Module):
    """Causal transformer over item sequences; ``items`` makes the (n_items, hidden) matrix.

    Sequences come as (batch, L) int64 with item index + 1 and 0 for left padding. The same
    matrix embeds the inputs (scaled by sqrt(hidden)) and scores the outputs (tied weights),
    so whatever ``items`` is — an ID table or a projection of text vectors — decides both.
    Positions are counted back from the end, so the last item always gets position
    ``max_len - 1`` however much a batch is padded.
    """

    def __init__(self, items: nn.Module, max_len: int, hidden: int, layers: int, heads: int,
                 dropout: float) -> None:
        super().__init__()
        self.items = items
        self.heads = heads
        self.max_len = max_len
        self.scale = math.sqrt(hidden)
        self.pos = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([_Block(hidden, heads, dropout) for _ in range(layers)])
        self.ln = nn.LayerNorm(hidden)

    def item_matrix(self) -> torch.Tensor:
        out: torch.Tensor = self.items()
        return out

    def encode(self, seqs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position, (batch, L, hidden); ``table`` = item_matrix()."""
        b, length = seqs.shape
        padded = torch.cat([table.new_zeros(1, table.shape[1]), table])
        pad = seqs == 0
        x = padded[seqs] * self.scale
        x = x + self.pos.weight[self.max_len - length :].unsqueeze(0)
        x = self.drop(x) * (~pad).unsqueeze(-1)
        # causal mask, and padding keys hidden; a position may always see itself (no NaN rows)
        causal = torch.ones(length, length, dtype=torch.bool).triu(1)
        blocked = causal.unsqueeze(0) | pad.unsqueeze(1)
        blocked = blocked & ~torch.eye(length, dtype=torch.bool).unsqueeze(0)
        mask = torch.zeros(b, length, length).masked_fill(blocked, float("-inf"))
        mask = mask.repeat_interleave(self.heads, dim=0)
        for block in self.blocks:
            x = block(x, mask)
        out: torch.Tensor = self.ln(x)
        return out


class IdItems(nn.Module):
    """One learned vector per item (plain SASRec)."""

    def __init__(self, n_items: int, hidden: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_items, hidden))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(hidden))

    def forward(self) -> torch.Tensor:
        return self.weight


def pad_left(seqs: Sequence[NDArray[np.int64]], length: int) -> torch.Tensor:
    """(len(seqs), length) int64 tensor, each row right-aligned; values are index + 1."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for row, s in enumerate(seqs):
        if len(s):
            out[row, length - len(s) :] = s + 1
    return torch.from_numpy(out)


class TextItems(nn.Module):
    """Item matrix = Linear(standardised text vector) + gate(count) * ID vector.

    ``features`` (standardised, frozen) and ``counts`` (training interactions per item) are
    buffers, so they travel with the state dict; the gate is ``sigmoid(a * log1p(n) + b)`` and is
    forced to 0 when ``n == 0``, so an unseen item's vector is its projected text alone.
    """

    features: torch.Tensor
    counts: torch.Tensor

    def __init__(self, features: torch.Tensor, counts: torch.Tensor, hidden: int,
                 id_embedding: bool) -> None:
        super().__init__()
        self.register_buffer("features", features)
        self.register_buffer("counts", counts)
        self.proj = nn.Linear(features.shape[1], hidden)
        self.id_embedding = id_embedding
        if id_embedding:
            self.ids = nn.Parameter(torch.zeros(features.shape[0], hidden))
            self.gate_a = nn.Parameter(torch.tensor(1.0))
            self.gate_b = nn.Parameter(torch.tensor(-2.0))

    def forward(self) -> torch.Tensor:
        out: torch.Tensor = self.proj(self.features)
        if self.id_embedding:
            n = self.counts
            gate = torch.sigmoid(self.gate_a * torch.log1p(n) + self.gate_b) * (n > 0)
            out = out + gate.unsqueeze(1) * self.ids
        return out

    def append(self, features: torch.Tensor) -> None:
        """Add items known only by text (count 0, ID vector 0)."""
        self.features = torch.cat([self.features, features])
        self.counts = torch.cat([self.counts, features.new_zeros(features.shape[0])])
        if self.id_embedding:
            hidden = self.ids.shape[1]
            self.ids = nn.Parameter(torch.cat(
                [self.ids.detach(), self.ids.new_zeros(features.shape[0], hidden)]))
