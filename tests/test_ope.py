"""Off-policy estimators on simulated logs with a known true value, plus the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from shelfwise.cli import policy_cmd
from shelfwise.exceptions import ConfigError
from shelfwise.policies import (
    DM,
    DR,
    IPS,
    SNIPS,
    BanditLog,
    DRos,
    LogisticRewardModel,
    RidgeRewardModel,
    SwitchDR,
    cross_fit,
    empirical_action_distribution,
    evaluate_policy,
    make_estimator,
)
from shelfwise.policies.ope import slope_select

K, D = 4, 3


class Env:
    """Contexts x ~ N(0, I) with a constant last feature; P(r=1|x,a) = sigmoid(x·θ_a).
    Logging and evaluation policies are softmaxes of different linear scores."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.theta = rng.normal(0, 0.8, size=(K, D))
        self.w_log = rng.normal(0, 0.5, size=(K, D))
        self.w_eval = self.theta * 2.0  # prefers the better arms

    @staticmethod
    def contexts(n: int, rng: np.random.Generator) -> np.ndarray:
        x = rng.normal(size=(n, D))
        x[:, -1] = 1.0
        return x

    @staticmethod
    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def q(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(x @ self.theta.T)))

    def pi_log(self, x: np.ndarray) -> np.ndarray:
        return self.softmax(x @ self.w_log.T)

    def pi_eval(self, x: np.ndarray) -> np.ndarray:
        return self.softmax(x @ self.w_eval.T)

    def true_value(self) -> float:
        x = self.contexts(400_000, np.random.default_rng(123))
        return float((self.pi_eval(x) * self.q(x)).sum(axis=1).mean())

    def log(self, n: int, rng: np.random.Generator) -> tuple[BanditLog, np.ndarray]:
        x = self.contexts(n, rng)
        pb = self.pi_log(x)
        a = (pb.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
        r = (rng.random(n) < self.q(x)[np.arange(n), a]).astype(float)
        log = BanditLog.from_arrays(a, r, pb[np.arange(n), a], contexts=x, n_actions=K)
        return log, x


ENV = Env()
TRUE_V = ENV.true_value()


def test_estimators_unbiased_over_many_logs() -> None:
    rng = np.random.default_rng(1)
    values: dict[str, list[float]] = {k: [] for k in
                                      ("ips", "snips", "dr", "dr_wrong_q", "dm_true_q")}
    for _ in range(150):
        log, x = ENV.log(1000, rng)
        pi = ENV.pi_eval(x)
        q_fit = cross_fit(RidgeRewardModel(n_actions=K), x, log.actions, log.rewards, seed=0)
        wrong_q = np.full((log.n_rounds, K), log.rewards.mean())
        values["ips"].append(IPS().value(log, pi))
        values["snips"].append(SNIPS().value(log, pi))
        values["dr"].append(DR().value(log, pi, q_fit))
        values["dr_wrong_q"].append(DR().value(log, pi, wrong_q))
        values["dm_true_q"].append(DM().value(log, pi, ENV.q(x)))
    for name, vals in values.items():
        v = np.asarray(vals)
        se = v.std(ddof=1) / np.sqrt(len(v))
        assert abs(v.mean() - TRUE_V) < 4 * se + 1e-3, (name, v.mean(), TRUE_V, se)
    # DM with the wrong (constant) model is biased; DR with the same model is not (above)
    log, x = ENV.log(20_000, np.random.default_rng(2))
    wrong = np.full((log.n_rounds, K), log.rewards.mean())
    assert abs(DM().value(log, ENV.pi_eval(x), wrong) - TRUE_V) > 0.03
    # a good reward model makes DR less variable than IPS
    assert np.std(values["dr"]) < np.std(values["ips"])


def test_dm_is_exact_with_the_true_reward_model() -> None:
    log, x = ENV.log(500, np.random.default_rng(3))
    pi, q = ENV.pi_eval(x), ENV.q(x)
    assert DM().value(log, pi, q) == pytest.approx((pi * q).sum(axis=1).mean(), rel=1e-12)


def test_on_policy_special_cases() -> None:
    log, x = ENV.log(2000, np.random.default_rng(4))
    pb = ENV.pi_log(x)
    # evaluating the logging policy itself: SNIPS is exactly the logged mean reward
    assert SNIPS().value(log, pb) == pytest.approx(log.rewards.mean(), rel=1e-12)
    q = cross_fit(RidgeRewardModel(n_actions=K), x, log.actions, log.rewards)
    pi = ENV.pi_eval(x)
    dr, dm = DR().value(log, pi, q), DM().value(log, pi, q)
    assert SwitchDR(tau=float("inf")).value(log, pi, q) == pytest.approx(dr)
    assert SwitchDR(tau=0.0).value(log, pi, q) == pytest.approx(dm)
    assert DRos(shrinkage=float("inf")).value(log, pi, q) == pytest.approx(dr)
    assert DRos(shrinkage=0.0).value(log, pi, q) == pytest.approx(dm)
    est = DRos().estimate(log, pi, q, n_bootstrap=50)
    assert est.params["shrinkage"] in DRos().candidates
    assert SwitchDR().estimate(log, pi, q, n_bootstrap=50).params["tau"] in SwitchDR().candidates


def test_slope_keeps_the_unbiased_candidate_when_others_disagree() -> None:
    rng = np.random.default_rng(0)
    rounds = {1.0: rng.normal(5.0, 0.1, 1000), 2.0: rng.normal(1.0, 1.0, 1000)}
    assert slope_select([1.0, 2.0], rounds.__getitem__) == 2.0  # widest CI first; 1.0 too far
    rounds[1.0] = rng.normal(1.0, 0.1, 1000)
    assert slope_select([1.0, 2.0], rounds.__getitem__) == 1.0  # consistent: keep narrower


def test_bootstrap_interval_reproducible_and_covers() -> None:
    log, x = ENV.log(800, np.random.default_rng(5))
    pi = ENV.pi_eval(x)
    a = IPS().estimate(log, pi, n_bootstrap=300, seed=7, interval="bootstrap")
    b = IPS().estimate(log, pi, n_bootstrap=300, seed=7, interval="bootstrap")
    assert a == b
    assert a.lower <= a.value <= a.upper
    assert a.interval == "bootstrap" and a.n_bootstrap == 300
    covered = 0
    rng = np.random.default_rng(6)
    for _ in range(60):
        log, x = ENV.log(800, rng)
        e = DR().estimate(log, ENV.pi_eval(x), ENV.q(x), n_bootstrap=200, seed=1,
                          interval="bootstrap")
        covered += e.lower <= TRUE_V <= e.upper
    assert covered >= 51  # nominal 95%: at least 85% of 60


def test_positions_read_per_slot() -> None:
    actions = np.array([0, 1, 2, 0, 1, 2])
    positions = np.array([0, 0, 0, 1, 1, 1])
    rewards = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    log = BanditLog.from_arrays(actions, rewards, np.full(6, 1 / 3), positions=positions)
    dist = np.array([[0.5, 0.0], [0.5, 0.5], [0.0, 0.5]])  # (n_actions, n_positions)
    w = np.array([0.5, 0.5, 0.0, 0.0, 0.5, 0.5]) * 3
    assert IPS().value(log, dist) == pytest.approx((w * rewards).mean())
    per_row = np.broadcast_to(dist, (6, 3, 2))
    assert IPS().value(log, per_row) == pytest.approx((w * rewards).mean())
    emp = empirical_action_distribution(log)
    assert emp.shape == (3, 2)
    assert np.allclose(emp.sum(axis=0), 1.0)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="propensit"):
        BanditLog.from_arrays([0, 1], [1.0, 0.0], [0.5, 0.0])
    with pytest.raises(ValueError, match="lengths"):
        BanditLog.from_arrays([0, 1], [1.0], [0.5, 0.5])
    log = BanditLog.from_arrays([0, 1], [1.0, 0.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="summing to 1"):
        IPS().value(log, np.array([0.7, 0.7]))
    with pytest.raises(ConfigError):
        DM().value(log, np.array([0.5, 0.5]))  # no reward model
    with pytest.raises(ConfigError):
        make_estimator("magic")


def test_evaluate_policy_table_and_refit() -> None:
    log, x = ENV.log(1500, np.random.default_rng(8))
    pi = ENV.pi_eval(x)
    table = evaluate_policy(log, pi, n_bootstrap=100)
    assert list(table["estimator"]) == ["ips", "snips", "dm", "dr", "switch-dr", "dr-os"]
    assert ((table["lower"] <= table["value"]) & (table["value"] <= table["upper"])).all()
    refit = evaluate_policy(log, pi, ["dm", "dr"], n_bootstrap=40, bootstrap="refit",
                            reward_model=LogisticRewardModel(n_actions=K))
    assert (refit["upper"] > refit["lower"]).all()
    assert abs(refit["value"] - TRUE_V).max() < 0.1


def _cli_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test app"""

    policy_cmd.register(app)
    return app


def test_cli_smoke(tmp_path: Path) -> None:
    log, x = ENV.log(1200, np.random.default_rng(9))
    promos = np.array(["spring10", "freeship", "bundle", "none"])
    frame = pd.DataFrame({"f0": x[:, 0], "f1": x[:, 1], "promo": promos[log.actions],
                          "clicked": log.rewards, "p": log.propensities})
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    runner = CliRunner()
    args = ["evaluate-policy", str(path), "--feature-prefix", "f", "--action-col", "promo",
            "--reward-col", "clicked", "--propensity-col", "p", "--n-bootstrap", "50"]
    out = tmp_path / "records.jsonl"
    res = runner.invoke(_cli_app(), [*args, "--policy", "linucb", "--param", "alpha=0.2",
                                     "--save-policy", str(tmp_path / "pol"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    for name in ("ips", "snips", "dm", "dr", "switch-dr", "dr-os", "95% ["):
        assert name in res.output
    assert len(out.read_text().splitlines()) == 6
    res = runner.invoke(_cli_app(), [*args, "--load-policy", str(tmp_path / "pol"),
                                     "--estimators", "ips,dr"])
    assert res.exit_code == 0, res.output
    target = tmp_path / "other.csv"
    pd.DataFrame({"promo": ["bundle"] * 30 + ["spring10"] * 10}).to_csv(target, index=False)
    res = runner.invoke(_cli_app(), [*args, "--target-log", str(target)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(_cli_app(), [*args, "--policy", "linucb", "--features", "nope"])
    assert res.exit_code == 2
    assert "nope" in res.output


def test_mse_selection_trades_variance_against_the_estimated_bias() -> None:
    from shelfwise.policies.ope import mse_select

    rng = np.random.default_rng(0)
    noisy = {c: rng.normal(0.0, 10.0 / c, 4000) for c in (1.0, 10.0, 100.0)}
    # no bias anywhere: the lowest variance wins
    assert mse_select([1.0, 10.0, 100.0], noisy.__getitem__, lambda c: np.zeros(4000)) == 100.0
    # a large bias on the low-variance candidates: the unbiased, noisier one wins
    biased = {1.0: 0.0, 10.0: 0.5, 100.0: 1.0}
    assert mse_select([1.0, 10.0, 100.0], noisy.__getitem__,
                      lambda c: np.full(4000, biased[c])) == 1.0


def test_dros_selection_by_mse_or_slope_and_the_default_reward_model() -> None:
    from shelfwise.policies.ope import default_reward_model, make_terms

    log, x = ENV.log(3000, np.random.default_rng(7))
    pi = ENV.pi_eval(x)
    assert isinstance(default_reward_model(log), LogisticRewardModel)  # 0/1 rewards
    graded = BanditLog.from_arrays(log.actions, log.rewards * 2.5, log.propensities,
                                   contexts=log.contexts, n_actions=K)
    assert isinstance(default_reward_model(graded), RidgeRewardModel)
    q = cross_fit(default_reward_model(log), log.contexts, log.actions, log.rewards)
    terms = make_terms(log, pi, q)
    by_mse = DRos(selection="mse").estimate_terms(terms)
    by_slope = DRos().estimate_terms(terms)
    grid = DRos().candidates
    assert by_mse.params["shrinkage"] in grid and by_slope.params["shrinkage"] in grid
    assert abs(by_mse.value - TRUE_V) < 0.05 and abs(by_slope.value - TRUE_V) < 0.05
