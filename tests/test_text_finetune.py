"""Fine-tuning e5 (real model, tiny synthetic pairs), pair mining and graded NDCG.

The model tests train a few steps on 30 pairs with short texts, so they run in seconds per
step on one thread. Tuned models are materialized under a temporary cache root whose base
conversion is a link to the real one (converted once per machine).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from shelfwise.data.schemas import Event, EventType
from shelfwise.exceptions import ConfigError
from shelfwise.text.base import CACHE_ENV, TextEncoder
from shelfwise.text.e5_convert import base_id, converted_dir, ensure_converted
from shelfwise.text.finetune import (
    CHECKPOINT,
    WEIGHTS,
    FinetuneConfig,
    finetune,
    is_tuned_dir,
    load_tuned_encoder,
    read_manifest,
)
from shelfwise.text.pairs import (
    JudgedNDCGEvaluator,
    PairRetrievalEvaluator,
    TextPair,
    graded_ndcg,
    ndcg_by_query,
    pairs_digest,
    pairs_from_judgements,
    pairs_from_search_events,
    pairs_from_sequences,
    pairs_from_store,
    split_by_anchor,
)

COLORS = ["red", "blue", "green", "black", "white", "yellow"]
THINGS = ["running shoes", "coffee mug", "desk lamp", "garden hose", "phone case"]
PAIRS = [TextPair(f"{c} {t}", f"{t.title()} in {c}") for c in COLORS for t in THINGS]
PROBE = ["Coffee Mug in red", "Desk Lamp in blue"]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary cache root whose base conversion links to the real one."""
    real = ensure_converted()
    root = tmp_path / "cache"
    (root / "models").mkdir(parents=True)
    converted_dir(root).symlink_to(real, target_is_directory=True)
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


class Recorder(PairRetrievalEvaluator):
    """Held-out scores plus the encoder's vectors of :data:`PROBE`, per call."""

    def __init__(self, pairs: list[TextPair]) -> None:
        super().__init__(pairs)
        self.vectors: list[np.ndarray[Any, Any]] = []

    def __call__(self, encoder: TextEncoder) -> dict[str, float]:
        self.vectors.append(encoder.encode_items(PROBE))
        return super().__call__(encoder)


def small(**kw: Any) -> FinetuneConfig:
    base: dict[str, Any] = {"batch_size": 10, "max_len": 16, "num_threads": 1,
                            "checkpoint_every": 2}
    return FinetuneConfig(**{**base, **kw})


# ---- model tests ------------------------------------------------------------------------------
def test_full_finetune_learns_resumes_and_reloads(cache: Path, tmp_path: Path) -> None:
    cfg = small(method="full", train_layers=4, lr=2e-4)  # 3 steps of 8 pairs
    pairs = PAIRS[:24]
    rec = Recorder(pairs)
    ref = finetune(pairs, tmp_path / "ref", cfg, evaluator=rec)
    assert ref.finished and ref.step == ref.total_steps == 3 and ref.pairs_per_second > 0
    assert ref.after["loss"] < ref.before["loss"]  # on the training pairs themselves
    before, after = rec.vectors
    assert float((before * after).sum(1).min()) < 0.9999  # embeddings moved
    manifest = read_manifest(tmp_path / "ref")
    assert ref.encoder_id == manifest["id"] and manifest["id"].startswith(base_id() + "+ft-")
    assert manifest["before"] == ref.before and manifest["weights"] == "delta"
    assert not (tmp_path / "ref" / CHECKPOINT).exists()
    with pytest.raises(ConfigError, match="already holds"):
        finetune(pairs, tmp_path / "ref", cfg)

    # interrupted after 2 steps, then resumed: the same run, step for step
    out = tmp_path / "run"
    first = finetune(pairs, out, cfg, stop_after_steps=2)
    assert not first.finished and first.step == 2 and first.encoder_id is None
    assert (out / CHECKPOINT).exists() and not is_tuned_dir(out)
    with pytest.raises(ConfigError, match="unfinished"):
        finetune(pairs, out, cfg)
    with pytest.raises(ConfigError, match="lr"):
        finetune(pairs, out, cfg.model_copy(update={"lr": 5e-5}), resume=True)
    with pytest.raises(ConfigError, match="pairs differ"):
        finetune(pairs[:-1], out, cfg, resume=True)
    done = finetune(pairs, out, cfg.model_copy(update={"checkpoint_every": 7}), resume=True)
    assert done.finished and done.step == 3
    assert done.losses[:2] == first.losses
    np.testing.assert_allclose(done.losses, ref.losses, rtol=1e-5)
    a, b = load_file(str(out / WEIGHTS)), load_file(str(tmp_path / "ref" / WEIGHTS))
    assert a.keys() == b.keys() and len(a) == 4 * 16  # 16 tensors per layer, top 4 layers
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert done.encoder_id == ref.encoder_id

    # the saved encoder reloads (delta over the base) and embeds exactly as trained
    enc = load_tuned_encoder(tmp_path / "ref", quantize=False)
    assert enc.id == f"{ref.encoder_id}/fp32"
    np.testing.assert_allclose(enc.encode_items(PROBE), after, atol=1e-5)


