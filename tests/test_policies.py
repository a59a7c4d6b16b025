"""Bandit policies: propensities, learning on a simulator, seeding, persistence, config checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shelfwise.exceptions import ConfigError
from shelfwise.policies import (
    POLICIES,
    BasePolicy,
    Decision,
    EpsilonGreedy,
    LinUCB,
    Policy,
    UniformRandom,
    load_policy,
    make_policy,
)

K, D = 4, 3
CASES = {
    "uniform": {},
    "egreedy": {"epsilon": 0.2},
    "egreedy-mean": {"epsilon": 0.2, "model": "mean"},
    "linucb": {"alpha": 0.5},
    "linucb-eps": {"alpha": 0.5, "epsilon": 0.1},
    "thompson": {"n_draws": 300},
}


def build(case: str, seed: int = 0) -> BasePolicy:
    return make_policy(case.split("-")[0], n_actions=K, seed=seed, **CASES[case])


class LinearEnv:
    """Bernoulli rewards with P(r=1 | x, a) = sigmoid(x·θ_a); arm 2 is best on average."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.theta = rng.normal(0, 1, size=(K, D))
        self.theta[:, -1] = [-1.0, -0.5, 1.0, -1.5]  # last feature is a constant 1
        self.rng = np.random.default_rng(seed + 1)

    def context(self, n: int | None = None) -> np.ndarray:
        shape = (n, D) if n else (D,)
        x = self.rng.normal(size=shape)
        x[..., -1] = 1.0
        return x

    def mean(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(x @ self.theta.T)))

    def reward(self, x: np.ndarray, a: int) -> float:
        return float(self.rng.random() < self.mean(x)[a])


def trained(case: str, rounds: int = 300, seed: int = 0) -> BasePolicy:
    policy, env = build(case, seed), LinearEnv()
    for _ in range(rounds):
        x = env.context()
        d = policy.choose(x)
        policy.update(x, d.action, env.reward(x, d.action))
    return policy


@pytest.mark.parametrize("case", list(CASES))
def test_contract_distribution_and_decisions(case: str) -> None:
    policy = trained(case, rounds=100)
    assert isinstance(policy, Policy)
    x = LinearEnv(5).context(50)
    probs = policy.action_probabilities(x)
    assert probs.shape == (50, K)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert ((probs >= 0) & (probs <= 1)).all()
    eligible = [1, 3]
    masked = policy.action_probabilities(x, eligible)
    assert np.allclose(masked.sum(axis=1), 1.0)
    assert (masked[:, [0, 2]] == 0).all()
    for row in x[:20]:
        d = policy.choose(row, eligible)
        assert isinstance(d, Decision)
        assert d.action in eligible
        assert 0 < d.propensity <= 1
        assert set(d.scores) == set(eligible)


@pytest.mark.parametrize("case", [c for c in CASES if c != "thompson"])
def test_closed_form_propensity_matches_distribution(case: str) -> None:
    policy = trained(case, rounds=100)
    x = LinearEnv(7).context()
    probs = policy.action_probabilities(x)[0]
    for _ in range(10):
        d = policy.choose(x)
        assert d.propensity == pytest.approx(probs[d.action])


def test_uniform_and_epsilon_greedy_known_propensities() -> None:
    u = UniformRandom(n_actions=5)
    assert u.choose(np.zeros(2), [0, 2, 4]).propensity == pytest.approx(1 / 3)
    eg = EpsilonGreedy(n_actions=3, epsilon=0.3, model="mean")
    eg.fit(np.zeros((3, 1)), [0, 1, 2], [0.0, 1.0, 0.0])
    probs = eg.action_probabilities(np.zeros(1))[0]
    assert probs == pytest.approx([0.1, 0.8, 0.1])  # 1-ε+ε/3 for the best, ε/3 otherwise


def test_linucb_is_deterministic_and_splits_ties() -> None:
    pol = LinUCB(n_actions=3, alpha=0.0)
    pol.fit(np.ones((4, 1)), [0, 0, 1, 1], [1.0, 1.0, 1.0, 1.0])  # arms 0 and 1 tie exactly
    probs = pol.action_probabilities(np.ones(1))[0]
    assert probs == pytest.approx([0.5, 0.5, 0.0])
    pol.fit(np.ones((4, 1)), [0, 0, 1, 1], [1.0, 1.0, 0.0, 1.0])
    assert pol.action_probabilities(np.ones(1))[0] == pytest.approx([1.0, 0.0, 0.0])
    assert pol.choose(np.ones(1)).propensity == 1.0


