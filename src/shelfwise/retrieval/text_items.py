"""Item text → vectors for generators that read the catalog's text (semantic, text SASRec)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.progress import Progress

from shelfwise.text.base import TextEncoder

_ENCODERS: dict[str, TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def shared_encoder(name: str) -> TextEncoder:
    """One loaded encoder per name per process (loading a transformer takes seconds).

    Torch runs one thread unless ``SHELFWISE_TORCH_THREADS`` says otherwise: on a shared
    machine two threads that wait on each other were measured 10-100x slower (one worker
    process per core scales better)."""
    with _ENCODERS_LOCK:
        if name not in _ENCODERS:
            from shelfwise.text.factory import get_encoder

            threads = int(os.environ.get("SHELFWISE_TORCH_THREADS", "1"))
            from shelfwise.text.finetune import is_tuned_dir

            if is_tuned_dir(name):
                from shelfwise.text.cache import CachedEncoder, EmbeddingCache
                from shelfwise.text.finetune import load_tuned_encoder

                _ENCODERS[name] = CachedEncoder(
                    load_tuned_encoder(name, num_threads=threads), EmbeddingCache())
            else:
                _ENCODERS[name] = get_encoder(name, num_threads=threads)
        return _ENCODERS[name]


def embed_items(encoder: TextEncoder, texts: Sequence[str], *, label: str = ""
                ) -> NDArray[np.float32]:
    """Item vectors for ``texts`` in chunks (a progress bar on long runs); empty texts get a
    zero vector (no opinion)."""
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    keep = [k for k, t in enumerate(texts) if t and t.strip()]
    chunk = 512
    with Progress(console=Console(stderr=True), transient=True,
                  disable=len(keep) < 4 * chunk) as bar:
        task = bar.add_task(f"embedding item texts ({label or 'encoder'})", total=len(keep))
        for start in range(0, len(keep), chunk):
            rows = keep[start : start + chunk]
            out[rows] = encoder.encode_items([texts[k] for k in rows])
            bar.advance(task, len(rows))
    return out


class TextItems:
    """Mixin: the encoder named by ``config.encoder`` (shared per process, or one set by hand)
    and ``embed`` for item texts through it."""

    config: Any
    _encoder: TextEncoder | None = None

    def set_encoder(self, encoder: TextEncoder) -> Self:
        """Use this encoder instance (e.g. a fine-tuned one) instead of loading by name."""
        self._encoder = encoder
        return self

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            self._encoder = shared_encoder(self.config.encoder)
        return self._encoder

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Item vectors for ``texts``; empty texts get a zero vector (no opinion)."""
        return embed_items(self.encoder, texts, label=self.config.encoder)
