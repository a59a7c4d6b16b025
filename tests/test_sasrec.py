"""SASRec and TextSASRec: known-answer sequences, persistence, config errors, cold items."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shelfwise.data.interactions import Interactions
from shelfwise.exceptions import ConfigError, NotFittedError
from shelfwise.retrieval import GENERATORS, SASRec, TextSASRec, make_generator, recommend
from shelfwise.retrieval.registry import load_generator
from tests.conftest import require_shared

N_CYCLE = 12
SMALL = {"hidden": 32, "layers": 1, "heads": 2, "dropout": 0.0, "lr": 5e-3, "batch_size": 32,
         "max_len": 10}


def cycle_frame(n_users: int = 120, seed: int = 0) -> pd.DataFrame:
    """Each user walks the cycle i0→i1→…→i11→i0 from a random start for 4-9 steps, so the
    next item is fully determined by the last one (and never by the position)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(N_CYCLE))
        for step in range(int(rng.integers(4, 10))):
            rows.append((f"u{u}", f"i{(start + step) % N_CYCLE}", float(step)))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def cycle_data() -> Interactions:
    return Interactions.from_frame(cycle_frame())


def next_item_accuracy(model: SASRec, data: Interactions) -> float:
    """Share of probe histories (every start, length 1-3) whose true next item ranks first."""
    hits, total = 0, 0
    for start in range(N_CYCLE):
        for length in (1, 2, 3):
            names = [f"i{(start + k) % N_CYCLE}" for k in range(length + 1)]
            hist = np.array([data.items.index(n) for n in names[:-1]])
            idx, _ = recommend(model, [hist], 1, exclude_seen=True)
            hits += int(idx[0, 0] == data.items.index(names[-1]))
            total += 1
    return hits / total


def test_sasrec_learns_a_deterministic_next_item() -> None:
    data = cycle_data()
    model = SASRec(epochs=40, **SMALL).fit(data)
    assert next_item_accuracy(model, data) >= 0.9
    assert model.history_[-1]["loss"] < model.history_[0]["loss"] / 3


def test_untrained_model_does_not_pass_the_known_answer_check() -> None:
    """The check above can fail: one epoch at a tiny learning rate is close to chance."""
    data = cycle_data()
    model = SASRec(epochs=1, **{**SMALL, "lr": 1e-5}).fit(data)
    assert next_item_accuracy(model, data) < 0.5


def test_fit_is_deterministic_and_seeded() -> None:
    data = cycle_data()
    hist = [np.array([0, 1, 2]), np.array([5])]
    a = SASRec(epochs=3, seed=1, **{**SMALL, "dropout": 0.2}).fit(data).score(hist)
    b = SASRec(epochs=3, seed=1, **{**SMALL, "dropout": 0.2}).fit(data).score(hist)
    c = SASRec(epochs=3, seed=2, **{**SMALL, "dropout": 0.2}).fit(data).score(hist)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_save_load_gives_identical_scores(tmp_path: Path) -> None:
    data = cycle_data()
    model = SASRec(epochs=2, **SMALL).fit(data)
    model.save(tmp_path / "m")
    loaded = load_generator(tmp_path / "m")
    assert isinstance(loaded, SASRec)
    hist = [np.array([0, 3, 4]), np.array([], dtype=np.int64), np.arange(20) % N_CYCLE]
    np.testing.assert_array_equal(loaded.score(hist), model.score(hist))
    assert loaded.to_config() == model.to_config()


def test_unknown_history_items_are_skipped_and_long_histories_cut() -> None:
    data = cycle_data()
    model = SASRec(epochs=1, **SMALL).fit(data)
    base = model.score([np.array([1, 2])])
    np.testing.assert_array_equal(model.score([np.array([999, 1, -5, 2])]), base)
    long = np.arange(40) % N_CYCLE
    np.testing.assert_array_equal(model.score([long]), model.score([long[-SMALL["max_len"]:]]))


def test_empty_history_falls_back_to_popularity() -> None:
    data = cycle_data()
    model = SASRec(epochs=1, **SMALL).fit(data)
    counts = np.bincount(data.item_idx, minlength=data.n_items)
    scores = model.score([np.array([], dtype=np.int64)])[0]
    assert int(np.argmax(scores)) == int(np.argmax(counts))


def test_early_stopping_uses_an_internal_holdout() -> None:
    data = cycle_data()
    model = SASRec(epochs=30, patience=2, **SMALL).fit(data)
    assert all("holdout_ndcg10" in row for row in model.history_)
    assert 1 <= model.best_epoch_ <= len(model.history_)
    best = max(row["holdout_ndcg10"] for row in model.history_)
    assert model.history_[model.best_epoch_ - 1]["holdout_ndcg10"] == best


def test_on_epoch_callback_can_stop_training() -> None:
    seen: list[int] = []

    def stop_at_two(epoch: int, model: SASRec) -> bool:
        seen.append(epoch)
        assert model.score([np.array([0])]).shape == (1, N_CYCLE)
        return epoch == 2

    SASRec(epochs=10, **SMALL).fit(cycle_data(), on_epoch=stop_at_two)
    assert seen == [1, 2]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"hidden": 30, "heads": 4}, "heads"),
        ({"max_len": 0}, "max_len"),
        ({"dropout": 1.0}, "dropout"),
        ({"lr": 0}, "lr"),
        ({"threads": 0}, "threads"),
        ({"epochs": 0}, "epochs"),
        ({"hidden_size": 64}, "hidden_size"),
    ],
)
def test_bad_config_names_the_field(params: dict[str, object], field: str) -> None:
    for name in ("sasrec", "sasrec_text"):
        with pytest.raises(ConfigError, match=field):
            make_generator(name, **params)