def test_thompson_propensity_floor() -> None:
    pol = make_policy("thompson", n_actions=2, n_draws=100, noise=0.01, fit_intercept=True)
    pol.fit(np.zeros((200, 1)), np.repeat([0, 1], 100), np.repeat([1.0, 0.0], 100))
    probs = pol.action_probabilities(np.zeros((1, 1)))[0]
    assert probs[1] > 0  # never drawn, floored at one draw's worth, then renormalised
    assert probs[1] == pytest.approx(1 / 101)
    assert probs.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("case", ["linucb", "thompson", "egreedy"])
def test_learns_the_best_arm(case: str) -> None:
    policy = trained(case, rounds=1500)
    env = LinearEnv()
    x = env.context(2000)
    best = env.mean(x).argmax(axis=1)
    p_best = policy.action_probabilities(x)[np.arange(len(x)), best].mean()
    assert p_best > 0.75, p_best
    regret_random = (env.mean(x).max(axis=1) - env.mean(x).mean(axis=1)).mean()
    regret = (env.mean(x).max(axis=1)
              - (policy.action_probabilities(x) * env.mean(x)).sum(axis=1)).mean()
    assert regret < 0.25 * regret_random


@pytest.mark.parametrize("case", list(CASES))
def test_seeded_reproducibility(case: str) -> None:
    runs = [[(d.action, d.propensity) for d in _decisions(trained(case, 80, seed=3))]
            for _ in range(2)]
    assert runs[0] == runs[1]


def _decisions(policy: BasePolicy) -> list[Decision]:
    env = LinearEnv(11)
    return [policy.choose(env.context()) for _ in range(20)]


@pytest.mark.parametrize("case", list(CASES))
def test_save_load_round_trip(case: str, tmp_path: Path) -> None:
    policy = trained(case, 120)
    policy.save(tmp_path / case)
    assert (tmp_path / case / "config.json").exists()
    assert (tmp_path / case / "state.npz").exists()
    with np.load(tmp_path / case / "state.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    loaded = load_policy(tmp_path / case)
    assert type(loaded) is type(policy)
    assert loaded.to_config() == policy.to_config()
    assert loaded.n_updates_ == policy.n_updates_ == 120
    x = LinearEnv(9).context(30)
    seed = np.random.default_rng(1)
    seed2 = np.random.default_rng(1)
    assert np.allclose(loaded.action_probabilities(x, rng=seed),
                       policy.action_probabilities(x, rng=seed2))
    # the RNG state is saved too: both continue with the same decisions
    assert [(d.action, d.propensity) for d in _decisions(loaded)] == [
        (d.action, d.propensity) for d in _decisions(policy)]


def test_batch_fit_equals_online_updates() -> None:
    env = LinearEnv(2)
    x = env.context(200)
    a = env.rng.integers(0, K, 200)
    r = env.rng.random(200)
    online = LinUCB(n_actions=K)
    for row, arm, rew in zip(x, a, r, strict=True):
        online.update(row, int(arm), float(rew))
    batch = LinUCB(n_actions=K).fit(x, a, r)
    assert np.allclose(online.arms_.A, batch.arms_.A)
    assert np.allclose(online.action_probabilities(x), batch.action_probabilities(x))
    assert np.allclose(online._scores(x), batch._scores(x))


def test_config_and_input_errors() -> None:
    with pytest.raises(ConfigError):
        make_policy("nope", n_actions=2)
    with pytest.raises(ConfigError):
        make_policy("linucb", n_actions=2, bogus=1)
    with pytest.raises(ConfigError):
        make_policy("egreedy", n_actions=2, epsilon=1.5)
    pol = make_policy("linucb", n_actions=2)
    pol.choose(np.zeros(3))
    with pytest.raises(ValueError, match="features"):
        pol.choose(np.zeros(4))
    with pytest.raises(ValueError, match="eligible"):
        pol.choose(np.zeros(3), [5])
    with pytest.raises(ValueError):
        pol.update(np.zeros(3), 7, 1.0)
    with pytest.raises(ConfigError):
        load_policy(Path("/nonexistent/policy"))
    assert set(POLICIES) == {"uniform", "egreedy", "linucb", "thompson"}
