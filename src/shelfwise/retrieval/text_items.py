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
            from shelfwise.text.base import is_tuned_dir

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
        """Item vectors for ``texts``; empty texts get a zero vector (no opinion). A large
        uncached catalog is first embedded by one process per core into the embedding cache
        (:func:`prefill_cache`), unless the encoder was set by hand."""
        if self._encoder is None or self._encoder is _ENCODERS.get(self.config.encoder):
            prefill_cache(self.encoder, self.config.encoder, texts)
        return embed_items(self.encoder, texts, label=self.config.encoder)


PARALLEL_MIN_TEXTS = 2_000
"""Fewer uncached texts than this are embedded in-process (a worker takes seconds to start)."""


def embed_workers() -> int:
    """Processes for :func:`prefill_cache`: ``SHELFWISE_EMBED_WORKERS``, else the usable
    cores. One single-threaded process per core: two torch threads that wait on each other
    were measured 10-100x slower on a shared machine."""
    env = os.environ.get("SHELFWISE_EMBED_WORKERS")
    if env:
        return max(1, int(env))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def prefill_cache(encoder: TextEncoder, name: str, texts: Sequence[str]) -> int:
    """Embed the texts missing from ``encoder``'s embedding cache in worker processes, each
    loading encoder ``name`` and writing its chunks to the shared cache as it goes (so an
    interrupted run resumes where it stopped); how many texts were embedded. Does nothing
    without a cache, with one worker or below :data:`PARALLEL_MIN_TEXTS` misses."""
    from shelfwise.text.cache import CachedEncoder, text_key

    workers = embed_workers()
    if not isinstance(encoder, CachedEncoder) or workers < 2:
        return 0
    distinct = list(dict.fromkeys(t for t in texts if t and t.strip()))
    if len(distinct) < PARALLEL_MIN_TEXTS:
        return 0
    keys = [text_key(t) for t in distinct]
    found = encoder.cache.get(encoder.id, "item", keys)
    todo = [t for t, k in zip(distinct, keys, strict=True) if k not in found]
    if len(todo) < PARALLEL_MIN_TEXTS:
        return 0
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    if name in ("e5", "e5-fp32"):  # convert the model once, not in every worker, and in a
        # process of its own: converting peaks at ~1.4 GB, which this one would keep
        from shelfwise.text.e5_convert import converted_dir, ensure_converted, is_converted

        if not is_converted(converted_dir()):
            with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as one:
                one.submit(ensure_converted).result()

    chunk = 256
    chunks = [todo[a : a + chunk] for a in range(0, len(todo), chunk)]
    with (ProcessPoolExecutor(min(workers, len(chunks)), mp_context=mp.get_context("spawn"),
                              initializer=_worker_init) as pool,
          Progress(console=Console(stderr=True), transient=True) as bar):
        task = bar.add_task(f"embedding item texts ({name}, {workers} processes)",
                            total=len(todo))
        for done in pool.map(_embed_chunk, [name] * len(chunks), chunks):
            bar.advance(task, done)
    return len(todo)


def _worker_init() -> None:
    os.environ["SHELFWISE_TORCH_THREADS"] = "1"
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def _embed_chunk(name: str, texts: list[str]) -> int:
    """In a worker: encode ``texts`` through the cached encoder ``name`` (fills the cache)."""
    shared_encoder(name).encode_items(texts)
    return len(texts)