def test_registered_and_unfitted_errors() -> None:
    assert GENERATORS["sasrec"] is SASRec
    assert GENERATORS["sasrec_text"] is TextSASRec
    with pytest.raises(NotFittedError):
        SASRec().score([np.array([0])])
    with pytest.raises(NotFittedError):
        TextSASRec().add_items(["x"])


def test_no_sequences_is_a_clear_error() -> None:
    frame = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"]})
    with pytest.raises(ConfigError, match="2 or more"):
        SASRec(epochs=1).fit(Interactions.from_frame(frame))


# ---- TextSASRec ---------------------------------------------------------------------------------
class WordHashEncoder:
    """Deterministic stand-in for a text encoder: L2-normalised hashed bag of words, so texts
    sharing words are close (what the tests need) without loading a transformer."""

    id = "test-word-hash"
    dim = 64

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        for w in re.findall(r"\w+", text.lower()):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        n = float(np.linalg.norm(v))
        return v / n if n else v

    def encode_items(self, texts: Sequence[str]) -> np.ndarray:
        return np.vstack([self._vec(t) for t in texts]).astype(np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_items(texts)


TOPIC_WORDS = {"g": "gaming console controller joystick", "k": "kitchen knife pan skillet"}


def topic_data() -> tuple[Interactions, int]:
    """Two topics; users stay within one. ``g_new`` (a gaming item) has text but no events."""
    rng = np.random.default_rng(0)
    texts = {f"{t}{k}": f"{TOPIC_WORDS[t]} model {t}{k}" for t in "gk" for k in range(8)}
    texts["g_new"] = "gaming console controller joystick deluxe"
    rows = []
    for u in range(80):
        topic = "gk"[u % 2]
        for step, k in enumerate(rng.choice(8, size=5, replace=False)):
            rows.append((f"u{u}", f"{topic}{k}", float(step)))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    from shelfwise.data.ids import IdMap

    items = IdMap(sorted(texts))
    data = Interactions.from_frame(frame, items=items, item_text=texts)
    return data, data.items.index("g_new")


def text_model(**params: object) -> TextSASRec:
    model = TextSASRec(**{**SMALL, "epochs": 25, **params})  # type: ignore[arg-type]
    return model.set_encoder(WordHashEncoder())  # type: ignore[arg-type]


@pytest.mark.parametrize("id_embedding", [True, False])
def test_unseen_item_with_close_text_ranks_high(id_embedding: bool) -> None:
    data, new = topic_data()
    assert new not in set(data.item_idx.tolist())
    model = text_model(id_embedding=id_embedding).fit(data)
    gaming = np.array([data.items.index(f"g{k}") for k in (0, 3, 5)])
    kitchen = np.array([data.items.index(f"k{k}") for k in (1, 2, 6)])
    scores = model.score([gaming, kitchen])
    assert np.isfinite(scores).all()
    idx, _ = recommend(model, [gaming], 6, exclude_seen=True)
    assert new in idx[0].tolist()  # with the 5 other unseen gaming items, above all 8 kitchen
    assert scores[0, new] > scores[1, new]


def test_add_items_scores_new_catalog_items(tmp_path: Path) -> None:
    data, _ = topic_data()
    model = text_model().fit(data)
    gaming = np.array([data.items.index(f"g{k}") for k in (0, 3, 5)])
    before = model.score([gaming])
    model.add_items(["kitchen knife pan skillet extra", "gaming console controller joystick pro"])
    assert model.n_items_ == data.n_items + 2
    after = model.score([gaming])
    assert after.shape == (1, data.n_items + 2)
    np.testing.assert_allclose(after[:, : data.n_items], before, rtol=1e-5, atol=1e-5)
    assert after[0, -1] > after[0, -2]  # the gaming newcomer beats the kitchen one
    model.save(tmp_path / "t")
    loaded = load_generator(tmp_path / "t")
    assert loaded.n_items_ == data.n_items + 2
    np.testing.assert_array_equal(loaded.score([gaming]), after)


def test_text_model_needs_item_text() -> None:
    with pytest.raises(ConfigError, match="item text"):
        text_model(epochs=1).fit(cycle_data())


@pytest.mark.slow
def test_sasrec_beats_popularity_on_beauty() -> None:
    """Two epochs on real Beauty already rank the next item far above popularity."""
    from benchmarks.bench_cf_beauty import load_beauty

    from shelfwise.evaluation import NDCG, LeaveLastOut

    data = load_beauty(require_shared("amazon_sequences", "Beauty.txt"))
    split = LeaveLastOut(validation=True).split(data)
    assert split.valid is not None
    model = SASRec(epochs=2, lr=2e-3, batch_size=256).fit(split.train)
    reco, _ = recommend(model, split.valid.histories, 10)
    assert NDCG(10).calc(reco, split.valid.targets) > 0.015  # popularity: ~0.004
