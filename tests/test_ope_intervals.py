"""The synthetic shop generator (exact policy values) and the calibration of OPE intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from shelfwise.cli.main import app as cli
from shelfwise.exceptions import ConfigError
from shelfwise.policies import (
    DM,
    DR,
    ESTIMATORS,
    IPS,
    SNIPS,
    DRos,
    RidgeRewardModel,
    SwitchDR,
    cross_fit,
    evaluate_policy,
)
from shelfwise.policies.ope import (
    RECOMMENDED_ESTIMATOR,
    analytic_interval,
    bootstrap_interval,
    make_terms,
)
from shelfwise.policies.synthetic import POLICY_NAMES, SyntheticShop, SyntheticShopConfig

SHOP = SyntheticShop()


def test_true_value_matches_a_large_on_policy_sample() -> None:
    rng = np.random.default_rng(0)
    for name in ("logging", "true-softmax", "eps-greedy"):
        s = SHOP.sample(120_000, rng, logging=name)
        r = s.log.rewards
        se = r.std(ddof=1) / np.sqrt(len(r))
        assert abs(r.mean() - SHOP.true_value(name)) < 4 * se, name
        # without the click noise: E over users and slots of Σ_a π(a|x) q(x, a, slot)
        exact_rows = (s.action_dists[name] * s.expected_rewards).sum(axis=1)
        assert abs(exact_rows.mean() - s.true_values[name]) < 4 * exact_rows.std() / np.sqrt(
            len(r))


def test_true_value_is_the_exact_finite_sum() -> None:
    shop = SyntheticShop(n_users=3, n_actions=2, n_positions=2, examination=(1.0, 0.5), seed=4)
    table = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    by_hand = sum(shop.user_probs[u] * 0.75 * (table[u] * shop.attraction[u]).sum()
                  for u in range(3))
    assert shop.true_value(table) == pytest.approx(by_hand, rel=1e-12)
    with pytest.raises(ValueError, match="shape"):
        shop.true_value(np.ones((2, 2)) / 2)


def test_generator_shape_propensities_and_distances() -> None:
    s = SHOP.sample(4000, 1)
    log = s.log
    rows = np.arange(log.n_rounds)
    assert log.contexts is not None and log.positions is not None
    assert log.n_actions == 10 and log.n_positions == 3 and log.contexts.shape == (4000, 5)
    np.testing.assert_allclose(log.propensities, s.action_dists["logging"][rows, log.actions])
    for name, dist in s.action_dists.items():
        np.testing.assert_allclose(dist.sum(axis=1), 1.0, err_msg=name)
    # the ε floor keeps every arm loggable
    assert SHOP.policies["logging"].min() >= SHOP.config.logging_epsilon / 10 - 1e-15
    assert 0.03 < log.rewards.mean() < 0.15  # shop-like CTR
    kl = [SHOP.distance(p)["kl"] for p in POLICY_NAMES]
    assert kl[0] == pytest.approx(0.0, abs=1e-12) and kl == sorted(kl)
    assert SHOP.distance("logging")["ess_fraction"] == pytest.approx(1.0)
    # logs are reproducible from the seed; the shop's parameters from its own seed
    again = SHOP.sample(4000, 1)
    np.testing.assert_array_equal(again.log.actions, log.actions)
    assert not np.allclose(SyntheticShop(seed=1).attraction, SHOP.attraction)
    same = SyntheticShop.from_config(SHOP.to_config())
    assert same.config == SyntheticShopConfig()
    np.testing.assert_array_equal(same.policies["logging"], SHOP.policies["logging"])
    with pytest.raises(ValueError, match="n_arms"):
        SyntheticShop(n_arms=3)  # extra="forbid"
    single = SyntheticShop(n_positions=1).sample(100, 0)
    assert single.log.positions is None
    with pytest.raises(ValueError, match="examination"):
        SyntheticShop(examination=(1.0, 0.5))


def test_on_policy_ips_is_the_empirical_mean() -> None:
    s = SHOP.sample(3000, 2)
    log, pi = s.log, s.action_dists["logging"]
    r = log.rewards
    for est in (IPS(), SNIPS()):
        e = est.estimate(log, pi)
        assert e.value == pytest.approx(r.mean(), rel=1e-12)
        assert e.std_error == pytest.approx(r.std(ddof=1) / np.sqrt(len(r)), rel=1e-9)
        assert e.interval == "analytic" and e.n_bootstrap == 0
        half = 1.959964 * e.std_error
        assert (e.lower, e.upper) == pytest.approx((r.mean() - half, r.mean() + half), rel=1e-6)


def test_delta_method_matches_the_bootstrap_spread() -> None:
    s = SHOP.sample(20_000, 3)
    terms = make_terms(s.log, s.action_dists["true-softmax"], None)
    num, den, _ = SNIPS().terms(terms)
    lo, hi, se = analytic_interval(num, den, 0.05)
    assert den.std() > 0.5  # a real ratio, not a plain mean
    rng = np.random.default_rng(0)
    stats = []
    for _ in range(300):
        idx = rng.integers(0, len(num), len(num))
        stats.append(num[idx].sum() / den[idx].sum())
    assert se == pytest.approx(np.std(stats), rel=0.15)
    b_lo, b_hi = bootstrap_interval(num, den, 300, 0.05, 0)
    assert (hi - lo) == pytest.approx(b_hi - b_lo, rel=0.2)


def test_analytic_intervals_cover_over_small_replications() -> None:
    """100 logs of 2,000 impressions: the defaults cover near 95%; DM's own interval, which
    ignores q̂'s bias, does not, and its hull with DR's does."""
    rng = np.random.default_rng(11)
    reps = 100
    cover: dict[str, int] = {"ips": 0, "snips": 0, "dr": 0, "switch-dr": 0, "dm-analytic": 0,
                             "dm-hull": 0, "ips-half-width": 0}
    for r in range(reps):
        s = SHOP.sample(2000, rng)
        log = s.log
        q = cross_fit(RidgeRewardModel(n_actions=10), log.contexts, log.actions, log.rewards,
                      log.positions, seed=r)
        pi, v = s.action_dists["uniform"], s.true_values["uniform"]
        terms = make_terms(log, pi, q)
        for name, est in (("ips", IPS()), ("snips", SNIPS()), ("dr", DR()),
                          ("switch-dr", SwitchDR())):
            e = est.estimate_terms(terms)
            cover[name] += e.lower <= v <= e.upper
        dm = DM().estimate_terms(terms, interval="analytic")
        hull = DM().estimate_terms(terms)
        dr = DR().estimate_terms(terms)
        assert hull.lower <= min(dm.lower, dr.lower) + 1e-15
        assert hull.upper >= max(dm.upper, dr.upper) - 1e-15
        cover["dm-analytic"] += dm.lower <= v <= dm.upper
        cover["dm-hull"] += hull.lower <= v <= hull.upper
        ips = IPS().estimate_terms(terms)  # a miscalibrated interval must fail the band
        mid, half = ips.value, (ips.upper - ips.lower) / 4
        cover["ips-half-width"] += mid - half <= v <= mid + half
    rate = {k: c / reps for k, c in cover.items()}
    for name in ("ips", "snips", "dr"):
        assert 0.86 <= rate[name] <= 0.995, (name, rate)
    for name in ("switch-dr", "dm-hull"):  # hulls with DR's interval: conservative by design
        assert rate[name] >= 0.86, (name, rate)
    assert rate["dm-analytic"] < 0.6, rate
    assert rate["ips-half-width"] < 0.8, rate


def test_interval_choice_and_records() -> None:
    s = SHOP.sample(1500, 5)
    log, pi = s.log, s.action_dists["sharper"]
    q = cross_fit(RidgeRewardModel(n_actions=10), log.contexts, log.actions, log.rewards,
                  log.positions)
    assert DR.default_interval == "analytic" and DM.default_interval == "hull"
    assert SwitchDR.default_interval == "hull" and DRos.default_interval == "hull"
    table = evaluate_policy(log, pi, q_hat=q)
    assert list(table["interval"]) == ["analytic", "analytic", "hull", "analytic", "hull",
                                       "hull"]
    assert (table["n_bootstrap"] == 0).all()
    assert ((table["lower"] <= table["value"]) & (table["value"] <= table["upper"])).all()
    boot = evaluate_policy(log, pi, ["ips", "dr"], q_hat=q, interval="bootstrap",
                           n_bootstrap=200)
    assert list(boot["interval"]) == ["bootstrap", "bootstrap"]
    assert (boot["n_bootstrap"] == 200).all()
    # with the same q̂ the analytic and bootstrap intervals agree closely
    assert boot["upper"].iloc[1] - boot["lower"].iloc[1] == pytest.approx(
        table["upper"].iloc[3] - table["lower"].iloc[3], rel=0.25)
    with pytest.raises(ConfigError):
        evaluate_policy(log, pi, ["ips"], interval="magic")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        evaluate_policy(log, pi, ["dr"], bootstrap="refit", interval="analytic")
    with pytest.raises(ConfigError):
        IPS().estimate(log, pi, interval="hull")  # the hull needs q̂
    assert RECOMMENDED_ESTIMATOR in ESTIMATORS


def test_cli_names_the_recommended_estimate(tmp_path: Path) -> None:
    s = SyntheticShop(n_positions=1).sample(1500, 6)
    log = s.log
    assert log.contexts is not None
    frame = pd.DataFrame({"f0": log.contexts[:, 0], "f1": log.contexts[:, 1],
                          "action": log.actions, "reward": log.rewards,
                          "propensity": log.propensities})
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    target = tmp_path / "target.csv"
    pd.DataFrame({"action": [0, 1, 2, 2, 3]}).to_csv(target, index=False)
    runner = CliRunner()
    base = ["evaluate-policy", str(path), "--feature-prefix", "f", "--target-log", str(target)]
    res = runner.invoke(cli, base)
    assert res.exit_code == 0, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith(f"recommended: {RECOMMENDED_ESTIMATOR} = ") and "95% interval" in last
    assert "hull" in res.output and "analytic" in res.output
    others = [e for e in ("ips", "snips", "dm") if e != RECOMMENDED_ESTIMATOR][:2]
    res = runner.invoke(cli, [*base, "--interval", "bootstrap", "--n-bootstrap", "50",
                                     "--estimators", ",".join(others)])
    assert res.exit_code == 0, res.output
    assert "bootstrap" in res.output and "was not among --estimators" in res.output
    res = runner.invoke(cli, [*base, "--interval", "wide"])
    assert res.exit_code == 2 and "--interval" in res.output
