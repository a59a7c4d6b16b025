"""The two-stage feed pipeline: known-answer ranking, fallback, config checks, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shelfwise.data.interactions import Interactions
from shelfwise.evaluation import NDCG, HitRate, LeaveLastOut
from shelfwise.exceptions import ConfigError, NotFittedError
from shelfwise.pipeline import Pipeline, PipelineConfig
from shelfwise.ranking import LambdaMART, merge_candidates
from shelfwise.retrieval import Cooccurrence, Popularity, recommend
from shelfwise.retrieval.base import CandidateGenerator
from shelfwise.retrieval.blend import Blend

N_HITS, N_CHAINS, CHAIN_LEN = 20, 30, 12


def two_segment_log(n_a: int = 500, n_b: int = 500, seed: int = 0) -> Interactions:
    """Segment A (short histories): two random catalog items, then two hits drawn by a Zipf
    law — popularity is right for them, co-occurrence is not. Segment B (long histories): a hit,
    then a walk along a chain of items — the next chain item is the answer, which
    co-occurrence finds and popularity cannot. History length tells the segments apart."""
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, N_HITS + 1)
    zipf /= zipf.sum()
    hits = [f"h{k}" for k in range(N_HITS)]
    chain = [[f"c{c}_{p}" for p in range(CHAIN_LEN)] for c in range(N_CHAINS)]
    rows: list[tuple[str, str]] = []
    for u in range(n_a):
        r = rng.choice(N_CHAINS, size=2)
        seq = [chain[r[0]][rng.integers(CHAIN_LEN)], chain[r[1]][rng.integers(CHAIN_LEN)]]
        seq += [hits[k] for k in rng.choice(N_HITS, size=2, replace=False, p=zipf)]
        rows += [(f"a{u}", it) for it in seq]
    for u in range(n_b):
        c, start = int(rng.integers(N_CHAINS)), int(rng.integers(CHAIN_LEN - 9))
        seq = [hits[int(rng.choice(N_HITS, p=zipf))], *chain[c][start : start + 9]]
        rows += [(f"b{u}", it) for it in seq]
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))


CONFIG = {
    "generators": [
        {"name": "cooccurrence", "params": {"window": 1, "directed": True,
                                            "popularity_tiebreak": False}},
        {"name": "popularity", "params": {"half_life_days": None}},
    ],
    "candidates_per_generator": 20,
    "min_groups": 50,
    "tune_blend": False,
    "ranker": {"n_estimators": 80, "min_child_samples": 20, "early_stopping_rounds": None},
}


def ndcg_hr(model: CandidateGenerator, data: Interactions) -> tuple[float, float]:
    split = LeaveLastOut().split(data)
    reco, _ = recommend(model, split.test.histories, 10)
    t = split.test.targets
    return NDCG(10).calc(reco, t), HitRate(10).calc(reco, t)


@pytest.fixture(scope="module")
def log() -> Interactions:
    return two_segment_log()


@pytest.fixture(scope="module")
def fitted(log: Interactions) -> Pipeline:
    return Pipeline(CONFIG).fit(LeaveLastOut().split(log).train)


def test_learned_ranker_beats_each_generator(log: Interactions, fitted: Pipeline) -> None:
    assert isinstance(fitted, CandidateGenerator)
    assert fitted.mode_ == "ranker"
    assert fitted.report_["train_groups"] >= 500
    assert fitted.report_["candidate_recall"] > 0.5
    pipe_ndcg, pipe_hr = ndcg_hr(fitted, log)
    singles = {name: ndcg_hr(gen, log) for name, gen in fitted.generators_.items()}
    best_ndcg = max(v[0] for v in singles.values())
    best_hr = max(v[1] for v in singles.values())
    # each generator is right for one half of the users only
    assert best_hr < 0.65, singles
    assert pipe_hr > best_hr + 0.25, (pipe_hr, singles)
    assert pipe_ndcg > best_ndcg + 0.15, (pipe_ndcg, singles)
    # the segment feature is what the ranker used
    gain = fitted.report_["feature_gain_share"]
    assert gain["history_len"] > 0.01, gain


def test_ranker_that_ignores_features_loses(log: Interactions, fitted: Pipeline) -> None:
    """Control: the same pipeline with the ranker's scores replaced by noise does not beat the
    generators, so the test above measures the learned ranking, not the candidate set."""
    assert fitted.ranker_ is not None

    class Noise(LambdaMART):
        def predict(self, x: object) -> np.ndarray:
            return np.random.default_rng(0).random(size=(np.asarray(x).shape[0],))

    real = fitted.ranker_
    try:
        fitted.ranker_ = Noise(real.config)
        noisy_ndcg, _ = ndcg_hr(fitted, log)
    finally:
        fitted.ranker_ = real
    best = max(ndcg_hr(gen, log)[0] for gen in fitted.generators_.values())
    assert noisy_ndcg < best


def test_candidates_rank_above_every_other_item(log: Interactions, fitted: Pipeline) -> None:
    hist = LeaveLastOut().split(log).test.histories[:64]
    scores = fitted.score(hist)
    cands, x, names = fitted.candidate_features(hist)
    assert x.shape == (len(cands), len(names))
    assert np.isfinite(scores).all()
    for r in range(len(hist)):
        items = cands.items[cands.offsets[r] : cands.offsets[r + 1]]
        others = np.setdiff1d(np.arange(scores.shape[1]), items)
        assert scores[r, items].min() > scores[r, others].max()
    assert fitted.ranker_ is not None
    contrib = fitted.ranker_.contributions(x[:5])
    assert contrib.shape == (5, len(names) + 1)
    np.testing.assert_allclose(contrib.sum(axis=1), fitted.ranker_.predict(x[:5]), rtol=1e-5,
                               atol=1e-6)


def test_too_little_data_falls_back_to_the_blend(log: Interactions) -> None:
    small = log.select(np.isin(log.user_idx, np.arange(0, log.n_users, 25)))
    cfg = {**CONFIG, "min_groups": 200}
    pipe = Pipeline(cfg).fit(small)
    assert pipe.mode_ == "blend" and pipe.ranker_ is None
    assert "min_groups=200" in pipe.report_["reason"]
    hist = small.histories()[:40]
    blend = Blend([("cooccurrence", pipe.generators_["cooccurrence"], 1.0),
                   ("popularity", pipe.generators_["popularity"], 1.0)])
    np.testing.assert_allclose(pipe.score(hist), blend.score(hist) / 2.0, rtol=1e-5, atol=1e-6)


def test_unfitted_pipeline_says_so() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        Pipeline(CONFIG).score([np.array([0])])


@pytest.mark.parametrize(("change", "expected"), [
    ({"generators": [{"name": "easy"}]}, r"generators\.0\.name: unknown generator 'easy'"),
    ({"generators": [{"name": "ease", "params": {"l2": -1}}]},
     r"generators\.0: params of generator 'ease': l2"),
    ({"generators": [{"name": "ease", "params": {"lambda": 5}}]},
     r"params of generator 'ease': lambda"),
    ({"candidates_per_gen": 5}, r"candidates_per_gen: Extra inputs"),
    ({"ranker": {"num_leaves": 1}}, r"ranker\.num_leaves"),
    ({"generators": [{"name": "ease"}, {"name": "ease", "params": {"l2": 9}}]},
     r"ease appear more than once"),
    ({"generators": [{"name": "ease", "candidates": 0}]}, r"at least one must contribute"),
])
def test_config_errors_name_the_field(change: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        PipelineConfig.from_dict({**CONFIG, **change})


def test_toml_config_and_hash(tmp_path: Path) -> None:
    text = """