def test_lora_trains_attention_adapters_only(cache: Path, tmp_path: Path) -> None:
    rec = Recorder(PAIRS)
    out = tmp_path / "lora"
    cfg = small(method="lora", lr=1e-3, train_layers=6, batch_size=15)
    res = finetune(PAIRS, out, cfg, evaluator=rec)
    assert res.finished and res.after["loss"] < res.before["loss"]
    delta = load_file(str(out / WEIGHTS))
    assert len(delta) == 6 * 4  # q, k, v, attention output of the top 6 layers, LoRA merged
    assert all(".attention." in k and int(k.split(".")[2]) >= 6 for k in delta)
    enc = load_tuned_encoder(out)  # int8, as served
    assert enc.id.endswith("/int8") and "+ft-" in enc.id
    cos = (enc.encode_items(PROBE) * rec.vectors[-1]).sum(1)
    assert cos.min() > 0.99


def test_cli_finetune_on_a_pairs_file(cache: Path, tmp_path: Path) -> None:
    import typer

    from shelfwise.cli import finetune_cmd

    app = typer.Typer()
    finetune_cmd.register(app)
    app.command("noop")(lambda: None)  # a second command keeps "finetune" a subcommand
    src = tmp_path / "pairs.csv"
    pd.DataFrame({"anchor": [p.anchor for p in PAIRS], "positive": [p.positive for p in PAIRS]}
                 ).to_csv(src, index=False)
    out = tmp_path / "cli"
    args = ["finetune", str(out), "--pairs", str(src), "--method", "full", "--train-layers",
            "1", "--batch-size", "8", "--max-len", "16", "--holdout", "0.2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "tuned encoder" in result.output and "held-out mrr" in result.output
    assert is_tuned_dir(out)
    bad = CliRunner().invoke(app, ["finetune", str(tmp_path / "x"), "--pairs", str(src),
                                   "--judgements", str(src)])
    assert bad.exit_code == 2


# ---- pairs and metrics (no model) -------------------------------------------------------------
def test_pairs_from_judgements_threshold_and_hard_negatives() -> None:
    frame = pd.DataFrame({"query": ["drill"] * 3 + ["saw"] * 2,
                          "title": ["Cordless Drill", "Drill Bits", "Hammer", "Hand Saw", "Nail"],
                          "relevance": [3.0, 2.0, 1.0, 2.67, 1.0]})
    plain = pairs_from_judgements(frame, min_relevance=2.5)
    assert [(p.anchor, p.positive, p.negative) for p in plain] == [
        ("drill", "Cordless Drill", None), ("saw", "Hand Saw", None)]
    hard = pairs_from_judgements(frame, min_relevance=2.5, hard_negatives=True)
    assert hard[0].negative in {"Drill Bits", "Hammer"} and hard[1].negative == "Nail"
    assert all(p.anchor_is_query for p in hard)


def test_pairs_from_search_events_by_request_id_and_time_window() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def ev(i: int, kind: EventType, minutes: float, **kw: Any) -> Event:
        return Event(id=f"e{i}", type=kind, user_id=kw.pop("user", "u1"),
                     timestamp=t0 + timedelta(minutes=minutes), **kw)

    titles = {"a": "Cordless Drill", "b": "Hand Saw", "c": "Garden Hose"}
    events = [
        ev(1, EventType.SEARCH, 0, query="drill", request_id="r1"),
        ev(2, EventType.CLICK, 1, item_id="a", request_id="r1"),
        ev(3, EventType.SEARCH, 2, query="saw", user="u2"),
        ev(4, EventType.PURCHASE, 5, item_id="b", user="u2"),  # no request id: window
        ev(5, EventType.SEARCH, 10, query="hose", user="u3"),
        ev(6, EventType.CLICK, 100, item_id="c", user="u3"),  # too late
        ev(7, EventType.VIEW, 3, item_id="c", request_id="r1"),  # a view is no outcome
    ]
    pairs = pairs_from_search_events(events, titles, window_seconds=1800)
    assert {(p.anchor, p.positive) for p in pairs} == {("drill", "Cordless Drill"),
                                                        ("saw", "Hand Saw")}


def test_pairs_from_store_mines_search_and_sequence_pairs(tmp_path: Path) -> None:
    from shelfwise.data.schemas import Item
    from shelfwise.storage import open_store

    store = open_store(f"sqlite:///{tmp_path / 'shop.db'}")
    store.upsert_items([Item(id="a", title="Cordless Drill", brand="Acme"),
                        Item(id="b", title="Drill Bits"), Item(id="c", title="")])
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    kinds = [(EventType.SEARCH, None, "drill"), (EventType.CLICK, "a", None),
             (EventType.CART, "b", None), (EventType.VIEW, "c", None)]
    store.add_events([Event(id=f"e{i}", type=k, user_id="u", item_id=item, query=q,
                            request_id="r1", timestamp=t0 + timedelta(minutes=i))
                      for i, (k, item, q) in enumerate(kinds)])
    pairs = pairs_from_store(store)
    assert [(p.anchor, p.positive, p.anchor_is_query) for p in pairs] == [
        ("drill", "Cordless Drill | Acme", True), ("drill", "Drill Bits", True),
        ("Cordless Drill | Acme", "Drill Bits", False)]  # "c" has no text
    assert pairs_from_store(store, search=False, sequences=False) == []


def test_pairs_from_sequences_and_split() -> None:
    titles = {"a": "A", "b": "B", "c": "C"}
    pairs = pairs_from_sequences([["a", "a", "b", "x", "c"], ["a", "b"]], titles)
    assert [(p.anchor, p.positive, p.anchor_is_query) for p in pairs] == [
        ("A", "B", False), ("B", "C", False)]
    train, held = split_by_anchor(PAIRS, 0.2, seed=1)
    assert len(train) + len(held) == len(PAIRS) and held
    assert not {p.anchor for p in train} & {p.anchor for p in held}
    assert pairs_digest(PAIRS) != pairs_digest(PAIRS[::-1])


def test_graded_ndcg_known_answers() -> None:
    rel = [3.0, 2.0, 1.0]
    assert graded_ndcg([3, 2, 1], rel) == pytest.approx(1.0)
    worst = (0 + 1 / np.log2(3) + 3 / np.log2(4)) / (3 + 1 / np.log2(3))
    assert graded_ndcg([1, 2, 3], rel) == pytest.approx(worst)
    # all tied: the mean over the 6 orders of the 3 items
    disc = 1 / np.log2(np.arange(2, 5))
    expected = (3 + 1) * disc.mean() / (3 + 1 / np.log2(3))
    assert graded_ndcg([0, 0, 0], rel) == pytest.approx(expected)
    assert graded_ndcg([1, 2], [1.0, 1.0]) is None
    assert graded_ndcg([2, 1, 0], [1.0, 1.0, 3.0], k=2) == pytest.approx(0.0)
    frame = pd.DataFrame({"query": ["q", "q", "r", "r"], "relevance": [3.0, 1.0, 1.0, 1.0]})
    per = ndcg_by_query(frame, [1.0, 0.0, 1.0, 0.0])
    assert per.to_dict() == {"q": 1.0}  # r has no gain to rank


def test_judged_ndcg_evaluator_with_a_toy_encoder() -> None:
    class Letters:
        """Bag-of-letters vectors: a title sharing letters with the query scores higher."""

        id, dim = "letters", 26

        def _enc(self, texts: list[str]) -> np.ndarray[Any, Any]:
            out = np.zeros((len(texts), 26), np.float32)
            for i, t in enumerate(texts):
                for ch in t.lower():
                    if "a" <= ch <= "z":
                        out[i, ord(ch) - 97] += 1
            return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

        encode_queries = encode_items = _enc

    frame = pd.DataFrame({"query": ["drill", "drill"], "title": ["drill", "xyz"],
                          "relevance": [3.0, 1.0]})
    assert JudgedNDCGEvaluator(frame)(Letters())["ndcg@10"] == pytest.approx(1.0)  # type: ignore[arg-type]
