"""Build encoders by name: ``e5`` (int8, default), ``e5-fp32``, ``use``, ``minilm``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shelfwise.exceptions import ConfigError
from shelfwise.text.base import TextEncoder
from shelfwise.text.cache import CachedEncoder, EmbeddingCache

EncoderName = Literal["e5", "e5-fp32", "use", "minilm"]
ENCODER_NAMES: tuple[str, ...] = ("e5", "e5-fp32", "use", "minilm")


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
        from shelfwise.text.e5 import E5Encoder

        encoder = E5Encoder(
            quantize=config.name == "e5",
            num_threads=config.num_threads,
            batch_size=config.batch_size,
            cache_dir=cache_dir,
        )
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


def get_encoder(name: str = "e5", **options: Any) -> TextEncoder:
    """Encoder ``name`` (``e5``, ``e5-fp32``, ``use``, ``minilm``); ``options`` are the other
    :class:`EncoderConfig` fields plus ``cache_dir``."""
    if name not in ENCODER_NAMES:
        raise ConfigError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_NAMES)}")
    cache_dir = options.pop("cache_dir", None)
    try:
        config = EncoderConfig(name=name, **options)
    except ValueError as exc:
        raise ConfigError(f"bad encoder options: {exc}") from exc
    return load_encoder(config, cache_dir=Path(cache_dir) if cache_dir else None)
