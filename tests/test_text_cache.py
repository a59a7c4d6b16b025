"""The embedding cache: unchanged texts are never encoded twice, across calls and processes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shelfwise.text import CachedEncoder, EmbeddingCache, get_encoder, text_key
from shelfwise.text.base import Embeddings
from tests.test_text_support import load


class Counting:
    """A real encoder that records every text it is asked to encode (a proxy, not a mock)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.items: list[str] = []
        self.queries: list[str] = []

    @property
    def id(self) -> str:
        return str(self.inner.id)

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def encode_items(self, texts: Sequence[str]) -> Embeddings:
        self.items.extend(texts)
        return np.asarray(self.inner.encode_items(texts))

    def encode_queries(self, texts: Sequence[str]) -> Embeddings:
        self.queries.extend(texts)
        return np.asarray(self.inner.encode_queries(texts))


@pytest.fixture(params=["use", "e5"])
def counting(request: pytest.FixtureRequest) -> Counting:
    return Counting(load(request.param))


TITLES = ["无线蓝牙耳机 降噪", "Yoga mat, non-slip", "有机绿茶 250克", "USB-C charger 65W"]


def test_cache_hit_avoids_re_encoding(counting: Counting, tmp_path: Path) -> None:
    enc = CachedEncoder(counting, EmbeddingCache(tmp_path / "emb.sqlite"))
    first = enc.encode_items(TITLES)
    assert counting.items == TITLES
    np.testing.assert_allclose(first, counting.inner.encode_items(TITLES), atol=1e-6)

    counting.items.clear()
    again = enc.encode_items([*TITLES[::-1], "new item 新品"])
    assert counting.items == ["new item 新品"]  # only the unseen text reached the model
    np.testing.assert_array_equal(again[:4], first[::-1])
    assert (enc.hits, enc.misses) == (4, 5)


def test_cache_persists_across_instances_and_dedupes(counting: Counting, tmp_path: Path) -> None:
    path = tmp_path / "emb.sqlite"
    CachedEncoder(counting, EmbeddingCache(path)).encode_items(TITLES[:2] * 3)
    assert counting.items == TITLES[:2]  # duplicates inside one call encoded once
    counting.items.clear()
    reopened = CachedEncoder(counting, EmbeddingCache(path))
    reopened.encode_items(TITLES[:2])
    assert counting.items == []
    assert reopened.cache.count(counting.id) == 2


def test_queries_cached_only_on_request_and_apart_from_items(tmp_path: Path) -> None:
    counting = Counting(load("e5"))
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    plain = CachedEncoder(counting, cache)
    plain.encode_queries(["蓝牙耳机"])
    plain.encode_queries(["蓝牙耳机"])
    assert counting.queries == ["蓝牙耳机", "蓝牙耳机"]

    cached = CachedEncoder(counting, cache, cache_queries=True)
    counting.queries.clear()
    q = cached.encode_queries(["蓝牙耳机", "蓝牙耳机"])
    item = cached.encode_items(["蓝牙耳机"])
    assert counting.queries == ["蓝牙耳机"] and counting.items == ["蓝牙耳机"]
    assert float(q[0] @ item[0]) < 0.999  # e5 embeds a query and an item differently


def test_cache_keys_by_encoder_id(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    key = text_key("same text")
    cache.put("model-a", "item", [key], np.ones((1, 3), np.float32))
    assert cache.get("model-b", "item", [key]) == {}
    np.testing.assert_array_equal(cache.get("model-a", "item", [key])[key], np.ones(3))
    assert cache.delete("model-a") == 1 and cache.count() == 0


def test_get_encoder_wraps_in_cache_under_cache_dir(tmp_path: Path) -> None:
    enc = get_encoder("use", cache_dir=tmp_path, num_threads=1)
    assert isinstance(enc, CachedEncoder)
    enc.encode_items(TITLES)
    assert (tmp_path / "embeddings.sqlite").exists()
    assert EmbeddingCache(tmp_path / "embeddings.sqlite").count(enc.id) == len(TITLES)


def test_a_lazy_encoder_behind_the_cache_loads_only_on_a_miss(tmp_path: Path) -> None:
    from shelfwise.exceptions import ConfigError
    from shelfwise.text.factory import LazyEncoder, warm_encoder

    loads: list[int] = []

    class Fixed:
        id, dim = "fixed/v1", 3

        def encode_items(self, texts: Sequence[str]) -> Embeddings:
            return np.tile(np.array([1.0, 0.0, 0.0], np.float32), (len(texts), 1))

        encode_queries = encode_items

    def make() -> Any:
        loads.append(1)
        return Fixed()

    store = EmbeddingCache(tmp_path / "emb.sqlite")
    first = CachedEncoder(LazyEncoder(make, "fixed/v1", 3), store)
    assert first.id == "fixed/v1" and first.dim == 3 and loads == [], "no load for metadata"
    first.encode_items(["a", "b"])
    assert loads == [1]
    again = CachedEncoder(LazyEncoder(make, "fixed/v1", 3), store)
    np.testing.assert_array_equal(again.encode_items(["b", "a"])[0], [1.0, 0.0, 0.0])
    assert loads == [1], "every text was cached: the model was never loaded"
    warm_encoder(again)
    assert loads == [1, 1] and again.encoder.loaded  # type: ignore[attr-defined]
    wrong = LazyEncoder(make, "fixed/v2", 3)
    with pytest.raises(ConfigError, match="expected fixed/v2"):
        wrong.encode_items(["x"])


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_worker_processes_fill_the_cache_with_the_same_vectors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large uncached catalog is embedded by spawned worker processes into the shared cache;
    the generator then reads every vector from it (no model load in the parent), and the
    vectors equal an in-process encode (int8 per-token quantisation: batch-mates change only
    rounding)."""
    from shelfwise.retrieval import text_items
    from shelfwise.retrieval.semantic import Semantic
    from shelfwise.text.e5_convert import converted_dir, is_converted

    monkeypatch.setenv("SHELFWISE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SHELFWISE_EMBED_WORKERS", "2")
    monkeypatch.setattr(text_items, "PARALLEL_MIN_TEXTS", 10)
    monkeypatch.setattr(text_items, "_ENCODERS", {})
    texts = [f"{w} 第{k}号 item {k}" for k, w in enumerate(["tea", "茶叶", "socks", "袜子"] * 6)]
    gen = Semantic()
    before = _rss_mb()
    assert text_items.prefill_cache(gen.encoder, "e5", texts) == len(texts)
    assert not gen.encoder.encoder.loaded  # type: ignore[attr-defined]
    # the fresh cache had no converted model: a child converted it (in this process the
    # conversion peaks at ~1.4 GB and leaves ~0.8 GB behind for the rest of train)
    assert is_converted(converted_dir())
    assert _rss_mb() - before < 300
    vectors = gen.embed(texts)
    assert gen.encoder.misses == 0  # type: ignore[attr-defined]
    direct = get_encoder("e5", cache=False).encode_items(texts)
    assert float((vectors * direct).sum(1).min()) > 0.999
