"""e5-static: piece vectors distilled from the real e5, texts as SIF-weighted means of them.

The fast tests distil only the pieces their texts use (a sparse table file); the slow one
distils the whole vocabulary as ``train`` would and checks the cross-lingual mini catalog."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shelfwise.text.e5_convert import ensure_converted
from shelfwise.text.static import (
    SIF_A,
    STATIC_ID,
    STATIC_VERSION,
    StaticE5Encoder,
    _unigram_scores,
    distil_pieces,
    ensure_distilled,
    is_distilled,
)
from tests.test_text_e5 import CATALOG

TEXTS = ["wireless bluetooth headphones", "Bluetooth earbuds, noise cancelling",
         "garden hose 30 m", "无线蓝牙耳机 降噪", "不锈钢保温水杯"]


def partial_table(root: Path, texts: list[str]) -> tuple[Path, StaticE5Encoder]:
    """A distilled folder holding real rows for the pieces of ``texts`` only."""
    model = ensure_converted()
    scores = _unigram_scores(model)
    probe = StaticE5Encoder.__new__(StaticE5Encoder)  # only its tokenizer, for piece ids
    from tokenizers import Tokenizer

    from shelfwise.text.e5_convert import normalization_table

    probe._tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    probe._normalise = normalization_table()
    ids = sorted({i for t in texts for i in probe._tokenizer.encode(
        t.translate(probe._normalise), add_special_tokens=False).ids} | {
        probe._tokenizer.token_to_id("<unk>")})  # what a blank text is read as
    path = root / "table"
    path.mkdir()
    table = np.lib.format.open_memmap(path / "tokens.npy", mode="w+", dtype=np.float16,
                                      shape=(len(scores), 384))
    table[ids] = distil_pieces(model, ids)
    table.flush()
    np.save(path / "mean.npy", np.asarray(table[ids], np.float32).mean(axis=0))
    np.save(path / "logp.npy", scores)
    (path / "static.json").write_text(json.dumps({"version": STATIC_VERSION}))
    return path, StaticE5Encoder(table=path)


def test_a_text_is_the_sif_weighted_mean_of_its_distilled_pieces(tmp_path: Path) -> None:
    path, enc = partial_table(tmp_path, TEXTS)
    assert enc.id == STATIC_ID and enc.dim == 384 and is_distilled(path)
    got = enc.encode_items(TEXTS)
    assert got.dtype == np.float32 and got.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # by hand for one text: its pieces, their e5 vectors, their unigram weights
    text = TEXTS[3]
    ids = enc._tokenizer.encode(text.translate(enc._normalise), add_special_tokens=False).ids
    rows = distil_pieces(ensure_converted(), ids).astype(np.float32) - enc._mean
    w = SIF_A / (SIF_A + np.exp(_unigram_scores(ensure_converted())[ids]))
    want = (w[:, None] * rows).sum(axis=0)
    np.testing.assert_allclose(got[3], want / np.linalg.norm(want), atol=2e-3)
    # queries are embedded as items (no prefixes), and each text alone as in a batch
    np.testing.assert_allclose(enc.encode_queries(TEXTS[:1])[0], got[0], atol=1e-6)
    np.testing.assert_allclose(enc.encode_items(TEXTS[2:3])[0], got[2], atol=1e-6)


def test_similar_titles_are_closer_and_odd_input_is_handled(tmp_path: Path) -> None:
    _path, enc = partial_table(tmp_path, TEXTS)
    v = enc.encode_items(TEXTS)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2], "headphones are nearer earbuds than a garden hose"
    assert enc.encode_items([]).shape == (0, 384)
    blank = enc.encode_items(["", "   "])
    np.testing.assert_allclose(np.linalg.norm(blank, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(blank[0], blank[1], atol=1e-6)  # both read as <unk>
    with pytest.raises(TypeError):
        enc.encode_items("one string")  # type: ignore[arg-type]


def test_the_factory_builds_it_without_the_embedding_cache(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from shelfwise.text import ENCODER_NAMES, EncoderConfig
    from shelfwise.text.factory import load_encoder

    assert "e5-static" in ENCODER_NAMES
    path, _ = partial_table(tmp_path, TEXTS)
    monkeypatch.setattr("shelfwise.text.static.static_dir", lambda root=None: path)
    enc = load_encoder(EncoderConfig(name="e5-static"))
    assert isinstance(enc, StaticE5Encoder) and enc.id == STATIC_ID


@pytest.mark.slow
def test_whole_vocabulary_distils_once_and_finds_the_mini_catalog(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    """As ``train`` would: every piece distilled in worker processes, then reused."""
    target = tmp_path / "e5-static"
    monkeypatch.setattr("shelfwise.text.static.static_dir", lambda root=None: target)
    path = ensure_distilled()
    assert path == target and is_distilled(path)
    stamp = (path / "tokens.npy").stat().st_mtime_ns
    assert ensure_distilled() == path and (path / "tokens.npy").stat().st_mtime_ns == stamp
    enc = StaticE5Encoder()
    items = enc.encode_items([c[0] for c in CATALOG])
    for k in (1, 2):  # English, then Chinese queries
        q = enc.encode_queries([c[k] for c in CATALOG])
        top1 = (q @ items.T).argmax(axis=1)
        same_language = np.arange(len(CATALOG)) % 2 == (0 if k == 2 else 1)
        hits = (top1 == np.arange(len(CATALOG)))[same_language]
        assert hits.mean() >= 0.8, (k, top1)


def test_the_semantic_generator_trains_and_searches_with_it(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """`params = { encoder = "e5-static" }`: fitted in process (no embedding workers, no
    cache), its vectors keyed by the static encoder's id."""
    import pandas as pd

    from shelfwise.data.ids import IdMap
    from shelfwise.data.interactions import Interactions
    from shelfwise.retrieval import text_items
    from shelfwise.retrieval.semantic import Semantic

    path, _ = partial_table(tmp_path, TEXTS)
    monkeypatch.setattr("shelfwise.text.static.static_dir", lambda root=None: path)
    real_prefill = text_items.prefill_cache
    spawned: list[int] = []
    monkeypatch.setattr(text_items, "prefill_cache",
                        lambda *a: spawned.append(real_prefill(*a)) or 0)
    items = {f"i{k}": t for k, t in enumerate(TEXTS)}
    data = Interactions.from_frame(pd.DataFrame({"user_id": ["u"], "item_id": ["i0"]}),
                                   items=IdMap(items), item_text=items, has_time=False)
    text_items._ENCODERS.pop("e5-static", None)
    try:
        gen = Semantic(encoder="e5-static").fit(data)
        assert gen.encoder_id_ == STATIC_ID and gen.vectors_.shape == (len(TEXTS), 384)
        idx, _ = gen.search_text("wireless bluetooth headphones", 2)
        assert set(idx.tolist()) <= {0, 1, 3}, "headphones and earbuds, not hose or cup"
        assert spawned == [0], "embedded in process: no worker processes, no cache"
    finally:
        text_items._ENCODERS.pop("e5-static", None)
