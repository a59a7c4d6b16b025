"""The language-model layer: text encoders behind one protocol, and an embedding cache."""

from shelfwise.text.base import TextEncoder, cache_root, l2_normalize
from shelfwise.text.cache import CachedEncoder, EmbeddingCache, text_key
from shelfwise.text.factory import ENCODER_NAMES, EncoderConfig, get_encoder, load_encoder

__all__ = [
    "ENCODER_NAMES",
    "CachedEncoder",
    "EmbeddingCache",
    "EncoderConfig",
    "TextEncoder",
    "cache_root",
    "get_encoder",
    "l2_normalize",
    "load_encoder",
    "text_key",
]
