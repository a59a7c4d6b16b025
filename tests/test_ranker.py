"""Contract tests for the ``Ranker`` protocol, run over each configuration in use (the feed's
and search's LambdaMART), plus loading of bundles written by the two former wrappers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from shelfwise.exceptions import ConfigError, NotFittedError
from shelfwise.ranking import LambdaMART, LambdaMARTConfig, Ranker, SearchRankerConfig

NAMES = ["signal", "weak", "noise", "constant"]
PER = 8

#: Every ranker the project uses; each contract test runs over all of them.
RANKERS: dict[str, Callable[..., Ranker]] = {
    "feed": lambda **kw: LambdaMART(LambdaMARTConfig(**kw)),
    "search": lambda **kw: LambdaMART(SearchRankerConfig(**kw)),
}


@pytest.fixture(params=sorted(RANKERS))
def make(request: pytest.FixtureRequest) -> Callable[..., Ranker]:
    return RANKERS[request.param]


def data(n_q: int = 120, seed: int = 0, noise: float = 0.3
         ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Groups of ``PER`` rows; the grade (0..3) follows ``signal``, a little of ``weak``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_q * PER, len(NAMES))).astype(np.float32)
    x[:, 3] = 1.0
    y = np.clip(np.round(x[:, 0] + 0.3 * x[:, 1] + noise * rng.normal(size=len(x)) + 1), 0, 3)
    return x, y.astype(np.int64), [PER] * n_q


# ---- the contract ---------------------------------------------------------------------------
def test_fit_predict_contributions(make: Callable[..., Ranker]) -> None:
    x, y, g = data()
    ranker = make(n_estimators=40)
    assert isinstance(ranker, Ranker) and not ranker.fitted
    assert ranker.fit(x, y, g, NAMES) is ranker
    assert ranker.fitted and ranker.feature_names_ == NAMES
    test, _, _ = data(n_q=5, seed=1)
    score = ranker.predict(test)
    assert score.shape == (len(test),) and score.dtype == np.float64
    assert np.argmax(score[:PER]) == np.argmax(test[:PER, 0]), "learned the signal"
    contrib = ranker.contributions(test)
    assert contrib.shape == (len(test), len(NAMES) + 1)  # last column: the bias
    np.testing.assert_allclose(contrib.sum(axis=1), score, rtol=1e-6, atol=1e-6)
    assert np.all(contrib[:, 3] == 0), "a constant feature contributes nothing"


def test_save_load_round_trip(make: Callable[..., Ranker], tmp_path: Path) -> None:
    x, y, g = data()
    ranker = make(n_estimators=30).fit(x, y, g, NAMES)
    ranker.save(tmp_path / "r")
    again = type(ranker).load(tmp_path / "r")
    test, _, _ = data(n_q=5, seed=2)
    np.testing.assert_array_equal(again.predict(test), ranker.predict(test))
    np.testing.assert_array_equal(again.contributions(test), ranker.contributions(test))
    assert again.feature_names_ == NAMES
    assert isinstance(ranker, LambdaMART) and isinstance(again, LambdaMART)
    assert again.config.to_config() == ranker.config.to_config()
    assert again.best_iteration_ == ranker.best_iteration_


def test_early_stopping_on_explicit_valid_groups(make: Callable[..., Ranker]) -> None:
    x, y, g = data(n_q=200, noise=1.0)
    valid = (x[:400], y[:400], g[:50])
    ranker = make(n_estimators=400, learning_rate=0.3, early_stopping_rounds=10).fit(
        x[400:], y[400:], g[50:], NAMES, valid=valid)
    assert isinstance(ranker, LambdaMART)
    assert 0 < ranker.best_iteration_ < 400, "noisy grades stop well before 400 trees"
    assert ranker.valid_ndcg_ is not None and 0 < ranker.valid_ndcg_ <= 1


def test_early_stopping_on_an_internal_split() -> None:
    x, y, g = data(n_q=200, noise=1.0)
    ranker = LambdaMART(n_estimators=400, learning_rate=0.3, valid_fraction=0.2,
                        early_stopping_rounds=10).fit(x, y, g, NAMES)
    assert 0 < ranker.best_iteration_ < 400 and ranker.valid_ndcg_ is not None
    # search's default holds nothing out by itself: every tree is kept
    full = LambdaMART(SearchRankerConfig(n_estimators=25)).fit(x, y, g, NAMES)
    assert full.best_iteration_ == 25 and full.valid_ndcg_ is None
    off = LambdaMART(n_estimators=25, early_stopping_rounds=None).fit(x, y, g, NAMES)
    assert off.best_iteration_ == 25 and off.valid_ndcg_ is None


def test_label_gain_covers_a_grade_seen_only_in_valid(make: Callable[..., Ranker]) -> None:
    x, y, g = data(n_q=100)
    clicks = np.minimum(y[400:], 1)  # training grades 0..1, held-out grades up to 3
    valid = (x[:400], y[:400], g[:50])
    assert y[:400].max() == 3
    make(n_estimators=10).fit(x[400:], clicks, g[50:], NAMES, valid=valid)
    with pytest.raises(ConfigError, match="label_gain: grade 3"):
        make(n_estimators=10, label_gain=[0.0, 1.0]).fit(x[400:], clicks, g[50:], NAMES,
                                                         valid=valid)


def test_default_label_gain_is_two_to_the_grade_minus_one(make: Callable[..., Ranker]) -> None:
    x, y, g = data()
    test, _, _ = data(n_q=5, seed=3)
    default = make(n_estimators=20).fit(x, y, g, NAMES).predict(test)
    explicit = make(n_estimators=20, label_gain=[0.0, 1.0, 3.0, 7.0]).fit(x, y, g, NAMES)
    np.testing.assert_array_equal(explicit.predict(test), default)
    flat = make(n_estimators=20, label_gain=[0.0, 1.0, 2.0, 3.0]).fit(x, y, g, NAMES)
    assert not np.array_equal(flat.predict(test), default), "label_gain is used"


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda x, y, g, n: (x[:, :3], y, g, n), r"train features: expected 4 columns"),
    (lambda x, y, g, n: (x[:0], y[:0], [], n), r"no rows"),
    (lambda x, y, g, n: (x, y, g[:-1], n), r"groups \(sum 952\) must both cover the 960"),
    (lambda x, y, g, n: (x, y[:-1], g, n), r"labels \(959\)"),
    (lambda x, y, g, n: (x, y, [*g[:-1], 0, PER], n), r"at least one row"),
    (lambda x, y, g, n: (x, y + 0.5, g, n), r"integer grades"),
    (lambda x, y, g, n: (x, np.where(y == 0, np.nan, y), g, n), r"integer grades"),
    (lambda x, y, g, n: (x, y - 1, g, n), r"grades must be >= 0"),
    (lambda x, y, g, n: (x, y, g, ["a", "a", "b", "c"]), r"distinct names"),
    (lambda x, y, g, n: (x, y, g, []), r"distinct names"),
])
def test_bad_inputs_name_the_problem(make: Callable[..., Ranker], mutate: Callable[..., Any],
                                     message: str) -> None:
    x, y, g = data()
    with pytest.raises(ConfigError, match=message):
        make(n_estimators=5).fit(*mutate(x, y.astype(np.float64), g, NAMES))


def test_bad_valid_set_and_prediction_input(make: Callable[..., Ranker]) -> None:
    x, y, g = data()
    with pytest.raises(ConfigError, match="valid features: expected 4 columns"):
        make(n_estimators=5).fit(x, y, g, NAMES, valid=(x[:16, :2], y[:16], [PER, PER]))
    with pytest.raises(ConfigError, match="valid labels"):
        make(n_estimators=5).fit(x, y, g, NAMES, valid=(x[:16], y[:16], [PER]))
    ranker = make(n_estimators=5).fit(x, y, g, NAMES)
    with pytest.raises(ConfigError, match="expected 4 columns"):
        ranker.predict(x[:, :3])


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="n_trees"):
        LambdaMART(n_trees=10)
    with pytest.raises(ConfigError, match="learning_rate"):
        LambdaMART(learning_rate=0)
    with pytest.raises(ConfigError, match="features"):
        SearchRankerConfig.from_config({"features": ["bm25"]})


def test_unfitted_use_raises_not_fitted(make: Callable[..., Ranker], tmp_path: Path) -> None:
    ranker = make()
    x, _, _ = data(n_q=1)
    for call in (lambda: ranker.predict(x), lambda: ranker.contributions(x),
                 lambda: ranker.save(tmp_path / "r")):
        with pytest.raises(NotFittedError):
            call()
    assert isinstance(ranker, LambdaMART)
    with pytest.raises(NotFittedError):
        ranker.columns(NAMES)
    with pytest.raises(NotFittedError):
        ranker.importance()
    assert not (tmp_path / "r").exists()


def test_columns_reads_its_features_out_of_a_longer_list(make: Callable[..., Ranker]) -> None:
    x, y, g = data()
    ranker = make(n_estimators=10).fit(x, y, g, NAMES)
    assert isinstance(ranker, LambdaMART)
    builder = ["new", "constant", "noise", "signal", "also_new", "weak"]
    cols = ranker.columns(builder)
    assert [builder[c] for c in cols] == NAMES
    wide = np.zeros((len(x), len(builder)), np.float32)
    wide[:, cols] = x
    np.testing.assert_array_equal(ranker.predict(wide[:, cols]), ranker.predict(x))
    with pytest.raises(ConfigError, match=r"needs \['weak'\].*retrain"):
        ranker.columns(["signal", "noise", "constant"])


# ---- bundles written by the former wrappers --------------------------------------------------
def _tiny_booster(trees: int = 12) -> tuple[lgb.Booster, np.ndarray]:
    x, y, g = data(n_q=60)
    booster = lgb.train({"objective": "lambdarank", "verbose": -1, "num_threads": 1},
                        lgb.Dataset(x, y, group=g, feature_name=NAMES), num_boost_round=trees)
    return booster, data(n_q=5, seed=4)[0]


def test_loads_a_ranker_saved_by_the_old_search_wrapper(tmp_path: Path) -> None:
    """``search.ranker.LTRRanker`` wrote lambdamart.txt + config.json (its RankerConfig, with
    the feature list inside)."""
    booster, test = _tiny_booster()
    booster.save_model(str(tmp_path / "lambdamart.txt"))
    (tmp_path / "config.json").write_text(json.dumps({
        "n_estimators": 200, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 10,
        "subsample": 0.8, "colsample_bytree": 0.8, "label_gain": None, "features": NAMES,
        "seed": 0, "n_jobs": 1}, indent=2))
    ranker = LambdaMART.load(tmp_path)
    assert ranker.feature_names_ == NAMES and ranker.best_iteration_ == 12
    assert isinstance(ranker.config, SearchRankerConfig)
    assert ranker.config.min_child_samples == 10 and ranker.config.reg_lambda == 0
    np.testing.assert_array_equal(ranker.predict(test), booster.predict(test))
    assert ranker.columns(["x", *NAMES]) == [1, 2, 3, 4]
    ranker.save(tmp_path / "new")  # re-saved in the current format
    np.testing.assert_array_equal(LambdaMART.load(tmp_path / "new").predict(test),
                                  booster.predict(test))


def test_loads_a_ranker_saved_by_the_old_feed_wrapper(tmp_path: Path) -> None:
    """``ranking.ranker.LambdaMART`` before the merge wrote lambdamart.txt (best iteration
    only) + ranker.json, whose config lacked the fields added since."""
    booster, test = _tiny_booster(trees=20)
    booster.save_model(str(tmp_path / "lambdamart.txt"), num_iteration=7)
    (tmp_path / "ranker.json").write_text(json.dumps({
        "config": {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 31,
                   "min_child_samples": 50, "subsample": 0.8, "colsample_bytree": 0.9,
                   "reg_lambda": 1.0, "eval_at": 10, "early_stopping_rounds": 30,
                   "valid_fraction": 0.1, "seed": 0, "n_jobs": 1},
        "feature_names": NAMES, "best_iteration": 7, "valid_ndcg": 0.61}, indent=2))
    ranker = LambdaMART.load(tmp_path)
    assert ranker.best_iteration_ == 7 and ranker.valid_ndcg_ == 0.61
    assert ranker.config == LambdaMARTConfig()
    np.testing.assert_array_equal(ranker.predict(test), booster.predict(test, num_iteration=7))


def test_load_refuses_what_is_not_a_ranker(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a saved ranker"):
        LambdaMART.load(tmp_path)
    booster, _ = _tiny_booster(trees=2)
    booster.save_model(str(tmp_path / "lambdamart.txt"))
    (tmp_path / "config.json").write_text(json.dumps({"features": ["other", *NAMES[1:]]}))
    with pytest.raises(ConfigError, match="do not match"):
        LambdaMART.load(tmp_path)
    (tmp_path / "lambdamart.txt").write_text("not a model")
    with pytest.raises(ConfigError, match="unreadable ranker"):
        LambdaMART.load(tmp_path)