[pipeline]
candidates_per_generator = 30
min_groups = 10

[[pipeline.generators]]
name = "ease"
params = { l2 = 50.0, history_decay = 0.7 }

[[pipeline.generators]]
name = "semantic"
candidates = 0

[pipeline.ranker]
num_leaves = 15
"""
    path = tmp_path / "feed.toml"
    path.write_text(text)
    cfg = PipelineConfig.from_toml(path)
    assert [g.key for g in cfg.generators] == ["ease", "semantic"]
    assert cfg.candidates_of(cfg.generators[1]) == 0
    assert cfg.ranker.num_leaves == 15
    same = PipelineConfig.from_dict(cfg.model_dump())
    assert same.config_hash() == cfg.config_hash()
    other = cfg.model_copy(update={"min_groups": 11})
    assert other.config_hash() != cfg.config_hash()
    path.write_text(text.replace("num_leaves", "leaves"))
    with pytest.raises(ConfigError, match=r"(?s)feed\.toml.*ranker\.leaves"):
        PipelineConfig.from_toml(path)


def test_save_load_gives_identical_scores(tmp_path: Path, log: Interactions,
                                          fitted: Pipeline) -> None:
    fitted.save(tmp_path / "pipe")
    loaded = Pipeline.load(tmp_path / "pipe")
    assert loaded.mode_ == "ranker" and loaded.config == fitted.config
    hist = LeaveLastOut().split(log).test.histories[:200]
    np.testing.assert_array_equal(loaded.score(hist), fitted.score(hist))


def test_refit_ranker_reuses_inner_generators(log: Interactions) -> None:
    train = LeaveLastOut().split(log).train
    pipe = Pipeline(CONFIG, keep_inner=True).fit(train)
    gens = dict(pipe.generators_)
    pipe.refit_ranker({**CONFIG, "candidates_per_generator": 5})
    assert pipe.generators_ == gens
    assert pipe.report_["mean_candidates"] <= 10
    with pytest.raises(ConfigError, match="generators differ"):
        pipe.refit_ranker({**CONFIG, "generators": [{"name": "popularity"}]})


def test_category_features_and_merge() -> None:
    frame = pd.DataFrame({"user_id": ["u"] * 3 + ["v"] * 3,
                          "item_id": ["x", "y", "z", "y", "z", "w"]})
    data = Interactions.from_frame(frame)
    cats = np.array([0, 1, 1, -1])  # x, y, z, w
    pipe = Pipeline({"generators": [{"name": "popularity", "params": {"half_life_days": None}}],
                     "min_groups": 1, "tune_blend": False}, item_categories=cats)
    pipe.generators_ = {"popularity": Popularity(half_life_days=None).fit(data)}
    pipe.stats_ = pipe._item_stats(data)
    cands, x, names = pipe.candidate_features([np.array([0, 1, 2])])
    assert {"cat_affinity", "cat_recency"} <= set(names)
    assert cands.items.tolist() == [3]  # everything else is seen
    row = dict(zip(names, x[0], strict=True))
    assert np.isnan(row["cat_affinity"]) and row["cat_recency"] == 1000.0
    m = merge_candidates([np.array([[3, 1, -1]]), np.array([[1, 2, 0]])], 1, 4)
    assert m.items.tolist() == [0, 1, 2, 3] and m.offsets.tolist() == [0, 4]
    with pytest.raises(ConfigError, match="item_categories has 2 entries"):
        Pipeline({"generators": [{"name": "popularity"}]}, item_categories=[0, 1]).fit(data)


def test_cooccurrence_alone_is_the_b_segment_oracle(log: Interactions) -> None:
    """Sanity of the fixture itself: each generator alone gets roughly one segment right."""
    split = LeaveLastOut().split(log)
    cooc = Cooccurrence(window=1, directed=True, popularity_tiebreak=False).fit(split.train)
    pop = Popularity(half_life_days=None).fit(split.train)
    b = [k for k, u in enumerate(split.test.users) if log.users.ids[u].startswith("b")]
    a = [k for k, u in enumerate(split.test.users) if log.users.ids[u].startswith("a")]
    for gen, good, bad in ((cooc, b, a), (pop, a, b)):
        reco, _ = recommend(gen, [split.test.histories[k] for k in good + bad], 10)
        hits = HitRate(10).calc_per_user(reco, [split.test.targets[k] for k in good + bad])
        assert hits[: len(good)].mean() > 0.6 and hits[len(good):].mean() < 0.3


def test_semantic_features_only_generator() -> None:
    """A semantic generator with ``candidates = 0`` adds score features (no rank) and the
    cosine of each candidate with the user's last item, and no candidates of its own."""
    from shelfwise.retrieval.semantic import Semantic

    frame = pd.DataFrame({"user_id": ["u", "u", "v", "v", "w"],
                          "item_id": ["x", "y", "y", "z", "w"]})
    data = Interactions.from_frame(frame)
    vectors = np.eye(4, dtype=np.float32)
    vectors[2] = np.array([0.6, 0.8, 0, 0], np.float32)  # z is close to y (index 1)
    sem = Semantic()
    sem.vectors_ = sem.raw_vectors_ = vectors
    sem.script_means_, sem.encoder_id_, sem._n_items = np.zeros((2, 4), np.float32), "fake", 4
    pipe = Pipeline({"generators": [
        {"name": "popularity", "params": {"half_life_days": None}, "candidates": 2},
        {"name": "semantic", "candidates": 0}], "tune_blend": False})
    pipe.generators_ = {"popularity": Popularity(half_life_days=None).fit(data),
                        "semantic": sem}
    pipe.stats_ = pipe._item_stats(data)
    cands, x, names = pipe.candidate_features([np.array([1])])  # history: y
    assert "semantic_rank" not in names and "popularity_rank" in names
    row = {int(i): dict(zip(names, x[k], strict=True)) for k, i in enumerate(cands.items)}
    assert set(row) <= {0, 2, 3} and len(row) == 2  # two popular unseen items, y excluded
    for item, feats in row.items():
        assert feats["sem_last_item"] == pytest.approx(float(vectors[item] @ vectors[1]))
        assert feats["semantic_score"] == pytest.approx(float(vectors[item] @ vectors[1]))
